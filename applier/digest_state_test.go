package applier

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

func dg(r streams.Record) streams.Record { r.Digested = true; return r }

func h(k, v string) [32]byte { return streams.ElementHash([]byte(k), []byte(v)) }

func putPrev(key, value, prev string) streams.Event {
	e := putEvent(key, value)
	e.PrevHash = h(key, prev)
	return e
}

// restart is a new session of an applier with cfg (other scope flags, as
// `apply` restarted with other options), resuming the checkpoint as Reset
// does, after stream sequence seq.
func restart(t *testing.T, cli *clientv3.Client, cfg Config, seq uint64) *testApplier {
	cfg.Scope.Mode = keyspace.ModeRaw
	rules, err := keyspace.New(cfg.Scope)
	if err != nil {
		t.Fatal(err)
	}
	a := &testApplier{t: t, Applier: &Applier{cfg: cfg, etcd: cli, rules: rules, log: slog.New(slog.DiscardHandler),
		metrics: newMetrics(nil), vmetrics: newVerifyMetrics(nil), txn: txnBuilder{idx: map[string]int{}}, leases: leaseMap{etcd: cli, m: map[int64]standbyLease{}}}}
	ck, rev, readRev, err := readCheckpoint(context.Background(), cli, cfg.checkpointKey())
	if err != nil {
		t.Fatal(err)
	}
	a.ck, a.ckRev, a.ckReadRev, a.work = ck, rev, readRev, ck
	a.work.Digest = a.resumeDigest(ck.Digest)
	a.nextSeq, a.seq = seq+1, seq
	return a
}

// A record without digests makes the scope digest unknown; the next
// snapshot of the history the applier follows, at its own position, gives
// it back although the applier skips applying it (a periodic or
// digest_lost snapshot; also how a checkpoint written before digests gets
// one).
func TestDigestComesBackFromSnapshotAtPosition(t *testing.T) {
	e := testenv.StartEtcd(t)
	cfg := DefaultConfig()
	a := newTestApplier(t, e.Client, cfg)
	ctx := context.Background()
	a.apply(dg(revision(2, putEvent("/a", "1"))))
	v, err := Verify(ctx, e.Client, cfg.checkpointKey(), a.rules)
	if err != nil || v.Result != Verified {
		t.Fatalf("before: %+v %v", v, err)
	}
	a.apply(revision(3, putPrev("/a", "2", "1"))) // undigested (publisher lost a prevKV)
	// The publisher's digest_lost snapshot at its position, then digested records.
	a.apply(dg(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 3, Reason: "digest_lost"}),
		dg(streams.Record{Kind: streams.KindSnapshotChunk, Revision: 3, Events: []streams.Event{putEvent("/a", "2")}}),
		streams.Record{Kind: streams.KindSnapshotEnd, Revision: 3, Chunk: 1, Keys: 1, Digested: true, Digest: digestOf("/a", "2")},
		withDigest(revision(4, putPrev("/a", "3", "2")), digestOf("/a", "3")))
	v, err = Verify(ctx, e.Client, cfg.checkpointKey(), a.rules)
	t.Logf("after the digest_lost snapshot and a digested record: %s (%s), checkpoint digest nil: %v", v.Result, v.Reason, a.Applied().Digest == nil)
	if v.Result != Verified {
		t.Errorf("verification never recovers: %s: %s", v.Result, v.Reason)
	}
	if a.Applied().Digest == nil {
		t.Error("the checkpoint still carries no digest")
	}
	if n := a.LogChainBreaks(); n != 0 {
		t.Errorf("%v log chain breaks on a consistent log", n)
	}
}

