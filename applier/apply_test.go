package applier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// testApplier is an applier writing to a real standby etcd and fed by the
// test through ApplyBatch (no stream).
type testApplier struct {
	*Applier
	t   *testing.T
	seq uint64
}

const testCluster, testGeneration = 0xc1, 1

// newTestApplier returns an applier on cli (raw keyspace) that has applied
// an empty snapshot at source revision 1.
func newTestApplier(t *testing.T, cli *clientv3.Client, cfg Config) *testApplier {
	t.Helper()
	cfg.Scope.Mode = keyspace.ModeRaw
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rules, err := keyspace.New(cfg.Scope)
	if err != nil {
		t.Fatal(err)
	}
	a := &testApplier{t: t, Applier: &Applier{cfg: cfg, etcd: cli, rules: rules, log: slog.New(slog.DiscardHandler),
		metrics: newMetrics(nil), vmetrics: newVerifyMetrics(nil), txn: txnBuilder{idx: map[string]int{}}, leases: leaseMap{etcd: cli, m: map[int64]standbyLease{}}}}
	a.nextSeq = 1
	a.apply(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 1},
		streams.Record{Kind: streams.KindSnapshotEnd, Revision: 1})
	return a
}

// apply hands recs, one message each, to ApplyBatch in one batch.
func (a *testApplier) apply(recs ...streams.Record) {
	a.t.Helper()
	if err := a.ApplyBatch(context.Background(), a.msgs(recs...)); err != nil {
		a.t.Fatal(err)
	}
}

func (a *testApplier) msgs(recs ...streams.Record) []Msg {
	a.t.Helper()
	var msgs []Msg
	for i := range recs {
		r := &recs[i]
		r.ClusterID, r.Generation, r.Time = testCluster, testGeneration, time.Now()
		frames, err := streams.SplitRecord(r, streams.DefaultMaxMsgSize, nil, "etcdsync.primary.log.rev", 0)
		if err != nil || len(frames) != 1 {
			a.t.Fatalf("encode record: %d frames, %v", len(frames), err)
		}
		a.seq++
		msgs = append(msgs, Msg{Seq: a.seq, Data: frames[0]})
	}
	return msgs
}

func putEvent(key, value string) streams.Event {
	return streams.Event{Type: streams.EventPut, Key: []byte(key), Value: []byte(value)}
}

func revision(rev int64, events ...streams.Event) streams.Record {
	return streams.Record{Kind: streams.KindRevision, Revision: rev, Events: events}
}

// TestRequestBytes checks the request size the budget computes against the
// protobuf encoding etcd measures (with the largest request ID).
func TestRequestBytes(t *testing.T) {
	for _, tt := range []struct {
		key, value string
		lease      int64
		rev        int64
		del        bool
	}{
		{key: "/k", value: "v", rev: 0},
		{key: "/registry/configmaps/default/big", value: strings.Repeat("v", 1572700), rev: 1},
		{key: "/a", value: strings.Repeat("v", 200), lease: 0x694d7a1c2b3f4e5d, rev: math.MaxInt64},
		{key: "/a", value: "", rev: 127},
		{key: strings.Repeat("k", 300), del: true, rev: 128},
	} {
		const ck = "/etcdsync/checkpoint/ETCDSYNC"
		op := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(tt.key), Value: []byte(tt.value), Lease: tt.lease}}}
		opBytes := putOpBytes(len(tt.key), len(tt.value), tt.lease)
		if tt.del {
			op = &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(tt.key)}}}
			opBytes = deleteOpBytes(len(tt.key))
		}
		req := &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: math.MaxUint64}, Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Target: pb.Compare_MOD, Key: []byte(ck), TargetUnion: &pb.Compare_ModRevision{ModRevision: tt.rev}}},
			Success: []*pb.RequestOp{op},
		}}
		if got, want := requestBytes(compareBytes(len(ck), tt.rev)+opBytes), proto.Size(req); got != want {
			t.Errorf("key %d bytes, value %d bytes, lease %x, rev %d, delete %v: computed %d request bytes, encoding has %d",
				len(tt.key), len(tt.value), tt.lease, tt.rev, tt.del, got, want)
		}
	}
}

