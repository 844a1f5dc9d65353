package publisher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/metadata"

	"github.com/etcdsync/etcdsync/streams"
)

// errNewGeneration ends a session whose history broke (etcd compacted past
// the position the watch needs); the next session starts a new generation.
var errNewGeneration = errors.New("continuity lost")

// Publisher watches the source etcd and publishes its revisions.
type Publisher struct {
	cfg     Config
	etcd    *clientv3.Client
	js      jetstream.JetStream
	subj    streams.Subjects
	log     *slog.Logger
	metrics *metrics

	nc        *nats.Conn
	leases    leaseTTLs
	requests  chan struct{} // snapshot requests from appliers (buffer 1)
	published atomic.Pointer[streams.Position]
	// snapshotDone is the start time (unix ns) of the newest snapshot whose
	// snapshot-end the stream acknowledged (0: none known yet).
	snapshotDone atomic.Int64
	// forceReason, when set, makes the next session start a new generation.
	forceReason string
	// warnedStream is the last difference between the stream's settings
	// and the publish flags that was logged (logged again only if it changes).
	warnedStream string
	// failing is why the last session ended, until the stream acknowledges
	// a write again (nil: writes are acknowledged); see Ready.
	failing atomic.Pointer[string]
}

// New validates cfg and returns a Publisher that reads from etcd and
// publishes over nc. Metrics are registered on reg (nil: not registered).
func New(cfg Config, etcd *clientv3.Client, nc *nats.Conn, reg prometheus.Registerer) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("publisher config: %w", err)
	}
	if etcd == nil || nc == nil {
		return nil, fmt.Errorf("publisher: etcd client and nats connection are required")
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.Window*2),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p := &Publisher{cfg: cfg, etcd: etcd, js: js, nc: nc, subj: streams.Subjects{Site: cfg.Stream.Site}, log: log,
		requests: make(chan struct{}, 1), leases: leaseTTLs{etcd: etcd, m: map[int64]leaseTTL{}}}
	p.metrics = newMetrics(reg, p.snapshotAge, cfg.SnapshotInterval)
	return p, nil
}

// Ready returns nil while the publisher's writes are acknowledged, or why
// they are not: the error that ended its last session (a full store or
// disk, a stream limit, an unreachable etcd) until the stream acknowledges
// a write again. /readyz reports it.
func (p *Publisher) Ready() error {
	if why := p.failing.Load(); why != nil {
		return fmt.Errorf("not publishing: %s", *why)
	}
	return nil
}

// writing records that the stream acknowledged a write.
func (p *Publisher) writing() {
	if p.failing.Load() != nil {
		p.failing.Store(nil)
	}
}

// Published returns the last position acknowledged by the stream (zero
// before the first acknowledgement).
func (p *Publisher) Published() streams.Position {
	if pos := p.published.Load(); pos != nil {
		return *pos
	}
	return streams.Position{}
}

