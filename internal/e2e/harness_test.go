package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/publisher"
)

// pipeline is a primary etcd, a standby etcd and a JetStream server.
type pipeline struct {
	t       *testing.T
	runs    []*running
	primary *testenv.Etcd
	standby *testenv.Etcd
	js      *testenv.JetStream
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	return &pipeline{t: t, primary: testenv.StartEtcd(t), standby: testenv.StartEtcd(t), js: testenv.StartJetStream(t)}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("ETCDSYNC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return nil
}

func (p *pipeline) conn() *nats.Conn {
	p.t.Helper()
	nc, err := nats.Connect(p.js.URL)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(nc.Close)
	return nc
}

func (p *pipeline) publisherConfig() publisher.Config {
	cfg := publisher.DefaultConfig()
	cfg.Logger = testLogger(p.t)
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	return cfg
}

func (p *pipeline) applierConfig() applier.Config {
	cfg := applier.DefaultConfig()
	cfg.Logger = testLogger(p.t)
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	return cfg
}

// running is a component running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// stop cancels the component and returns what Run returned.
func (r *running) stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// wait waits up to d for Run to return by itself and returns its error.
func (r *running) wait(t *testing.T, d time.Duration, what string) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(d):
		t.Fatalf("%s: still running after %s", what, d)
		return nil
	}
}

func start(t *testing.T, run func(context.Context) error) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() { r.err = run(ctx); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (p *pipeline) startPublisher(cfg publisher.Config) (*publisher.Publisher, *running) {
	p.t.Helper()
	pub, err := publisher.New(cfg, p.primary.Client, p.conn(), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	r := start(p.t, pub.Run)
	p.runs = append(p.runs, r)
	return pub, r
}

func (p *pipeline) startApplier(cfg applier.Config) (*applier.Applier, *running) {
	p.t.Helper()
	ap, err := applier.New(cfg, p.standby.Client, p.conn(), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	r := start(p.t, ap.Run)
	p.runs = append(p.runs, r)
	return ap, r
}

// dump returns every key the rules allow, with its value and version.
func dump(t *testing.T, cli *clientv3.Client, rules *keyspace.Rules) map[string]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), "\x00", clientv3.WithRange("\x00"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		if rules.Allowed(kv.Key) {
			out[string(kv.Key)] = string(kv.Value)
		}
	}
	return out
}

// diff describes how two dumps differ ("" when equal).
func diff(want, got map[string]string) string {
	var b bytes.Buffer
	n := 0
	for k, v := range want {
		if g, ok := got[k]; !ok {
			n++
			if n < 10 {
				fmt.Fprintf(&b, "missing %s\n", k)
			}
		} else if g != v {
			n++
			if n < 10 {
				fmt.Fprintf(&b, "differs %s: want %.40q got %.40q\n", k, v, g)
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			n++
			if n < 10 {
				fmt.Fprintf(&b, "surplus %s\n", k)
			}
		}
	}
	if n > 0 {
		fmt.Fprintf(&b, "%d differences (want %d keys, got %d)", n, len(want), len(got))
	}
	return b.String()
}

// waitConverged waits until the standby's in-scope keyspace equals the primary's.
func (p *pipeline) waitConverged(rules *keyspace.Rules, timeout time.Duration) {
	p.t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		last = diff(dump(p.t, p.primary.Client, rules), dump(p.t, p.standby.Client, rules))
		if last == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, r := range p.runs {
		select {
		case <-r.done:
			if r.err != nil {
				last += fmt.Sprintf("\ncomponent %d stopped: %v", i, r.err)
			}
		default:
		}
	}
	p.t.Fatalf("standby did not converge in %s:\n%s", timeout, last)
}

func rawRules(t *testing.T) *keyspace.Rules {
	cfg := keyspace.DefaultConfig()
	cfg.Mode = keyspace.ModeRaw
	r, err := keyspace.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func put(t *testing.T, cli *clientv3.Client, k, v string) int64 {
	t.Helper()
	resp, err := cli.Put(context.Background(), k, v)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func testenvEventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, cond, "%s", what)
}

func clientv3WithPrefix() clientv3.OpOption { return clientv3.WithPrefix() }

func prefixRules(t *testing.T, prefix string) *keyspace.Rules {
	cfg := keyspace.DefaultConfig()
	cfg.Mode = keyspace.ModeRaw
	cfg.IncludePrefixes = []string{prefix}
	r, err := keyspace.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
