package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// w4Every is the interval of W4's lag series.
const w4Every = 10 * time.Second

// saturation is W4: the primary written unthrottled by a few clients for a
// while, with the standby's lag sampled every w4Every.
type saturation struct {
	keys     int // the primary's keyspace (the objects overwritten)
	clients  int
	duration time.Duration
	wrote    int
	wall     time.Duration // the writes themselves
	start    time.Time     // the writes' start
	series   lagResult     // one marker every w4Every, from the writes' start
	end      lagResult     // one marker written right after the writes ended
	rss      []namedBytes
	err      error
}

// behind is how far behind the standby ended: the lag of the marker
// written right after the writes stopped.
func (s *saturation) behind() (time.Duration, bool) {
	if len(s.end.series) == 0 {
		return -1, false
	}
	return s.end.series[0].lag, s.end.series[0].arrived
}

// runSaturate runs W4 on fresh servers: the primary is loaded with o.keys
// keys, etcdsync (unsigned, processes) bootstraps the standby, then
// o.saturateClients clients overwrite random objects as fast as the primary
// takes them for o.saturate, while a marker every 10 s measures the lag.
func runSaturate(ctx context.Context, o options) *saturation {
	s := &saturation{keys: o.keys, clients: o.saturateClients, duration: o.saturate}
	s.err = saturate(ctx, o, s)
	if s.err != nil {
		progress("W4: %v", s.err)
	}
	return s
}

func saturate(ctx context.Context, o options, s *saturation) error {
	dir := filepath.Join(o.workDir, "w4")
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	c := &cluster{}
	defer c.close()
	var err error
	progress("W4: starting fresh primary and standby etcd")
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
	vals := newValues()
	l := newLayout(o.keys)
	if _, err := batchedPuts(ctx, c.pcli, o.keys, 128, 8, l.key, vals, "load"); err != nil {
		return fmt.Errorf("load primary: %w", err)
	}
	want, err := countKeys(ctx, c.pcli, registry)
	if err != nil {
		return err
	}
	r := &etcdsyncProcs{bin: o.etcdsyncPath(), workDir: filepath.Join(dir, "etcdsync"), applyArgs: o.applyArgs, publishArgs: o.publishArgs}
	progress("W4: primary loaded with %d keys; etcdsync bootstraps the standby", o.keys)
	if err := r.Start(ctx, c.primary.endpoint, c.standby.endpoint); err != nil {
		return err
	}
	defer r.Stop()
	poll := &poller{cli: c.scli, interval: o.poll, failed: r.Failed}
	if _, _, err := poll.waitCount(ctx, registry, want, o.w1Timeout, "W4 bootstrap"); err != nil {
		return fmt.Errorf("W4 bootstrap: %w", err)
	}
	if err := syncMarker(ctx, c, "sync-w4", o.catchTimeout); err != nil {
		return fmt.Errorf("before W4: %w", err)
	}

	progress("W4 saturation: %d clients writing unthrottled for %s", s.clients, s.duration)
	lp, err := startLagProbe(ctx, c.pcli, c.scli, "w4", w4Every)
	if err != nil {
		return err
	}
	s.start = time.Now()
	s.wrote, s.wall, err = unthrottledPuts(ctx, c.pcli, l, s.clients, s.duration, vals)
	if err != nil {
		lp.finish(0)
		return fmt.Errorf("W4: %w", err)
	}
	lp.stopWriting()
	progress("W4 wrote %d revisions in %s (%.0f/s); measuring how far behind the standby is", s.wrote, fmtDur(s.wall), float64(s.wrote)/s.wall.Seconds())
	end, err := startLagProbe(ctx, c.pcli, c.scli, "w4-end", time.Hour)
	if err != nil {
		lp.finish(0)
		return err
	}
	// The standby catches up for as long as it was written, and at least
	// catchTimeout.
	catchUp := max(o.catchTimeout, s.duration)
	s.end = end.finish(catchUp)
	s.series = lp.finish(catchUp)
	if d, ok := s.behind(); ok {
		progress("W4: the standby ended %s behind", fmtDur(d))
	}
	if err := r.Failed(); err != nil {
		return err
	}
	for _, p := range r.Procs() {
		b, err := procStatus(p.pid(), "VmHWM")
		if err != nil {
			return fmt.Errorf("peak RSS of %s: %w", p.name, err)
		}
		s.rss = append(s.rss, namedBytes{p.name, b})
	}
	return nil
}

// unthrottledPuts overwrites random objects of l from clients goroutines,
// each as fast as the primary answers, until d has passed; it returns the
// number of puts and the elapsed time. Puts in flight at the end complete.
func unthrottledPuts(ctx context.Context, cli *clientv3.Client, l layout, clients int, d time.Duration, vals *values) (int, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(d)
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for w := range clients {
		g.Go(func() error {
			r := rand.New(rand.NewPCG(uint64(w), 17))
			for time.Now().Before(deadline) {
				k := int(done.Add(1))
				key := l.object(r)
				if _, err := cli.Put(gctx, key, vals.get("saturate", k)); err != nil {
					return fmt.Errorf("put %s: %w", key, err)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	return int(done.Load()), time.Since(start), err
}

// printSaturate prints W4: the lag series and how far behind the standby ended.
func printSaturate(w io.Writer, s *saturation) {
	fmt.Fprintf(w, "\nW4 saturation: %d clients overwriting %dk objects × 1 KiB unthrottled on the primary for %s (etcdsync unsigned, processes,\n",
		s.clients, s.keys/1000, s.duration)
	fmt.Fprintf(w, "after bootstrapping the standby); the standby's lag every %s (a marker key written on the primary):\n", w4Every)
	if s.wall > 0 {
		fmt.Fprintf(w, "  the primary took %d puts in %s (%.0f puts/s)\n", s.wrote, fmtDur(s.wall), float64(s.wrote)/s.wall.Seconds())
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  t\tlag\t\n")
	for _, m := range s.series.series {
		note := ""
		if !m.arrived {
			note = "not arrived: ≥"
		}
		fmt.Fprintf(tw, "  %.0f s\t%s\t%s\n", m.committed.Sub(s.start).Seconds(), fmtDur(m.lag), note)
	}
	tw.Flush()
	if d, ok := s.behind(); d >= 0 {
		verdict := "MISSED"
		if ok && d <= time.Second {
			verdict = "met"
		}
		bound := ""
		if !ok {
			bound = "≥ "
		}
		fmt.Fprintf(w, "  the standby ended %s%s behind (lag of a marker written right after the writes stopped; target ≤ 1 s: %s)\n", bound, fmtDur(d), verdict)
	}
	for _, nb := range s.rss {
		fmt.Fprintf(w, "  peak RSS %s %s\n", nb.name, mib(nb.bytes))
	}
	if s.err != nil {
		fmt.Fprintf(w, "  W4 FAILED: %v\n", s.err)
	}
}