// Run publishes until ctx is cancelled (returns nil), the publisher is
// fenced (returns an error wrapping ErrFenced), the log stream is a
// mirror (an error wrapping ErrMirrorStream), or its tail was written by a
// newer etcdsync (streams.ErrNewerFormat). Every other error ends the
// current session; the next one starts from the stream tail after a capped
// exponential backoff.
func (p *Publisher) Run(ctx context.Context) error {
	if p.cfg.LogKeys == nil {
		p.log.Warn("the log is unauthenticated: without a log key ring (--log-key-file) anyone who can publish to the stream can write into the standby")
	} else {
		p.log.Info("log messages are authenticated", "signing_key", p.cfg.LogKeys.SigningKeyID(), "keys", p.cfg.LogKeys.IDs())
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = p.cfg.MinBackoff, p.cfg.MaxBackoff, 0
	bo.Reset() // start from InitialInterval, not the library default
	for {
		start := time.Now()
		err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrFenced) || errors.Is(err, ErrMirrorStream) || errors.Is(err, ErrRetention) {
			return err
		}
		if errors.Is(err, streams.ErrNewerFormat) {
			// A newer publisher wrote the tail: resuming or starting a new
			// generation over it would downgrade the log.
			return fmt.Errorf("stream tail: %w: upgrade this publisher", err)
		}
		why := err.Error()
		p.failing.Store(&why)
		if errors.Is(err, errNewGeneration) {
			p.log.Warn("source history broken, the next session starts a new generation", "err", err)
			bo.Reset()
			continue
		}
		p.metrics.errors.Inc()
		if time.Since(start) > time.Minute {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		p.log.Warn("publish session ended, retrying from the stream tail", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// session runs one publishing session: read the tail, write an epoch,
// publish a snapshot if continuity is lost, then follow the watch.
func (p *Publisher) session(ctx context.Context) error {
	stream, differs, err := streams.OpenLogStream(ctx, p.js, p.cfg.Stream, p.cfg.MaxMessageBytes)
	if err != nil {
		return err
	}
	if age := stream.CachedInfo().Config.MaxAge; age > 0 && (p.cfg.SnapshotInterval == 0 || p.cfg.SnapshotInterval >= age) {
		return fmt.Errorf("stream %s keeps messages for %s, not longer than the snapshot interval %s: it would lose its last complete snapshot; raise its max age (etcdsync streams init) or lower --snapshot-interval: %w",
			p.cfg.Stream.Name, age, p.cfg.SnapshotInterval, ErrRetention)
	}
	if d := strings.Join(differs, ", "); d != "" && d != p.warnedStream {
		p.warnedStream = d
		p.log.Warn("the log stream's settings differ from the publish flags; the stream's are kept (change them with etcdsync streams init)",
			"stream", p.cfg.Stream.Name, "differs", d)
	}
	tail, err := streams.ReadVerifiedTail(ctx, stream, p.subj, p.cfg.LogKeys)
	untrustedTail := errors.Is(err, streams.ErrCorrupt)
	if untrustedTail {
		// The tail cannot say where to resume (forged, written before the
		// log was signed, or by an older frame version): a new generation
		// that trusts nothing of it.
		p.log.Warn("the stream's tail cannot be trusted: starting a new generation", "err", err)
	} else if err != nil {
		return err
	}
	// Step 1: where is the source now?
	resp, err := p.etcd.Get(ctx, p.probeKey(), clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("read source revision: %w", err)
	}
	clusterID, curRev := resp.Header.ClusterId, resp.Header.Revision
	p.metrics.sourceRev.Set(float64(curRev))

	// Step 2: can this generation continue?
	reason := p.forceReason
	switch {
	case tail.Seq == 0:
		reason = ReasonFirstStart
	case untrustedTail:
		reason = fmt.Sprintf("%s: the message at the stream tail (seq %d) is unreadable or fails its MAC check", ReasonContinuity, tail.Seq)
	case tail.ClusterID != clusterID:
		reason = fmt.Sprintf("%s: source cluster changed from %x to %x", ReasonContinuity, tail.ClusterID, clusterID)
	case !tail.Complete && tail.Kind == streams.KindEpoch:
		reason = fmt.Sprintf("%s: the stream ends in the epoch of a generation that never published its snapshot (seq %d)", ReasonContinuity, tail.Seq)
	case curRev < tail.Revision:
		reason = fmt.Sprintf("%s: source revision %d is behind the stream's %d (restored etcd?)", ReasonContinuity, curRev, tail.Revision)
	}
	// Step 2b: does the source still hold the history the log describes?
	// A restored etcd keeps its cluster ID and, restored with
	// --bump-revision, is ahead of the tail: the keys of the newest record
	// with events, read at the tail's revision, must be as the log left them.
	var proof witness
	if reason == "" {
		if proof, err = p.lastWitness(ctx, stream, tail); err != nil {
			return err
		}
		var broken *historyBroken
		switch err := p.verify(ctx, clusterID, proof); {
		case proof.isZero():
			reason = fmt.Sprintf("%s: no record with keys within %d messages of the stream's tail (seq %d) proves the source's history", ReasonContinuity, maxWitnessScan, tail.Seq)
		case errors.As(err, &broken):
			reason = ReasonContinuity + ": " + broken.evidence
		case errors.Is(err, errWitnessCompacted):
			// Nothing to prove it by: a watch from a compacted revision
			// fails by itself and starts a new generation.
			p.log.Info("continuity not proven: the source compacted the stream's tail revision", "revision", proof.at)
		case err != nil:
			return err
		}
	}
	// Step 2c: the keyspace digest at the tail's revision: the tail
	// record's, proven by a rescan of the source, or the rescan's own when
	// the tail carries none (a record of an older etcdsync, an unfinished
	// record or snapshot).
	var dg keyspaceDigest
	if reason == "" {
		got, err := p.scanDigest(ctx, tail.Revision)
		var broken *historyBroken
		switch {
		case errors.As(err, &broken):
			p.metrics.mismatches.Inc()
			reason = ReasonContinuity + ": " + broken.evidence
		case errors.Is(err, errWitnessCompacted):
			// The watch from the tail fails by itself and starts a new
			// generation; until then no digest is published.
			p.log.Info("keyspace digest not proven: the source compacted the stream's tail revision", "revision", tail.Revision)
		case err != nil:
			return err
		case tail.Digested:
			if err := p.checkDigest(tail.Revision, tail.Digest, got); errors.As(err, &broken) {
				reason = ReasonContinuity + ": " + broken.evidence
			} else {
				dg = keyspaceDigest{known: true, rev: tail.Revision, d: tail.Digest}
			}
		default:
			dg = keyspaceDigest{known: true, rev: tail.Revision, d: got.Digest}
		}
	}
	gen, resumeRev := tail.Generation, tail.Revision
	// A predecessor that died half-way through a record leaves the log
	// continuous: an unfinished revision is published again whole (the
	// tail's revision is the one before it), an unfinished snapshot is
	// taken again at its own revision, both in the same generation, so a
	// standby that follows the log applies no snapshot because of it.
	resnap := reason == "" && !tail.Complete && tail.Kind != streams.KindRevision
	switch {
	case tail.Seq == 0 || untrustedTail:
		// A first start (or a recreated stream, or a tail that cannot be
		// trusted): a generation number never used before, so a standby
		// holding a checkpoint of an older stream can never take this
		// history for its own.
		gen, resumeRev = uint64(time.Now().UnixNano()), 0
	case reason != "":
		gen, resumeRev = tail.Generation+1, 0
	}

	// Step 2d: when are snapshots due? Periodic snapshots are due from the
	// newest snapshot-begin in the stream, not from this session's start,
	// so sessions shorter than the interval cannot starve them.
	var lastSnap time.Time
	if reason == "" {
		if lastSnap, err = p.lastSnapshotTime(ctx, stream, p.subj.SnapshotBegin(), clusterID, gen); err != nil {
			return err
		}
		done, err := p.lastSnapshotTime(ctx, stream, p.subj.SnapshotEnd(), clusterID, gen)
		if err != nil {
			return err
		}
		if !done.IsZero() {
			p.snapshotDone.Store(done.UnixNano())
		}
	}

	// Step 3: fence every earlier publisher.
	epochSeq, err := p.writeEpoch(ctx, tail.StreamLastSeq, clusterID, gen, resumeRev, dg)
	if err != nil {
		return err
	}
	p.writing()
	p.forceReason = ""
	p.metrics.generation.Set(float64(gen))
	p.log.Info("publisher session started", "generation", gen, "resume_revision", resumeRev, "epoch_seq", epochSeq, "new_generation_reason", reason)

	// Step 4: answer snapshot requests (an applier that lost its log).
	sub, err := p.nc.Subscribe(p.subj.ControlSnapshot(), p.onSnapshotRequest)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", p.subj.ControlSnapshot(), err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Step 5: publish, with acknowledgements checked in order.
	acks := make(chan pending, p.cfg.Window)
	interrupted := make(chan struct{}, 1)
	g, gctx := errgroup.WithContext(ctx)
	cctx, stopWatchingConn := context.WithCancel(gctx)
	g.Go(func() error { return p.checkAcks(gctx, acks, stream, epochSeq) })
	g.Go(func() error { p.watchConnection(cctx, interrupted); return nil })
	g.Go(func() error {
		defer stopWatchingConn()
		defer close(acks)
		pub := &sender{p: p, acks: acks, epochSeq: epochSeq, last: epochSeq, clusterID: clusterID, gen: gen,
			maxBytes: stream.CachedInfo().Config.MaxBytes, dg: dg}
		if reason == "" {
			pub.w, pub.lastSnap = proof, lastSnap
			// The first revision of a resumed generation gets message IDs
			// of its own: a predecessor may have left part of it in the
			// stream, at the tail or under an epoch of a later crash.
			pub.redo = resumeRev + 1
		}
		pr := &prover{clusterID: clusterID, seen: curRev, interrupted: interrupted}
		from := resumeRev + 1
		switch {
		case reason != "":
			rev, err := p.snapshot(gctx, pub, reason, 0)
			if err != nil {
				return err
			}
			from = rev + 1
		case resnap:
			p.log.Info("taking the unfinished snapshot at the stream's tail again", "revision", resumeRev, "seq", tail.Seq)
			if _, err := p.snapshot(gctx, pub, ReasonResumed, resumeRev); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					return fmt.Errorf("%w: %w", err, errNewGeneration)
				}
				return err
			}
		case p.cfg.SnapshotInterval > 0 && time.Since(lastSnap) >= p.cfg.SnapshotInterval:
			// Overdue (the sessions before this one ended sooner than
			// the interval): take it now, at the tail's revision, its
			// exact place in the log.
			if _, err := p.snapshot(gctx, pub, ReasonPeriodic, resumeRev); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					return fmt.Errorf("%w: %w", err, errNewGeneration)
				}
				return err
			}
		}
		return p.follow(gctx, pub, pr, from)
	})
	err = g.Wait()
	var broken *historyBroken
	switch {
	case errors.As(err, &broken):
		p.forceReason = ReasonContinuity + ": " + broken.evidence
	case errors.Is(err, errNewGeneration):
		p.forceReason = ReasonContinuity + ": source compacted past the stream's revision"
	}
	return err
}

