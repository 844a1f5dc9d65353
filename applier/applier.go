package applier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// ErrPromoted is returned by Run when the standby has been promoted: the
// checkpoint carries the promoted marker and the applier must not write.
var ErrPromoted = errors.New("standby promoted: applier fenced")

// errStreamBehind means the stream holds nothing yet to decide whether it
// is the checkpoint's history (a mirror filling up) or a new one.
var errStreamBehind = errors.New("waiting for the stream")

// errNoSnapshot means the stream holds no snapshot the applier can use yet;
// one was requested from the publisher.
var errNoSnapshot = errors.New("the stream holds no usable snapshot yet; one was requested from the publisher")

// Applier replays the log into the standby etcd.
type Applier struct {
	cfg     Config
	etcd    *clientv3.Client
	js      jetstream.JetStream
	subj    streams.Subjects
	rules   *keyspace.Rules
	log     *slog.Logger
	metrics *metrics

	// State of the current session, re-read from the standby after any error.
	ck    Checkpoint // as last written
	ckRev int64      // mod revision of the checkpoint key (0: absent)
	// ckReadRev is the standby revision the session's checkpoint was read
	// at: the fence is watched from the next one (a checkpoint removed by
	// Demote leaves its promoted history behind it).
	ckReadRev int64
	work      Checkpoint // after everything handed to the transaction builder
	nextSeq   uint64
	// sessionStart is the first sequence of the session.
	sessionStart uint64
	asm          streams.Assembler
	txn          txnBuilder
	leases       leaseMap
	// progressAt is when the last snapshot progress line was logged.
	progressAt time.Time

	// reseed is set after a gap: the next session starts from the newest
	// snapshot after the checkpoint and applies it even in the same generation.
	reseed bool

	nc      *nats.Conn
	applied atomic.Pointer[Checkpoint]
	// pres is the presence key held while Run runs (nil: none yet).
	pres *presence
}

