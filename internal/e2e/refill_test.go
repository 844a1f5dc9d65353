package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

// twoGenerations is a log of two generations of one source cluster, one
// message per record: generation 1 (a snapshot at revision 10, revision 11),
// then generation 2 (a snapshot at revision 20, revisions 21 and 22).
func twoGenerations() []*streams.Record {
	now := time.Now()
	kv := func(k, v string, rev int64) streams.Event {
		return streams.Event{Type: streams.EventPut, Key: []byte(k), Value: []byte(v), CreateRevision: rev, ModRevision: rev, Version: 1}
	}
	snapshot := func(gen uint64, rev int64, events ...streams.Event) []*streams.Record {
		return []*streams.Record{
			{Kind: streams.KindEpoch, ClusterID: 1, Generation: gen, Leader: fmt.Sprint("p", gen)},
			{Kind: streams.KindSnapshotBegin, ClusterID: 1, Generation: gen, Revision: rev, Time: now},
			{Kind: streams.KindSnapshotChunk, ClusterID: 1, Generation: gen, Revision: rev, Time: now, Events: events},
			{Kind: streams.KindSnapshotEnd, ClusterID: 1, Generation: gen, Revision: rev, Time: now, Chunk: 1, Keys: uint64(len(events))},
		}
	}
	revision := func(gen uint64, rev int64, events ...streams.Event) *streams.Record {
		return &streams.Record{Kind: streams.KindRevision, ClusterID: 1, Generation: gen, Revision: rev, Time: now, Events: events}
	}
	log := snapshot(1, 10, kv("/rf/a", "1", 5), kv("/rf/b", "1", 6))
	log = append(log, revision(1, 11, kv("/rf/a", "2", 11)))
	log = append(log, snapshot(2, 20, kv("/rf/a", "3", 15), kv("/rf/b", "1", 6), kv("/rf/c", "1", 16))...)
	log = append(log, revision(2, 21, kv("/rf/d", "1", 21)), revision(2, 22, kv("/rf/c", "2", 22)))
	return log
}

// recreateLogStream deletes the log stream and creates it empty, as a
// standby site's NATS that lost its store does before its mirror refills.
func recreateLogStream(t *testing.T, p *pipeline) {
	t.Helper()
	ctx := context.Background()
	if err := p.js.JS.DeleteStream(ctx, streams.DefaultStream); err != nil {
		t.Fatal(err)
	}
	// The server may still be removing the old store right after the
	// delete ("error creating store for stream"): try again for a while.
	var err error
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err = streams.EnsureLogStream(ctx, p.js.JS, streams.DefaultLogConfig())
		if err != nil {
			t.Log(err)
		}
		return err == nil
	}, "the log stream recreated (last error in the log above)")
}

// applyAll publishes log into a fresh stream and runs an applier until the
// standby holds all of it; it returns the standby's keyspace and checkpoint.
func applyAll(t *testing.T, p *pipeline, log []*streams.Record) (map[string]string, applier.Checkpoint) {
	t.Helper()
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, streams.DefaultLogConfig()); err != nil {
		t.Fatal(err)
	}
	for _, r := range log {
		publishRecord(t, p, r)
	}
	ap, r := p.startApplier(rawApplierConfig(p))
	testenvEventually(t, func() bool { return ap.Applied().Position.Seq == uint64(len(log)) }, "whole log applied")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	return dump(t, p.standby.Client, rawRules(t)), ap.Applied()
}

// startApplierWithMetrics starts an applier registering its metrics on a
// registry of its own.
func startApplierWithMetrics(t *testing.T, p *pipeline, cfg applier.Config) (*applier.Applier, *running, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	ap, err := applier.New(cfg, p.standby.Client, p.conn(), reg)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, ap.Run)
	p.runs = append(p.runs, r)
	return ap, r, reg
}

// waitingForSeq returns etcdsync_applier_waiting_for_stream_seq (-1 when
// the applier does not export it).
func waitingForSeq(t *testing.T, reg prometheus.Gatherer) float64 {
	t.Helper()
	if seriesCount(t, reg, "etcdsync_applier_waiting_for_stream_seq") == 0 {
		return -1
	}
	return metricValue(t, reg, "etcdsync_applier_waiting_for_stream_seq")
}