// TestBudget is the transaction builder's budget: what a revision adds to
// the transaction being built and whether it still fits with the checkpoint.
func TestBudget(t *testing.T) {
	b := budget{maxOps: 4, maxBytes: 1000, reserve: 100}
	for _, tt := range []struct {
		ops, bytes int
		want       bool
	}{
		{0, 0, true},
		{3, 900, true},   // three operations and the checkpoint: full
		{4, 10, false},   // the checkpoint is an operation
		{1, 901, false},  // the checkpoint's bytes count
		{2, 900, true},   //
		{0, 2000, false}, // too large for any transaction: goes alone
	} {
		if got := b.fits(tt.ops, tt.bytes); got != tt.want {
			t.Errorf("fits(%d ops, %d bytes) = %v, want %v", tt.ops, tt.bytes, got, tt.want)
		}
	}
	small, big := putOpBytes(2, 10, 0), putOpBytes(2, 500, 0)
	var tb txnBuilder
	tb.idx = map[string]int{"/k": 0}
	tb.sizes = []int{small}
	all := func([]byte) bool { return true }
	for _, tt := range []struct {
		name       string
		events     []streams.Event
		ops, bytes int
	}{
		{"new key", []streams.Event{putEvent("/j", strings.Repeat("v", 10))}, 1, small},
		{"key in the transaction grows", []streams.Event{putEvent("/k", strings.Repeat("v", 500))}, 0, big - small},
		{"key written twice in the revision", []streams.Event{putEvent("/j", strings.Repeat("v", 500)), putEvent("/j", strings.Repeat("v", 10))}, 1, small},
		{"key in the transaction deleted", []streams.Event{{Type: streams.EventDelete, Key: []byte("/k")}}, 0, deleteOpBytes(2) - small},
		{"lease counted at its largest", []streams.Event{{Type: streams.EventPut, Key: []byte("/j"), Value: []byte("0123456789"), Lease: 1}}, 1, putOpBytes(2, 10, math.MaxInt64)},
	} {
		ops, bytes := tb.cost(tt.events, all)
		if ops != tt.ops || bytes != tt.bytes {
			t.Errorf("%s: cost %d ops, %d bytes; want %d ops, %d bytes", tt.name, ops, bytes, tt.ops, tt.bytes)
		}
	}
	if ops, bytes := tb.cost([]streams.Event{putEvent("/x", "v")}, func([]byte) bool { return false }); ops != 0 || bytes != 0 {
		t.Errorf("an event out of scope costs %d ops, %d bytes", ops, bytes)
	}
}

// Folding a later, larger write of a key over an earlier one counts the
// difference and flushes first when the transaction would exceed its
// budget (issue 15.2: rev 11 puts a small k, rev 12 a 900 KiB j, rev 13 a
// 700 KiB k; the fold took the transaction to 1.6 MiB and the standby
// refused it). The same writes with j and k in one revision (too large for
// one transaction, so split) must fold within the budget too.
func TestFoldStaysInBudget(t *testing.T) {
	j, k := strings.Repeat("j", 900<<10), strings.Repeat("k", 700<<10)
	for _, tt := range []struct {
		name string
		recs []streams.Record
	}{
		{"three revisions", []streams.Record{revision(11, putEvent("/k", "small")), revision(12, putEvent("/j", j)), revision(13, putEvent("/k", k))}},
		{"a split revision", []streams.Record{revision(11, putEvent("/k", "small")), revision(13, putEvent("/j", j), putEvent("/k", k))}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := testenv.StartEtcd(t)
			a := newTestApplier(t, e.Client, DefaultConfig())
			a.apply(tt.recs...)
			resp, err := e.Client.Get(context.Background(), "/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, kv := range resp.Kvs {
				got[string(kv.Key)] = string(kv.Value)
			}
			if got["/j"] != j || got["/k"] != k {
				t.Errorf("standby holds /j of %d bytes and /k of %d bytes, want %d and %d", len(got["/j"]), len(got["/k"]), len(j), len(k))
			}
			if pos := a.Applied().Position; pos.Revision != 13 {
				t.Errorf("checkpoint at %s, want revision 13", pos)
			}
		})
	}
}

