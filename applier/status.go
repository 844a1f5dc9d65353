package applier

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/streams"
)

// Status is the pipeline as the standby sees it: its stream and its checkpoint.
type Status struct {
	// Stream is nil when the stream was not checked (no JetStream given):
	// then StreamChecked is false and the lag is unknown (the Lag fields
	// are 0, LagRevisions -1), never "no lag".
	Stream        *StreamStatus `json:"stream,omitempty"`
	StreamChecked bool          `json:"stream_checked"`
	Checkpoint    *Checkpoint   `json:"checkpoint,omitempty"` // nil: never applied anything
	// State is one of "following", "bootstrapping" (a snapshot is being
	// applied), "waiting" (nothing applied yet), "refilling" (the stream
	// ends before the checkpoint, e.g. a mirror refilling from seq 1: the
	// applier waits for it), "stopped" (on an error that needs an operator:
	// Checkpoint.Stopped says which), "promoted".
	State string `json:"state"`
	// LagMessages counts stream messages not yet applied.
	LagMessages uint64 `json:"lag_messages"`
	// LagRevisions is the stream's newest source revision minus the
	// checkpoint's (same generation only; -1 when not comparable).
	LagRevisions int64 `json:"lag_revisions"`
	// LagSeconds is 0 when everything in the stream is applied, otherwise
	// the time since the publisher observed the last applied revision.
	LagSeconds float64 `json:"lag_seconds"`
	// HalfApplied is set when the revision after the checkpoint's is half
	// applied (the checkpoint's Partial marker).
	HalfApplied *HalfApplied `json:"half_applied,omitempty"`
}

