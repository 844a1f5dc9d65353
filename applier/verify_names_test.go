package applier

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// Two resource types whose names, cut at maxResourceName bytes inside a
// multi-byte character, would be different bytes but the same JSON
// string: resourceOf names them so that the checkpoint read back keeps
// both, and an untouched standby verifies.
func TestResourceNamesSurviveJSON(t *testing.T) {
	e := testenv.StartEtcd(t)
	cfg := DefaultConfig()
	a := newTestApplier(t, e.Client, cfg)
	seg := strings.Repeat("a", 126)
	k1 := "/" + seg + "é/x" // valid UTF-8 keys; the name is cut inside é / 中
	k2 := "/" + seg + "中/y"
	t.Logf("names %q %q", resourceOf(a.rules, []byte(k1)), resourceOf(a.rules, []byte(k2)))
	a.apply(dg(revision(2, putEvent(k1, "1"), putEvent(k2, "2"))))
	v, err := Verify(context.Background(), e.Client, cfg.checkpointKey(), a.rules)
	if err != nil {
		t.Fatal(err)
	}
	if v.Result != Verified {
		t.Errorf("untouched standby: %s keys %d found %d resources %+v", v.Result, v.Keys, v.FoundKeys, v.Resources)
	}
}

// Resource names as resourceOf makes them need no JSON escaping, so the
// digest's JSON stays within what the budget sets aside for it, whatever
// the keys' bytes.
func TestDigestJSONBound(t *testing.T) {
	rules, err := keyspace.New(keyspace.Config{Mode: keyspace.ModeRaw})
	if err != nil {
		t.Fatal(err)
	}
	d := &ScopeDigest{Resources: map[string]ResourceDigest{}}
	for i := 0; i < maxResources+1; i++ {
		key := "/" + strings.Repeat("<\x00\xff", maxResourceName) + string(rune('A'+i%26)) + string(rune('A'+i/26)) + "/k"
		name := resourceOf(rules, []byte(key))
		d.Resources[name+string(rune('A'+i%26))+string(rune('A'+i/26))] = ResourceDigest{Keys: 1 << 40}
	}
	b, _ := json.Marshal(d)
	t.Logf("JSON %d bytes, maxDigestBytes %d", len(b), maxDigestBytes)
	if len(b) > maxDigestBytes {
		t.Errorf("digest JSON %d bytes > maxDigestBytes %d", len(b), maxDigestBytes)
	}
}

// 64 resource types whose names JSON would escape (up to 6 bytes a byte)
// keep the checkpoint within the room the budget sets aside, with
// MaxTxnBytes at the standby's limit: full transactions still commit.
func TestEscapedNamesStayInReserve(t *testing.T) {
	e := testenv.StartEtcd(t)
	cfg := DefaultConfig()
	cfg.MaxTxnBytes = cfg.MaxRequestBytes
	a := newTestApplier(t, e.Client, cfg)
	r := revision(2)
	for i := 0; i < 64; i++ {
		seg := strings.Repeat("<", 120) + string(rune('A'+i%26)) + string(rune('A'+i/26))
		r.Events = append(r.Events, putEvent("/"+seg+"/obj", "v"))
	}
	a.apply(dg(r))
	if c := a.Applied(); len(c.encode()) > checkpointValueReserve {
		t.Fatalf("checkpoint of %d bytes, above the %d the budget sets aside", len(c.encode()), checkpointValueReserve)
	}
	first := 800 << 10
	second := cfg.MaxRequestBytes - first - 2000
	err := a.ApplyBatch(context.Background(), a.msgs(dg(revision(11, putEvent("/a/x", strings.Repeat("a", first)))), dg(revision(12, putEvent("/b/x", strings.Repeat("b", second))))))
	if err != nil {
		t.Errorf("applier stopped: %v", err)
	}
}

// A revision split across transactions and replayed from its Partial
// marker after a restart moves the log chain once, after its last event:
// no break, and the standby verifies.
func TestLogChainSurvivesRestartMidRecord(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.MaxTxnOps = 4
	a := newTestApplier(t, e.Client, cfg)
	var D streams.Digest
	r := revision(2)
	for i := 0; i < 10; i++ {
		k, v := "/a/"+string(rune('a'+i)), "v"
		r.Events = append(r.Events, putEvent(k, v))
		D.AddPair([]byte(k), []byte(v))
	}
	r.Digested, r.Digest = true, D
	// the empty snapshot at 1 is undigested in newTestApplier: give the chain a base
	a.work.LogDigest = &streams.Digest{}
	base := a.seq
	a.apply(r)
	// roll the checkpoint back to the first mid-record flush (a crash there)
	h, _ := e.Client.Get(ctx, cfg.checkpointKey())
	var found string
	for rev := h.Kvs[0].ModRevision - 1; rev > 0 && found == ""; rev-- {
		g, err := e.Client.Get(ctx, cfg.checkpointKey(), clientv3.WithRev(rev))
		if err != nil || len(g.Kvs) == 0 {
			break
		}
		if strings.Contains(string(g.Kvs[0].Value), `"partial"`) {
			found = string(g.Kvs[0].Value)
		}
	}
	if found == "" {
		t.Fatal("no partial checkpoint")
	}
	e.Client.Put(ctx, cfg.checkpointKey(), found)
	b := restart(t, e.Client, cfg, base)
	b.apply(r)
	t.Logf("breaks %v, log digest ok %v", b.LogChainBreaks(), *b.Applied().LogDigest == D)
	if b.LogChainBreaks() != 0 || *b.Applied().LogDigest != D {
		t.Error("chain broken by a restart mid-record")
	}
	v, _ := Verify(ctx, e.Client, cfg.checkpointKey(), b.rules)
	if v.Result != Verified {
		t.Errorf("%+v", v)
	}
}

// An unparsed in-scope key has a resource group of its own, never taken
// for the overflow group: a write behind the applier's back is still
// narrowed to its resource type.
func TestNarrowingWithUnparsedKeys(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := context.Background()
	cfg := DefaultConfig()
	rules, err := keyspace.New(cfg.Scope)
	if err != nil {
		t.Fatal(err)
	}
	a := &testApplier{t: t, Applier: &Applier{cfg: cfg, etcd: e.Client, rules: rules, log: slog.New(slog.DiscardHandler),
		metrics: newMetrics(nil), vmetrics: newVerifyMetrics(nil), txn: txnBuilder{idx: map[string]int{}}, leases: leaseMap{etcd: e.Client, m: map[int64]standbyLease{}}}}
	a.nextSeq = 1
	a.apply(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 1, Prefix: []byte("/registry")},
		streams.Record{Kind: streams.KindSnapshotEnd, Revision: 1})
	a.apply(dg(revision(2, putEvent("/registry/configmaps/ns/a", "v"), putEvent("/registry", "unparsed"))))
	t.Logf("resources %v", func() []string {
		var s []string
		for n := range a.Applied().Digest.Resources {
			s = append(s, n)
		}
		return s
	}())
	if v, _ := Verify(ctx, e.Client, cfg.checkpointKey(), a.rules); v.Result != Verified {
		t.Fatalf("before: %+v", v)
	}
	if _, err := e.Client.Put(ctx, "/registry/secrets/ns/s", "behind the back"); err != nil {
		t.Fatal(err)
	}
	v, _ := Verify(ctx, e.Client, cfg.checkpointKey(), a.rules)
	t.Logf("%s %+v", v.Result, v.Resources)
	if len(v.Resources) != 1 || v.Resources[0].Resource != "secrets" {
		t.Errorf("mismatch not narrowed to secrets: %+v", v.Resources)
	}
}
