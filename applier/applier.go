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

// errStreamBehind means the stream ends before the checkpoint and is, or
// may yet turn out to be, the checkpoint's own history (a mirror filling
// up): the applier waits rather than re-seed from an older snapshot.
var errStreamBehind = errors.New("waiting for the stream to reach the checkpoint")

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
	// vmetrics are the verification metrics.
	vmetrics *verifyMetrics

	// State of the current session, re-read from the standby after any error.
	ck    Checkpoint // as last written
	ckRev int64      // mod revision of the checkpoint key (0: absent)
	// ckReadRev is the standby revision the session's checkpoint was read
	// at: the fence is watched from the next one (a checkpoint removed by
	// Demote leaves its promoted history behind it).
	ckReadRev int64
	work      Checkpoint // after everything handed to the transaction builder
	nextSeq   uint64
	asm       streams.Assembler
	txn       txnBuilder
	leases    leaseMap
	// progressAt is when the last snapshot progress line was logged.
	progressAt time.Time

	// reseed is set after a gap: the next session starts from the newest
	// snapshot after the checkpoint and applies it even in the same generation.
	reseed bool

	nc      *nats.Conn
	applied atomic.Pointer[Checkpoint]
	// pres is the presence key held while Run runs (nil: none yet).
	pres *presence
	// scopePrefix is the publisher prefix in the scope record (nil: not known).
	scopePrefix *string
	// shadow is the in-scope digest of a snapshot the applier skips
	// because it stands exactly at its revision (a periodic snapshot of
	// the history it follows), gathered from its chunks: at the snapshot's
	// end it gives the checkpoint a digest it lacks, or checks the one it
	// has against the log (nil: none being gathered).
	shadow *shadowDigest
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
		metrics: newMetrics(reg), vmetrics: newVerifyMetrics(reg), txn: txnBuilder{idx: map[string]int{}}, leases: leaseMap{etcd: etcd, m: map[int64]standbyLease{}}}, nil
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
		errors.Is(err, streams.ErrCorrupt) || errors.Is(err, ErrPromoted) ||
		errors.Is(err, streams.ErrNewerFormat)
}

// Run applies the log until ctx is cancelled (returns nil) or an error that
// needs an operator: ErrMassDelete, ErrTooLarge, ErrPromoted, a corrupt
// message (streams.ErrCorrupt) or one written by a newer etcdsync
// (streams.ErrNewerFormat). A gap (ErrGap) or a revision of a history the
// standby has no base of (ErrNoBase) re-seeds: the applier restarts from the
// newest snapshot after its checkpoint, asking the publisher for one if the
// stream holds none. A stream that ends before the checkpoint in the
// checkpoint's own history (a mirror refilling), or whose newest snapshot is
// older than the checkpoint, is waited for (logged, and shown by the
// etcdsync_applier_waiting_for_* gauges) unless Config.Reseed. Other errors
// (unreachable servers, ErrConflict) restart from the durable checkpoint
// after a capped exponential backoff.
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
	// The lag gauges are kept for the whole run, not per session: a
	// session that restarts while the standby stalls blocks in its first
	// write, and the gauges must still show the stall.
	lctx, lcancel := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	verifyDone := make(chan struct{})
	go func() { defer close(lagDone); a.monitorLag(lctx) }()
	go func() { defer close(verifyDone); a.monitorDigest(lctx) }()
	defer func() { lcancel(); <-lagDone; <-verifyDone }()
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
		switch {
		case errors.Is(err, errStreamBehind):
			a.log.Warn("waiting for the stream to reach the checkpoint", "err", err, "retry_in", wait)
		case errors.Is(err, errNoSnapshot):
			a.log.Info("waiting for a snapshot in the stream", "err", err, "retry_in", wait)
		default:
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
// after it; it returns the first stream sequence to consume. While the
// stream ends before the checkpoint in the checkpoint's own history, or
// holds no snapshot a needed re-seed can use (none, or only ones older than
// the checkpoint without Config.Reseed), it returns an error and Run waits
// and calls it again.
func (a *Applier) Reset(ctx context.Context) (uint64, error) {
	ck, rev, readRev, err := readCheckpoint(ctx, a.etcd, a.cfg.checkpointKey())
	if err != nil {
		return 0, err
	}
	if ck.Promoted {
		return 0, ErrPromoted
	}
	a.ck, a.ckRev, a.ckReadRev, a.work = ck, rev, readRev, ck
	a.work.Digest = a.resumeDigest(ck.Digest)
	a.shadow = nil
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
		// filling up to the origin's sequences (the standby site's NATS
		// lost its store and the mirror refills from seq 1: same history,
		// wait for it), or a recreated stream (another history: its
		// sequences mean nothing here).
		tail, err := streams.ReadTail(ctx, stream, a.subj)
		if err != nil {
			return 0, err
		}
		if tail.Seq == 0 {
			// Nothing to tell the two apart yet (an empty mirror, or a
			// new stream before its publisher's first snapshot): wait.
			a.metrics.waitFor(ck.Position.Seq, false)
			return 0, fmt.Errorf("stream %s ends at seq %d before the checkpoint's %d and holds no record yet: %w",
				a.cfg.Stream, info.State.LastSeq, ck.Position.Seq, errStreamBehind)
		}
		cluster, gen, rev := ck.history()
		if tail.ClusterID == cluster && tail.Generation <= gen {
			// The checkpoint's own history, not yet at the checkpoint (a
			// recreated stream starts a generation above every earlier
			// one). Re-seeding from what it holds would roll the standby
			// back: wait, unless the operator asked for it.
			if !a.cfg.Reseed {
				a.metrics.waitFor(ck.Position.Seq, false)
				return 0, fmt.Errorf("stream %s ends at seq %d (generation %d, revision %d) before the checkpoint's seq %d (generation %d, revision %d) in the same history: a mirror refilling? %w",
					a.cfg.Stream, info.State.LastSeq, tail.Generation, tail.Revision, ck.Position.Seq, gen, rev, errStreamBehind)
			}
			a.log.Warn("the stream ends before the checkpoint in the same history: re-seeding from its newest snapshot as asked (reseed), rolling the standby back",
				"checkpoint", ck.Position.String(), "stream_last_seq", info.State.LastSeq, "stream_generation", tail.Generation, "stream_revision", tail.Revision)
		} else {
			a.log.Warn("the stream ends before the checkpoint and holds another history (recreated?): re-seeding",
				"checkpoint", ck.Position.String(), "stream_last_seq", info.State.LastSeq, "stream_generation", tail.Generation)
		}
		// Its sequences mean nothing here; any snapshot in it will do.
		recreated = true
		a.reseed = true
	}
	if !recreated && ck.Snapshot != nil && ck.Snapshot.BeginSeq >= info.State.FirstSeq && ck.Snapshot.BeginSeq <= info.State.LastSeq {
		// A snapshot half applied: the stream must still hold its begin
		// record where it was, or the rest of the stream is another
		// history (recreated) and continuing would mix the two.
		same, err := a.holdsSnapshotBegin(ctx, stream, ck.Snapshot)
		if err != nil {
			return 0, err
		}
		if !same {
			a.log.Warn("the stream no longer holds the snapshot being applied (recreated?): re-seeding",
				"checkpoint", ck.Position.String(), "snapshot_begin_seq", ck.Snapshot.BeginSeq,
				"snapshot_generation", ck.Snapshot.Generation, "snapshot_revision", ck.Snapshot.Revision)
			recreated = true
			a.reseed = true
		}
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
			a.metrics.waitFor(0, true)
			return 0, errNoSnapshot
		case err != nil:
			return 0, fmt.Errorf("find newest snapshot: %w", err)
		}
		snap, err := decodeSingle(msg.Data)
		if err != nil {
			return 0, fmt.Errorf("newest snapshot at seq %d: %w", msg.Sequence, err)
		}
		if ck.olderThan(&snap) {
			// Re-seeding from it would roll the standby back.
			if !a.cfg.Reseed {
				a.requestSnapshot(ctx)
				a.metrics.waitFor(0, true)
				return 0, fmt.Errorf("newest snapshot (seq %d, generation %d, revision %d) is older than the checkpoint %s: %w",
					msg.Sequence, snap.Generation, snap.Revision, ck.Position, errNoSnapshot)
			}
			a.log.Warn("re-seeding from a snapshot older than the checkpoint as asked (reseed), rolling the standby back",
				"checkpoint", ck.Position.String(), "snapshot_generation", snap.Generation, "snapshot_revision", snap.Revision, "seq", msg.Sequence)
		}
		start = msg.Sequence
		if a.reseed {
			a.log.Info("re-seeding from snapshot", "seq", start, "checkpoint", ck.Position.String())
		}
	}
	a.metrics.waitFor(0, false)
	a.nextSeq = start
	return start, nil
}