// New validates cfg and returns an Applier writing to etcd (the standby) and
// reading the log over nc. Metrics are registered on reg (nil: not registered).
func New(cfg Config, etcd *clientv3.Client, nc *nats.Conn, reg prometheus.Registerer) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("applier config: %w", err)
	}
	if etcd == nil || nc == nil {
		return nil, fmt.Errorf("applier: etcd client and nats connection are required")
	}
	rules, err := keyspace.New(cfg.Scope)
	if err != nil {
		return nil, fmt.Errorf("applier scope: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("applier: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Applier{cfg: cfg, etcd: etcd, js: js, nc: nc, subj: streams.Subjects{Site: cfg.Site}, rules: rules, log: log,
		metrics: newMetrics(reg), txn: txnBuilder{idx: map[string]int{}}, leases: leaseMap{etcd: etcd, m: map[int64]standbyLease{}}}, nil
}

// Rules returns the effective scope rules.
func (a *Applier) Rules() *keyspace.Rules { return a.rules }

// Applied returns the last checkpoint this applier wrote (zero before the first).
func (a *Applier) Applied() Checkpoint {
	if ck := a.applied.Load(); ck != nil {
		return *ck
	}
	return Checkpoint{}
}

// terminal reports errors that retrying from the checkpoint cannot fix.
func terminal(err error) bool {
	return errors.Is(err, ErrMassDelete) || errors.Is(err, ErrTooLarge) ||
		errors.Is(err, streams.ErrCorrupt) || errors.Is(err, ErrPromoted)
}

// Run applies the log until ctx is cancelled (returns nil) or an error that
// needs an operator: ErrMassDelete, ErrTooLarge, ErrPromoted or a corrupt
// message (streams.ErrCorrupt). A gap (ErrGap) or a revision of a history the
// standby has no base of (ErrNoBase) re-seeds: the applier restarts from the
// newest snapshot after its checkpoint, asking the publisher for one if the
// stream holds none. Other errors (unreachable
// servers, ErrConflict) restart from the durable checkpoint after a capped
// exponential backoff.
func (a *Applier) Run(ctx context.Context) error {
	if a.cfg.LogKeys == nil {
		a.log.Warn("the log is unauthenticated: without a log key ring (--log-key-file) anyone who can publish to the stream can write into the standby")
	} else {
		a.log.Info("log messages are authenticated", "signing_key", a.cfg.LogKeys.SigningKeyID(), "keys", a.cfg.LogKeys.IDs())
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = a.cfg.MinBackoff, a.cfg.MaxBackoff, 0
	bo.Reset() // start from InitialInterval, not the library default
	defer a.releasePresence()
	for {
		start := time.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if terminal(err) {
			a.metrics.stopped.Inc()
			return err
		}
		if errors.Is(err, ErrGap) || errors.Is(err, ErrNoBase) {
			// The log the standby needs is gone, or belongs to a history
			// the standby holds no base of: a snapshot makes it exact.
			a.log.Warn("cannot continue from the checkpoint: re-seeding from a snapshot", "err", err)
			a.metrics.gaps.Inc()
			a.reseed = true
			bo.Reset()
			continue
		}
		if time.Since(start) > time.Minute {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		if errors.Is(err, errNoSnapshot) {
			a.log.Info("waiting for a snapshot in the stream", "retry_in", wait)
		} else {
			a.metrics.errors.Inc()
			a.log.Warn("apply session ended, retrying from the checkpoint", "err", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Reset re-reads the checkpoint from the standby and positions the applier
// after it; it returns the first stream sequence to consume.
func (a *Applier) Reset(ctx context.Context) (uint64, error) {
	ck, rev, readRev, err := readCheckpoint(ctx, a.etcd, a.cfg.checkpointKey())
	if err != nil {
		return 0, err
	}
	if ck.Promoted {
		return 0, ErrPromoted
	}
	a.ck, a.ckRev, a.ckReadRev, a.work = ck, rev, readRev, ck
	if ck.Snapshot != nil {
		s := *ck.Snapshot
		a.work.Snapshot = &s
	}
	if ck.Partial != nil {
		p := *ck.Partial
		a.work.Partial = &p
	}
	a.asm.Reset()
	a.txn.reset()
	a.leases.reset()
	stream, err := a.js.Stream(ctx, a.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("open stream %s: %w", a.cfg.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", a.cfg.Stream, err)
	}
	start := ck.Position.Seq + 1
	recreated := false
	if ck.Position.Seq != 0 && info.State.LastSeq < ck.Position.Seq {
		// The stream ends before the checkpoint: either a mirror still
		// filling up to the origin's sequences (same history: wait for
		// it), or a recreated stream (another history: its sequences mean
		// nothing here).
		tail, err := streams.ReadTail(ctx, stream, a.subj)
		if err != nil {
			return 0, err
		}
		if tail.Seq == 0 {
			// Nothing to tell the two apart yet (an empty mirror, or a
			// new stream before its publisher's first snapshot): wait.
			return 0, fmt.Errorf("stream %s ends at seq %d before the checkpoint's %d and holds no record yet: %w",
				a.cfg.Stream, info.State.LastSeq, ck.Position.Seq, errStreamBehind)
		}
		recreated = tail.ClusterID != ck.Position.ClusterID || tail.Generation != ck.Position.Generation
	}
	if recreated {
		// The stream is shorter than the checkpoint: it was recreated (or
		// this checkpoint belongs to another stream). Its sequences mean
		// nothing here; any snapshot in it will do.
		a.log.Warn("the stream ends before the checkpoint (recreated?): re-seeding",
			"checkpoint_seq", ck.Position.Seq, "stream_last_seq", info.State.LastSeq)
		a.reseed = true
	}
	if info.State.FirstSeq > start && ck.Position.Seq != 0 {
		a.log.Warn("the stream no longer holds the messages after the checkpoint: re-seeding",
			"checkpoint_seq", ck.Position.Seq, "stream_first_seq", info.State.FirstSeq)
		a.metrics.gaps.Inc()
		a.reseed = true
	}
	if ck.Position.Seq == 0 || a.reseed {
		// Nothing applied yet, or the log after the checkpoint is gone:
		// start from the newest snapshot after the checkpoint.
		msg, err := stream.GetLastMsgForSubject(ctx, a.subj.SnapshotBegin())
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && ((msg.Sequence <= ck.Position.Seq && !recreated) || msg.Sequence < info.State.FirstSeq)):
			a.requestSnapshot(ctx)
			return 0, errNoSnapshot
		case err != nil:
			return 0, fmt.Errorf("find newest snapshot: %w", err)
		}
		start = msg.Sequence
		if a.reseed {
			a.log.Info("re-seeding from snapshot", "seq", start, "checkpoint", ck.Position.String())
		}
	}
	a.nextSeq, a.sessionStart = start, start
	return start, nil
}

// watchFence ends the session with ErrPromoted as soon as the checkpoint
// carries the promoted marker, so an idle applier learns it was fenced
// without waiting for its next transaction to fail.
func (a *Applier) watchFence(ctx context.Context, from int64) error {
	key := a.cfg.checkpointKey()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for {
		compacted := false
		for resp := range a.etcd.Watch(wctx, key, clientv3.WithRev(from)) {
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				compacted = true
				break
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch checkpoint %s: %w", key, err)
			}
			for _, ev := range resp.Events {
				if bytes.Contains(ev.Kv.Value, []byte(`"promoted":true`)) {
					return fmt.Errorf("checkpoint %s: %w", key, ErrPromoted)
				}
			}
		}
		if !compacted {
			return nil
		}
		// The standby compacted past the checkpoint's last change: look
		// at it now, then watch from there.
		resp, err := a.etcd.Get(wctx, key)
		if err != nil {
			return fmt.Errorf("read checkpoint %s: %w", key, err)
		}
		if len(resp.Kvs) > 0 && bytes.Contains(resp.Kvs[0].Value, []byte(`"promoted":true`)) {
			return fmt.Errorf("checkpoint %s: %w", key, ErrPromoted)
		}
		from = resp.Header.Revision + 1
	}
}

// bufferBytes bounds the bytes of messages pulled from the stream and not
// yet applied, twice: in the consumer's buffer and between reader and applier.
const bufferBytes = 16 << 20

// msgWeight is what a message holds of bufferBytes (a message larger than
// the bound holds all of it).
func msgWeight(data []byte) int64 { return min(int64(len(data))+64, bufferBytes) }

// lagEvery is how often the applier compares its position with the stream.
const lagEvery = 2 * time.Second

// monitorLag keeps the lag gauges true while nothing is applied: messages
// and revisions waiting in the stream, and, when some wait, the time since
// the publisher observed the last applied revision (so a stalled applier
// shows a growing lag, not its last apply latency).
func (a *Applier) monitorLag(ctx context.Context) {
	t := time.NewTicker(lagEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stream, err := a.js.Stream(ctx, a.cfg.Stream)
		if err != nil {
			continue
		}
		tail, err := streams.ReadTail(ctx, stream, a.subj)
		if err != nil {
			continue
		}
		ck := a.Applied()
		if ck.Position.Seq == 0 {
			continue
		}
		waiting := uint64(0)
		if tail.StreamLastSeq > ck.Position.Seq {
			waiting = tail.StreamLastSeq - ck.Position.Seq
		}
		a.metrics.lagMsgs.Set(float64(waiting))
		if tail.Generation == ck.Position.Generation && tail.ClusterID == ck.Position.ClusterID {
			a.metrics.lagRevs.Set(float64(max(tail.Revision-ck.Position.Revision, 0)))
		}
		if waiting > 0 && !ck.SourceTime.IsZero() {
			a.metrics.lag.Set(time.Since(ck.SourceTime).Seconds())
		}
	}
}

// requestSnapshot asks the publisher for a snapshot (best effort: the
// caller retries until one appears in the stream).
func (a *Applier) requestSnapshot(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := a.nc.RequestWithContext(rctx, a.subj.ControlSnapshot(), nil); err != nil {
		a.log.Warn("snapshot request not answered", "subject", a.subj.ControlSnapshot(), "err", err)
		return
	}
	a.log.Info("snapshot requested from the publisher", "subject", a.subj.ControlSnapshot())
}

// session consumes the stream from the checkpoint until an error.
func (a *Applier) session(ctx context.Context) error {
	// Announce this applier before reading the checkpoint: Demote either
	// sees it or this session reads what Demote wrote.
	presenceLost, err := a.holdPresence(ctx)
	if err != nil {
		return err
	}
	start, err := a.Reset(ctx)
	if err != nil {
		return err
	}
	cons, err := a.js.OrderedConsumer(ctx, a.cfg.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
	})
	if err != nil {
		return fmt.Errorf("consume stream %s from seq %d: %w", a.cfg.Stream, start, err)
	}
	// Bound what waits in memory by bytes: a snapshot chunk is up to
	// half a MiB, a revision message a few hundred bytes.
	it, err := cons.Messages(jetstream.PullMaxBytes(bufferBytes))
	if err != nil {
		return fmt.Errorf("consume stream %s from seq %d: %w", a.cfg.Stream, start, err)
	}
	a.log.Info("apply session started", "position", a.ck.Position.String(), "from_seq", start)
	g, gctx := errgroup.WithContext(ctx)
	stop := context.AfterFunc(gctx, it.Stop)
	defer stop()
	msgs := make(chan Msg, a.cfg.MaxBatchMessages)
	held := semaphore.NewWeighted(bufferBytes) // bytes read but not yet applied
	fenceFrom := a.ckReadRev + 1
	g.Go(func() error { return a.watchFence(gctx, fenceFrom) })
	g.Go(func() error { a.monitorLag(gctx); return nil })
	g.Go(func() error {
		select {
		case <-presenceLost:
			return errors.New("presence lease lost")
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error {
		for {
			m, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) && gctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("read stream %s: %w", a.cfg.Stream, err)
			}
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read stream %s: %w", a.cfg.Stream, err)
			}
			if err := held.Acquire(gctx, msgWeight(m.Data())); err != nil {
				return nil // cancelled
			}
			select {
			case msgs <- Msg{Seq: md.Sequence.Stream, Data: m.Data()}:
			case <-gctx.Done():
				return nil
			}
		}
	})
	g.Go(func() error {
		batch := make([]Msg, 0, a.cfg.MaxBatchMessages)
		for {
			select {
			case <-gctx.Done():
				return nil
			case m := <-msgs:
				batch = append(batch[:0], m)
			}
		drain:
			for len(batch) < a.cfg.MaxBatchMessages {
				select {
				case m := <-msgs:
					batch = append(batch, m)
				default:
					break drain
				}
			}
			err := a.ApplyBatch(gctx, batch)
			for _, m := range batch {
				held.Release(msgWeight(m.Data))
			}
			if err != nil {
				return err
			}
		}
	})
	err = g.Wait()
	if err == nil && ctx.Err() == nil {
		err = errors.New("consumer stopped")
	}
	return err
}
