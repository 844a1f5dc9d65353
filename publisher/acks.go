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
// marker after a publish failed its expected-sequence check.
func (p *Publisher) whyRejected(ctx context.Context, stream jetstream.Stream, epochSeq uint64) error {
	last, err := stream.GetLastMsgForSubject(ctx, p.subj.Epoch())
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return errEpochGone
	case err != nil:
		return fmt.Errorf("read epoch marker after a rejected publish: %w", err)
	case last.Sequence != epochSeq:
		return fmt.Errorf("epoch marker at seq %d replaced ours at seq %d: %w", last.Sequence, epochSeq, ErrFenced)
	}
	return fmt.Errorf("publish rejected although our epoch marker (seq %d) is the newest", epochSeq)
}