// StreamStatus describes the log stream.
type StreamStatus struct {
	Name     string `json:"name"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Msgs     uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// Generation and Revision of the newest complete record (the publisher's position).
	Generation uint64 `json:"generation"`
	Revision   int64  `json:"revision"`
	// NewestSnapshot is the newest snapshot-begin in the stream, if any.
	NewestSnapshot *SnapshotRef `json:"newest_snapshot,omitempty"`
	// Authenticated reports that the messages read here (the log's last
	// message and the newest snapshot-begin) had their MACs checked
	// against a key ring (ReadVerifiedStatus); false: they were trusted
	// as they are.
	Authenticated bool `json:"authenticated"`
	// Unauthenticated lists, with a key ring, the messages read here whose
	// MAC does not verify (forged, altered, replayed at another position
	// or unsigned): nothing is taken from them, so Generation and Revision
	// are 0 when it is the last message, NewestSnapshot nil when it is the
	// snapshot's.
	Unauthenticated []string `json:"unauthenticated,omitempty"`
}

// SnapshotRef locates a snapshot in the stream.
type SnapshotRef struct {
	Seq        uint64    `json:"seq"`
	Generation uint64    `json:"generation"`
	Revision   int64     `json:"revision"`
	Stored     time.Time `json:"stored"`
}

// ReadStatus reads the stream (js may be nil when unreachable: Stream is
// nil and StreamChecked false) and the standby's checkpoint. It checks no
// MAC; see ReadVerifiedStatus.
func ReadStatus(ctx context.Context, standby *clientv3.Client, js jetstream.JetStream, stream, site, checkpointKey string) (Status, error) {
	return ReadVerifiedStatus(ctx, standby, js, stream, site, checkpointKey, nil)
}

// ReadVerifiedStatus is ReadStatus that checks the MACs of the stream's
// messages it reads (the last one, where the publisher is, and the newest
// snapshot-begin) against ring (nil: no check). A message that does not
// verify is not an error: it is listed in StreamStatus.Unauthenticated and
// nothing is taken from it, so a client that may write into the stream but
// holds no log key cannot make the standby look caught up or behind.
func ReadVerifiedStatus(ctx context.Context, standby *clientv3.Client, js jetstream.JetStream, stream, site, checkpointKey string, ring *streams.KeyRing) (Status, error) {
	var st Status
	ss := StreamStatus{Name: stream, Authenticated: ring != nil}
	if checkpointKey == "" {
		checkpointKey = Config{Stream: stream}.checkpointKey()
	}
	if js != nil {
		if err := ss.read(ctx, js, stream, streams.Subjects{Site: site}, ring); err != nil {
			return st, err
		}
		st.Stream, st.StreamChecked = &ss, true
	}
	ck, rev, err := ReadCheckpoint(ctx, standby, checkpointKey)
	if err != nil {
		return st, err
	}
	switch {
	case rev == 0:
		st.State = "waiting"
		st.LagMessages = ss.Msgs
		st.LagRevisions = -1
		return st, nil
	case ck.Promoted:
		st.State = "promoted"
	case ck.Stopped != nil:
		st.State = "stopped"
	case ck.Snapshot != nil:
		st.State = "bootstrapping"
	case js != nil && st.Stream.LastSeq < ck.Position.Seq:
		st.State = "refilling"
	default:
		st.State = "following"
	}
	st.Checkpoint = &ck
	var logStream jetstream.Stream
	if js != nil {
		if s, err := js.Stream(ctx, stream); err == nil {
			logStream = s
		}
	}
	st.HalfApplied = halfApplied(ctx, logStream, &ck)
	if ss.LastSeq > ck.Position.Seq {
		st.LagMessages = ss.LastSeq - ck.Position.Seq
		if !ck.SourceTime.IsZero() {
			st.LagSeconds = time.Since(ck.SourceTime).Seconds()
		}
	}
	st.LagRevisions = -1
	if st.StreamChecked && ss.Generation == ck.Position.Generation && ck.Snapshot == nil {
		st.LagRevisions = max(ss.Revision-ck.Position.Revision, 0)
	}
	return st, nil
}

func (s *StreamStatus) read(ctx context.Context, js jetstream.JetStream, name string, subj streams.Subjects, ring *streams.KeyRing) error {
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", name, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", name, err)
	}
	s.FirstSeq, s.LastSeq, s.Msgs, s.Bytes = info.State.FirstSeq, info.State.LastSeq, info.State.Msgs, info.State.Bytes
	tail, err := streams.ReadVerifiedTail(ctx, stream, subj, ring)
	switch {
	case errors.Is(err, streams.ErrUnauthenticated):
		s.Unauthenticated = append(s.Unauthenticated, err.Error())
	case err != nil:
		return err
	default:
		s.Generation, s.Revision = tail.Generation, tail.Revision
	}
	m, err := stream.GetLastMsgForSubject(ctx, subj.SnapshotBegin())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find newest snapshot: %w", err)
	}
	if _, err := ring.DecodeVerified(m.Data, m.Subject, m.Sequence-1); errors.Is(err, streams.ErrUnauthenticated) {
		s.Unauthenticated = append(s.Unauthenticated, fmt.Sprintf("newest snapshot-begin at seq %d: %v", m.Sequence, err))
		return nil
	}
	rec, err := decodeSingle(m.Data)
	if err != nil {
		return fmt.Errorf("newest snapshot at seq %d: %w", m.Sequence, err)
	}
	s.NewestSnapshot = &SnapshotRef{Seq: m.Sequence, Generation: rec.Generation, Revision: rec.Revision, Stored: m.Time}
	return nil
}

// decodeSingle decodes a record that travels in one message (an epoch, a
// snapshot-begin).
func decodeSingle(data []byte) (streams.Record, error) {
	f, err := streams.DecodeFrame(data)
	if err != nil {
		return streams.Record{}, err
	}
	var a streams.Assembler
	rec, done, err := a.Add(f)
	if err != nil {
		return streams.Record{}, err
	}
	if !done {
		return streams.Record{}, fmt.Errorf("%s record split in parts: %w", f.Kind, streams.ErrCorrupt)
	}
	return rec, nil
}