// stallAfter is the number of progress intervals a session waits for any
// watch response after a progress request before it checks the watch.
const stallAfter = 3

// errWatchStalled ends a session whose watch stopped delivering (a
// half-open connection, a stuck server-side watch); the next session
// watches again from the stream's tail.
var errWatchStalled = errors.New("watch stalled")

// checkStalled is called when no watch response followed a progress
// request for silent. etcd answers a progress request unless the watch has
// nothing to report (its next revision is ahead of the store), so the watch
// is stalled when the source does not answer a read within a progress
// interval, or is past revision delivered, the last one the watch gave.
func (p *Publisher) checkStalled(ctx context.Context, delivered int64, silent time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.ProgressInterval)
	defer cancel()
	resp, err := p.etcd.Get(cctx, p.probeKey(), clientv3.WithLimit(1), clientv3.WithKeysOnly())
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		p.metrics.stalls.Inc()
		return fmt.Errorf("no watch response for %s after a progress request, and the source did not answer a read: %w: %w",
			silent.Round(time.Millisecond), errWatchStalled, err)
	case resp.Header.Revision > delivered:
		p.metrics.stalls.Inc()
		return fmt.Errorf("no watch response for %s after a progress request while the source is at revision %d, past the %d delivered: %w",
			silent.Round(time.Millisecond), resp.Header.Revision, delivered, errWatchStalled)
	}
	return nil
}