// The standby site's NATS loses its store and the mirror refills from seq 1:
// an applier (re)starting while the stream holds only an older generation of
// the same cluster, then only part of the checkpoint's generation, waits and
// says what for (a log line and etcdsync_applier_waiting_for_stream_seq),
// and never re-seeds from the older snapshot; once the stream passes the
// checkpoint it continues where it stopped (issue 15.3).
func TestRefillingStreamIsWaitedFor(t *testing.T) {
	p := newPipeline(t)
	log := twoGenerations()
	want, ck := applyAll(t, p, log)
	ckKey := "/etcdsync/checkpoint/" + streams.DefaultStream
	ctx := context.Background()
	unchanged := func(what string) {
		t.Helper()
		if d := diff(want, dump(t, p.standby.Client, rawRules(t))); d != "" {
			t.Fatalf("%s: the standby changed (rolled back?):\n%s", what, d)
		}
		got, _, err := applier.ReadCheckpoint(ctx, p.standby.Client, ckKey)
		if err != nil || got.Position != ck.Position {
			t.Fatalf("%s: checkpoint %s (%v), want %s", what, got.Position, err, ck.Position)
		}
	}

	// The mirror has refilled generation 1 only.
	recreateLogStream(t, p)
	for _, r := range log[:5] {
		publishRecord(t, p, r)
	}
	_, ar, reg := startApplierWithMetrics(t, p, rawApplierConfig(p))
	testenv.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-ar.done:
			t.Fatalf("applier stopped: %v", ar.err)
		default:
		}
		got, _, err := applier.ReadCheckpoint(ctx, p.standby.Client, ckKey)
		return waitingForSeq(t, reg) == float64(ck.Position.Seq) || err != nil || got.Position != ck.Position
	}, "applier waiting for the stream to reach seq %d", ck.Position.Seq)
	unchanged("stream holding generation 1 only")
	if st, err := applier.ReadStatus(ctx, p.standby.Client, p.js.JS, streams.DefaultStream, streams.DefaultSite, ""); err != nil || st.State != "refilling" {
		t.Fatalf("status state %q (%v), want refilling", st.State, err)
	}

	// Then part of generation 2, still short of the checkpoint.
	for _, r := range log[5 : len(log)-1] {
		publishRecord(t, p, r)
	}
	ar.stop()
	_, ar, reg = startApplierWithMetrics(t, p, rawApplierConfig(p))
	testenv.Eventually(t, 10*time.Second, func() bool {
		return waitingForSeq(t, reg) == float64(ck.Position.Seq)
	}, "applier waiting for the stream to reach seq %d", ck.Position.Seq)
	unchanged("stream short of the checkpoint in its generation")

	// The refill passes the checkpoint and the primary moves on.
	publishRecord(t, p, log[len(log)-1])
	publishRecord(t, p, &streams.Record{Kind: streams.KindRevision, ClusterID: 1, Generation: 2, Revision: 23, Time: time.Now(),
		Events: []streams.Event{{Type: streams.EventPut, Key: []byte("/rf/e"), Value: []byte("1"), CreateRevision: 23, ModRevision: 23, Version: 1}}})
	want["/rf/e"] = "1"
	testenv.Eventually(t, 10*time.Second, func() bool {
		return diff(want, dump(t, p.standby.Client, rawRules(t))) == "" && waitingForSeq(t, reg) == 0
	}, "standby continues after the refill")
}

// The standby site's NATS loses its store under a running applier and the
// mirror refills from seq 1: the applier does not roll the standby back and
// continues once the refill passes its checkpoint.
func TestRefillUnderRunningApplier(t *testing.T) {
	p := newPipeline(t)
	log := twoGenerations()
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, streams.DefaultLogConfig()); err != nil {
		t.Fatal(err)
	}
	for _, r := range log {
		publishRecord(t, p, r)
	}
	ap, _, reg := startApplierWithMetrics(t, p, rawApplierConfig(p))
	testenvEventually(t, func() bool { return ap.Applied().Position.Seq == uint64(len(log)) }, "whole log applied")
	want := dump(t, p.standby.Client, rawRules(t))
	ck := ap.Applied()

	recreateLogStream(t, p)
	for _, r := range log[:5] {
		publishRecord(t, p, r)
	}
	ctx := context.Background()
	ckKey := "/etcdsync/checkpoint/" + streams.DefaultStream
	testenv.Eventually(t, 15*time.Second, func() bool {
		got, _, err := applier.ReadCheckpoint(ctx, p.standby.Client, ckKey)
		return waitingForSeq(t, reg) == float64(ck.Position.Seq) || err != nil || got.Position != ck.Position
	}, "applier waiting for the stream to reach seq %d", ck.Position.Seq)
	if d := diff(want, dump(t, p.standby.Client, rawRules(t))); d != "" {
		t.Fatalf("the standby changed (rolled back?):\n%s", d)
	}
	for _, r := range log[5:] {
		publishRecord(t, p, r)
	}
	publishRecord(t, p, &streams.Record{Kind: streams.KindRevision, ClusterID: 1, Generation: 2, Revision: 23, Time: time.Now(),
		Events: []streams.Event{{Type: streams.EventPut, Key: []byte("/rf/e"), Value: []byte("1"), CreateRevision: 23, ModRevision: 23, Version: 1}}})
	want["/rf/e"] = "1"
	testenv.Eventually(t, 15*time.Second, func() bool {
		return diff(want, dump(t, p.standby.Client, rawRules(t))) == "" && waitingForSeq(t, reg) == 0
	}, "standby continues after the refill")
}

