package publisher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/streams"
)

// pending is one published message whose acknowledgement is outstanding.
type pending struct {
	fut  jetstream.PubAckFuture
	rec  streams.Position // position the record reaches once this part is stored
	last bool             // last part of its record
	// snapshotStart is the snapshot's start time on the last part of a
	// snapshot-end (zero otherwise).
	snapshotStart time.Time
}

// checkAcks waits for acknowledgements in publish order. It returns the
// first error; ErrFenced when the stream rejected a message because a newer
// epoch exists.
func (p *Publisher) checkAcks(ctx context.Context, acks <-chan pending, stream jetstream.Stream, epochSeq uint64) error {
	timer := time.NewTimer(p.cfg.AckTimeout)
	defer timer.Stop()
	for {
		var pa pending
		select {
		case <-ctx.Done():
			return nil
		case x, ok := <-acks:
			if !ok {
				return nil
			}
			pa = x
		}
		timer.Reset(p.cfg.AckTimeout)
		select {
		case <-ctx.Done():
			return nil
		case ack := <-pa.fut.Ok():
			p.writing()
			if ack.Duplicate {
				// Every session starts exactly at the tail it fenced, so
				// this publisher never repeats a record of its own: a
				// duplicate means another publisher wrote it first.
				return fmt.Errorf("publish revision %d: stream already holds message %s (seq %d), written by another publisher: %w",
					pa.rec.Revision, pa.fut.Msg().Header.Get(nats.MsgIdHdr), ack.Sequence, ErrFenced)
			}
			if pa.last {
				pos := pa.rec
				pos.Seq = ack.Sequence
				p.published.Store(&pos)
				p.metrics.published(pos)
				if !pa.snapshotStart.IsZero() {
					p.snapshotDone.Store(pa.snapshotStart.UnixNano())
				}
			}
		case err := <-pa.fut.Err():
			if streams.IsWrongLastSequence(err) {
				return fmt.Errorf("publish revision %d: %w", pa.rec.Revision, p.whyRejected(ctx, stream, epochSeq))
			}
			return fmt.Errorf("publish revision %d: %w", pa.rec.Revision, err)
		case <-timer.C:
			return fmt.Errorf("publish revision %d: no acknowledgement after %s", pa.rec.Revision, p.cfg.AckTimeout)
		}
	}
}

// errEpochGone means the stream no longer holds this session's epoch marker
// (retention or a purge removed it), so the fencing check failed although no
// other publisher took over. The next session writes a new marker.
var errEpochGone = errors.New("epoch marker no longer in the stream")

// whyRejected tells fencing (a newer epoch marker exists) from a lost
// marker after a publish failed its expected-sequence check. Only a marker
// that verifies against the key ring fences: anyone who may publish on the
// log subjects can write on the epoch subject, and a message there that is
// no authenticated marker ends the session with an ordinary error (wrapping
// streams.ErrUnauthenticated when the publisher has a key ring), after
// which the next session starts from the tail (a new generation after a
// tail it cannot trust). A genuine marker written after ours still fences
// when a forged message follows it.
func (p *Publisher) whyRejected(ctx context.Context, stream jetstream.Stream, epochSeq uint64) error {
	last, err := stream.GetLastMsgForSubject(ctx, p.subj.Epoch())
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return errEpochGone
	case err != nil:
		return fmt.Errorf("read epoch marker after a rejected publish: %w", err)
	case last.Sequence == epochSeq:
		return fmt.Errorf("publish rejected although our epoch marker (seq %d) is the newest", epochSeq)
	}
	untrusted := p.verifyEpoch(last)
	if untrusted == nil {
		return fmt.Errorf("epoch marker at seq %d replaced ours at seq %d: %w", last.Sequence, epochSeq, ErrFenced)
	}
	// The newest message on the epoch subject is no marker: look for a
	// genuine one between ours and it.
	for seq := epochSeq + 1; seq < last.Sequence; {
		msg, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(p.subj.Epoch()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("read epoch markers after ours (seq %d): %w", epochSeq, err)
		}
		if msg.Sequence >= last.Sequence {
			break
		}
		if p.verifyEpoch(msg) == nil {
			return fmt.Errorf("epoch marker at seq %d replaced ours at seq %d: %w", msg.Sequence, epochSeq, ErrFenced)
		}
		seq = msg.Sequence + 1
	}
	// With a key ring the cause wraps streams.ErrUnauthenticated (a frame
	// claiming a newer version too: it proves no more than other unverified
	// bytes); the session ends and the next one judges the tail.
	return fmt.Errorf("the newest message on %s (seq %d, after our epoch marker at seq %d) is no marker of this log, not a fence: %w",
		p.subj.Epoch(), last.Sequence, epochSeq, untrusted)
}

// verifyEpoch returns nil when msg, a message on the epoch subject, is a
// frame with a valid MAC at its place in the stream (with no key ring: any
// well-formed frame), and why not otherwise. The MAC covers the subject, so
// a verified frame there is an epoch marker.
func (p *Publisher) verifyEpoch(msg *jetstream.RawStreamMsg) error {
	_, err := p.cfg.LogKeys.DecodeVerified(msg.Data, msg.Subject, msg.Sequence-1)
	return err
}
