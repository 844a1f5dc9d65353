package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

// kubeWrite writes key the way kube-apiserver creates an object: a
// transaction comparing the key's mod revision, putting it, and reading it
// back otherwise.
func kubeWrite(ctx context.Context, cli *clientv3.Client, key, value string) error {
	_, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, value)).Else(clientv3.OpGet(key)).Commit()
	return err
}

// largestKubeValue returns the largest value cli's etcd accepts in a
// kube-apiserver write of a key as long as key (etcd checks the size before
// the compare: a write of a key that exists answers too). The probe key is
// deleted again.
func largestKubeValue(t *testing.T, cli *clientv3.Client, key string) int {
	t.Helper()
	return largestValue(t, cli, key, kubeWrite)
}

// plainPut writes key with a plain put, the smallest request etcd takes.
func plainPut(ctx context.Context, cli *clientv3.Client, key, value string) error {
	_, err := cli.Put(ctx, key, value)
	return err
}

// largestValue returns the largest value cli's etcd accepts when write
// writes a key as long as key. The probe key is deleted again.
func largestValue(t *testing.T, cli *clientv3.Client, key string, write func(context.Context, *clientv3.Client, string, string) error) int {
	t.Helper()
	ctx := context.Background()
	probe := key[:len(key)-1] + "~"
	lo, hi := 1<<20, 2<<20 // accepted, refused
	for lo+1 < hi {
		m := (lo + hi) / 2
		if write(ctx, cli, probe, strings.Repeat("v", m)) == nil {
			lo = m
		} else {
			hi = m
		}
	}
	if _, err := cli.Delete(ctx, probe); err != nil {
		t.Fatal(err)
	}
	return lo
}

// A value as large as the primary accepts (the largest a kube-apiserver
// write can carry under etcd's default 1.5 MiB request limit) replicates
// onto a standby with the same limit, and the revisions after it too
// (issue 15.1: the checkpoint used to push its transaction over the limit,
// and the standby refused it on every retry).
func TestValueAtRequestLimit(t *testing.T) {
	const key = "/registry/configmaps/default/big"
	p := newPipeline(t)
	// Found before the publisher starts: its snapshot begins after.
	n := largestKubeValue(t, p.primary.Client, key)
	p.startPublisher(p.publisherConfig())
	reg := p.startApplierMetrics(rawApplierConfig(p))
	put(t, p.primary.Client, "/registry/configmaps/default/before", "x")
	if err := kubeWrite(context.Background(), p.primary.Client, key, strings.Repeat("v", n)); err != nil {
		t.Fatalf("primary refused a %d-byte value: %v", n, err)
	}
	put(t, p.primary.Client, "/registry/configmaps/default/after", "y")
	p.waitConverged(rawRules(t), 60*time.Second)
	t.Logf("a %d-byte value replicated", n)
	// A kube-apiserver write carries its own compare: the value fits alone
	// under the checkpoint's, so nothing is written unguarded.
	if got := metricValue(t, reg, "etcdsync_applier_unguarded_puts_total"); got != 0 {
		t.Errorf("%v puts written without the checkpoint compare, want 0", got)
	}
}

// The largest value a plain put carries (the example: a
// 1,572,824-byte value, a request with no room for the checkpoint compare),
// less one byte, replicates onto a standby with the same limit: written by itself after
// the applier proves it still owns the checkpoint, which advances in the
// next transaction. The revisions after it follow.
func TestPlainPutAtRequestLimit(t *testing.T) {
	const key = "/registry/secrets/a/big"
	p := newPipeline(t)
	// One byte less than the largest: etcd's request IDs, in every raft
	// request, are one byte longer on a member whose ID has its top bit
	// set, so the same put can be one byte larger on the standby.
	n := largestValue(t, p.primary.Client, key, plainPut) - 1
	p.startPublisher(p.publisherConfig())
	reg := p.startApplierMetrics(rawApplierConfig(p))
	put(t, p.primary.Client, "/registry/secrets/a/before", "x")
	if err := plainPut(context.Background(), p.primary.Client, key, strings.Repeat("v", n)); err != nil {
		t.Fatalf("primary refused a %d-byte value: %v", n, err)
	}
	put(t, p.primary.Client, "/registry/secrets/a/after", "y")
	p.waitConverged(rawRules(t), 60*time.Second)
	t.Logf("a %d-byte value in a plain put replicated", n)
	if got := metricValue(t, reg, "etcdsync_applier_unguarded_puts_total"); got != 1 {
		t.Errorf("%v puts written without the checkpoint compare, want 1", got)
	}
}