// requestProgress asks etcd for a progress notification on the watch of
// ctx. If it fails, the next tick asks again.
func (p *Publisher) requestProgress(ctx context.Context) {
	if err := p.etcd.RequestProgress(ctx); err != nil {
		p.log.Debug("request watch progress", "err", err)
	}
}

// onSnapshotRequest queues a snapshot and answers the requester.
func (p *Publisher) onSnapshotRequest(m *nats.Msg) {
	select {
	case p.requests <- struct{}{}:
	default: // one is already queued
	}
	p.log.Info("snapshot requested", "subject", m.Subject)
	_ = m.Respond([]byte(`{"snapshot":"scheduled"}`))
}

// probeKey is a key read only for its response header.
func (p *Publisher) probeKey() string {
	if p.cfg.Prefix != "" {
		return p.cfg.Prefix
	}
	return "\x00"
}

// writeEpoch appends the epoch marker with ExpectLastSequence(tailSeq) and
// returns its stream sequence. The marker carries the keyspace digest at
// rev when dg knows it, so a session that ends before its next record
// still leaves a tail a successor can resume with a digest.
func (p *Publisher) writeEpoch(ctx context.Context, tailSeq, clusterID, gen uint64, rev int64, dg keyspaceDigest) (uint64, error) {
	rec := &streams.Record{Kind: streams.KindEpoch, ClusterID: clusterID, Generation: gen, Revision: rev, Time: time.Now(),
		Leader: fmt.Sprintf("%s-%d", p.cfg.Leader, tailSeq)}
	dg.stamp(rec)
	msgs, err := streams.NewMsgs(p.subj, rec, p.cfg.MaxMessageBytes, p.cfg.LogKeys, tailSeq)
	if err != nil {
		return 0, err
	}
	ack, err := p.js.PublishMsg(ctx, msgs[0], jetstream.WithExpectLastSequence(tailSeq))
	if err != nil {
		return 0, fmt.Errorf("write epoch after seq %d: %w", tailSeq, err)
	}
	return ack.Sequence, nil
}

