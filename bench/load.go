package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// registry is the prefix every benchmark key lives under; the kubernetes
// preset replicates all of it that the benchmark writes.
const registry = "/registry/"

// valueSize is the size of every value written.
const valueSize = 1024

// resources are the object kinds of the Kubernetes-like layout.
var resources = []string{"configmaps", "secrets", "deployments", "pods", "services/specs", "example.com/widgets"}

// layout is a Kubernetes-like keyspace of n keys: Namespace objects, one
// CustomResourceDefinition, then objects spread over the namespaces and
// resources (/registry/<resource>/<namespace>/<name>).
type layout struct {
	n          int
	namespaces int
}

func newLayout(n int) layout {
	return layout{n: n, namespaces: max(1, min(n/500, 1000))}
}

// key returns the i-th key.
func (l layout) key(i int) string {
	switch {
	case i < l.namespaces:
		return fmt.Sprintf("/registry/namespaces/%s", l.ns(i))
	case i == l.namespaces:
		return "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"
	}
	res := resources[(i/l.namespaces)%len(resources)]
	return fmt.Sprintf("/registry/%s/%s/obj-%07d", res, l.ns(i%l.namespaces), i)
}

// object returns the key of a random object (not a namespace or the CRD).
func (l layout) object(r *rand.Rand) string {
	return l.key(l.namespaces + 1 + r.IntN(max(1, l.n-l.namespaces-1)))
}

func (l layout) ns(i int) string { return fmt.Sprintf("bench-ns-%04d", i) }

// values hands out 1 KiB values cut from a random pool, stamped with a tag.
type values struct{ pool []byte }

func newValues() *values {
	r := rand.New(rand.NewChaCha8([32]byte{'e', 't', 'c', 'd', 's', 'y', 'n', 'c'}))
	pool := make([]byte, 256<<10)
	for i := range pool {
		pool[i] = byte(r.Uint32())
	}
	return &values{pool: pool}
}

// get returns a value for the i-th write of tag.
func (v *values) get(tag string, i int) string {
	off := (i * 4099) % (len(v.pool) - valueSize)
	b := make([]byte, valueSize)
	copy(b, v.pool[off:off+valueSize])
	copy(b, fmt.Sprintf("%s-%d|", tag, i))
	return string(b)
}

// batchedPuts writes keys key(0..n-1) in transactions of perTxn puts with
// inflight transactions outstanding, and returns the elapsed time.
func batchedPuts(ctx context.Context, cli *clientv3.Client, n, perTxn, inflight int, key func(int) string, vals *values, tag string) (time.Duration, error) {
	start := time.Now()
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range inflight {
		g.Go(func() error {
			ops := make([]clientv3.Op, 0, perTxn)
			for {
				from := int(next.Add(int64(perTxn))) - perTxn
				if from >= n {
					return nil
				}
				ops = ops[:0]
				for i := from; i < min(from+perTxn, n); i++ {
					ops = append(ops, clientv3.OpPut(key(i), vals.get(tag, i)))
				}
				if _, err := cli.Txn(gctx).Then(ops...).Commit(); err != nil {
					return fmt.Errorf("txn of keys %d..%d: %w", from, from+len(ops)-1, err)
				}
			}
		})
	}
	err := g.Wait()
	return time.Since(start), err
}

// singlePuts writes keys key(0..n-1) one Put each from clients goroutines,
// as fast as the server takes them, and returns the elapsed time.
func singlePuts(ctx context.Context, cli *clientv3.Client, n, clients int, key func(int) string, vals *values, tag string) (time.Duration, error) {
	start := time.Now()
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range clients {
		g.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return nil
				}
				if _, err := cli.Put(gctx, key(i), vals.get(tag, i)); err != nil {
					return fmt.Errorf("put %s: %w", key(i), err)
				}
			}
		})
	}
	err := g.Wait()
	return time.Since(start), err
}

// pacedPuts updates random objects of l at rate puts/s for d from workers
// goroutines and returns the number written and the elapsed time.
func pacedPuts(ctx context.Context, cli *clientv3.Client, l layout, rate int, d time.Duration, workers int, vals *values) (int, time.Duration, error) {
	total := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for k := w; k < total; k += workers {
				if wait := time.Until(start.Add(time.Duration(k) * interval)); wait > 0 {
					select {
					case <-time.After(wait):
					case <-gctx.Done():
						return gctx.Err()
					}
				}
				key := l.object(r)
				if _, err := cli.Put(gctx, key, vals.get("steady", k)); err != nil {
					return fmt.Errorf("put %s: %w", key, err)
				}
				done.Add(1)
			}
			return nil
		})
	}
	err := g.Wait()
	return int(done.Load()), time.Since(start), err
}

// countKeys returns how many keys are under prefix (a count-only Get).
func countKeys(ctx context.Context, cli *clientv3.Client, prefix string) (int64, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("count keys under %s: %w", prefix, err)
	}
	return resp.Count, nil
}

// poller watches the standby's key count until it reaches a target.
type poller struct {
	cli      *clientv3.Client
	interval time.Duration
	failed   func() error // the replicator's health
	// cost accumulates the time the count requests took.
	mu    sync.Mutex
	polls int
	cost  time.Duration
}

// stats reports the number and mean latency of the count requests so far.
func (p *poller) stats() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.polls == 0 {
		return "no polls"
	}
	return fmt.Sprintf("%d count polls, mean %s", p.polls, fmtDur(p.cost/time.Duration(p.polls)))
}

// waitCount polls the count of keys under prefix until it is at least
// want, and returns the time it was first seen so. A count-only Get costs
// the standby ~10 ms of CPU per 100k keys, so polls are spaced by a quarter
// of the time the remaining keys need at the rate seen so far (at most 1s;
// 4 intervals while nothing moves), and every interval once that is
// shorter: the resolution at the end is interval, and polling adds little
// load to the servers being measured. It gives up
// after timeout (errTimeout) or when the replicator fails; progress prints
// every 10s on stderr.
func (p *poller) waitCount(ctx context.Context, prefix string, want int64, timeout time.Duration, what string) (time.Time, int64, error) {
	deadline := time.Now().Add(timeout)
	lastLog := time.Now()
	var prevN int64 = -1
	var prevT time.Time
	for {
		t0 := time.Now()
		n, err := countKeys(ctx, p.cli, prefix)
		p.mu.Lock()
		p.polls++
		p.cost += time.Since(t0)
		p.mu.Unlock()
		if err != nil {
			return time.Time{}, 0, err
		}
		if n >= want {
			return t0, n, nil
		}
		if err := p.failed(); err != nil {
			return time.Time{}, n, err
		}
		if time.Now().After(deadline) {
			return time.Time{}, n, fmt.Errorf("%s: standby holds %d of %d keys after %s: %w", what, n, want, timeout, errTimeout)
		}
		if time.Since(lastLog) >= 10*time.Second {
			progress("  %s: standby holds %d of %d keys", what, n, want)
			lastLog = time.Now()
		}
		wait := p.interval
		if prevN >= 0 && n > prevN {
			rate := float64(n-prevN) / t0.Sub(prevT).Seconds()
			eta := time.Duration(float64(want-n) / rate * float64(time.Second))
			wait = min(max(eta/4, p.interval), time.Second)
		} else if prevN >= 0 {
			wait = 4 * p.interval // no progress yet
		}
		prevN, prevT = n, t0
		select {
		case <-ctx.Done():
			return time.Time{}, n, ctx.Err()
		case <-time.After(time.Until(t0.Add(wait))):
		}
	}
}