// Scope options changed between runs and changed back: the digest kept
// under the other rules is dropped, never followed under these (which
// would end in a false MISMATCH).
func TestDigestDroppedWhenScopeRulesChange(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := context.Background()
	cfgA := DefaultConfig()
	cfgA.Scope.ExcludePrefixes = []string{"/x/"}
	a := newTestApplier(t, e.Client, cfgA)
	a.apply(dg(revision(2, putEvent("/a/1", "v"), putEvent("/x/1", "v"))))
	if v, err := Verify(ctx, e.Client, cfgA.checkpointKey(), a.rules); err != nil || v.Result != Verified {
		t.Fatalf("A: %+v %v", v, err)
	}
	// Restarted without the exclusion (B) for a while.
	cfgB := DefaultConfig()
	b := restart(t, e.Client, cfgB, a.seq)
	b.apply(dg(revision(3, putPrev("/x/1", "w", "v"))))
	vb, _ := Verify(ctx, e.Client, cfgB.checkpointKey(), b.rules)
	t.Logf("under B: %s (%s)", vb.Result, vb.Reason)
	// Back to A: nothing wrote the standby behind the applier's back, /a/1 equals the primary.
	a2 := restart(t, e.Client, cfgA, b.seq)
	v, err := Verify(ctx, e.Client, cfgA.checkpointKey(), a2.rules)
	if err != nil {
		t.Fatal(err)
	}
	if v.Result == Mismatch {
		t.Errorf("false MISMATCH after the scope options changed and changed back: %+v", v)
	}
}

// A raw keyspace of keys without a second "/" keeps one resource entry,
// not one per key: the checkpoint stays small and the applier goes on.
func TestRawFlatKeysKeepCheckpointSmall(t *testing.T) {
	const limit = 256 << 10
	e := testenv.StartEtcdConfig(t, embedded.EtcdConfig{MaxRequestBytes: limit})
	cfg := DefaultConfig()
	cfg.MaxRequestBytes, cfg.MaxTxnBytes = limit, 128<<10
	a := newTestApplier(t, e.Client, cfg)
	var err error
	n := 0
	for rev := int64(2); rev < 60 && err == nil; rev++ {
		r := revision(rev)
		for j := 0; j < 100; j++ {
			r.Events = append(r.Events, putEvent(fmt.Sprintf("/key-%06d", n), "v"))
			n++
		}
		err = a.ApplyBatch(context.Background(), a.msgs(dg(r)))
		if ck := a.Applied(); ck.Digest != nil && rev%10 == 0 {
			t.Logf("after %d keys: %d resource entries, checkpoint %d bytes", n, len(ck.Digest.Resources), func() int { return len(ck.encode()) }())
		}
	}
	resp, _ := e.Client.Get(context.Background(), cfg.checkpointKey())
	t.Logf("stopped after %d keys: %v; checkpoint %d bytes", n, err, len(resp.Kvs[0].Value))
	if err != nil || strings.Contains(string(resp.Kvs[0].Value), "stopped") {
		t.Errorf("the applier cannot go on: %v", err)
	}
	if n := len(resp.Kvs[0].Value); n > 2048 {
		t.Errorf("checkpoint of %d bytes after %d flat keys", n, n)
	}
}

// With MaxTxnBytes at the standby's limit (supported:
// TestCheckpointInBudget) and 60 resource types in the checkpoint's
// digest, a full transaction still fits: the budget sets room aside for
// the digest's entries.
func TestDigestFitsCheckpointReserve(t *testing.T) {
	e := testenv.StartEtcd(t)
	cfg := DefaultConfig()
	cfg.MaxTxnBytes = cfg.MaxRequestBytes
	a := newTestApplier(t, e.Client, cfg)
	r := revision(2)
	for i := 0; i < 60; i++ { // 60 resource types (a cluster with a few dozen CRDs)
		r.Events = append(r.Events, putEvent(fmt.Sprintf("/res%02d/obj", i), "v"))
	}
	a.apply(dg(r))
	t.Logf("checkpoint %d bytes (reserve %d)", func() int { c := a.Applied(); return len(c.encode()) }(), checkpointValueReserve)
	first := 800 << 10
	second := cfg.MaxRequestBytes - first - 2000
	err := a.ApplyBatch(context.Background(), a.msgs(dg(revision(11, putEvent("/a/x", strings.Repeat("a", first)))), dg(revision(12, putEvent("/b/x", strings.Repeat("b", second))))))
	if err != nil {
		t.Errorf("applier stopped: %v", err)
	}
}

