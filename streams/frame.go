package streams

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

const (
	frameMagic0  = 'E'
	frameMagic1  = 'S'
	frameVersion = 2
	// frameFlagMAC marks a frame that carries a key ID and a MAC.
	frameFlagMAC = 1
	// frameOverhead bounds the bytes a frame adds to its payload: magic,
	// version, kind, flags, two uvarints, key ID, MAC and CRC.
	frameOverhead = 5 + 2*binary.MaxVarintLen64 + 1 + maxKeyID + MACSize + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame is one stream message: one part of one encoded record.
type Frame struct {
	Kind    Kind
	Part    int // 0-based
	Parts   int // >= 1
	Payload []byte
	// KeyID names the key whose MAC the frame carries; "" when unsigned.
	KeyID string
	// MAC is the frame's HMAC-SHA256 (nil when unsigned).
	MAC []byte

	covered []byte // the bytes the MAC covers (decoded frames only)
}

// AppendFrame appends the encoding of f to dst. With a non-nil ring the
// frame is signed by the ring's first key for its place in the log: the
// subject it is published on, right after stream sequence prevSeq; f.KeyID
// and f.MAC are ignored.
func AppendFrame(dst []byte, f Frame, ring *KeyRing, subject string, prevSeq uint64) []byte {
	start := len(dst)
	var flags byte
	if ring != nil {
		flags |= frameFlagMAC
	}
	dst = append(dst, frameMagic0, frameMagic1, frameVersion, byte(f.Kind), flags)
	dst = binary.AppendUvarint(dst, uint64(f.Part))
	dst = binary.AppendUvarint(dst, uint64(f.Parts))
	if ring != nil {
		k := &ring.keys[0]
		dst = append(dst, byte(len(k.id)))
		dst = append(dst, k.id...)
		dst = append(dst, f.Payload...)
		dst = k.appendMAC(dst, dst[start:], subject, prevSeq)
	} else {
		dst = append(dst, f.Payload...)
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// DecodeFrame decodes one stream message body. The payload aliases b. The
// CRC covers every byte of the frame, header included; the MAC, if any, is
// only parsed here and checked by KeyRing.Verify, which needs the message's
// position. Errors wrap ErrCorrupt and say what is wrong, except a frame
// of a later version than this etcdsync reads (ErrNewerFormat).
func DecodeFrame(b []byte) (Frame, error) {
	if len(b) < 5+2+4 {
		return Frame{}, fmt.Errorf("%w: frame of %d bytes is shorter than its header", ErrCorrupt, len(b))
	}
	if b[0] != frameMagic0 || b[1] != frameMagic1 {
		return Frame{}, fmt.Errorf("%w: bad magic %q, not an etcdsync frame", ErrCorrupt, b[:2])
	}
	// The checksum comes first: nothing of the header is trusted before it.
	// Every frame version ends with this CRC over all bytes before it, so a
	// frame of a later version is told from a corrupt one.
	body := b[:len(b)-4]
	sum := binary.BigEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return Frame{}, fmt.Errorf("%w: frame checksum mismatch (%d bytes): want %08x, got %08x", ErrCorrupt, len(b), sum, got)
	}
	if b[2] > frameVersion {
		return Frame{}, fmt.Errorf("%w (frame version %d; this etcdsync reads version %d)", ErrNewerFormat, b[2], frameVersion)
	}
	if b[2] != frameVersion {
		return Frame{}, fmt.Errorf("%w: unsupported frame version %d (this etcdsync reads version %d: upgrade both sites together, see streams/doc.go)", ErrCorrupt, b[2], frameVersion)
	}
	f := Frame{Kind: Kind(b[3])}
	if !f.Kind.valid() {
		return Frame{}, fmt.Errorf("%w: unknown frame kind %d", ErrCorrupt, b[3])
	}
	flags := b[4]
	if flags&^frameFlagMAC != 0 {
		return Frame{}, fmt.Errorf("%w: unknown frame flags %#x", ErrCorrupt, flags)
	}
	off := 5
	part, n := binary.Uvarint(body[off:])
	if n <= 0 {
		return Frame{}, fmt.Errorf("%w: bad part index", ErrCorrupt)
	}
	off += n
	parts, n := binary.Uvarint(body[off:])
	if n <= 0 {
		return Frame{}, fmt.Errorf("%w: bad part count", ErrCorrupt)
	}
	off += n
	if parts == 0 || parts > 1<<20 || part >= parts {
		return Frame{}, fmt.Errorf("%w: part %d of %d is out of range", ErrCorrupt, part, parts)
	}
	f.Part, f.Parts = int(part), int(parts)
	end := len(body)
	if flags&frameFlagMAC != 0 {
		if off >= len(body) {
			return Frame{}, fmt.Errorf("%w: truncated key ID", ErrCorrupt)
		}
		idLen := int(body[off])
		off++
		if idLen == 0 || idLen > maxKeyID || len(body)-off < idLen+MACSize {
			return Frame{}, fmt.Errorf("%w: bad key ID length %d", ErrCorrupt, idLen)
		}
		f.KeyID = string(body[off : off+idLen])
		if err := validKeyID(f.KeyID); err != nil {
			return Frame{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		off += idLen
		end = len(body) - MACSize
		f.MAC = body[end:]
		f.covered = body[:end]
	}
	f.Payload = body[off:end:end]
	return f, nil
}

// SplitRecord encodes r and splits it into frames whose encoding is at most
// maxMsg bytes. With a non-nil ring every frame is signed for subject,
// frame i for the position after stream sequence prevSeq+i (the frames are
// published consecutively). It returns the encoded frames in part order.
func SplitRecord(r *Record, maxMsg int, ring *KeyRing, subject string, prevSeq uint64) ([][]byte, error) {
	if maxMsg <= frameOverhead+1 {
		return nil, fmt.Errorf("split record: message size %d is too small", maxMsg)
	}
	payload := AppendRecord(make([]byte, 0, r.EncodedSize()), r)
	size := maxMsg - frameOverhead
	parts := (len(payload) + size - 1) / size
	if parts == 0 {
		parts = 1
	}
	out := make([][]byte, 0, parts)
	for i := 0; i < parts; i++ {
		end := min((i+1)*size, len(payload))
		chunk := payload[i*size : end]
		out = append(out, AppendFrame(make([]byte, 0, len(chunk)+frameOverhead), Frame{Kind: r.Kind, Part: i, Parts: parts, Payload: chunk}, ring, subject, prevSeq+uint64(i)))
	}
	return out, nil
}

// Assembler joins the frames of one record. The zero value is ready to use.
type Assembler struct {
	kind  Kind
	parts int
	next  int
	buf   []byte
}

// Pending reports whether the assembler holds the first parts of a record.
func (a *Assembler) Pending() bool { return a.next > 0 }

// Reset drops any partial record.
func (a *Assembler) Reset() { a.kind, a.parts, a.next, a.buf = 0, 0, 0, nil }

// Add adds the next frame. It returns the decoded record and true when f was
// the last part. Parts must arrive in order with nothing between them, and
// the record's kind must be the frames' kind; anything else returns an error
// wrapping ErrCorrupt and resets the assembler. The returned record may
// alias f's payload or a buffer of its own; the assembler never reuses
// either.
func (a *Assembler) Add(f Frame) (Record, bool, error) {
	if f.Parts == 1 && !a.Pending() {
		return decodeKind(f.Payload, f.Kind)
	}
	if !a.Pending() {
		if f.Part != 0 {
			return Record{}, false, fmt.Errorf("%w: part %d of %d of a %s record without its first part", ErrCorrupt, f.Part, f.Parts, f.Kind)
		}
		a.kind, a.parts, a.next, a.buf = f.Kind, f.Parts, 0, nil
	}
	if f.Kind != a.kind || f.Parts != a.parts || f.Part != a.next {
		err := fmt.Errorf("%w: got part %d of %d of a %s record while expecting part %d of %d of a %s record", ErrCorrupt, f.Part, f.Parts, f.Kind, a.next, a.parts, a.kind)
		a.Reset()
		return Record{}, false, err
	}
	a.buf = append(a.buf, f.Payload...)
	a.next++
	if a.next < a.parts {
		return Record{}, false, nil
	}
	buf, kind := a.buf, a.kind
	a.next, a.buf = 0, nil
	return decodeKind(buf, kind)
}

// decodeKind decodes a record whose frames said it is of kind k.
func decodeKind(b []byte, k Kind) (Record, bool, error) {
	r, err := DecodeRecord(b)
	if err != nil {
		return Record{}, false, err
	}
	if r.Kind != k {
		return Record{}, false, fmt.Errorf("%w: %s frame holds a %s record", ErrCorrupt, k, r.Kind)
	}
	return r, true, nil
}