// Transactions end at revision boundaries: at every standby revision the
// applier wrote, each source revision that fits in one transaction is
// there whole or not at all; only the revision larger than a transaction
// is split (issue 15.6).
func TestTxnsEndAtRevisionBoundaries(t *testing.T) {
	e := testenv.StartEtcdConfig(t, embedded.EtcdConfig{MaxTxnOps: 8})
	cfg := DefaultConfig()
	cfg.MaxTxnOps = 8
	a := newTestApplier(t, e.Client, cfg)
	sizes := []int{3, 3, 3, 1, 5, 2, 7, 20, 4, 6, 1, 1, 2, 7, 3}
	var recs []streams.Record
	for i, n := range sizes {
		rev := int64(10 + i)
		r := revision(rev)
		for j := 0; j < n; j++ {
			r.Events = append(r.Events, putEvent(fmt.Sprintf("/t/%d/%02d", rev, j), "v"))
		}
		recs = append(recs, r)
	}
	from := a.ckRev
	a.apply(recs...)
	to := a.ckRev
	if pos := a.Applied().Position; pos.Revision != int64(10+len(sizes)-1) {
		t.Fatalf("checkpoint at %s", pos)
	}
	for rev := from + 1; rev <= to; rev++ {
		resp, err := e.Client.Get(context.Background(), "/t/", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		have := map[int64]int{}
		for _, kv := range resp.Kvs {
			var src int64
			var j int
			fmt.Sscanf(string(kv.Key), "/t/%d/%d", &src, &j)
			have[src]++
		}
		for i, n := range sizes {
			src := int64(10 + i)
			if n+1 <= cfg.MaxTxnOps && have[src] != 0 && have[src] != n {
				t.Errorf("standby revision %d holds %d of the %d keys of source revision %d", rev, have[src], n, src)
			}
		}
	}
	t.Logf("%d source revisions in %d standby transactions", len(sizes), to-from)
}

// The checkpoint's compare and put count in the transaction's byte budget:
// with MaxTxnBytes at the standby's request limit, two values that fill it
// without the checkpoint go in two transactions, not one the standby
// refuses (issue 15.1).
func TestCheckpointInBudget(t *testing.T) {
	e := testenv.StartEtcd(t)
	cfg := DefaultConfig()
	cfg.MaxTxnBytes = cfg.MaxRequestBytes
	a := newTestApplier(t, e.Client, cfg)
	first := 800 << 10
	second := cfg.MaxRequestBytes - first - 200 // both fit the limit, the checkpoint does not
	a.apply(revision(11, putEvent("/a", strings.Repeat("a", first))), revision(12, putEvent("/b", strings.Repeat("b", second))))
	if pos := a.Applied().Position; pos.Revision != 12 {
		t.Errorf("checkpoint at %s, want revision 12", pos)
	}
}

// An operation the standby refuses even alone stops the applier with a
// *TooLargeError recorded in the checkpoint; the next checkpoint the
// applier writes, once it gets past the cause, clears the record.
func TestStopRecordedThenCleared(t *testing.T) {
	const limit = 64 << 10
	e := testenv.StartEtcdConfig(t, embedded.EtcdConfig{MaxRequestBytes: limit})
	cfg := DefaultConfig()
	cfg.MaxRequestBytes, cfg.MaxTxnBytes = limit, 32<<10
	a := newTestApplier(t, e.Client, cfg)
	err := a.ApplyBatch(context.Background(), a.msgs(revision(11, putEvent("/big", strings.Repeat("v", 100<<10)))))
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Key != "/big" || tl.Limit != limit {
		t.Fatalf("ApplyBatch: %v, want a *TooLargeError for /big", err)
	}
	ck, rev, err := ReadCheckpoint(context.Background(), e.Client, cfg.checkpointKey())
	if err != nil {
		t.Fatal(err)
	}
	if ck.Stopped == nil || !strings.Contains(ck.Stopped.Reason, `"/big"`) || ck.Position.Revision != 1 {
		t.Fatalf("checkpoint after the stop: %+v, want the stop recorded at revision 1", ck)
	}
	// A new session from the checkpoint (as Reset) that gets past it.
	a.ck, a.ckRev, a.work, a.nextSeq, a.seq = ck, rev, ck, ck.Position.Seq+1, ck.Position.Seq
	a.txn.reset()
	a.apply(revision(11, putEvent("/big", "smaller")))
	if ck, _, err = ReadCheckpoint(context.Background(), e.Client, cfg.checkpointKey()); err != nil || ck.Stopped != nil || ck.Position.Revision != 11 {
		t.Errorf("checkpoint after the next transaction: %+v (%v), want revision 11 and no stop", ck, err)
	}
}

// A batch whose records contradict each other (a revision inside an
// unfinished snapshot, a snapshot end that does not count what was sent) is
// corrupt, and nothing of it reaches the standby: neither the keys of the
// records before the contradiction nor a moved checkpoint, even when
// those records fill several transactions.
func TestCorruptBatchWritesNothing(t *testing.T) {
	chunk := func(rev int64) streams.Record {
		r := streams.Record{Kind: streams.KindSnapshotChunk, Revision: rev}
		for i := range 10 {
			r.Events = append(r.Events, putEvent(fmt.Sprintf("/k/%02d", i), "v"))
		}
		return r
	}
	for _, tt := range []struct {
		name string
		recs []streams.Record
		want string
	}{
		{"revision inside an unfinished snapshot", []streams.Record{
			{Kind: streams.KindEpoch, Revision: 1},
			{Kind: streams.KindSnapshotBegin, Revision: 5},
			chunk(5),
			revision(6, putEvent("/k/late", "v")),
		}, "arrived before snapshot"},
		{"snapshot end that does not count its chunks", []streams.Record{
			{Kind: streams.KindSnapshotBegin, Revision: 5},
			chunk(5),
			{Kind: streams.KindSnapshotEnd, Revision: 5, Chunk: 2, Keys: 20},
		}, "ended at seq"},
		{"chunk then revision after the end of another snapshot", []streams.Record{
			revision(2, putEvent("/k/a", "v")),
			revision(3, putEvent("/k/b", "v")),
			{Kind: streams.KindSnapshotBegin, Revision: 7},
			chunk(7),
			{Kind: streams.KindSnapshotEnd, Revision: 6, Chunk: 1, Keys: 10},
			revision(8, putEvent("/k/c", "v")),
		}, "arrived before snapshot"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := testenv.StartEtcd(t)
			cfg := DefaultConfig()
			cfg.MaxTxnOps = 4
			a := newTestApplier(t, e.Client, cfg)
			before, _, err := ReadCheckpoint(context.Background(), e.Client, cfg.checkpointKey())
			if err != nil {
				t.Fatal(err)
			}
			err = a.ApplyBatch(context.Background(), a.msgs(tt.recs...))
			if !errors.Is(err, streams.ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ApplyBatch: %v, want ErrCorrupt saying %q", err, tt.want)
			}
			resp, err := e.Client.Get(context.Background(), "/k/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			after, _, err := ReadCheckpoint(context.Background(), e.Client, cfg.checkpointKey())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count != 0 || after.Position != before.Position || after.Snapshot != nil {
				t.Errorf("corrupt batch wrote %d keys; checkpoint %s (snapshot %v), was %s", resp.Count, after.Position, after.Snapshot, before.Position)
			}
		})
	}
}