// A snapshot at the applier's position whose in-scope keys differ from
// the applier's digest means the applier followed the log wrongly: it is
// counted, the snapshot's digest replaces the applier's, and the standby's
// verification shows the difference.
func TestSnapshotAtPositionChecksDigest(t *testing.T) {
	e := testenv.StartEtcd(t)
	cfg := DefaultConfig()
	a := newTestApplier(t, e.Client, cfg)
	ctx := context.Background()
	a.apply(dg(revision(2, putEvent("/a", "1"))))
	a.apply(dg(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 2, Reason: "periodic"}),
		dg(streams.Record{Kind: streams.KindSnapshotChunk, Revision: 2, Events: []streams.Event{putEvent("/a", "1"), putEvent("/b", "2")}}),
		streams.Record{Kind: streams.KindSnapshotEnd, Revision: 2, Chunk: 1, Keys: 2, Digested: true, Digest: digestOf("/a", "1", "/b", "2")})
	v, err := Verify(ctx, e.Client, cfg.checkpointKey(), a.rules)
	if err != nil || v.Result != Mismatch || v.Keys != 2 || v.FoundKeys != 1 {
		t.Fatalf("after a snapshot at the position holding a key the applier never wrote: %+v %v", v, err)
	}
	if got := testutilCounter(a.vmetrics.mismatches); got != 1 {
		t.Errorf("%v mismatches counted, want 1", got)
	}
}

// digestOf returns the digest of key, value pairs.
func digestOf(kv ...string) streams.Digest {
	var d streams.Digest
	for i := 0; i+1 < len(kv); i += 2 {
		d.AddPair([]byte(kv[i]), []byte(kv[i+1]))
	}
	return d
}

// A snapshot whose keys do not give the digest its end carries breaks the
// log chain, applied or skipped at the applier's position; one whose keys
// do, does not.
func TestSnapshotEndChecksLogChain(t *testing.T) {
	e := testenv.StartEtcd(t)
	cfg := DefaultConfig()
	a := newTestApplier(t, e.Client, cfg)
	// Applied: the bootstrap's snapshot carries a wrong digest.
	a.apply(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 2},
		streams.Record{Kind: streams.KindSnapshotChunk, Revision: 2, Events: []streams.Event{putEvent("/a", "1")}},
		streams.Record{Kind: streams.KindSnapshotEnd, Revision: 2, Chunk: 1, Keys: 1, Digested: true, Digest: digestOf("/a", "other")})
	if n := a.LogChainBreaks(); n != 1 {
		t.Fatalf("applied snapshot with a wrong digest: %v breaks, want 1", n)
	}
	if d := a.Applied().LogDigest; d == nil || *d != digestOf("/a", "other") {
		t.Fatal("the chain does not continue from the snapshot's digest")
	}
	// Skipped at the position: a periodic snapshot whose end carries a
	// digest its keys do not give.
	a.apply(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 2},
		streams.Record{Kind: streams.KindSnapshotChunk, Revision: 2, Events: []streams.Event{putEvent("/a", "other")}},
		streams.Record{Kind: streams.KindSnapshotEnd, Revision: 2, Chunk: 1, Keys: 1, Digested: true, Digest: digestOf("/a", "third")})
	if n := a.LogChainBreaks(); n != 2 {
		t.Fatalf("skipped snapshot with a wrong digest: %v breaks, want 2", n)
	}
	// A consistent one: no break.
	a.apply(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 2},
		streams.Record{Kind: streams.KindSnapshotChunk, Revision: 2, Events: []streams.Event{putEvent("/a", "other")}},
		streams.Record{Kind: streams.KindSnapshotEnd, Revision: 2, Chunk: 1, Keys: 1, Digested: true, Digest: digestOf("/a", "other")})
	if n := a.LogChainBreaks(); n != 2 {
		t.Fatalf("a consistent snapshot broke the chain: %v breaks", n)
	}
}

// withDigest marks r digested with digest d.
func withDigest(r streams.Record, d streams.Digest) streams.Record {
	r.Digested, r.Digest = true, d
	return r
}
