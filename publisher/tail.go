package publisher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/streams"
)

// Tail describes the last message of the log.
type Tail struct {
	// Seq is the stream sequence of the last log message; 0 for an empty log.
	Seq        uint64
	Kind       streams.Kind
	ClusterID  uint64
	Generation uint64
	// Revision is the last source revision whose record is complete in the log.
	Revision int64
	// Complete reports whether the log ends at a record boundary from which
	// the same generation can continue. False for an empty log, a record whose
	// last part is missing, and an unfinished snapshot.
	Complete bool
}

// ReadTail reads the last message of the log stream.
func ReadTail(ctx context.Context, stream jetstream.Stream, subj streams.Subjects) (Tail, error) {
	msg, err := stream.GetLastMsgForSubject(ctx, subj.LogWildcard())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Tail{}, nil
	}
	if err != nil {
		return Tail{}, fmt.Errorf("read stream tail: %w", err)
	}
	f, err := streams.DecodeFrame(msg.Data)
	if err != nil {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: %w", msg.Sequence, err)
	}
	t := Tail{Seq: msg.Sequence, Kind: f.Kind}
	if t.ClusterID, err = strconv.ParseUint(msg.Header.Get(streams.HeaderCluster), 16, 64); err != nil {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: header %s: %w", msg.Sequence, streams.HeaderCluster, err)
	}
	if t.Generation, err = strconv.ParseUint(msg.Header.Get(streams.HeaderGeneration), 10, 64); err != nil {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: header %s: %w", msg.Sequence, streams.HeaderGeneration, err)
	}
	if t.Revision, err = strconv.ParseInt(msg.Header.Get(streams.HeaderRevision), 10, 64); err != nil {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: header %s: %w", msg.Sequence, streams.HeaderRevision, err)
	}
	if part := msg.Header.Get(streams.HeaderPart); part != strings.TrimSpace(fmt.Sprintf("%d/%d", f.Part, f.Parts)) {
		return Tail{}, fmt.Errorf("read stream tail at seq %d: header %s %q disagrees with frame part %d/%d", msg.Sequence, streams.HeaderPart, part, f.Part, f.Parts)
	}
	last := f.Part == f.Parts-1
	switch f.Kind {
	case streams.KindRevision, streams.KindSnapshotEnd:
		t.Complete = last
		if !last {
			t.Revision-- // the tail revision itself is incomplete
		}
	case streams.KindEpoch:
		t.Complete = t.Revision > 0
	default:
		t.Complete = false
	}
	return t, nil
}
