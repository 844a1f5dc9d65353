package applier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

// snapshotRecords returns the records of a snapshot at rev under prefix
// that holds keys (one chunk).
func snapshotRecords(rev int64, prefix string, keys ...string) []streams.Record {
	chunk := streams.Record{Kind: streams.KindSnapshotChunk, Revision: rev}
	for _, k := range keys {
		chunk.Events = append(chunk.Events, putEvent(k, "snap"))
	}
	return []streams.Record{
		{Kind: streams.KindSnapshotBegin, Revision: rev, Prefix: []byte(prefix)},
		chunk,
		{Kind: streams.KindSnapshotEnd, Revision: rev, Chunk: 1, Keys: uint64(len(keys))},
	}
}

// putKeys writes keys on the standby directly (keys the applier finds
// there when a snapshot begins), in transactions of 100.
func putKeys(t *testing.T, cli *clientv3.Client, keys []string) {
	t.Helper()
	for start := 0; start < len(keys); start += 100 {
		var ops []clientv3.Op
		for _, k := range keys[start:min(start+100, len(keys))] {
			ops = append(ops, clientv3.OpPut(k, "standby"))
		}
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// standbyKeys returns the standby's keys under prefix, in order.
func standbyKeys(t *testing.T, cli *clientv3.Client, prefix string) []string {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// A snapshot makes the standby's keyspace under the snapshot's prefix
// exactly the snapshot, and leaves keys outside that prefix alone (in
// scope or not, another publisher's prefix is not the snapshot's to
// delete).
func TestSnapshotDeletesOnlyUnderItsPrefix(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newTestApplier(t, e.Client, DefaultConfig())
	putKeys(t, e.Client, []string{"/app/keep", "/app/stale", "/other/x", "/apps/y"})
	a.apply(snapshotRecords(5, "/app/", "/app/keep", "/app/new")...)
	got := slices.DeleteFunc(standbyKeys(t, e.Client, "/"), func(k string) bool { return strings.HasPrefix(k, "/etcdsync/") })
	want := []string{"/app/keep", "/app/new", "/apps/y", "/other/x"}
	if !slices.Equal(got, want) {
		t.Fatalf("standby after a snapshot of /app/: %q, want %q", got, want)
	}
}

// The keys a snapshot deletes are found in pages of scanPage keys: a
// standby holding more stale keys than one page loses all of them.
func TestSnapshotDeletesBeyondOnePage(t *testing.T) {
	e := testenv.StartEtcd(t)
	cfg := DefaultConfig()
	cfg.AllowMassDelete = true
	a := newTestApplier(t, e.Client, cfg)
	var stale []string
	for i := range scanPage + 7 {
		stale = append(stale, fmt.Sprintf("/app/stale/%05d", i))
	}
	putKeys(t, e.Client, stale)
	a.apply(snapshotRecords(5, "/app/", "/app/keep")...)
	if got := standbyKeys(t, e.Client, "/app/"); !slices.Equal(got, []string{"/app/keep"}) {
		t.Fatalf("standby after the snapshot holds %d keys (first %q), want /app/keep alone", len(got), got[:min(len(got), 3)])
	}
}

// The mass-delete guard at its boundaries: deleting exactly
// MassDeleteMinKeys keys, or exactly MaxDeleteRatio of the standby's
// in-scope keys, is allowed; one more is refused with ErrMassDelete, and
// then nothing is deleted.
func TestMassDeleteGuardBoundaries(t *testing.T) {
	for _, tt := range []struct {
		name          string
		minKeys       int64
		ratio         float64
		standby, kept int
		refused       bool
	}{
		{"ratio reached", 2, 0.5, 20, 10, false},
		{"ratio exceeded by one key", 2, 0.5, 20, 9, true},
		{"minimum reached", 3, 0.1, 10, 7, false},
		{"minimum exceeded by one key", 3, 0.1, 10, 6, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := testenv.StartEtcd(t)
			cfg := DefaultConfig()
			cfg.MassDeleteMinKeys, cfg.MaxDeleteRatio = tt.minKeys, tt.ratio
			a := newTestApplier(t, e.Client, cfg)
			var keys []string
			for i := range tt.standby {
				keys = append(keys, fmt.Sprintf("/app/k%02d", i))
			}
			putKeys(t, e.Client, keys)
			err := a.ApplyBatch(context.Background(), a.msgs(snapshotRecords(5, "/app/", keys[:tt.kept]...)...))
			got := standbyKeys(t, e.Client, "/app/")
			var mde *MassDeleteError
			switch {
			case tt.refused && (!errors.Is(err, ErrMassDelete) || !errors.As(err, &mde) || mde.Delete != int64(tt.standby-tt.kept) || mde.InScope != int64(tt.standby)):
				t.Fatalf("snapshot deleting %d of %d keys: %v, want ErrMassDelete counting %d of %d", tt.standby-tt.kept, tt.standby, err, tt.standby-tt.kept, tt.standby)
			case tt.refused && len(got) != tt.standby:
				t.Fatalf("refused snapshot deleted keys: %d left of %d", len(got), tt.standby)
			case !tt.refused && (err != nil || !slices.Equal(got, keys[:tt.kept])):
				t.Fatalf("snapshot deleting %d of %d keys: %v, standby holds %d keys, want %d", tt.standby-tt.kept, tt.standby, err, len(got), tt.kept)
			}
		})
	}
}

// A snapshot of the history the standby follows is skipped when it is at
// or below the standby's position (a periodic one it is past), and applied
// when it is above it (revisions are missing before it).
func TestSameGenerationSnapshotAboveApplied(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newTestApplier(t, e.Client, DefaultConfig())
	a.apply(revision(3, putEvent("/app/a", "v")))
	a.apply(snapshotRecords(2, "", "/app/old")...)
	if got := standbyKeys(t, e.Client, "/app/"); !slices.Equal(got, []string{"/app/a"}) {
		t.Fatalf("after a snapshot below the position: %q, want it skipped", got)
	}
	a.apply(snapshotRecords(7, "", "/app/a", "/app/new")...)
	if got := standbyKeys(t, e.Client, "/app/"); !slices.Equal(got, []string{"/app/a", "/app/new"}) {
		t.Fatalf("after a snapshot above the position: %q, want it applied", got)
	}
	if ck, _, err := ReadCheckpoint(context.Background(), e.Client, DefaultConfig().checkpointKey()); err != nil || ck.Position.Revision != 7 {
		t.Fatalf("checkpoint %+v (%v), want revision 7", ck, err)
	}
}
