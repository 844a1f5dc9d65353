package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Tail describes the last message of the log.
type Tail struct {
	// Seq is the stream sequence of the last log message of this site; 0
	// when the log holds none.
	Seq uint64
	// StreamLastSeq is the stream's last sequence: a promoted mirror also
	// holds the previous primary site's messages, on other subjects.
	StreamLastSeq uint64
	Kind          Kind
	ClusterID     uint64
	Generation    uint64
	// Revision is the last source revision whose record is complete in the
	// log; for an unfinished snapshot, the snapshot's revision.
	Revision int64
	// Complete reports whether the log ends at a record boundary from which
	// the same generation can continue. False for an empty log, a record whose
	// last part is missing, and an unfinished snapshot.
	Complete bool
	// Digested says that Digest is the digest of the source keyspace at
	// Revision, as the tail record carries it (a complete revision,
	// snapshot-end or epoch record written with digests).
	Digested bool
	Digest   Digest
}

// ReadTail reads the last message of the log stream: where a publisher
// resumes, and how far the log goes. It checks no MAC; see
// ReadVerifiedTail.
func ReadTail(ctx context.Context, stream jetstream.Stream, subj Subjects) (Tail, error) {
	return ReadVerifiedTail(ctx, stream, subj, nil)
}

// ReadVerifiedTail is ReadTail that also checks the last message's MAC
// against ring (nil: no check), so that a forged tail cannot tell a
// publisher where to resume. A tail that cannot be trusted (unreadable:
// ErrCorrupt, or unauthenticated: ErrUnauthenticated, which wraps it) is
// returned with Seq and StreamLastSeq set beside the error, so a publisher
// can start a new generation after it.
func ReadVerifiedTail(ctx context.Context, stream jetstream.Stream, subj Subjects, ring *KeyRing) (Tail, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return Tail{}, fmt.Errorf("read stream tail: %w", err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, subj.LogWildcard())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Tail{StreamLastSeq: info.State.LastSeq}, nil
	}
	if err != nil {
		return Tail{}, fmt.Errorf("read stream tail: %w", err)
	}
	untrusted := Tail{Seq: msg.Sequence, StreamLastSeq: max(info.State.LastSeq, msg.Sequence)}
	f, err := ring.DecodeVerified(msg.Data, msg.Subject, msg.Sequence-1)
	if err != nil {
		return untrusted, fmt.Errorf("read stream tail at seq %d: %w", msg.Sequence, err)
	}
	// Cluster, generation and revision come from the authenticated record,
	// never from the message headers, which no MAC covers.
	h, err := RecordHeader(ctx, stream, msg, f, ring)
	if err != nil {
		return untrusted, fmt.Errorf("read stream tail at seq %d: %w", msg.Sequence, err)
	}
	t := Tail{Seq: msg.Sequence, StreamLastSeq: untrusted.StreamLastSeq, Kind: f.Kind,
		ClusterID: h.ClusterID, Generation: h.Generation, Revision: h.Revision}
	last := f.Part == f.Parts-1
	switch f.Kind {
	case KindRevision:
		t.Complete = last
		if !last {
			t.Revision-- // the tail revision itself is incomplete
		}
	case KindSnapshotEnd:
		t.Complete = last
	case KindEpoch:
		t.Complete = t.Revision > 0
	default:
		t.Complete = false
	}
	if t.Complete && h.Digested {
		t.Digested, t.Digest = true, h.Digest
	}
	return t, nil
}

// RecordHeader returns the fixed fields (kind, cluster ID, generation,
// revision) of the record that msg, whose frame f has been verified, is a
// part of. For a later part it reads and verifies the record's first part,
// which holds them. Errors wrap ErrCorrupt or ErrUnauthenticated.
func RecordHeader(ctx context.Context, stream jetstream.Stream, msg *jetstream.RawStreamMsg, f Frame, ring *KeyRing) (Record, error) {
	first, seq := f, msg.Sequence
	if f.Part > 0 {
		if uint64(f.Part) >= seq {
			return Record{}, fmt.Errorf("%w: part %d of %d at seq %d cannot start before seq 1", ErrCorrupt, f.Part, f.Parts, seq)
		}
		seq -= uint64(f.Part)
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return Record{}, fmt.Errorf("%w: the first part of the %s record ending at seq %d (seq %d) is gone from the stream", ErrCorrupt, f.Kind, msg.Sequence, seq)
		}
		if err != nil {
			return Record{}, fmt.Errorf("read the first part at seq %d: %w", seq, err)
		}
		if first, err = ring.DecodeVerified(m.Data, m.Subject, seq-1); err != nil {
			return Record{}, fmt.Errorf("first part at seq %d: %w", seq, err)
		}
		if first.Kind != f.Kind || first.Part != 0 || first.Parts != f.Parts {
			return Record{}, fmt.Errorf("%w: seq %d holds %s part %d of %d, not the first of the %s record of %d parts ending at seq %d",
				ErrCorrupt, seq, first.Kind, first.Part, first.Parts, f.Kind, f.Parts, msg.Sequence)
		}
	}
	r, err := DecodeRecordHeader(first.Payload)
	if err != nil {
		return Record{}, fmt.Errorf("record at seq %d: %w", seq, err)
	}
	if r.Kind != f.Kind {
		return Record{}, fmt.Errorf("%w: %s frame at seq %d holds a %s record", ErrCorrupt, f.Kind, seq, r.Kind)
	}
	return r, nil
}
