package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// snapshotKV is a snapshot event putting key k.
func snapshotKV(k string) streams.Event {
	return streams.Event{Type: streams.EventPut, Key: []byte(k), Value: []byte("v"), CreateRevision: 2, ModRevision: 2, Version: 1}
}

// interruptedBootstrap publishes snapshot S1 (generation 1) with s1Keys,
// lets the applier apply its only chunk, then publishes a complete snapshot
// S2 (generation 2) with s2Keys, as a publisher restarted mid-snapshot does.
func interruptedBootstrap(t *testing.T, p *pipeline, s1Keys, s2Keys []string) (*applier.Applier, *running) {
	t.Helper()
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, streams.DefaultLogConfig()); err != nil {
		t.Fatal(err)
	}
	events := func(keys []string) []streams.Event {
		var evs []streams.Event
		for _, k := range keys {
			evs = append(evs, snapshotKV(k))
		}
		return evs
	}
	now := time.Now()
	publishRecord(t, p, &streams.Record{Kind: streams.KindEpoch, ClusterID: 1, Generation: 1, Leader: "a"})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotBegin, ClusterID: 1, Generation: 1, Revision: 10, Time: now})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotChunk, ClusterID: 1, Generation: 1, Revision: 10, Time: now, Events: events(s1Keys)})
	ap, r := p.startApplier(rawApplierConfig(p))
	testenvEventually(t, func() bool { s := ap.Applied().Snapshot; return s != nil && s.Chunks == 1 }, "first chunk of S1 applied")
	later := now.Add(time.Second)
	publishRecord(t, p, &streams.Record{Kind: streams.KindEpoch, ClusterID: 1, Generation: 2, Leader: "b"})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotBegin, ClusterID: 1, Generation: 2, Revision: 12, Time: later})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotChunk, ClusterID: 1, Generation: 2, Revision: 12, Time: later, Events: events(s2Keys)})
	publishRecord(t, p, &streams.Record{Kind: streams.KindSnapshotEnd, ClusterID: 1, Generation: 2, Revision: 12, Time: later, Chunk: 1, Keys: uint64(len(s2Keys))})
	return ap, r
}

func keyNames(format string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf(format, i)
	}
	return keys
}

// An interrupted first snapshot wrote keys the next snapshot lacks: on a
// standby that was empty before the bootstrap they are the pipeline's own,
// and deleting them is no mass deletion (issue 15.4).
func TestInterruptedBootstrapOwnKeysNotGuarded(t *testing.T) {
	p := newPipeline(t)
	ap, r := interruptedBootstrap(t, p, keyNames("/g/s1-%02d", 15), []string{"/g/a", "/g/b"})
	settled := func() bool {
		select {
		case <-r.done:
			return true
		default:
		}
		ck := ap.Applied()
		return ck.Position.Generation == 2 && ck.Snapshot == nil
	}
	testenvEventually(t, settled, "second snapshot applied or the applier stopped")
	select {
	case <-r.done:
		t.Fatalf("applier stopped: %v", r.err)
	default:
	}
	want := map[string]string{"/g/a": "v", "/g/b": "v"}
	if d := diff(want, dump(t, p.standby.Client, rawRules(t))); d != "" {
		t.Fatalf("standby after the bootstrap:\n%s", d)
	}
}

// Keys that were on the standby before the bootstrap still count for the
// guard when an interrupted snapshot rewrote them.
func TestInterruptedBootstrapGuardsStandbyKeys(t *testing.T) {
	p := newPipeline(t)
	old := keyNames("/g/old-%02d", 40)
	for _, k := range old {
		put(t, p.standby.Client, k, "standby")
	}
	_, r := interruptedBootstrap(t, p, old[:30], []string{"/g/new"})
	err := r.wait(t, 20*time.Second, "applier facing a mass delete")
	var md *applier.MassDeleteError
	if !errors.As(err, &md) || md.Delete != 40 || md.InScope != 40 {
		t.Fatalf("want MassDeleteError deleting 40 of 40, got %v", err)
	}
	if resp, _ := p.standby.Client.Get(context.Background(), "/g/old-", clientv3.WithPrefix(), clientv3.WithCountOnly()); resp.Count != 40 {
		t.Fatalf("standby keys deleted despite the guard: %d left", resp.Count)
	}
}