// sender publishes records of one session.
type sender struct {
	p         *Publisher
	acks      chan<- pending
	epochSeq  uint64
	last      uint64 // stream sequence the next message must follow
	clusterID uint64
	gen       uint64
	// w is what the records sent so far claim about the source.
	w witness
	// lastSnap is when the newest snapshot of the generation started.
	lastSnap time.Time
	// maxBytes is the log stream's max bytes (<= 0: unlimited), and
	// snapBytes the bytes of the snapshot being published so far.
	maxBytes, snapBytes int64
	// redo is the first revision this session publishes in a resumed
	// generation (0: none). A predecessor may have left part of its record
	// in the stream; those parts carry the same message IDs, which the
	// stream would take for duplicates (another publisher's writes): this
	// session's copy gets IDs of its own. Fencing does not need them: every
	// message is chained to the sequence before it.
	redo int64
	// dg is the keyspace digest after the last revision sent.
	dg keyspaceDigest
}

// send publishes rec asynchronously; it blocks while the window is full.
func (s *sender) send(ctx context.Context, rec *streams.Record) error {
	rec.ClusterID, rec.Generation = s.clusterID, s.gen
	if rec.Kind == streams.KindRevision {
		s.dg.follow(rec)
	}
	msgs, err := streams.NewMsgs(s.p.subj, rec, s.p.cfg.MaxMessageBytes, s.p.cfg.LogKeys, s.last)
	if err != nil {
		return err
	}
	if s.redo != 0 && rec.Kind == streams.KindRevision && rec.Revision == s.redo {
		for _, m := range msgs {
			m.Header.Set(nats.MsgIdHdr, m.Header.Get(nats.MsgIdHdr)+":redo-"+strconv.FormatUint(s.epochSeq, 10))
		}
		s.redo = 0
	}
	pos := streams.Position{ClusterID: s.clusterID, Generation: s.gen, Revision: rec.Revision, Part: len(msgs) - 1}
	for i, m := range msgs {
		// Chain every message to the one before it: the publisher is the
		// stream's only writer, so it knows the sequence each message must
		// follow. A message lost in a reconnect then fails every later one
		// instead of leaving a hole, and the session restarts from the tail.
		// The chain is also the fence: a newer epoch marker moves the
		// stream's last sequence. (No per-subject expectation on the epoch
		// subject: a replicated stream refuses a second message with the
		// same per-subject check while the first is still being proposed,
		// which would reject every pipelined message on an R3 stream.)
		fut, err := s.p.js.PublishMsgAsync(m, jetstream.WithExpectLastSequence(s.last))
		if err != nil {
			return fmt.Errorf("publish %s record at revision %d: %w", rec.Kind, rec.Revision, err)
		}
		s.last++
		s.p.metrics.bytes.Add(float64(len(m.Data)))
		if rec.Kind != streams.KindRevision && rec.Kind != streams.KindEpoch {
			s.snapBytes += int64(len(m.Data))
		}
		pa := pending{fut: fut, rec: pos, last: i == len(msgs)-1}
		if pa.last && rec.Kind == streams.KindSnapshotEnd {
			pa.snapshotStart = rec.Time
		}
		select {
		case s.acks <- pa:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.w.note(rec)
	return nil
}

// follow watches the source from revision from and publishes one record per
// revision until ctx ends or the watch fails. It re-proves continuity
// with pr: before publishing what arrives after an interrupted connection
// or a response whose revision went backwards, and every ProbeInterval.
func (p *Publisher) follow(ctx context.Context, s *sender, pr *prover, from int64) error {
	// Every event carries the hash of its key's previous value, which the
	// watch sends beside it.
	opts := []clientv3.OpOption{clientv3.WithRev(from), clientv3.WithProgressNotify(), clientv3.WithPrefix(), clientv3.WithPrevKV()}
	// The client multiplexes watches with the same context metadata on one
	// stream, and etcd answers a progress request only when every watcher
	// on that stream is synced: a session of its own keeps an earlier
	// session's watch, still closing, from swallowing the answers.
	wctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx),
		"etcdsync-watch-session", strconv.FormatUint(s.epochSeq, 10)))
	defer cancel()
	wch := p.etcd.Watch(wctx, p.cfg.Prefix, opts...)
	// The next periodic snapshot is due one interval after the newest
	// one started (at once when there is none), re-armed after each.
	var periodic <-chan time.Time
	rearm := func() {}
	if p.cfg.SnapshotInterval > 0 {
		t := time.NewTimer(time.Until(s.lastSnap.Add(p.cfg.SnapshotInterval)))
		defer t.Stop()
		periodic = t.C
		rearm = func() { t.Reset(time.Until(s.lastSnap.Add(p.cfg.SnapshotInterval))) }
	}
	progress := time.NewTicker(p.cfg.ProgressInterval)
	defer progress.Stop()
	// Every VerifyInterval the source is rescanned at the last revision
	// sent, in the background (a scan of a large keyspace takes seconds;
	// publishing goes on), and compared with the digest the log carries.
	var verifyTick <-chan time.Time
	if p.cfg.VerifyInterval > 0 {
		t := time.NewTicker(p.cfg.VerifyInterval)
		defer t.Stop()
		verifyTick = t.C
	}
	checks := make(chan error, 1)
	checking := false
	cctx, stopChecks := context.WithCancel(ctx)
	var checkers sync.WaitGroup
	defer func() { stopChecks(); checkers.Wait() }()
	probe := time.NewTicker(p.cfg.ProbeInterval)
	defer probe.Stop()
	// asked is when the oldest progress request that no watch response has
	// followed yet was sent (zero: none outstanding).
	var asked time.Time
	var (
		rec   streams.Record
		due   string // reason of a snapshot waiting for the next progress notification
		retry <-chan time.Time
	)
	if !s.dg.known {
		// No digest to follow (the tail's revision was compacted before
		// the session could rescan it): a snapshot at the first progress
		// notification gives one.
		due = ReasonDigestLost
		p.requestProgress(wctx)
	}
	for {
		// Snapshots and progress records wait for a progress notification:
		// its header revision H says every event up to H was delivered, so
		// a snapshot pinned at H sits exactly at its place in the log, and
		// the log's position moves to H even when the prefix is idle (a
		// restart then resumes from a revision etcd has not compacted).
		var resp clientv3.WatchResponse
		// An interrupted connection first: what the watch delivers after
		// it may come from a restored server, so the witness of what was
		// published before it is pinned before anything else is read.
		select {
		case <-pr.interrupted:
			pr.pin(s.w)
		default:
		}
		if due != "" && retry == nil {
			retry = time.After(time.Second) // the fallback if etcd sends no progress
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-periodic:
			if due == "" {
				due = ReasonPeriodic
			}
			p.requestProgress(wctx)
			continue
		case <-p.requests:
			if due == "" {
				due = ReasonRequested + ": asked for over " + p.subj.ControlSnapshot()
			}
			p.requestProgress(wctx)
			continue
		case <-retry:
			// No progress answer (etcd sends none while the watch's start
			// revision is ahead of the store, nor to an unsynced watcher):
			// snapshot at the last revision published, so the snapshot
			// still sits exactly at its place in the log.
			retry = nil
			if due != "" {
				if _, err := p.snapshot(ctx, s, due, from-1); err != nil {
					return err
				}
				rearm()
				due = ""
			}
			continue
		case <-progress.C:
			if !asked.IsZero() && time.Since(asked) >= stallAfter*p.cfg.ProgressInterval {
				if err := p.checkStalled(ctx, from-1, time.Since(asked)); err != nil {
					return err
				}
				asked = time.Time{} // the source had nothing to deliver
			}
			p.requestProgress(wctx)
			if asked.IsZero() {
				asked = time.Now()
			}
			continue
		case <-pr.interrupted:
			pr.pin(s.w)
			continue
		case <-verifyTick:
			if !checking && s.dg.known {
				checking = true
				k := s.dg
				checkers.Add(1)
				go func() { defer checkers.Done(); checks <- p.verifyDigest(cctx, k) }()
			}
			continue
		case err := <-checks:
			checking = false
			var broken *historyBroken
			switch {
			case errors.As(err, &broken):
				return err
			case errors.Is(err, errWitnessCompacted):
				p.log.Info("keyspace digest not checked: the source compacted the revision before the rescan read it", "err", err)
			case err != nil:
				p.log.Warn("rescan of the source failed; trying again at the next interval", "err", err)
			}
			continue
		case <-probe.C:
			// Bounded by a progress interval: a source that does not
			// answer is the stalled-watch check's business.
			pctx, cancel := context.WithTimeout(ctx, p.cfg.ProgressInterval)
			err := p.probe(pctx, pr, s.w)
			cancel()
			if err != nil {
				return err
			}
			continue
		case r, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("watch from revision %d: channel closed", from)
			}
			resp, asked = r, time.Time{}
		}
		// A revision that went backwards (a restored server, or a member
		// behind the one that answered before) and an interrupted
		// connection are proven before this response is published.
		if resp.Err() == nil && pr.observe(resp.Header.Revision) {
			pr.pin(s.w)
		}
		if len(pr.pinned) > 0 {
			vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
			err := p.provePinned(vctx, pr)
			cancel()
			if err != nil {
				return err
			}
		}
		if resp.IsProgressNotify() {
			h := resp.Header.Revision
			p.metrics.sourceRev.Set(float64(h))
			if h > from-1 {
				// A revision record without events: the log's position
				// is H (and the applier can measure its lag while idle).
				rec = streams.Record{Kind: streams.KindRevision, Revision: h, Time: time.Now()}
				if err := s.send(ctx, &rec); err != nil {
					return err
				}
				from = h + 1
			}
			if due != "" {
				if _, err := p.snapshot(ctx, s, due, from-1); err != nil {
					return err
				}
				rearm()
				due, retry = "", nil
			}
			continue
		}
		if err := resp.Err(); err != nil {
			if resp.CompactRevision != 0 || errors.Is(err, rpctypes.ErrCompacted) {
				return fmt.Errorf("watch from revision %d: compacted at %d: %w", from, resp.CompactRevision, errNewGeneration)
			}
			return fmt.Errorf("watch from revision %d: %w", from, err)
		}
		p.metrics.sourceRev.Set(float64(resp.Header.Revision))
		now := time.Now()
		for i := 0; i < len(resp.Events); {
			rev := resp.Events[i].Kv.ModRevision
			rec = streams.Record{Kind: streams.KindRevision, Revision: rev, Time: now, Events: rec.Events[:0]}
			for ; i < len(resp.Events) && resp.Events[i].Kv.ModRevision == rev; i++ {
				e := eventOf(resp.Events[i])
				if h, ok := prevHash(resp.Events[i]); ok {
					e.PrevHash = h
				} else if s.dg.known {
					// The digest can no longer follow the events: a
					// snapshot at the next progress notification gives it
					// again, until then records carry none.
					s.dg.known = false
					p.log.Warn("the source sent no previous value for a changed key: records carry no keyspace digest until the next snapshot", "key_revision", rev)
					if due == "" {
						due = ReasonDigestLost
					}
					p.requestProgress(wctx)
				}
				if e.Lease != 0 && e.Type == streams.EventPut {
					ttl, err := p.leases.remaining(ctx, e.Lease)
					if err != nil {
						return fmt.Errorf("revision %d: %w", rev, err)
					}
					e.LeaseTTL = ttl
				}
				rec.Events = append(rec.Events, e)
			}
			if err := s.send(ctx, &rec); err != nil {
				return err
			}
			from = rev + 1
		}
	}
}

func eventOf(ev *clientv3.Event) streams.Event {
	kv := ev.Kv
	e := streams.Event{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
	if ev.Type == clientv3.EventTypeDelete {
		e.Type = streams.EventDelete
	} else {
		e.Type, e.Value = streams.EventPut, kv.Value
	}
	return e
}
