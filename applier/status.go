package applier

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	// When the stream is a mirror, it is at least the time since the
	// mirror last heard from its origin (what the standby knows is no
	// newer than that), so a stalled link never reads as lag 0.
	LagSeconds float64 `json:"lag_seconds"`
	// OriginUnknown is set when the stream is a mirror that has not heard
	// from its origin since its server started: the lag against the
	// origin is unknown.
	OriginUnknown bool `json:"origin_unknown,omitempty"`
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
	Generation uint64 `json:"generation,string"`
	Revision   int64  `json:"revision"`
	// Mirror is set when the stream is a mirror (the standby site's copy
	// of the primary's log): how far it is behind its origin.
	Mirror *MirrorStatus `json:"mirror,omitempty"`
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

// MirrorStatus is the link from a mirror stream to its origin (the
// primary site's log) as the mirror's server reports it.
type MirrorStatus struct {
	// Origin is the mirrored stream and OriginDomain its JetStream domain.
	Origin       string `json:"origin"`
	OriginDomain string `json:"origin_domain,omitempty"`
	// OriginLagMessages is how many origin messages the mirror has not
	// yet copied, as of its last contact with the origin (not updated
	// while the link is down).
	OriginLagMessages uint64 `json:"origin_lag_messages"`
	// LastContactSeconds is the time since the mirror last heard from its
	// origin (a message or a heartbeat, about every second while the link
	// works); -1 when it never has since its server started.
	LastContactSeconds float64 `json:"last_contact_seconds"`
	// Error is the error the server reports for the mirror, if any.
	Error string `json:"error,omitempty"`
}

// mirrorStatus returns the status of the mirror described by info (nil
// when the stream is not a mirror).
func mirrorStatus(info *jetstream.StreamInfo) *MirrorStatus {
	c, m := info.Config.Mirror, info.Mirror
	if c == nil {
		return nil
	}
	ms := &MirrorStatus{Origin: c.Name, OriginDomain: c.Domain, LastContactSeconds: -1}
	if ext := c.External; ms.OriginDomain == "" && ext != nil {
		// The client turns a domain into the API prefix $JS.<domain>.API.
		if d, ok := strings.CutPrefix(ext.APIPrefix, "$JS."); ok {
			ms.OriginDomain, _ = strings.CutSuffix(d, ".API")
		}
	}
	if m == nil {
		return ms
	}
	ms.OriginLagMessages = m.Lag
	if m.Active >= 0 {
		ms.LastContactSeconds = m.Active.Seconds()
	}
	if m.Error != nil {
		ms.Error = m.Error.Error()
	}
	return ms
}

// SnapshotRef locates a snapshot in the stream.
type SnapshotRef struct {
	Seq        uint64    `json:"seq"`
	Generation uint64    `json:"generation,string"`
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
		st.addOriginLag()
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
	st.addOriginLag()
	return st, nil
}

// addOriginLag measures the lag against the origin when the stream is a
// mirror: the messages the mirror has not copied count as waiting, and
// the standby is behind by at least the time since the mirror last heard
// from its origin.
func (st *Status) addOriginLag() {
	if st.Stream == nil || st.Stream.Mirror == nil {
		return
	}
	m := st.Stream.Mirror
	st.LagMessages += m.OriginLagMessages
	if m.LastContactSeconds < 0 {
		st.OriginUnknown = true
		return
	}
	st.LagSeconds = max(st.LagSeconds, m.LastContactSeconds)
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
	s.Mirror = mirrorStatus(info)
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
