package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// scalePoint is W1 of etcdsync (unsigned) at one key count, with etcd's
// batched ingest measured at the same count just before it.
type scalePoint struct {
	keys    int
	limit   float64       // keys/s: txns of 128 puts, 8 in flight, on a fresh etcd
	w1      time.Duration // processes start until the standby holds every key
	w1Keys  int64
	first   time.Duration // processes start until the first key arrives on the standby
	rss     []namedBytes  // VmHWM of publisher and applier at the end of W1
	err     error
	loadDur time.Duration
}

func (p scalePoint) rate() float64 {
	if p.w1 <= 0 {
		return 0
	}
	return float64(p.w1Keys) / p.w1.Seconds()
}

// parseKeyList parses a comma-separated list of positive key counts
// ("100000,400000,1000000"; k and m suffixes allowed: "100k,1m").
func parseKeyList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		mul := 1
		switch {
		case strings.HasSuffix(f, "k"):
			f, mul = strings.TrimSuffix(f, "k"), 1000
		case strings.HasSuffix(f, "m"):
			f, mul = strings.TrimSuffix(f, "m"), 1000_000
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("key count %q: want a positive integer (k and m suffixes allowed)", f)
		}
		out = append(out, n*mul)
	}
	return out, nil
}

// runScale runs the scale series: for each key count, etcd's batched
// ingest on a fresh server, then W1 of etcdsync on fresh servers. A failed
// point is recorded and the series goes on.
func runScale(ctx context.Context, o options) []scalePoint {
	var pts []scalePoint
	for _, n := range o.scaleKeys {
		if ctx.Err() != nil {
			break
		}
		p := scalePoint{keys: n}
		p.err = scaleOne(ctx, o, &p)
		if p.err != nil {
			progress("scale %d keys: %v", n, p.err)
		}
		pts = append(pts, p)
	}
	return pts
}

func scaleOne(ctx context.Context, o options, p *scalePoint) error {
	n := p.keys
	dir := filepath.Join(o.workDir, fmt.Sprintf("scale-%d", n))
	if !o.keep {
		// A million keys are over a GiB per etcd: free the disk for the next point.
		defer os.RemoveAll(dir)
	}
	vals := newValues()
	l := newLayout(n)

	// etcd's batched ingest at n keys, on a fresh server like the standby.
	progress("scale %d keys: etcd's batched ingest on a fresh etcd", n)
	srv, err := startEtcd(ctx, o.binDir, dir, "limit", o.standbyArgs...)
	if err != nil {
		return err
	}
	cli, err := dialEtcd(srv.endpoint)
	if err != nil {
		srv.stop()
		return err
	}
	d, err := batchedPuts(ctx, cli, n, 128, 8, l.key, vals, "limit")
	cli.Close()
	srv.stop()
	_ = os.RemoveAll(srv.dir)
	if err != nil {
		return fmt.Errorf("etcd limit: %w", err)
	}
	p.limit = float64(n) / d.Seconds()
	progress("scale %d keys: etcd took them in %s (%.0f keys/s batched)", n, fmtDur(d), p.limit)

	// W1 on fresh servers.
	c := &cluster{}
	defer c.close()
	if c.primary, err = startEtcd(ctx, o.binDir, dir, "primary"); err != nil {
		return err
	}
	if c.standby, err = startEtcd(ctx, o.binDir, dir, "standby", o.standbyArgs...); err != nil {
		return err
	}
	if c.pcli, err = dialEtcd(c.primary.endpoint); err != nil {
		return err
	}
	if c.scli, err = dialEtcd(c.standby.endpoint); err != nil {
		return err
	}
	if p.loadDur, err = batchedPuts(ctx, c.pcli, n, 128, 8, l.key, vals, "load"); err != nil {
		return fmt.Errorf("load primary: %w", err)
	}
	progress("scale %d keys: primary loaded in %s", n, fmtDur(p.loadDur))
	want, err := countKeys(ctx, c.pcli, registry)
	if err != nil {
		return err
	}
	r := &etcdsyncProcs{bin: o.etcdsyncPath(), workDir: filepath.Join(dir, "etcdsync"), applyArgs: o.applyArgs, publishArgs: o.publishArgs}
	first, err := watchFirstKey(ctx, c.scli, registry)
	if err != nil {
		return err
	}
	defer first.stop()
	progress("scale %d keys: W1 bootstrap: starting etcdsync", n)
	t0 := time.Now()
	if err := r.Start(ctx, c.primary.endpoint, c.standby.endpoint); err != nil {
		return err
	}
	defer r.Stop()
	// At least 1000 keys/s before giving up.
	timeout := max(o.w1Timeout, time.Duration(n)*time.Millisecond)
	poll := &poller{cli: c.scli, interval: o.poll, failed: r.Failed}
	t1, got, err := poll.waitCount(ctx, registry, want, timeout, fmt.Sprintf("scale W1 %d", n))
	if err != nil {
		return fmt.Errorf("W1: %w", err)
	}
	p.w1, p.w1Keys = t1.Sub(t0), got
	if ft, ok := first.at(); ok {
		p.first = ft.Sub(t0)
	}
	for _, pr := range r.Procs() {
		b, err := procStatus(pr.pid(), "VmHWM")
		if err != nil {
			return fmt.Errorf("peak RSS of %s: %w", pr.name, err)
		}
		p.rss = append(p.rss, namedBytes{pr.name, b})
	}
	progress("scale %d keys: W1 %s (%.0f keys/s, %s of etcd's batched ingest), first key after %s, peak RSS %s",
		n, fmtDur(p.w1), p.rate(), share(p.rate(), p.limit), fmtDur(p.first), peakRSS(r))
	return nil
}

