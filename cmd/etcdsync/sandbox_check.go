package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/keyspace"
)

// maxExamples is the number of example keys reported per kind of difference.
const maxExamples = 5

// keyList counts keys and keeps the first few.
type keyList struct {
	n        int
	examples []string
}

func (l *keyList) add(key []byte) {
	l.n++
	if len(l.examples) < maxExamples {
		l.examples = append(l.examples, string(key))
	}
}

// comparison is the outcome of comparing the two sides' in-scope keyspaces.
type comparison struct {
	primaryRev int64
	compared   int // in-scope keys on the primary
	missed     keyList
	surplus    keyList
	mismatched keyList
	// excluded counts the primary's keys outside the scope, by the rule
	// that excluded them; leaked lists those present on the standby anyway.
	excluded   int
	excludedBy map[string]int
	leaked     keyList
}

// consistent reports whether the standby holds exactly the primary's
// in-scope keyspace and none of its excluded keys.
func (c *comparison) consistent() bool {
	return c.missed.n == 0 && c.surplus.n == 0 && c.mismatched.n == 0 && c.leaked.n == 0
}

type kv struct{ key, value []byte }

// readAll reads every key of cli at revision rev (0: current), a page at a
// time, sorted by key.
func readAll(ctx context.Context, cli *clientv3.Client, rev int64) ([]kv, error) {
	var out []kv
	from := "\x00"
	for {
		opts := []clientv3.OpOption{clientv3.WithRange("\x00"), clientv3.WithLimit(1000)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, fmt.Errorf("read keyspace from %q at revision %d: %w", from, rev, err)
		}
		for _, x := range resp.Kvs {
			out = append(out, kv{x.Key, x.Value})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		rev = resp.Header.Revision // the rest at the same revision
	}
}

// compareSides reads the primary at primaryRev and the standby now and
// compares the keys rules allow, by value.
func compareSides(ctx context.Context, primary, standby *clientv3.Client, primaryRev int64, rules *keyspace.Rules) (*comparison, error) {
	p, err := readAll(ctx, primary, primaryRev)
	if err != nil {
		return nil, fmt.Errorf("primary: %w", err)
	}
	s, err := readAll(ctx, standby, 0)
	if err != nil {
		return nil, fmt.Errorf("standby: %w", err)
	}
	c := &comparison{primaryRev: primaryRev, excludedBy: map[string]int{}}
	i, j := 0, 0
	for i < len(p) || j < len(s) {
		var order int
		switch {
		case i == len(p):
			order = 1
		case j == len(s):
			order = -1
		default:
			order = bytes.Compare(p[i].key, s[j].key)
		}
		switch {
		case order < 0: // only on the primary
			if rules.Allowed(p[i].key) {
				c.compared++
				c.missed.add(p[i].key)
			} else {
				c.noteExcluded(rules, p[i].key)
			}
			i++
		case order > 0: // only on the standby
			if rules.Allowed(s[j].key) {
				c.surplus.add(s[j].key)
			}
			j++
		default:
			if rules.Allowed(p[i].key) {
				c.compared++
				if !bytes.Equal(p[i].value, s[j].value) {
					c.mismatched.add(p[i].key)
				}
			} else {
				c.noteExcluded(rules, p[i].key)
				c.leaked.add(p[i].key)
			}
			i, j = i+1, j+1
		}
	}
	return c, nil
}

func (c *comparison) noteExcluded(rules *keyspace.Rules, key []byte) {
	c.excluded++
	_, why := rules.Explain(key)
	c.excludedBy[why]++
}

// print writes the report, ending with CONSISTENT or DRIFT.
func (c *comparison) print(w io.Writer) {
	fmt.Fprintf(w, "\ncompared %d in-scope keys (primary at revision %d, standby now)\n", c.compared, c.primaryRev)
	list := func(title string, l keyList) {
		fmt.Fprintf(w, "  %-44s %d\n", title, l.n)
		for _, k := range l.examples {
			fmt.Fprintf(w, "      %s\n", k)
		}
		if l.n > len(l.examples) {
			fmt.Fprintf(w, "      ... and %d more\n", l.n-len(l.examples))
		}
	}
	list("missed (on primary, not on standby):", c.missed)
	list("surplus (only on standby):", c.surplus)
	list("mismatched (different values):", c.mismatched)
	fmt.Fprintf(w, "  kept out of the standby: %d excluded primary keys, %d of them present on the standby\n", c.excluded, c.leaked.n)
	type reason struct {
		why string
		n   int
	}
	var reasons []reason
	for why, n := range c.excludedBy {
		reasons = append(reasons, reason{why, n})
	}
	slices.SortFunc(reasons, func(a, b reason) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.why, b.why))
	})
	for _, r := range reasons {
		fmt.Fprintf(w, "      %6d  %s\n", r.n, r.why)
	}
	if c.leaked.n > 0 {
		list("excluded keys found on the standby:", c.leaked)
	}
	if c.consistent() {
		fmt.Fprintln(w, "CONSISTENT")
	} else {
		fmt.Fprintln(w, "DRIFT")
	}
}