// startApplierMetrics starts an applier with its metrics on a registry of
// its own and returns the registry.
func (p *pipeline) startApplierMetrics(cfg applier.Config) *prometheus.Registry {
	p.t.Helper()
	reg := prometheus.NewRegistry()
	ap, err := applier.New(cfg, p.standby.Client, p.conn(), reg)
	if err != nil {
		p.t.Fatal(err)
	}
	p.runs = append(p.runs, start(p.t, ap.Run))
	return reg
}

// A value the standby cannot take in any transaction (its request limit is
// below the primary's) stops the applier with a terminal error naming the
// key, the request size and the limit, recorded in the checkpoint so that
// status and readiness say why (issue 15.1). Below the limit plus gRPC's
// allowance etcd refuses it, above gRPC does; an applier that believes the
// standby takes more finds out from etcd and stops the same way.
func TestValueOverStandbyLimitStops(t *testing.T) {
	const limit = 256 << 10
	for _, tt := range []struct {
		name       string
		size       int
		configured int // the applier's MaxRequestBytes
	}{
		{"refused by etcd", 300 << 10, limit},
		{"refused by grpc", 900 << 10, limit},
		{"limit unknown to the applier", 300 << 10, applier.DefaultConfig().MaxRequestBytes},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &pipeline{t: t, primary: testenv.StartEtcd(t), js: testenv.StartJetStream(t),
				standby: testenv.StartEtcdConfig(t, embedded.EtcdConfig{MaxRequestBytes: limit})}
			p.startPublisher(p.publisherConfig())
			cfg := rawApplierConfig(p)
			cfg.MaxRequestBytes, cfg.MaxTxnBytes = tt.configured, 128<<10
			_, ar := p.startApplier(cfg)
			put(t, p.primary.Client, "/app/small", "x")
			put(t, p.primary.Client, "/app/big", strings.Repeat("v", tt.size))
			put(t, p.primary.Client, "/app/after", "y")
			err := ar.wait(t, 60*time.Second, "applier given a value over the standby's limit")
			var tl *applier.TooLargeError
			if !errors.As(err, &tl) || !errors.Is(err, applier.ErrTooLarge) {
				t.Fatalf("applier stopped with %v, want a *TooLargeError", err)
			}
			if tl.Key != "/app/big" || tl.Limit != tt.configured || tl.Bytes <= tt.size {
				t.Errorf("error names key %q, %d bytes, limit %d; want /app/big, more than %d bytes, limit %d", tl.Key, tl.Bytes, tl.Limit, tt.size, tt.configured)
			}
			got := dump(t, p.standby.Client, rawRules(t))
			if got["/app/small"] != "x" || got["/app/big"] != "" || got["/app/after"] != "" {
				t.Errorf("standby holds %d keys (small %q, after %q): want the revisions before the value only", len(got), got["/app/small"], got["/app/after"])
			}
			st, err := applier.ReadStatus(context.Background(), p.standby.Client, nil, cfg.Stream, cfg.Site, "")
			if err != nil {
				t.Fatal(err)
			}
			if st.State != "stopped" || st.Checkpoint == nil || st.Checkpoint.Stopped == nil ||
				!strings.Contains(st.Checkpoint.Stopped.Reason, "/app/big") || !strings.Contains(st.Checkpoint.Stopped.Reason, strconv.Itoa(tt.configured)) {
				t.Errorf("status: state %q, checkpoint %+v: want stopped with the key and the limit", st.State, st.Checkpoint)
			}
		})
	}
}