// holdsSnapshotBegin reports whether the stream holds the begin record of
// snapshot s at s.BeginSeq (a message deleted there counts as held: nothing
// says the stream is another one).
func (a *Applier) holdsSnapshotBegin(ctx context.Context, stream jetstream.Stream, s *SnapshotState) (bool, error) {
	m, err := stream.GetMsg(ctx, s.BeginSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read snapshot begin at seq %d: %w", s.BeginSeq, err)
	}
	rec, err := decodeSingle(m.Data)
	if err != nil {
		return false, nil // not a single-message record: not the begin
	}
	return rec.Kind == streams.KindSnapshotBegin && rec.ClusterID == s.ClusterID && rec.Generation == s.Generation && rec.Revision == s.Revision, nil
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
// shows a growing lag, not its last apply latency); when the stream is a
// mirror, the time since it last heard from its origin and the messages
// it has not copied (so a stalled link between the sites shows, though
// the applier has applied all the mirror holds).
func (a *Applier) monitorLag(ctx context.Context) {
	t := time.NewTicker(lagEvery)
	defer t.Stop()
	behind := false // the stream ended before the checkpoint at the last look
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
		a.metrics.observeMirror(mirrorStatus(stream.CachedInfo()))
		tail, err := streams.ReadTail(ctx, stream, a.subj)
		if err != nil {
			continue
		}
		ck := a.Applied()
		if ck.Position.Seq == 0 {
			continue
		}
		if tail.StreamLastSeq < ck.Position.Seq {
			// The stream lost its store under the session (a mirror
			// refilling from seq 1): the consumer waits for the sequence
			// after the checkpoint; say so.
			if !behind {
				a.log.Warn("waiting for the stream to reach the checkpoint", "stream_last_seq", tail.StreamLastSeq,
					"checkpoint", ck.Position.String())
			}
			behind = true
			a.metrics.waitFor(ck.Position.Seq, false)
			continue
		}
		if behind {
			behind = false
			a.metrics.waitFor(0, false)
			a.log.Info("the stream reached the checkpoint", "stream_last_seq", tail.StreamLastSeq, "checkpoint", ck.Position.String())
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
	if err := a.recordScope(ctx, "", false); err != nil {
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
			case msgs <- Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data()}:
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