// firstKey records when the first event under a prefix arrives on a watch.
type firstKey struct {
	cancel context.CancelFunc
	done   chan struct{}
	t      time.Time
}

// watchFirstKey watches prefix on cli (created before it returns) and
// records the arrival of its first event; the watch ends there.
func watchFirstKey(ctx context.Context, cli *clientv3.Client, prefix string) (*firstKey, error) {
	wctx, cancel := context.WithCancel(ctx)
	f := &firstKey{cancel: cancel, done: make(chan struct{})}
	wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case r := <-wch:
		if !r.Created || r.Err() != nil {
			cancel()
			return nil, fmt.Errorf("watch standby %s: %v", prefix, r.Err())
		}
	case <-time.After(10 * time.Second):
		cancel()
		return nil, fmt.Errorf("watch standby %s: not created after 10s", prefix)
	}
	go func() {
		defer close(f.done)
		for r := range wch {
			if len(r.Events) > 0 {
				f.t = time.Now()
				cancel()
				for range wch {
				}
				return
			}
		}
	}()
	return f, nil
}

// at returns the arrival time of the first event, once it has arrived.
func (f *firstKey) at() (time.Time, bool) {
	select {
	case <-f.done:
		return f.t, !f.t.IsZero()
	default:
		return time.Time{}, false
	}
}

func (f *firstKey) stop() {
	f.cancel()
	<-f.done
}

// printScale prints the scale series (issue 17).
func printScale(w io.Writer, o options, pts []scalePoint) {
	fmt.Fprintf(w, "\nscale series: W1 bootstrap of etcdsync (unsigned, processes) into an empty standby, each key count on fresh servers,\n")
	fmt.Fprintf(w, "against etcd's batched ingest (txns of 128 puts, 8 in flight) measured on a fresh etcd at the same key count, just before:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "keys\tW1\tkeys/s\tetcd batched keys/s\t%% of etcd's batched ingest\tfirst applied key\tpeak RSS publisher\tpeak RSS applier\n")
	fmt.Fprintf(tw, "----\t--\t------\t-------------------\t--------------------------\t-----------------\t------------------\t----------------\n")
	for _, p := range pts {
		if p.err != nil {
			fmt.Fprintf(tw, "%d\tfailed\t\t%s\t\t\t\t\n", p.keys, rateOrNA(p.limit))
			continue
		}
		rss := map[string]string{}
		for _, nb := range p.rss {
			rss[nb.name] = mib(nb.bytes)
		}
		firstKey := "n/a"
		if p.first > 0 {
			firstKey = fmtDur(p.first)
		}
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\n", p.keys, fmtDur(p.w1), p.rate(), p.limit, share(p.rate(), p.limit),
			firstKey, rss["publisher"], rss["applier"])
	}
	tw.Flush()
	fmt.Fprintf(w, "\ntargets (issue 17, this run):\n")
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	for _, p := range pts {
		if p.err != nil {
			fmt.Fprintf(w, "  %d keys: FAILED: %v\n", p.keys, p.err)
			continue
		}
		target := 0.5
		if p.keys <= 100_000 {
			target = 0.6
		}
		fmt.Fprintf(w, "  %d keys: W1 ≥ %.0f%% of etcd's batched ingest: %s  %s", p.keys, 100*target, share(p.rate(), p.limit), check(p.rate() >= target*p.limit))
		fmt.Fprintf(w, "; first applied key ≤ 1 s: %s  %s", fmtDur(p.first), check(p.first > 0 && p.first <= time.Second))
		for _, nb := range p.rss {
			fmt.Fprintf(w, "; %s ≤ 150 MiB: %s  %s", nb.name, mib(nb.bytes), check(nb.bytes <= 150<<20))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  (issue 17's targets: ≥ 60%% at 100k keys, ≥ 50%% at 1M, first applied key ≤ 1 s at 1M, peak RSS ≤ 150 MiB per process at 1M;\n")
	fmt.Fprintf(w, "   first applied key = processes start until the first event under /registry/ arrives on a watch of the standby)\n")
}

func rateOrNA(r float64) string {
	if r <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", r)
}
