package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdsync/etcdsync/internal/embedded"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader in parallel.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startEtcd(t *testing.T) (*embedded.Etcd, *clientv3.Client) {
	t.Helper()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close(); e.Close() })
	return e, cli
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := embedded.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// background runs the command line until the test cancels it.
type background struct {
	cancel context.CancelFunc
	done   chan int
	stderr *syncBuffer
}

func runBackground(t *testing.T, args ...string) *background {
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan int, 1), stderr: &syncBuffer{}}
	go func() { b.done <- run(ctx, args, io.Discard, b.stderr) }()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			t.Logf("%q stderr:\n%s", args, b.stderr)
		}
	})
	return b
}

// stop cancels the command (like SIGTERM) and returns its exit status.
func (b *background) stop(t *testing.T) int {
	t.Helper()
	b.cancel()
	select {
	case code := <-b.done:
		b.done <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not stop; stderr:\n%s", b.stderr)
		return -1
	}
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestPublishApply wires `publish` (with its embedded NATS) and `apply`
// between two etcd servers, checks scope, metrics and readiness, and that
// cancellation is a clean exit.
func TestPublishApply(t *testing.T) {
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	natsAddr, pubMetrics, applyMetrics := freeAddr(t), freeAddr(t), freeAddr(t)
	ctx := context.Background()
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/before", "1"); err != nil {
		t.Fatal(err)
	}

	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(),
		"--nats-listen", natsAddr, "--metrics-addr", pubMetrics, "--log-level", "debug")
	// apply fails fast when NATS is unreachable: start it once publish serves.
	eventually(t, 20*time.Second, "the publisher to start", func() bool {
		return strings.Contains(pub.stderr.String(), "publisher starting")
	})
	t.Setenv("ETCDSYNC_EXCLUDE_NAMESPACE", "secret-ns")
	ap := runBackground(t, "apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr,
		"--metrics-addr", applyMetrics, "--log-format", "json")

	eventually(t, 20*time.Second, "the seeded key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/before")
		return err == nil && len(resp.Kvs) == 1
	})
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/after", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := pcli.Put(ctx, "/registry/configmaps/secret-ns/hidden", "3"); err != nil {
		t.Fatal(err)
	}
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/last", "4"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the last key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/last")
		return err == nil && len(resp.Kvs) == 1
	})
	resp, err := scli.Get(ctx, "/registry/configmaps/secret-ns/hidden")
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("excluded key on the standby: %v %v", resp, err)
	}

	for _, addr := range []string{pubMetrics, applyMetrics} {
		if code, body := httpGet("http://" + addr + "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
			t.Errorf("%s /healthz: %d %q", addr, code, body)
		}
		if code, body := httpGet("http://" + addr + "/readyz"); code != 200 {
			t.Errorf("%s /readyz: %d %q", addr, code, body)
		}
	}
	if _, body := httpGet("http://" + pubMetrics + "/metrics"); !strings.Contains(body, "etcdsync_publisher_revisions_total") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("publisher metrics lack etcdsync_publisher_revisions_total or go_goroutines")
	}
	if _, body := httpGet("http://" + applyMetrics + "/metrics"); !strings.Contains(body, "etcdsync_applier_checkpoint_revision") {
		t.Errorf("applier metrics lack etcdsync_applier_checkpoint_revision")
	}
	// Every component metric carries the site whose log it serves and the
	// log stream, so that two sites in one Prometheus, and a role swap
	// (the new primary publishes as another site), read apart.
	for addr, m := range map[string]string{pubMetrics: "etcdsync_publisher_revisions_total", applyMetrics: "etcdsync_applier_checkpoint_revision"} {
		if _, body := httpGet("http://" + addr + "/metrics"); !strings.Contains(body, m+`{site="primary",stream="ETCDSYNC"} `) {
			t.Errorf("%s lacks the labels site and stream:\n%s", m, body)
		}
	}

	if code := ap.stop(t); code != exitOK {
		t.Errorf("apply exit %d; stderr:\n%s", code, ap.stderr)
	}
	if code := pub.stop(t); code != exitOK {
		t.Errorf("publish exit %d; stderr:\n%s", code, pub.stderr)
	}
	if !strings.Contains(ap.stderr.String(), `"msg":"applier stopped"`) {
		t.Errorf("apply log is not JSON or lacks the stop line:\n%s", ap.stderr)
	}
	if code, _ := httpGet("http://" + applyMetrics + "/healthz"); code != 0 {
		t.Errorf("metrics server still serving after exit")
	}
}

// TestPublishPortTaken reports a runtime failure (exit 1) on one line.
func TestPublishPortTaken(t *testing.T) {
	primary, _ := startEtcd(t)
	natsAddr := freeAddr(t)
	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(), "--nats-listen", natsAddr)
	eventually(t, 20*time.Second, "the first publisher to start", func() bool {
		return strings.Contains(pub.stderr.String(), "publisher starting")
	})
	code, _, stderr := runCmd(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(), "--nats-listen", natsAddr, "--log-level", "error")
	if code != exitFailure || !strings.HasPrefix(stderr, "etcdsync publish: ") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// TestSandbox runs the whole sandbox briefly and expects CONSISTENT.
func TestSandbox(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the pipeline for a few seconds")
	}
	var stdout, stderr syncBuffer
	start := time.Now()
	code := run(context.Background(), []string{"sandbox", "--duration", "3s", "--rate", "100", "--data-dir", t.TempDir()}, &stdout, &stderr)
	out := stdout.String()
	t.Logf("sandbox took %s\nstdout:\n%s\nstderr:\n%s", time.Since(start).Round(time.Millisecond), out, stderr.String())
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"primary etcd: http://127.0.0.1:", "etcdctl --endpoints", "compared", "missed", "CONSISTENT"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if !strings.Contains(stderr.String(), "applied rev") {
		t.Errorf("no live view line on stderr")
	}
}
