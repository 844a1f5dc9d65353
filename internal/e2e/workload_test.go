package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
)

// workload writes a random mix of puts, deletes, multi-op txns and prefix
// deletes over a small set of hot keys, so consecutive revisions often touch
// the same key.
type workload struct {
	rng    *rand.Rand
	cli    *clientv3.Client
	prefix string
	keys   int
}

func newWorkload(cli *clientv3.Client, seed int64, prefix string, keys int) *workload {
	return &workload{rng: rand.New(rand.NewSource(seed)), cli: cli, prefix: prefix, keys: keys}
}

func (w *workload) key() string {
	return fmt.Sprintf("%s%d/k%03d", w.prefix, w.rng.Intn(4), w.rng.Intn(w.keys))
}

// step performs one random write.
func (w *workload) step(ctx context.Context) error {
	var err error
	switch n := w.rng.Intn(100); {
	case n < 60:
		_, err = w.cli.Put(ctx, w.key(), fmt.Sprintf("v%d", w.rng.Int()))
	case n < 80:
		_, err = w.cli.Delete(ctx, w.key())
	case n < 97:
		seen := map[string]bool{}
		var ops []clientv3.Op
		for i := 0; i < 1+w.rng.Intn(8); i++ {
			k := w.key()
			if seen[k] {
				continue
			}
			seen[k] = true
			if w.rng.Intn(4) == 0 {
				ops = append(ops, clientv3.OpDelete(k))
			} else {
				ops = append(ops, clientv3.OpPut(k, fmt.Sprintf("t%d", w.rng.Int())))
			}
		}
		_, err = w.cli.Txn(ctx).Then(ops...).Commit()
	default:
		_, err = w.cli.Delete(ctx, fmt.Sprintf("%s%d/", w.prefix, w.rng.Intn(4)), clientv3.WithPrefix())
	}
	return err
}

func (w *workload) run(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := w.step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// checkExactlyOnce verifies from both servers' histories that the standby
// applied every write at most once and in the primary's order: the workload
// writes unique values, so for each key the standby's sequence of put values
// must be a subsequence of the primary's, with no value put twice. (Key
// versions cannot be compared: folding several revisions into one standby
// transaction writes a key once for several primary puts.) It also checks
// that the final values are equal.
func checkExactlyOnce(t *testing.T, primary, standby *testenv.Etcd, rules *keyspace.Rules) {
	t.Helper()
	if d := diff(dump(t, primary.Client, rules), dump(t, standby.Client, rules)); d != "" {
		t.Fatalf("standby differs from primary:\n%s", d)
	}
	p, s := putHistory(t, primary.Client, rules), putHistory(t, standby.Client, rules)
	for k, sv := range s {
		pv := p[k]
		i := 0
		for _, v := range sv {
			for i < len(pv) && pv[i] != v {
				i++
			}
			if i == len(pv) {
				t.Fatalf("key %s: standby put %q out of the primary's order or twice (primary %d puts, standby %d)", k, v, len(pv), len(sv))
			}
			i++
		}
	}
}

// putHistory replays a server's whole history (it is never compacted in
// these tests) and returns each in-scope key's put values in order.
func putHistory(t *testing.T, cli *clientv3.Client, rules *keyspace.Rules) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithLimit(1))
	if err != nil {
		t.Fatal(err)
	}
	end := resp.Header.Revision
	out := map[string][]string{}
	for wr := range cli.Watch(ctx, "\x00", clientv3.WithRange("\x00"), clientv3.WithRev(1)) {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut && rules.Allowed(ev.Kv.Key) {
				out[string(ev.Kv.Key)] = append(out[string(ev.Kv.Key)], string(ev.Kv.Value))
			}
		}
		if wr.Header.Revision >= end && len(wr.Events) > 0 && wr.Events[len(wr.Events)-1].Kv.ModRevision >= end {
			return out
		}
	}
	t.Fatal("history watch ended early")
	return nil
}