// With Reseed (etcdsync apply --reseed) the operator accepts the rollback:
// the applier re-seeds from the refilling stream's older snapshot.
func TestReseedAcceptsOlderSnapshot(t *testing.T) {
	p := newPipeline(t)
	log := twoGenerations()
	applyAll(t, p, log)
	recreateLogStream(t, p)
	for _, r := range log[:5] {
		publishRecord(t, p, r)
	}
	cfg := rawApplierConfig(p)
	cfg.Reseed = true
	ap, _ := p.startApplier(cfg)
	testenvEventually(t, func() bool { ck := ap.Applied(); return ck.Position.Generation == 1 && ck.Position.Revision == 11 }, "re-seeded from generation 1")
	want := map[string]string{"/rf/a": "2", "/rf/b": "1"}
	if d := diff(want, dump(t, p.standby.Client, rawRules(t))); d != "" {
		t.Fatalf("standby after the re-seed:\n%s", d)
	}
}

// A stream that holds another history of the same cluster (a later
// generation has begun: its epoch is the tail) but whose newest snapshot is
// an earlier generation than the checkpoint's: the applier waits for a
// snapshot it can use instead of rolling back, then re-seeds from the new
// generation's (issue 15.3).
func TestOlderSnapshotNeverReseeds(t *testing.T) {
	p := newPipeline(t)
	log := twoGenerations()
	want, ck := applyAll(t, p, log)
	recreateLogStream(t, p)
	for _, r := range log[:5] {
		publishRecord(t, p, r)
	}
	publishRecord(t, p, &streams.Record{Kind: streams.KindEpoch, ClusterID: 1, Generation: 3, Leader: "p3"})
	_, _, reg := startApplierWithMetrics(t, p, rawApplierConfig(p))
	ctx := context.Background()
	ckKey := "/etcdsync/checkpoint/" + streams.DefaultStream
	testenv.Eventually(t, 10*time.Second, func() bool {
		got, _, err := applier.ReadCheckpoint(ctx, p.standby.Client, ckKey)
		return err != nil || got.Position != ck.Position ||
			(seriesCount(t, reg, "etcdsync_applier_waiting_for_snapshot") == 1 && metricValue(t, reg, "etcdsync_applier_waiting_for_snapshot") == 1)
	}, "applier waiting for a snapshot")
	if d := diff(want, dump(t, p.standby.Client, rawRules(t))); d != "" {
		t.Fatalf("the standby changed (rolled back?):\n%s", d)
	}
	now := time.Now()
	ev := streams.Event{Type: streams.EventPut, Key: []byte("/rf/z"), Value: []byte("1"), CreateRevision: 30, ModRevision: 30, Version: 1}
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotBegin, ClusterID: 1, Generation: 3, Revision: 30, Time: now})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotChunk, ClusterID: 1, Generation: 3, Revision: 30, Time: now, Events: []streams.Event{ev}})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotEnd, ClusterID: 1, Generation: 3, Revision: 30, Time: now, Chunk: 1, Keys: 1})
	testenv.Eventually(t, 10*time.Second, func() bool {
		return diff(map[string]string{"/rf/z": "1"}, dump(t, p.standby.Client, rawRules(t))) == "" &&
			metricValue(t, reg, "etcdsync_applier_waiting_for_snapshot") == 0
	}, "standby re-seeded from generation 3")
}
