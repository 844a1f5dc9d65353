package streams

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

const (
	frameMagic0  = 'E'
	frameMagic1  = 'S'
	frameVersion = 1
	// frameOverhead bounds the bytes a frame adds to its payload.
	frameOverhead = 4 + 2*binary.MaxVarintLen64 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame is one stream message: one part of one encoded record.
type Frame struct {
	Kind    Kind
	Part    int // 0-based
	Parts   int // >= 1
	Payload []byte
}

// AppendFrame appends the encoding of f to dst.
func AppendFrame(dst []byte, f Frame) []byte {
	dst = append(dst, frameMagic0, frameMagic1, frameVersion, byte(f.Kind))
	dst = binary.AppendUvarint(dst, uint64(f.Part))
	dst = binary.AppendUvarint(dst, uint64(f.Parts))
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(f.Payload, castagnoli))
	return append(dst, f.Payload...)
}

// DecodeFrame decodes one stream message body. The payload aliases b.
// Errors wrap ErrCorrupt and say what is wrong.
func DecodeFrame(b []byte) (Frame, error) {
	if len(b) < 4 {
		return Frame{}, fmt.Errorf("%w: frame of %d bytes is shorter than its header", ErrCorrupt, len(b))
	}
	if b[0] != frameMagic0 || b[1] != frameMagic1 {
		return Frame{}, fmt.Errorf("%w: bad magic %q, not an etcdsync frame", ErrCorrupt, b[:2])
	}
	if b[2] != frameVersion {
		return Frame{}, fmt.Errorf("%w: unsupported frame version %d", ErrCorrupt, b[2])
	}
	f := Frame{Kind: Kind(b[3])}
	if !f.Kind.valid() {
		return Frame{}, fmt.Errorf("%w: unknown frame kind %d", ErrCorrupt, b[3])
	}
	off := 4
	part, n := binary.Uvarint(b[off:])
	if n <= 0 {
		return Frame{}, fmt.Errorf("%w: bad part index", ErrCorrupt)
	}
	off += n
	parts, n := binary.Uvarint(b[off:])
	if n <= 0 {
		return Frame{}, fmt.Errorf("%w: bad part count", ErrCorrupt)
	}
	off += n
	if parts == 0 || parts > 1<<20 || part >= parts {
		return Frame{}, fmt.Errorf("%w: part %d of %d is out of range", ErrCorrupt, part, parts)
	}
	if len(b)-off < 4 {
		return Frame{}, fmt.Errorf("%w: truncated checksum", ErrCorrupt)
	}
	sum := binary.BigEndian.Uint32(b[off:])
	off += 4
	f.Part, f.Parts, f.Payload = int(part), int(parts), b[off:]
	if got := crc32.Checksum(f.Payload, castagnoli); got != sum {
		return Frame{}, fmt.Errorf("%w: checksum mismatch in part %d of %d (%d payload bytes): want %08x, got %08x", ErrCorrupt, part, parts, len(f.Payload), sum, got)
	}
	return f, nil
}

// SplitRecord encodes r and splits it into frames whose encoding is at most
// maxMsg bytes. It returns the encoded frames in part order.
func SplitRecord(r *Record, maxMsg int) ([][]byte, error) {
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
		out = append(out, AppendFrame(make([]byte, 0, len(chunk)+frameOverhead), Frame{Kind: r.Kind, Part: i, Parts: parts, Payload: chunk}))
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
// the last part. Parts must arrive in order with nothing between them;
// anything else returns an error wrapping ErrCorrupt and resets the assembler.
// The returned record may alias f's payload or a buffer of its own; the
// assembler never reuses either.
func (a *Assembler) Add(f Frame) (Record, bool, error) {
	if f.Parts == 1 && !a.Pending() {
		r, err := DecodeRecord(f.Payload)
		return r, err == nil, err
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
	buf := a.buf
	a.next, a.buf = 0, nil
	r, err := DecodeRecord(buf)
	return r, err == nil, err
}
