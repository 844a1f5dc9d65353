package auditor_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/etcdsync/etcdsync/auditor"
)

// BenchmarkAudit100k audits 100,000 keys of 1 KiB (about 100 MiB per side),
// identical on both sides. Run it with
//
//	go test -run=NONE -bench=Audit100k -benchmem ./auditor/
//
// Besides time and allocations (B/op counts the in-process etcd servers'
// allocations too) it reports keys/s, the peak growth of the live heap
// during one more, untimed audit (sampled after forced collections; it
// includes the etcd servers' per-request memory) and the ratio to the
// anchor: the time to read both sides page by page without comparing.
//
// child-peak-rss-MiB is the peak RSS of a process running one audit alone,
// with the default configuration (the deployed auditor's limit is 256 MiB;
// the target is at most 128 MiB whatever the keyspace).
func BenchmarkAudit100k(b *testing.B) { benchAudit(b, 100_000, 1024) }

// BenchmarkAudit10k is the same with 10,000 keys, to show that the peak
// heap does not grow with the keyspace.
func BenchmarkAudit10k(b *testing.B) { benchAudit(b, 10_000, 1024) }

// BenchmarkAudit1M is the same with 1,000,000 keys of 1 KiB (about 1 GiB
// per side; loading takes minutes): run it alone, with -benchtime=1x.
func BenchmarkAudit1M(b *testing.B) { benchAudit(b, 1_000_000, 1024) }

// BenchmarkAuditLargeValues audits 150 values of 683 KiB (about 100 MiB
// per side, a few keys per page): the pages are bounded by bytes.
func BenchmarkAuditLargeValues(b *testing.B) { benchAudit(b, 150, 683<<10) }

func benchAudit(b *testing.B, n, size int) {
	e := newEnv(b, false)
	value := strings.Repeat("v", size)
	rev := load(b, e.primary.Client, n, value)
	load(b, e.standby.Client, n, value)
	e.writeCheckpoint(rev, nil)
	a := e.auditor(e.config(), nil)
	ctx := context.Background()

	anchor := readBoth(b, e)
	b.ResetTimer()
	for b.Loop() {
		rep, err := a.Audit(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if !rep.Consistent || rep.Compared != int64(n) {
			b.Fatalf("report: consistent=%v compared=%d", rep.Consistent, rep.Compared)
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.StopTimer()
	rss := childAudit(b, e, n)
	b.ReportMetric(float64(rss)/(1<<20), "child-peak-rss-MiB")
	b.Logf("%d keys of %d bytes: one audit alone peaked at %.1f MiB resident", n, size, float64(rss)/(1<<20))
	b.ReportMetric(float64(n)/per.Seconds(), "keys/s")
	b.ReportMetric(per.Seconds()/anchor.Seconds(), "x-read-only")
	if n >= 1_000_000 {
		// Forced collections of a heap holding two etcd servers of 1 GiB
		// each take too long to sample; the child's RSS says it.
		return
	}
	// One more audit, untimed, with the live heap sampled after forced
	// collections every few milliseconds.
	stop := sampleLiveHeap()
	if _, err := a.Audit(ctx); err != nil {
		b.Fatal(err)
	}
	peak := stop()
	stop = sampleLiveHeap()
	readBoth(b, e)
	anchorPeak := stop()
	b.ReportMetric(float64(anchorPeak)/(1<<20), "anchor-peak-live-heap-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-live-heap-MiB")
}

// childEnv names the environment variables of the child audit process.
const (
	childPrimary = "ETCDSYNC_TEST_CHILD_PRIMARY"
	childStandby = "ETCDSYNC_TEST_CHILD_STANDBY"
	childKeys    = "ETCDSYNC_TEST_CHILD_KEYS"
)

// childAudit runs one audit in a child process (this test binary running
// TestChildAudit), so that its peak RSS is the auditor's alone, without the
// in-process etcd servers. It returns the child's peak RSS in bytes.
func childAudit(b testing.TB, e *env, n int) int64 {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildAudit$", "-test.count=1")
	cmd.Env = append(os.Environ(), childPrimary+"="+e.primary.Endpoint, childStandby+"="+e.standby.Endpoint,
		childKeys+"="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "child audit ok") {
		b.Fatalf("child audit: %v\n%s", err, out)
	}
	_, hwm, _ := strings.Cut(string(out), "child audit ok vmhwm_kib=")
	kib, err := strconv.ParseInt(strings.TrimSpace(strings.SplitN(hwm, "\n", 2)[0]), 10, 64)
	if err != nil {
		b.Fatalf("child audit peak RSS: %v\n%s", err, out)
	}
	return kib << 10
}

// vmHWM returns this process's peak RSS in KiB from /proc/self/status
// (rusage's maxrss of a child keeps the parent's size from before exec).
func vmHWM() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "0"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		}
	}
	return "0"
}

