package publisher

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/streams"
)

// pending is one published message whose acknowledgement is outstanding.
type pending struct {
	fut  jetstream.PubAckFuture
	rec  streams.Position // position the record reaches once this part is stored
	last bool             // last part of its record
}

// checkAcks waits for acknowledgements in publish order. It returns the
// first error; ErrFenced when the stream rejected a message because a newer
// epoch exists.
func (p *Publisher) checkAcks(ctx context.Context, acks <-chan pending) error {
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
			if ack.Duplicate {
				// Every session starts exactly at the tail it fenced, so
				// this publisher never repeats a record of its own: a
				// duplicate means another publisher wrote it first.
				return fmt.Errorf("publish revision %d: stream already holds it (seq %d), written by another publisher: %w", pa.rec.Revision, ack.Sequence, ErrFenced)
			}
			if pa.last {
				pos := pa.rec
				pos.Seq = ack.Sequence
				p.published.Store(&pos)
				p.metrics.published(pos)
			}
		case err := <-pa.fut.Err():
			if streams.IsWrongLastSequence(err) {
				return fmt.Errorf("publish revision %d: %w", pa.rec.Revision, ErrFenced)
			}
			return fmt.Errorf("publish revision %d: %w", pa.rec.Revision, err)
		case <-timer.C:
			return fmt.Errorf("publish revision %d: no acknowledgement after %s", pa.rec.Revision, p.cfg.AckTimeout)
		}
	}
}
