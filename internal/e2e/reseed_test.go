package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// snapshotRecords returns the records of a complete snapshot of cluster 1.
func snapshotRecords(gen uint64, rev int64, keys ...string) []*streams.Record {
	now := time.Now()
	var evs []streams.Event
	for _, k := range keys {
		evs = append(evs, snapshotKV(k))
	}
	return []*streams.Record{
		{Kind: streams.KindEpoch, ClusterID: 1, Generation: gen, Leader: "p"},
		{Kind: streams.KindSnapshotBegin, ClusterID: 1, Generation: gen, Revision: rev, Time: now},
		{Kind: streams.KindSnapshotChunk, ClusterID: 1, Generation: gen, Revision: rev, Time: now, Events: evs},
		{Kind: streams.KindSnapshotEnd, ClusterID: 1, Generation: gen, Revision: rev, Time: now, Chunk: 1, Keys: uint64(len(evs))},
	}
}

// A checkpoint says the record ending at seq 3 is half applied (its first
// 2 events are durable); the stream is recreated and a new generation's
// snapshot chunk sits at seq 3. The re-seed must not take the stale marker
// for its own: every key of the snapshot reaches the standby (issue 15.7).
func TestStalePartialDoesNotSurviveReseed(t *testing.T) {
	p := newPipeline(t)
	ckKey := "/etcdsync/checkpoint/" + streams.DefaultStream
	put(t, p.standby.Client, ckKey,
		`{"position":{"ClusterID":1,"Generation":1,"Revision":10,"Part":0,"Seq":1},"partial":{"seq":3,"events":2}}`)
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, streams.DefaultLogConfig()); err != nil {
		t.Fatal(err)
	}
	for _, r := range snapshotRecords(5, 20, "/sp/a", "/sp/b", "/sp/c", "/sp/d") {
		publishRecord(t, p, r)
	}
	ap, _ := p.startApplier(rawApplierConfig(p))
	testenvEventually(t, func() bool { ck := ap.Applied(); return ck.Position.Generation == 5 && ck.Snapshot == nil }, "snapshot of generation 5 applied")
	want := map[string]string{"/sp/a": "v", "/sp/b": "v", "/sp/c": "v", "/sp/d": "v"}
	if d := diff(want, dump(t, p.standby.Client, rawRules(t))); d != "" {
		t.Fatalf("standby after the re-seed:\n%s", d)
	}
	ck, _, err := applier.ReadCheckpoint(context.Background(), p.standby.Client, ckKey)
	if err != nil || ck.Partial != nil {
		t.Fatalf("checkpoint after the re-seed: partial %+v (%v), want none", ck.Partial, err)
	}
}

// The applier stops half-way through a snapshot; the stream is recreated
// and grows past the checkpoint's sequence with a new generation (its own
// snapshot, then revisions). The applier re-seeds from the new snapshot
// instead of taking the new revisions for corruption (issue 15.7).
func TestRecreatedStreamPastMidSnapshotCheckpointReseeds(t *testing.T) {
	p := newPipeline(t)
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, streams.DefaultLogConfig()); err != nil {
		t.Fatal(err)
	}
	for _, r := range snapshotRecords(1, 10, "/ms/x", "/ms/y")[:3] {
		publishRecord(t, p, r)
	}
	ap, ar := p.startApplier(rawApplierConfig(p))
	testenvEventually(t, func() bool { s := ap.Applied().Snapshot; return s != nil && s.Chunks == 1 }, "first chunk applied")
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	recreateLogStream(t, p)
	for _, r := range snapshotRecords(2, 20, "/ms/a") {
		publishRecord(t, p, r)
	}
	now := time.Now()
	for i, k := range []string{"/ms/b", "/ms/c"} {
		rev := int64(21 + i)
		publishRecord(t, p, &streams.Record{Kind: streams.KindRevision, ClusterID: 1, Generation: 2, Revision: rev, Time: now,
			Events: []streams.Event{{Type: streams.EventPut, Key: []byte(k), Value: []byte("v"), CreateRevision: rev, ModRevision: rev, Version: 1}}})
	}
	ap, ar = p.startApplier(rawApplierConfig(p))
	testenvEventually(t, func() bool {
		select {
		case <-ar.done:
			return true
		default:
		}
		return ap.Applied().Position.Revision == 22
	}, "new generation applied or the applier stopped")
	select {
	case <-ar.done:
		t.Fatalf("applier stopped: %v", ar.err)
	default:
	}
	want := map[string]string{"/ms/a": "v", "/ms/b": "v", "/ms/c": "v"}
	if d := diff(want, dump(t, p.standby.Client, rawRules(t))); d != "" {
		t.Fatalf("standby after the re-seed:\n%s", d)
	}
}