// unparsedCount reads etcdsync_applier_unparsed_keys_total.
func (a *testApplier) unparsedCount() float64 {
	a.t.Helper()
	var m dto.Metric
	if err := a.metrics.unparsed.Write(&m); err != nil {
		a.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestUnparsedKeysCounted: keys that do not parse as Kubernetes keys, to
// which no namespace or resource rule applies (an aggregated API server
// storing under its own --etcd-prefix "/registry/<group>"), are replicated
// and every operation on one is counted in
// etcdsync_applier_unparsed_keys_total, for an operator to see them.
func TestUnparsedKeysCounted(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newTestApplier(t, e.Client, DefaultConfig())
	rules, err := keyspace.New(keyspace.Config{ExcludeNamespaces: []string{"app"}})
	if err != nil {
		t.Fatal(err)
	}
	a.rules = rules
	const aggregated = "/registry/wardle.example.com/wardle.example.com/flunders/app/f" // namespace "app" is not seen
	ctx := context.Background()
	if _, err := e.Client.Put(ctx, "/registry/pods/web/p/x", "the standby's"); err != nil {
		t.Fatal(err)
	}

	a.apply(revision(10,
		putEvent("/registry/configmaps/web/c", "v"), // parses
		putEvent(aggregated, "v1"),
		putEvent("/registry/configmaps/app/c", "v"),                                 // excluded
		putEvent("/registry/wardle.example.com/wardle.example.com/fischers/f", "v"), // cluster-scoped, also not a Kubernetes key
	), revision(11, putEvent(aggregated, "v2"))) // one operation for the key in the transaction
	if resp, err := e.Client.Get(ctx, aggregated); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" {
		t.Fatalf("the unparsed key on the standby: %v %v", resp, err)
	}
	if got := a.unparsedCount(); got != 2 {
		t.Errorf("after puts: %v unparsed keys counted, want 2", got)
	}
	a.apply(revision(12, streams.Event{Type: streams.EventDelete, Key: []byte(aggregated)}))
	if got := a.unparsedCount(); got != 3 {
		t.Errorf("after a delete: %v unparsed keys counted, want 3", got)
	}
	// A snapshot deletes the standby's unparsed keys it does not hold.
	a.apply(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 13}, streams.Record{Kind: streams.KindSnapshotEnd, Revision: 13})
	if got := a.unparsedCount(); got != 5 {
		t.Errorf("after a snapshot deleting two: %v unparsed keys counted, want 5", got)
	}
	resp, err := e.Client.Get(ctx, "/registry/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	if len(keys) != 0 {
		t.Errorf("standby keys after the snapshot: %q, want none", keys)
	}
}