// TestChildAudit is the child process of childAudit; it is skipped unless
// the benchmark starts it.
func TestChildAudit(t *testing.T) {
	primary, standby := os.Getenv(childPrimary), os.Getenv(childStandby)
	if primary == "" {
		t.Skip("run by BenchmarkAudit100k in a child process")
	}
	connect := func(ep string) *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	a, err := auditor.New(auditor.DefaultConfig(), connect(primary), connect(standby), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := a.Audit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(os.Getenv(childKeys)); !rep.Consistent || rep.Compared != int64(n) {
		t.Fatalf("child audit: consistent=%v compared=%d, want %d", rep.Consistent, rep.Compared, n)
	}
	fmt.Println("child audit ok vmhwm_kib=" + vmHWM())
}

// load writes n keys with value through txns of up to 128 puts and 1 MiB
// (at least one put), 8 in flight, and returns the last revision.
func load(b testing.TB, cli *clientv3.Client, n int, value string) int64 {
	b.Helper()
	return loadAt(b, cli, "/registry/configmaps/bench/", n, value)
}

// loadAt is load with keys under prefix.
func loadAt(b testing.TB, cli *clientv3.Client, prefix string, n int, value string) int64 {
	b.Helper()
	var g errgroup.Group
	g.SetLimit(8)
	var last atomic.Int64
	per := max(1, min(128, (1<<20)/max(len(value), 1)))
	for start := 0; start < n; start += per {
		g.Go(func() error {
			var ops []clientv3.Op
			for i := start; i < min(start+per, n); i++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sk%07d", prefix, i), value))
			}
			resp, err := cli.Txn(context.Background()).Then(ops...).Commit()
			if err != nil {
				return err
			}
			for {
				cur := last.Load()
				if resp.Header.Revision <= cur || last.CompareAndSwap(cur, resp.Header.Revision) {
					return nil
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	return last.Load()
}

// readBoth is the anchor: both sides read page by page, concurrently,
// without comparing.
func readBoth(b *testing.B, e *env) time.Duration {
	b.Helper()
	start := time.Now()
	var g errgroup.Group
	for _, cli := range []*clientv3.Client{e.primary.Client, e.standby.Client} {
		g.Go(func() error {
			key := "\x00"
			for {
				resp, err := cli.Get(context.Background(), key, clientv3.WithRange("\x00"), clientv3.WithLimit(auditor.DefaultPageSize))
				if err != nil {
					return err
				}
				if !resp.More || len(resp.Kvs) == 0 {
					return nil
				}
				key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
			}
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// sampleLiveHeap samples the live heap (after a forced collection) every
// 5ms until stop, which returns the largest growth over the first sample.
func sampleLiveHeap() (stop func() int64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	live := func() int64 {
		runtime.GC()
		metrics.Read(sample)
		return int64(sample[0].Value.Uint64())
	}
	base := live()
	var peak int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				peak = max(peak, live()-base)
			}
		}
	}()
	return func() int64 { close(done); wg.Wait(); return peak }
}
