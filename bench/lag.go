package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// lagProbe measures replication lag the same way for every replicator: it
// writes a marker key on the primary every interval and watches the
// standby for it. The lag of a marker is the time it appeared on the
// standby minus the time its Put returned on the primary (clamped at 0).
type lagProbe struct {
	prefix string
	stop   context.CancelFunc
	wdone  chan struct{} // writer ended
	cancel context.CancelFunc

	mu      sync.Mutex
	commits map[int]time.Time
	arrived map[int]time.Time
	change  chan struct{} // signalled on each arrival
}

// startLagProbe starts watching the standby under a fresh marker prefix
// named run, then writing markers on the primary.
func startLagProbe(ctx context.Context, primary, standby *clientv3.Client, run string, interval time.Duration) (*lagProbe, error) {
	lp := &lagProbe{
		prefix:  "/registry/configmaps/bench-lag/" + run + "-",
		wdone:   make(chan struct{}),
		commits: map[int]time.Time{},
		arrived: map[int]time.Time{},
		change:  make(chan struct{}, 1),
	}
	wctx, cancel := context.WithCancel(ctx)
	lp.cancel = cancel
	wch := standby.Watch(wctx, lp.prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case r := <-wch:
		if !r.Created || r.Err() != nil {
			cancel()
			return nil, fmt.Errorf("watch standby markers: %v", r.Err())
		}
	case <-time.After(10 * time.Second):
		cancel()
		return nil, fmt.Errorf("watch standby markers: not created after 10s")
	}
	go func() {
		for r := range wch {
			now := time.Now()
			lp.mu.Lock()
			for _, ev := range r.Events {
				if n, err := strconv.Atoi(strings.TrimPrefix(string(ev.Kv.Key), lp.prefix)); err == nil {
					if _, ok := lp.arrived[n]; !ok {
						lp.arrived[n] = now
					}
				}
			}
			lp.mu.Unlock()
			select {
			case lp.change <- struct{}{}:
			default:
			}
		}
	}()
	pctx, stop := context.WithCancel(ctx)
	lp.stop = stop
	go func() {
		defer close(lp.wdone)
		t := time.NewTicker(interval)
		defer t.Stop()
		for n := 0; ; n++ {
			// The Put runs under ctx, not pctx: stopping never cancels a
			// marker in flight, and the first marker is always written.
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := primary.Put(rctx, fmt.Sprintf("%s%06d", lp.prefix, n), "marker "+time.Now().Format(time.RFC3339Nano))
			cancel()
			if err == nil {
				lp.mu.Lock()
				lp.commits[n] = time.Now()
				lp.mu.Unlock()
			}
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return lp, nil
}

// lagResult summarises the lag of the markers written while a probe ran.
type lagResult struct {
	samples  []time.Duration // sorted
	missing  int             // markers that had not arrived when the wait gave up
	lowerBnd bool            // true when missing > 0: the upper percentiles are lower bounds
	// series are the markers in the order written: when each was
	// committed on the primary and its lag (up to the give-up time when
	// it never arrived).
	series []lagSample
}

// lagSample is one marker's lag.
type lagSample struct {
	committed time.Time
	lag       time.Duration
	arrived   bool
}

func (r lagResult) pct(p float64) time.Duration {
	if len(r.samples) == 0 {
		return -1
	}
	i := int(p*float64(len(r.samples)) + 0.5)
	return r.samples[min(max(i-1, 0), len(r.samples)-1)]
}

func (r lagResult) max() time.Duration { return r.pct(1) }

// String formats p50/p99/max.
func (r lagResult) String() string {
	if len(r.samples) == 0 {
		return "n/a"
	}
	s := fmt.Sprintf("%s / %s / %s", fmtDur(r.pct(0.5)), fmtDur(r.pct(0.99)), fmtDur(r.max()))
	if r.lowerBnd {
		s += fmt.Sprintf(" (%d not arrived: ≥)", r.missing)
	}
	return s
}

// stopWriting stops writing markers; it returns once the writer has ended.
func (lp *lagProbe) stopWriting() {
	lp.stop()
	<-lp.wdone
}

// finish stops writing markers, waits until every marker written has
// arrived on the standby (up to timeout) and returns their lags. Markers
// that never arrived count with the lag they had when the wait gave up.
func (lp *lagProbe) finish(timeout time.Duration) lagResult {
	lp.stopWriting()
	defer lp.cancel()
	deadline := time.Now().Add(timeout)
	for {
		lp.mu.Lock()
		all := len(lp.arrived) >= len(lp.commits)
		lp.mu.Unlock()
		if all || time.Now().After(deadline) {
			break
		}
		select {
		case <-lp.change:
		case <-time.After(100 * time.Millisecond):
		}
	}
	now := time.Now()
	lp.mu.Lock()
	defer lp.mu.Unlock()
	var r lagResult
	for _, n := range slices.Sorted(maps.Keys(lp.commits)) {
		c := lp.commits[n]
		a, ok := lp.arrived[n]
		if !ok {
			a = now
			r.missing++
		}
		r.samples = append(r.samples, max(a.Sub(c), 0))
		r.series = append(r.series, lagSample{committed: c, lag: max(a.Sub(c), 0), arrived: ok})
	}
	slices.Sort(r.samples)
	r.lowerBnd = r.missing > 0
	return r
}

// fmtDur prints a duration with 3 significant digits at most.
func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "n/a"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	case d < 10*time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}
