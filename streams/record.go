package streams

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt message")

// ErrNewerFormat is returned for a frame or record of a later version than
// this etcdsync reads: written by a newer etcdsync, not corrupt. It does not
// wrap ErrCorrupt; whoever reads it stops and asks for an upgrade.
var ErrNewerFormat = errors.New("written by a newer etcdsync")

// Kind is the kind of a log record.
type Kind uint8

// Record kinds.
const (
	KindRevision      Kind = 1
	KindSnapshotBegin Kind = 2
	KindSnapshotChunk Kind = 3
	KindSnapshotEnd   Kind = 4
	KindEpoch         Kind = 5
)

// String returns the kind's name as used in headers and logs.
func (k Kind) String() string {
	switch k {
	case KindRevision:
		return "revision"
	case KindSnapshotBegin:
		return "snapshot-begin"
	case KindSnapshotChunk:
		return "snapshot-chunk"
	case KindSnapshotEnd:
		return "snapshot-end"
	case KindEpoch:
		return "epoch"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (k Kind) valid() bool { return k >= KindRevision && k <= KindEpoch }

// EventType is the type of one key event.
type EventType uint8

// Event types.
const (
	EventPut    EventType = 1
	EventDelete EventType = 2
)

// Event is one key change of a source revision, or one key of a snapshot.
type Event struct {
	Type           EventType
	Key            []byte
	Value          []byte // nil for deletes
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64 // source lease ID, 0 when none
	// LeaseTTL is the source lease's remaining time to live in seconds when
	// the publisher observed the event (0 without a lease).
	LeaseTTL int64
	// PrevHash is the ElementHash of the key's previous (key, value) pair,
	// zero when the key is new or its previous version had a lease (it was
	// not in the digest). Meaningful only when the record is Digested.
	PrevHash [32]byte
}

// Record is one logical log entry. Which fields are meaningful depends on Kind.
type Record struct {
	Kind       Kind
	ClusterID  uint64
	Generation uint64
	// Revision is the source revision of a revision record, the snapshot
	// revision of snapshot records, and the last published revision of an epoch.
	Revision int64
	// Time is when the publisher observed the revision, or when it started
	// the snapshot (the same in every record of one snapshot).
	Time time.Time
	// Prefix is the key prefix a snapshot covers (snapshot-begin).
	Prefix []byte
	// Reason says why a snapshot was taken (snapshot-begin).
	Reason string
	// Chunk is the chunk index (snapshot-chunk) or the number of chunks (snapshot-end).
	Chunk uint64
	// Keys is the number of keys in the snapshot (snapshot-end).
	Keys uint64
	// Leader names the publisher that wrote an epoch marker.
	Leader string
	// Events are the revision's events or the snapshot chunk's keys.
	Events []Event
	// Digested says that Digest (and every event's PrevHash) was computed.
	Digested bool
	// Digest is the digest of the source keyspace under the publisher's
	// prefix after this revision (revision records) or at the snapshot's
	// revision (snapshot-end). See Digest for what it covers.
	Digest Digest
}

const recordVersion = 2

// EncodedSize returns an upper bound of the encoded size of r.
func (r *Record) EncodedSize() int {
	n := 2 + 5*binary.MaxVarintLen64 + 3*binary.MaxVarintLen64 + len(r.Prefix) + len(r.Reason) + len(r.Leader) + 2*binary.MaxVarintLen64 + 1 + 32
	for i := range r.Events {
		n += EventSize(&r.Events[i])
	}
	return n
}

// EventSize returns an upper bound of the encoded size of e.
func EventSize(e *Event) int {
	return 1 + 2*binary.MaxVarintLen64 + len(e.Key) + len(e.Value) + 5*binary.MaxVarintLen64 + 1 + 32
}

// AppendRecord appends the encoding of r to dst.
func AppendRecord(dst []byte, r *Record) []byte {
	dst = append(dst, recordVersion, byte(r.Kind))
	dst = binary.AppendUvarint(dst, r.ClusterID)
	dst = binary.AppendUvarint(dst, r.Generation)
	dst = binary.AppendVarint(dst, r.Revision)
	var t int64
	if !r.Time.IsZero() {
		t = r.Time.UnixNano()
	}
	dst = binary.AppendVarint(dst, t)
	dst = appendBytes(dst, r.Prefix)
	dst = appendBytes(dst, []byte(r.Reason))
	dst = binary.AppendUvarint(dst, r.Chunk)
	dst = binary.AppendUvarint(dst, r.Keys)
	dst = appendBytes(dst, []byte(r.Leader))
	if r.Digested {
		dst = appendBytes(dst, r.Digest[:])
	} else {
		dst = appendBytes(dst, nil)
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Events)))
	for i := range r.Events {
		e := &r.Events[i]
		dst = append(dst, byte(e.Type))
		dst = appendBytes(dst, e.Key)
		dst = appendBytes(dst, e.Value)
		dst = binary.AppendVarint(dst, e.CreateRevision)
		dst = binary.AppendVarint(dst, e.ModRevision)
		dst = binary.AppendVarint(dst, e.Version)
		dst = binary.AppendVarint(dst, e.Lease)
		dst = binary.AppendVarint(dst, e.LeaseTTL)
		if r.Digested {
			dst = appendBytes(dst, e.PrevHash[:])
		} else {
			dst = appendBytes(dst, nil)
		}
	}
	return dst
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// minEventSize is the smallest possible encoded event: type, two empty
// byte strings, five one-byte varints and an empty previous hash.
const minEventSize = 9

// DecodeRecordHeader decodes the fields before the events of an encoded
// record from b, which may be the first part of a record split across
// messages: kind, cluster ID, generation and revision always, and the rest
// of the preamble (time, prefix, reason, chunk, keys, leader, digest) when
// b holds all of it; otherwise those stay zero and Digested false. Errors
// wrap ErrCorrupt, or ErrNewerFormat for a later record version.
func DecodeRecordHeader(b []byte) (Record, error) {
	d := decoder{b: b}
	var r Record
	if err := d.header(&r); err != nil {
		return Record{}, err
	}
	full := r
	if d.preamble(&full) == nil {
		return full, nil
	}
	return r, nil
}

// preamble decodes the fields between the header and the events.
func (d *decoder) preamble(r *Record) error {
	if t := d.varint("time"); t != 0 {
		r.Time = time.Unix(0, t)
	}
	r.Prefix = d.bytes("prefix")
	r.Reason = string(d.bytes("reason"))
	r.Chunk = d.uvarint("chunk")
	r.Keys = d.uvarint("keys")
	r.Leader = string(d.bytes("leader"))
	switch dg := d.bytes("digest"); {
	case d.err != nil:
	case len(dg) == 0:
	case len(dg) == len(r.Digest):
		r.Digested = true
		copy(r.Digest[:], dg)
	default:
		d.fail("digest", fmt.Sprintf("%d bytes, want 0 or %d", len(dg), len(r.Digest)))
	}
	return d.err
}

// header decodes the fields every record starts with.
func (d *decoder) header(r *Record) error {
	if v := d.byte("record version"); d.err == nil && v > recordVersion {
		return fmt.Errorf("%w (record version %d; this etcdsync reads version %d)", ErrNewerFormat, v, recordVersion)
	} else if d.err == nil && v != recordVersion {
		return fmt.Errorf("%w: unsupported record version %d", ErrCorrupt, v)
	}
	r.Kind = Kind(d.byte("kind"))
	if d.err == nil && !r.Kind.valid() {
		return fmt.Errorf("%w: unknown record kind %d", ErrCorrupt, uint8(r.Kind))
	}
	r.ClusterID = d.uvarint("cluster id")
	r.Generation = d.uvarint("generation")
	r.Revision = d.varint("revision")
	return d.err
}

// DecodeRecord decodes a record encoded by AppendRecord. Byte slices of the
// result alias b. Errors wrap ErrCorrupt, or are ErrNewerFormat for a
// record of a later version.
func DecodeRecord(b []byte) (Record, error) {
	d := decoder{b: b}
	var r Record
	if err := d.header(&r); err != nil {
		return Record{}, err
	}
	if err := d.preamble(&r); err != nil {
		return Record{}, err
	}
	n := d.uvarint("event count")
	if d.err != nil {
		return Record{}, d.err
	}
	if n > uint64(len(d.b)-d.off)/minEventSize {
		return Record{}, fmt.Errorf("%w: event count %d exceeds what %d remaining bytes can hold", ErrCorrupt, n, len(d.b)-d.off)
	}
	if n > 0 {
		r.Events = make([]Event, n)
	}
	for i := range r.Events {
		e := &r.Events[i]
		e.Type = EventType(d.byte("event type"))
		if d.err == nil && e.Type != EventPut && e.Type != EventDelete {
			return Record{}, fmt.Errorf("%w: event %d: unknown type %d", ErrCorrupt, i, uint8(e.Type))
		}
		e.Key = d.bytes("event key")
		e.Value = d.bytes("event value")
		e.CreateRevision = d.varint("event create revision")
		e.ModRevision = d.varint("event mod revision")
		e.Version = d.varint("event version")
		e.Lease = d.varint("event lease")
		e.LeaseTTL = d.varint("event lease ttl")
		switch ph := d.bytes("event previous hash"); {
		case d.err != nil:
		case !r.Digested && len(ph) != 0:
			d.fail("event previous hash", "present in a record without a digest")
		case r.Digested && len(ph) != len(e.PrevHash):
			d.fail("event previous hash", fmt.Sprintf("%d bytes, want %d", len(ph), len(e.PrevHash)))
		default:
			copy(e.PrevHash[:], ph)
		}
		if d.err != nil {
			return Record{}, fmt.Errorf("event %d: %w", i, d.err)
		}
	}
	if d.err != nil {
		return Record{}, d.err
	}
	if d.off != len(d.b) {
		return Record{}, fmt.Errorf("%w: %d trailing bytes after record", ErrCorrupt, len(d.b)-d.off)
	}
	return r, nil
}

type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(field, what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s at offset %d", ErrCorrupt, field, what, d.off)
	}
}

func (d *decoder) byte(field string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(field, "truncated")
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(field, "bad or truncated varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(field string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail(field, "bad or truncated varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) bytes(field string) []byte {
	n := d.uvarint(field + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail(field, fmt.Sprintf("length %d exceeds remaining %d bytes", n, len(d.b)-d.off))
		return nil
	}
	if n == 0 {
		return nil
	}
	v := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return v
}
