package e2e

import (
	"context"
	"errors"
	"math/rand"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

func rawApplierConfig(p *pipeline) applier.Config {
	cfg := p.applierConfig()
	cfg.Scope.Mode = keyspace.ModeRaw
	return cfg
}

// A random workload of puts, deletes, multi-op txns and prefix deletes over
// hot keys converges, and every key's version matches (no double apply),
// with transactions small enough that revisions are split and folded.
func TestRandomWorkloadConvergesExactlyOnce(t *testing.T) {
	p := newPipeline(t)
	acfg := rawApplierConfig(p)
	acfg.MaxTxnOps = 5
	p.startPublisher(p.publisherConfig())
	p.startApplier(acfg)
	newWorkload(p.primary.Client, 1, "/w/", 40).run(t, 1500)
	rules := rawRules(t)
	p.waitConverged(rules, 60*time.Second)
	checkExactlyOnce(t, p.primary, p.standby, rules)
}

// faultyTxns makes some standby transactions fail: before they reach etcd
// (a crash before the commit) or after etcd committed them (a crash after
// the commit, before the applier learned of it).
type faultyTxns struct {
	rng           *rand.Rand
	before, after atomic.Int64
}

var errInjected = errors.New("injected fault")

func (f *faultyTxns) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method != "/etcdserverpb.KV/Txn" {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	switch f.rng.Intn(10) {
	case 0:
		f.before.Add(1)
		return errInjected
	case 1:
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
		f.after.Add(1)
		return errInjected
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// The applier dies between transactions again and again (before and after
// commits); every time it resumes from its durable checkpoint, with no gap
// and no revision applied twice.
func TestApplierCrashesBetweenTxns(t *testing.T) {
	p := newPipeline(t)
	f := &faultyTxns{rng: rand.New(rand.NewSource(7))}
	cli, err := clientv3.New(clientv3.Config{Endpoints: p.standby.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(f.interceptor)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	acfg := rawApplierConfig(p)
	acfg.MaxTxnOps = 8
	p.startPublisher(p.publisherConfig())
	ap, err := applier.New(acfg, cli, p.conn(), nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, ap.Run)
	newWorkload(p.primary.Client, 2, "/c/", 30).run(t, 800)
	rules := rawRules(t)
	p.waitConverged(rules, 90*time.Second)
	checkExactlyOnce(t, p.primary, p.standby, rules)
	if f.before.Load() == 0 || f.after.Load() == 0 {
		t.Fatalf("faults injected: %d before commit, %d after: the test did not exercise both", f.before.Load(), f.after.Load())
	}
	t.Logf("survived %d crashes before and %d after a commit", f.before.Load(), f.after.Load())
}

// The publisher is killed at random points while the primary keeps writing;
// each restart resumes from the stream tail, with no gap and no double apply.
func TestPublisherKilledMidStream(t *testing.T) {
	p := newPipeline(t)
	p.startApplier(rawApplierConfig(p))
	rng := rand.New(rand.NewSource(3))
	done := make(chan struct{})
	go func() {
		defer close(done)
		newWorkload(p.primary.Client, 4, "/p/", 30).run(t, 1200)
	}()
	restarts := 0
	for running := true; running; restarts++ {
		_, r := p.startPublisher(p.publisherConfig())
		select {
		case <-done:
			running = false
		case <-time.After(time.Duration(20+rng.Intn(200)) * time.Millisecond):
		}
		if err := r.stop(); err != nil {
			t.Fatalf("publisher run: %v", err)
		}
	}
	p.startPublisher(p.publisherConfig())
	rules := rawRules(t)
	p.waitConverged(rules, 60*time.Second)
	checkExactlyOnce(t, p.primary, p.standby, rules)
	t.Logf("publisher restarted %d times", restarts)
}

// A second publisher on the same stream fences the first: the first stops
// with ErrFenced and the log never holds a revision twice.
func TestZombiePublisherFenced(t *testing.T) {
	p := newPipeline(t)
	pa, a := p.startPublisher(p.publisherConfig())
	rev := put(t, p.primary.Client, "/z/a", "1")
	testenvEventually(t, func() bool { return pa.Published().Revision >= rev }, "the first publisher to publish")
	_, b := p.startPublisher(p.publisherConfig())
	// Keep writing (paced) until the first publisher notices it was
	// fenced, or for 30s at most.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		put(t, p.primary.Client, "/z/k"+strconv.Itoa(i), "v")
		select {
		case <-a.done:
			deadline = time.Time{}
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := a.wait(t, time.Second, "first publisher"); !errors.Is(err, publisher.ErrFenced) {
		t.Fatalf("first publisher: want ErrFenced, got %v", err)
	}
	select {
	case <-b.done:
		t.Fatalf("second publisher stopped: %v", b.err)
	default:
	}
	p.startApplier(rawApplierConfig(p))
	rules := rawRules(t)
	p.waitConverged(rules, 30*time.Second)
	checkLogStrictlyIncreasing(t, p)
}

// checkLogStrictlyIncreasing reads the whole log and checks that revision
// records of each generation strictly increase: an interleaving publisher
// would have written some revision twice.
func checkLogStrictlyIncreasing(t *testing.T, p *pipeline) {
	t.Helper()
	ctx := context.Background()
	s, err := p.js.JS.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(streams.HeaderKind) != streams.KindRevision.String() {
			continue
		}
		gen := m.Header.Get(streams.HeaderGeneration)
		rev, _ := strconv.ParseInt(m.Header.Get(streams.HeaderRevision), 10, 64)
		if rev <= last[gen] {
			t.Fatalf("seq %d: revision %d after %d in generation %s: two publishers interleaved", seq, rev, last[gen], gen)
		}
		last[gen] = rev
	}
}

// A corrupt message stops the applier with a clear error, and nothing of
// its batch is written.
func TestCorruptMessageStopsApplier(t *testing.T) {
	p := newPipeline(t)
	_, pr := p.startPublisher(p.publisherConfig())
	_, ar := p.startApplier(rawApplierConfig(p))
	put(t, p.primary.Client, "/x/before", "1")
	p.waitConverged(rawRules(t), 20*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	// The durable checkpoint, not the in-memory one: a stop can cancel a
	// commit the server had already accepted.
	before, _, err := applier.ReadCheckpoint(context.Background(), p.standby.Client, "/etcdsync/checkpoint/"+streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}

	// A good revision, then garbage, in one batch.
	pub2, r2 := p.startPublisher(p.publisherConfig())
	put(t, p.primary.Client, "/x/after", "2")
	waitPublished(t, pub2, 2*time.Second)
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.js.JS.Publish(context.Background(), streams.Subjects{Site: streams.DefaultSite}.Revision(), []byte("ES\x01\x01\x00\x01garbage")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// One batch holding the good revision and the garbage: nothing is written.
	ap2, err := applier.New(rawApplierConfig(p), p.standby.Client, p.conn(), nil)
	if err != nil {
		t.Fatal(err)
	}
	from, err := ap2.Reset(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := p.js.JS.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var batch []applier.Msg
	for seq := from; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, applier.Msg{Seq: seq, Data: m.Data})
	}
	err = ap2.ApplyBatch(ctx, batch)
	if !errors.Is(err, streams.ErrCorrupt) {
		t.Fatalf("ApplyBatch: want ErrCorrupt, got %v", err)
	}
	t.Logf("ApplyBatch: %v", err)
	ck, _, err := applier.ReadCheckpoint(ctx, p.standby.Client, "/etcdsync/checkpoint/"+streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Position != before.Position {
		t.Fatalf("checkpoint moved from %s to %s despite the corrupt batch", before.Position, ck.Position)
	}
	if resp, _ := p.standby.Client.Get(ctx, "/x/after"); len(resp.Kvs) != 0 {
		t.Fatal("a key of the corrupt batch was written")
	}
	// Running, the applier stops loudly at the corrupt message instead of
	// skipping it.
	_, ar2 := p.startApplier(rawApplierConfig(p))
	if err := ar2.wait(t, 20*time.Second, "applier fed a corrupt message"); !errors.Is(err, streams.ErrCorrupt) {
		t.Fatalf("Run: want ErrCorrupt, got %v", err)
	}
	if ck, _, _ := applier.ReadCheckpoint(ctx, p.standby.Client, "/etcdsync/checkpoint/"+streams.DefaultStream); ck.Position.Seq >= info.State.LastSeq {
		t.Fatalf("checkpoint %s covers the corrupt message at seq %d", ck.Position, info.State.LastSeq)
	}
}

func waitPublished(t *testing.T, pub *publisher.Publisher, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if pub.Published().Revision > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("nothing published")
}

// Two appliers on one standby: the checkpoint compare lets only one write
// each position; the result converges with no double apply.
func TestTwoAppliersOneStandby(t *testing.T) {
	p := newPipeline(t)
	p.startPublisher(p.publisherConfig())
	acfg := rawApplierConfig(p)
	acfg.MaxTxnOps = 6
	p.startApplier(acfg)
	p.startApplier(acfg)
	newWorkload(p.primary.Client, 5, "/two/", 30).run(t, 800)
	rules := rawRules(t)
	p.waitConverged(rules, 60*time.Second)
	checkExactlyOnce(t, p.primary, p.standby, rules)
}

// A message missing in the middle of the log (a mirror that skipped what
// it could not fetch, a manual delete) is detected by the sequence check,
// never skipped: the applier re-seeds and the standby is exact, including
// the write the lost message carried.
func TestInteriorGapReseeds(t *testing.T) {
	p := newPipeline(t)
	p.startPublisher(p.publisherConfig())
	_, ar := p.startApplier(rawApplierConfig(p))
	put(t, p.primary.Client, "/g/1", "1")
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := logStream(t, p)
	before := lastSeq(t, s)
	put(t, p.primary.Client, "/g/lost", "carried by the deleted message")
	for i := 0; i < 5; i++ {
		put(t, p.primary.Client, "/g/k"+strconv.Itoa(i), "v")
	}
	testenvEventually(t, func() bool { return lastSeq(t, s) >= before+6 }, "revisions published")
	if err := s.DeleteMsg(ctx, before+1); err != nil {
		t.Fatal(err)
	}
	p.startApplier(rawApplierConfig(p))
	p.waitConverged(rules, 30*time.Second)
}
