package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

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
	// Revision is the last source revision whose record is complete in the log.
	Revision int64
	// Complete reports whether the log ends at a record boundary from which
	// the same generation can continue. False for an empty log, a record whose
	// last part is missing, and an unfinished snapshot.
	Complete bool
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
	f, err := DecodeFrame(msg.Data)
	if err != nil {
		return untrusted, fmt.Errorf("read stream tail at seq %d: %w", msg.Sequence, err)
	}
	if err := ring.Verify(f, msg.Sequence-1); err != nil {
		return untrusted, fmt.Errorf("read stream tail at seq %d: %w", msg.Sequence, err)
	}
	t := Tail{Seq: msg.Sequence, StreamLastSeq: max(info.State.LastSeq, msg.Sequence), Kind: f.Kind}
	if t.ClusterID, err = strconv.ParseUint(msg.Header.Get(HeaderCluster), 16, 64); err != nil {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: header %s: %w", msg.Sequence, HeaderCluster, err)
	}
	if t.Generation, err = strconv.ParseUint(msg.Header.Get(HeaderGeneration), 10, 64); err != nil {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: header %s: %w", msg.Sequence, HeaderGeneration, err)
	}
	if t.Revision, err = strconv.ParseInt(msg.Header.Get(HeaderRevision), 10, 64); err != nil {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: header %s: %w", msg.Sequence, HeaderRevision, err)
	}
	if part := msg.Header.Get(HeaderPart); part != strings.TrimSpace(fmt.Sprintf("%d/%d", f.Part, f.Parts)) {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: header %s %q disagrees with frame part %d/%d", msg.Sequence, HeaderPart, part, f.Part, f.Parts)
	}
	last := f.Part == f.Parts-1
	switch f.Kind {
	case KindRevision, KindSnapshotEnd:
		t.Complete = last
		if !last {
			t.Revision-- // the tail revision itself is incomplete
		}
	case KindEpoch:
		t.Complete = t.Revision > 0
	default:
		t.Complete = false
	}
	return t, nil
}
