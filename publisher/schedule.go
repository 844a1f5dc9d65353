package publisher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/streams"
)

// lastSnapshotTime returns the start time of the newest snapshot record on
// subject (snapshot-begin or snapshot-end) of generation gen of cluster
// clusterID, or the zero time when the stream holds none. Every record of
// a snapshot carries the snapshot's start time.
func (p *Publisher) lastSnapshotTime(ctx context.Context, stream jetstream.Stream, subject string, clusterID, gen uint64) (time.Time, error) {
	msg, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read the newest %s: %w", subject, err)
	}
	if msg.Header.Get(streams.HeaderCluster) != strconv.FormatUint(clusterID, 16) ||
		msg.Header.Get(streams.HeaderGeneration) != strconv.FormatUint(gen, 10) {
		return time.Time{}, nil // of an earlier history: no base for this one
	}
	f, err := streams.DecodeFrame(msg.Data)
	if err != nil {
		return time.Time{}, fmt.Errorf("read the newest %s at seq %d: %w", subject, msg.Sequence, err)
	}
	if p.cfg.LogKeys.Verify(f, msg.Subject, msg.Sequence-1) != nil {
		return time.Time{}, nil // a snapshot that fails its MAC is no base
	}
	var a streams.Assembler
	rec, done, err := a.Add(f)
	if err != nil || !done {
		return time.Time{}, fmt.Errorf("read the newest %s at seq %d: a record of %d parts: %w", subject, msg.Sequence, f.Parts, err)
	}
	return rec.Time, nil
}

// snapshotAge returns the seconds since the newest complete snapshot of
// the stream started (NaN before one is known).
func (p *Publisher) snapshotAge() float64 {
	ns := p.snapshotDone.Load()
	if ns == 0 {
		return nan
	}
	return time.Since(time.Unix(0, ns)).Seconds()
}
