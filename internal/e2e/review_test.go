package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// publishRecord appends one record to the log as a publisher would (tests
// that need a log no publisher would write, e.g. an interrupted snapshot).
func publishRecord(t *testing.T, p *pipeline, r *streams.Record) {
	t.Helper()
	msgs, err := streams.NewMsgs(streams.Subjects{Site: streams.DefaultSite}, r, 1<<20, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := p.js.JS.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

// A snapshot interrupted by a publisher crash, followed by a new
// generation's snapshot: keys only the interrupted snapshot wrote must not
// survive on the standby.
func TestInterruptedSnapshotLeavesNoStaleKeys(t *testing.T) {
	p := newPipeline(t)
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, streams.DefaultLogConfig()); err != nil {
		t.Fatal(err)
	}
	put(t, p.standby.Client, "/s/old", "standby before")
	now := time.Now()
	kv := func(k string) streams.Event {
		return streams.Event{Type: streams.EventPut, Key: []byte(k), Value: []byte("v"), CreateRevision: 2, ModRevision: 2, Version: 1}
	}
	publishRecord(t, p, &streams.Record{Kind: streams.KindEpoch, ClusterID: 1, Generation: 1, Leader: "a"})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotBegin, ClusterID: 1, Generation: 1, Revision: 10, Time: now})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotChunk, ClusterID: 1, Generation: 1, Revision: 10, Time: now,
		Events: []streams.Event{kv("/s/a"), kv("/s/deleted-between-the-snapshots")}})
	// The applier applies the first chunk; then the publisher dies and its
	// successor starts a new generation.
	ap, _ := p.startApplier(rawApplierConfig(p))
	testenvEventually(t, func() bool { s := ap.Applied().Snapshot; return s != nil && s.Chunks == 1 }, "first chunk applied")
	later := now.Add(time.Second)
	publishRecord(t, p, &streams.Record{Kind: streams.KindEpoch, ClusterID: 1, Generation: 2, Leader: "b"})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotBegin, ClusterID: 1, Generation: 2, Revision: 12, Time: later})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotChunk, ClusterID: 1, Generation: 2, Revision: 12, Time: later,
		Events: []streams.Event{kv("/s/a"), kv("/s/b")}})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotEnd, ClusterID: 1, Generation: 2, Revision: 12, Time: later, Chunk: 1, Keys: 2})
	testenvEventually(t, func() bool { return ap.Applied().Position.Generation == 2 && ap.Applied().Snapshot == nil }, "second snapshot applied")
	got := dump(t, p.standby.Client, rawRules(t))
	want := map[string]string{"/s/a": "v", "/s/b": "v"}
	if d := diff(want, got); d != "" {
		t.Fatalf("standby after the interrupted snapshot:\n%s", d)
	}
}

// The stream is lost and recreated while the applier is away (its
// checkpoint's sequences now mean nothing): the applier re-seeds instead of
// waiting for the new stream to reach its old sequence.
func TestRecreatedStreamReseeds(t *testing.T) {
	p := newPipeline(t)
	_, pr := p.startPublisher(p.publisherConfig())
	_, ar := p.startApplier(rawApplierConfig(p))
	for i := 0; i < 30; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/rs/k%02d", i), "v1")
	}
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.js.JS.DeleteStream(context.Background(), streams.DefaultStream); err != nil {
		t.Fatal(err)
	}
	if _, err := p.primary.Client.Delete(context.Background(), "/rs/k0", clientv3WithPrefix()); err != nil {
		t.Fatal(err)
	}
	put(t, p.primary.Client, "/rs/new", "x")
	p.startPublisher(p.publisherConfig())
	p.startApplier(rawApplierConfig(p))
	p.waitConverged(rules, 30*time.Second)
}

// A publisher whose prefix stays idle while the source compacts (an
// apiserver compacts every five minutes) keeps its generation across a
// restart: progress records move the log's position with the source.
func TestIdlePrefixSurvivesCompaction(t *testing.T) {
	p := newPipeline(t)
	cfg := p.publisherConfig()
	cfg.Prefix = "/app/"
	cfg.ProgressInterval = 100 * time.Millisecond
	pub, pr := p.startPublisher(cfg)
	put(t, p.primary.Client, "/app/a", "1")
	testenvEventually(t, func() bool { return pub.Published().Revision > 0 }, "first revision published")
	gen := pub.Published().Generation
	var rev int64
	for i := 0; i < 20; i++ {
		rev = put(t, p.primary.Client, fmt.Sprintf("/other/k%d", i), "outside the prefix")
	}
	testenvEventually(t, func() bool { return pub.Published().Revision >= rev }, "progress record at the source's revision")
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.primary.Client.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	pub2, _ := p.startPublisher(cfg)
	put(t, p.primary.Client, "/app/b", "2")
	testenvEventually(t, func() bool { return pub2.Published().Revision > rev }, "publishing after the restart")
	if got := pub2.Published().Generation; got != gen {
		t.Fatalf("generation %d after an idle restart, want %d (no new generation)", got, gen)
	}
	acfg := rawApplierConfig(p)
	p.startApplier(acfg)
	p.waitConverged(prefixRules(t, "/app/"), 20*time.Second)
}

// An applier starting after the standby compacted past its checkpoint's
// last change still runs (its promotion watch restarts from now).
func TestApplierStartsAfterStandbyCompaction(t *testing.T) {
	p := newPipeline(t)
	p.startPublisher(p.publisherConfig())
	_, ar := p.startApplier(rawApplierConfig(p))
	put(t, p.primary.Client, "/sc/a", "1")
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	var rev int64
	for i := 0; i < 10; i++ {
		rev = put(t, p.standby.Client, "/etcdsync/standby-own", fmt.Sprint(i))
	}
	if _, err := p.standby.Client.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	p.startApplier(rawApplierConfig(p))
	put(t, p.primary.Client, "/sc/b", "2")
	p.waitConverged(rules, 20*time.Second)
}

// A stream that ends before the checkpoint and holds no record yet (an
// empty mirror, a new stream before its first snapshot) is waited for: the
// applier neither re-seeds from nothing nor stops; once the new history
// appears it re-seeds.
func TestEmptyStreamBeforeCheckpointWaits(t *testing.T) {
	p := newPipeline(t)
	_, pr := p.startPublisher(p.publisherConfig())
	_, ar := p.startApplier(rawApplierConfig(p))
	for i := 0; i < 10; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/es/k%d", i), "v")
	}
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.js.JS.DeleteStream(ctx, streams.DefaultStream); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.EnsureLogStream(ctx, p.js.JS, streams.DefaultLogConfig()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ap, err := applier.New(rawApplierConfig(p), p.standby.Client, p.conn(), reg)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, ap.Run)
	p.runs = append(p.runs, r)
	// It waits for the stream to reach the checkpoint (not for a snapshot
	// to re-seed from: nothing tells yet that the history changed).
	testenvEventually(t, func() bool { return metricValue(t, reg, "etcdsync_applier_waiting_for_stream_seq") > 0 },
		"the applier to say it waits for the stream to reach its checkpoint")
	select {
	case <-r.done:
		t.Fatalf("applier stopped on an empty stream: %v", r.err)
	default:
	}
	if ap.Applied().Position.Seq != 0 {
		t.Fatalf("applier wrote a checkpoint from an empty stream: %s", ap.Applied().Position)
	}
	if _, err := p.primary.Client.Delete(ctx, "/es/k1"); err != nil {
		t.Fatal(err)
	}
	p.startPublisher(p.publisherConfig())
	p.waitConverged(rules, 30*time.Second)
}
