package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// fakeReady is a readiness check whose answer the test sets.
type fakeReady struct {
	mu    sync.Mutex
	err   error
	block bool // wait for the context instead of answering
}

func (f *fakeReady) set(err error, block bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.block = err, block
}

func (f *fakeReady) check(ctx context.Context) error {
	f.mu.Lock()
	err, block := f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

// TestReadyzFlips serves /readyz with a readiness check and expects it to
// follow the check (and /healthz not to), including a check that hangs.
func TestReadyzFlips(t *testing.T) {
	addr := freeAddr(t)
	ready := &fakeReady{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runServedReady(ctx, slog.New(slog.DiscardHandler), addr, prometheus.NewRegistry(), nil, ready.check, func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	readyz := func() (int, string) {
		code, body := httpGet("http://" + addr + "/readyz")
		return code, strings.TrimSpace(body)
	}
	eventually(t, 10*time.Second, "/readyz to answer ready", func() bool {
		code, body := readyz()
		return code == 200 && body == "ready"
	})

	behind := "behind: 12 stream messages not applied; last applied revision 40 observed 45s ago (ready max lag 30s)"
	ready.set(errors.New(behind), false)
	if code, body := readyz(); code != 503 || body != behind {
		t.Errorf("/readyz while behind: %d %q", code, body)
	}
	if code, body := httpGet("http://" + addr + "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz while behind: %d %q", code, body)
	}

	ready.set(nil, false)
	if code, body := readyz(); code != 200 || body != "ready" {
		t.Errorf("/readyz caught up again: %d %q", code, body)
	}

	ready.set(nil, true)
	start := time.Now()
	code, body := readyz()
	if code != 503 || body != context.DeadlineExceeded.Error() {
		t.Errorf("/readyz with a hanging check: %d %q", code, body)
	}
	if took := time.Since(start); took > readyTimeout+2*time.Second {
		t.Errorf("/readyz with a hanging check took %s", took)
	}
}

func TestCaughtUp(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(seq uint64, ago time.Duration) applier.Checkpoint {
		return applier.Checkpoint{Position: streams.Position{Generation: 1, Revision: 40, Seq: seq}, SourceTime: now.Add(-ago), AppliedAt: now}
	}
	snap := at(10, time.Second)
	snap.Snapshot = &applier.SnapshotState{Generation: 2, Revision: 90, Keys: 500}
	promoted := at(10, time.Second)
	promoted.Promoted = true
	stopped := at(10, time.Second)
	stopped.Stopped = &applier.Stop{Reason: `key "/big": a request of 300000 bytes exceeds the standby's request limit of 262144 bytes`}
	noSource := at(10, 0)
	noSource.SourceTime, noSource.AppliedAt = time.Time{}, now.Add(-time.Minute)
	tests := []struct {
		name    string
		lastSeq uint64
		ck      applier.Checkpoint
		want    string // "" ready, else a substring of the reason
	}{
		{"everything applied, long ago", 10, at(10, time.Hour), ""},
		{"empty stream, empty standby", 0, applier.Checkpoint{}, ""},
		{"behind within the threshold", 25, at(10, 29*time.Second), ""},
		{"behind over the threshold", 25, at(10, 31*time.Second), "behind: 15 stream messages not applied; last applied revision 40 observed 31s ago (ready max lag 30s)"},
		{"nothing applied", 25, applier.Checkpoint{}, "nothing applied yet: 25 messages in the stream"},
		{"applying a snapshot", 10, snap, "applying a snapshot (generation 2, revision 90, 500 keys so far)"},
		{"promoted", 10, promoted, "standby promoted"},
		{"stopped, even caught up", 10, stopped, `the applier stopped: key "/big": a request of 300000 bytes exceeds the standby's request limit of 262144 bytes`},
		{"no source time: applied-at counts", 11, noSource, "observed 1m0s ago"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := caughtUp(tt.lastSeq, tt.ck, now, 30*time.Second)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("not ready: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestApplyReadiness checks the apply readiness against a real pipeline:
// not ready before anything is applied, ready once caught up, not ready
// when the stream holds revisions the stopped applier has not applied for
// longer than the threshold, and ready again once it catches up.
func TestApplyReadiness(t *testing.T) {
	_, pcli := startEtcd(t)
	_, scli := startEtcd(t)
	js := testenv.StartJetStream(t)
	ctx := context.Background()
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/a", "1"); err != nil {
		t.Fatal(err)
	}

	pcfg := publisher.DefaultConfig()
	pcfg.MinBackoff, pcfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	pub, err := publisher.New(pcfg, pcli, js.Conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	goRun(t, pub.Run)

	acfg := applier.DefaultConfig()
	acfg.MinBackoff, acfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	strict, err := applyReadiness(scli, js.Conn, acfg, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	relaxed, err := applyReadiness(scli, js.Conn, acfg, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	reason := func(check readyCheck) string {
		if err := check(ctx); err != nil {
			return err.Error()
		}
		return ""
	}

	eventually(t, 20*time.Second, "not ready: nothing applied", func() bool {
		return strings.HasPrefix(reason(relaxed), "nothing applied yet")
	})

	startApplier := func() func() {
		ap, err := applier.New(acfg, scli, js.Conn, nil)
		if err != nil {
			t.Fatal(err)
		}
		return goRun(t, ap.Run)
	}
	stop := startApplier()
	eventually(t, 20*time.Second, "ready once caught up", func() bool { return reason(strict) == "" })

	stop()
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/b", "2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "not ready when behind over the threshold", func() bool {
		return strings.HasPrefix(reason(strict), "behind: 1 stream messages not applied")
	})
	if r := reason(relaxed); r != "" {
		t.Errorf("not ready when behind within the threshold: %s", r)
	}

	startApplier()
	eventually(t, 20*time.Second, "ready again once caught up", func() bool { return reason(strict) == "" })
}

// goRun runs fn until the returned stop is called (or the test ends)
// and fails the test if fn returns an error.
func goRun(t *testing.T, fn func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// TestPublishReadyzWhenStoreFull: publish's /readyz fails, saying why,
// while the stream does not acknowledge its writes (a JetStream store too
// small for what the primary writes).
func TestPublishReadyzWhenStoreFull(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		JetStreamMaxStore: 512 << 10, JetStreamMaxMemory: 1 << 20, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	primary, pcli := startEtcd(t)
	addr := freeAddr(t)
	runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--nats-url", s.ClientURL(), "--metrics-addr", addr, "--leader-elect=false")
	eventually(t, 20*time.Second, "/readyz to answer ready", func() bool {
		code, _ := httpGet("http://" + addr + "/readyz")
		return code == http.StatusOK
	})
	for i := 0; i < 16; i++ {
		if _, err := pcli.Put(context.Background(), fmt.Sprintf("/big/%02d", i), strings.Repeat("v", 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "/readyz to say the publisher is not publishing", func() bool {
		code, body := httpGet("http://" + addr + "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "not publishing")
	})
}