// Two keys always rewritten together in one primary transaction, always
// summing to 100, are never seen apart on the standby: not at any standby
// revision written while the applier catches up after an outage (issue
// 15.6: transactions used to end in the middle of a source revision
// whenever the one being built was full).
func TestPairsNeverTornDuringCatchUp(t *testing.T) {
	const pairs, writes = 300, 3000
	ctx := context.Background()
	p := newPipeline(t)
	p.startPublisher(p.publisherConfig())
	_, ar := p.startApplier(rawApplierConfig(p))
	writePair := func(i, a int) {
		t.Helper()
		ka, kb := fmt.Sprintf("/pairs/%03d/a", i), fmt.Sprintf("/pairs/%03d/b", i)
		if _, err := p.primary.Client.Txn(ctx).Then(clientv3.OpPut(ka, strconv.Itoa(a)), clientv3.OpPut(kb, strconv.Itoa(100-a))).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < pairs; i++ {
		writePair(i, 50)
	}
	rules := rawRules(t)
	p.waitConverged(rules, 30*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	resp, err := p.standby.Client.Get(ctx, "/pairs/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	from := resp.Header.Revision // the bootstrap and everything before the outage
	rnd := rand.New(rand.NewPCG(1, 2))
	for range writes {
		writePair(rnd.IntN(pairs), rnd.IntN(101))
	}
	p.startApplier(rawApplierConfig(p))
	p.waitConverged(rules, 60*time.Second)
	resp, err = p.standby.Client.Get(ctx, "/pairs/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	to := resp.Header.Revision
	// Read the standby at every revision the catch-up wrote.
	violations := 0
	for rev := from + 1; rev <= to; rev++ {
		resp, err := p.standby.Client.Get(ctx, "/pairs/", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		vals := map[string]int{}
		for _, kv := range resp.Kvs {
			v, err := strconv.Atoi(string(kv.Value))
			if err != nil {
				t.Fatalf("standby key %s = %q", kv.Key, kv.Value)
			}
			vals[string(kv.Key)] = v
		}
		for i := 0; i < pairs; i++ {
			a, b := vals[fmt.Sprintf("/pairs/%03d/a", i)], vals[fmt.Sprintf("/pairs/%03d/b", i)]
			if a+b != 100 {
				violations++
				if violations <= 5 {
					t.Errorf("standby revision %d: pair %d is a=%d b=%d, a state the primary never had", rev, i, a, b)
				}
			}
		}
	}
	if violations > 0 {
		t.Errorf("%d torn pairs in %d standby revisions", violations, to-from)
	}
	t.Logf("%d standby revisions checked for %d source transactions", to-from, writes)
}

// pauseKV calls hook (once) before forwarding the first put of a value
// over 1 MiB sent with Do (an applier's unguarded put), and closes landed
// once that put returned.
type pauseKV struct {
	clientv3.KV
	once   sync.Once
	hook   func()
	landed chan struct{}
}

func (k *pauseKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	first := false
	if op.IsPut() && len(op.ValueBytes()) > 1<<20 {
		k.once.Do(func() { first = true; k.hook() })
	}
	resp, err := k.KV.Do(ctx, op)
	if first {
		close(k.landed)
	}
	return resp, err
}

// An applier that proved the checkpoint and then paused (a GC pause, CPU
// throttling, a leader that has not noticed it lost) before its unguarded
// put, while another applier took over and applied the put and a later
// delete of the key, undoes its put when it lands: the deleted key does
// not come back.
func TestUnguardedPutAfterTakeoverUndone(t *testing.T) {
	const key = "/registry/secrets/a/big"
	ctx := context.Background()
	p := newPipeline(t)
	n := largestValue(t, p.primary.Client, key, plainPut) - 1 // see TestPlainPutAtRequestLimit
	p.startPublisher(p.publisherConfig())
	cliA, err := clientv3.New(clientv3.Config{Endpoints: p.standby.Endpoints(), MaxCallSendMsgSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cliA.Close() })
	release, paused := make(chan struct{}), make(chan struct{})
	pk := &pauseKV{KV: cliA.KV, landed: make(chan struct{}), hook: func() { close(paused); <-release }}
	cliA.KV = pk
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	apA, err := applier.New(rawApplierConfig(p), cliA, p.conn(), nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, apA.Run)

	put(t, p.primary.Client, "/registry/secrets/a/before", "x")
	p.waitConverged(rawRules(t), 30*time.Second)
	if err := plainPut(ctx, p.primary.Client, key, strings.Repeat("v", n)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-paused:
	case <-time.After(30 * time.Second):
		t.Fatal("the first applier never reached its unguarded put")
	}
	if _, err := p.primary.Client.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	put(t, p.primary.Client, "/registry/secrets/a/after", "y")
	_, rb := p.startApplier(rawApplierConfig(p))
	p.waitConverged(rawRules(t), 60*time.Second)
	if err := rb.stop(); err != nil {
		t.Fatal(err)
	}

	releaseOnce.Do(func() { close(release) })
	select {
	case <-pk.landed:
	case <-time.After(30 * time.Second):
		t.Fatal("the paused put never returned")
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		resp, err := p.standby.Client.Get(ctx, key, clientv3.WithCountOnly())
		return err == nil && resp.Count == 0
	}, "standby holds %s, deleted on the primary: written by an applier after another took over", key)
	if d := diff(dump(t, p.primary.Client, rawRules(t)), dump(t, p.standby.Client, rawRules(t))); d != "" {
		t.Errorf("standby differs from the primary:\n%s", d)
	}
}

// afterKV calls after (once) right after the first write of a value over
// 1 MiB succeeds, plain or in a transaction: an applier's operation
// written alone, before the checkpoint that follows it.
type afterKV struct {
	clientv3.KV
	once  sync.Once
	after func()
}

func isBig(op clientv3.Op) bool { return op.IsPut() && len(op.ValueBytes()) > 1<<20 }

func (k *afterKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	r, err := k.KV.Do(ctx, op)
	if err == nil && isBig(op) {
		k.once.Do(k.after)
	}
	return r, err
}

func (k *afterKV) Txn(ctx context.Context) clientv3.Txn { return &afterTxn{Txn: k.KV.Txn(ctx), kv: k} }

type afterTxn struct {
	clientv3.Txn
	kv  *afterKV
	big bool
}

func (t *afterTxn) If(c ...clientv3.Cmp) clientv3.Txn  { t.Txn = t.Txn.If(c...); return t }
func (t *afterTxn) Else(o ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(o...); return t }
func (t *afterTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, o := range ops {
		t.big = t.big || isBig(o)
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *afterTxn) Commit() (*clientv3.TxnResponse, error) {
	r, err := t.Txn.Commit()
	if err == nil && r.Succeeded && t.big {
		t.kv.once.Do(t.kv.after)
	}
	return r, err
}

// A primary transaction [k near the request limit, j small]: the applier
// writes k alone, and a promote that fences it before the checkpoint
// follows finds the standby holding k of that revision and not j. Promote
// reports the revision as possibly half applied, naming k (the checkpoint
// said so before k was written), instead of a consistent position.
func TestPromoteAfterAloneOpReportsHalfApplied(t *testing.T) {
	const k, j = "/registry/secrets/a/big", "/registry/secrets/a/j"
	ctx := context.Background()
	p := newPipeline(t)
	pair := func(ctx context.Context, cli *clientv3.Client, key, v string) error {
		_, err := cli.Txn(ctx).Then(clientv3.OpPut(key, v), clientv3.OpPut(j, "x")).Commit()
		return err
	}
	n := largestValue(t, p.primary.Client, k, pair) - 1
	if _, err := p.primary.Client.Delete(ctx, j); err != nil {
		t.Fatal(err)
	}
	p.startPublisher(p.publisherConfig())
	cliA, err := clientv3.New(clientv3.Config{Endpoints: p.standby.Endpoints(), MaxCallSendMsgSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cliA.Close() })
	var rep applier.PromoteReport
	var perr error
	promoted := make(chan struct{})
	akv := &afterKV{KV: cliA.KV, after: func() {
		defer close(promoted)
		rep, perr = applier.Promote(ctx, applier.PromoteConfig{Stream: streams.DefaultStream, DrainTimeout: time.Second}, p.standby.Client, nil)
	}}
	cliA.KV = akv
	ap, err := applier.New(rawApplierConfig(p), cliA, p.conn(), nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, ap.Run)
	put(t, p.primary.Client, "/registry/secrets/a/before", "x")
	p.waitConverged(rawRules(t), 30*time.Second)
	if err := pair(ctx, p.primary.Client, k, strings.Repeat("v", n)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-promoted:
	case <-time.After(30 * time.Second):
		t.Fatal("the applier never wrote the large value")
	}
	if !errors.Is(perr, applier.ErrInconsistent) {
		t.Errorf("promote returned %v, want ErrInconsistent (its exit status says the standby is not a copy at one revision)", perr)
	}
	got := dump(t, p.standby.Client, rawRules(t))
	_, hasK := got[k]
	_, hasJ := got[j]
	if !hasK || hasJ {
		t.Fatalf("standby: k present %v, j present %v; the test wants k written alone and fenced before j", hasK, hasJ)
	}
	if rep.HalfApplied == nil || rep.HalfApplied.InFlightKey != k || !strings.Contains(rep.Inconsistent, k) {
		t.Errorf("promote reports position %s, half applied %+v, inconsistent %q: want the revision reported as possibly half applied, naming %s",
			rep.Checkpoint.Position, rep.HalfApplied, rep.Inconsistent, k)
	}
}
