package auditor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// ckKey is the default checkpoint key.
var ckKey = keyspace.OwnPrefix + "checkpoint/" + streams.DefaultStream

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ETCDSYNC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return nil
}

// env is a primary and a standby etcd, optionally with JetStream and the
// replication pipeline between them.
type env struct {
	t       testing.TB
	primary *testenv.Etcd
	standby *testenv.Etcd
	js      *testenv.JetStream
	scope   keyspace.Config
	prefix  string // the publisher's prefix writeCheckpoint records
	stopApp context.CancelFunc
	appDone chan error
}

func newEnv(t testing.TB, withNATS bool) *env {
	t.Helper()
	e := &env{t: t, primary: testenv.StartEtcd(t), standby: testenv.StartEtcd(t), scope: keyspace.DefaultConfig()}
	if withNATS {
		e.js = testenv.StartJetStream(t)
	}
	return e
}

func (e *env) conn() *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.js.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// runBG runs fn until the test ends, or until the returned cancel.
func runBG(t testing.TB, fn func(context.Context) error) (context.CancelFunc, chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("background run: %v", err)
		}
	})
	return cancel, done
}

// startPipeline runs a publisher on the primary and an applier on the standby.
func (e *env) startPipeline() {
	e.t.Helper()
	pcfg := publisher.DefaultConfig()
	pcfg.Logger = testLogger(e.t)
	pcfg.MinBackoff, pcfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	pcfg.Prefix = e.prefix
	pub, err := publisher.New(pcfg, e.primary.Client, e.conn(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	runBG(e.t, pub.Run)
	acfg := applier.DefaultConfig()
	acfg.Logger = testLogger(e.t)
	acfg.Scope = e.scope
	acfg.MinBackoff, acfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	ap, err := applier.New(acfg, e.standby.Client, e.conn(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.stopApp, e.appDone = runBG(e.t, ap.Run)
}

// stopApplier stops the applier and waits for it.
func (e *env) stopApplier() {
	e.t.Helper()
	e.stopApp()
	err := <-e.appDone
	e.appDone <- err // for the cleanup
	if err != nil {
		e.t.Fatalf("applier: %v", err)
	}
}

// waitApplied waits until the standby's checkpoint reaches source revision rev.
func (e *env) waitApplied(rev int64) {
	e.t.Helper()
	testenv.Eventually(e.t, 30*time.Second, func() bool {
		ck, _, err := applier.ReadCheckpoint(context.Background(), e.standby.Client, ckKey)
		return err == nil && ck.Snapshot == nil && ck.Position.Revision >= rev
	}, "standby checkpoint at source revision %d", rev)
}

// config returns an auditor configuration for e.
func (e *env) config() auditor.Config {
	cfg := auditor.DefaultConfig()
	cfg.Scope = e.scope
	cfg.Logger = testLogger(e.t)
	return cfg
}

// auditor builds an auditor for e; with reg nil metrics are not registered.
func (e *env) auditor(cfg auditor.Config, reg prometheus.Registerer) *auditor.Auditor {
	e.t.Helper()
	js := e.jsOrNil()
	a, err := auditor.New(cfg, e.primary.Client, e.standby.Client, js, reg)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *env) jsOrNil() jetstream.JetStream {
	if e.js == nil {
		return nil
	}
	return e.js.JS
}

// put writes k=v on cli and returns the revision.
func put(t testing.TB, cli *clientv3.Client, k, v string) int64 {
	t.Helper()
	resp, err := cli.Put(context.Background(), k, v)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func del(t testing.TB, cli *clientv3.Client, k string) {
	t.Helper()
	if _, err := cli.Delete(context.Background(), k); err != nil {
		t.Fatal(err)
	}
}

// writeCheckpoint stands in for the applier: it writes a checkpoint saying
// the standby holds the primary at source revision rev.
func (e *env) writeCheckpoint(rev int64, mutate func(*applier.Checkpoint)) {
	e.t.Helper()
	resp, err := e.primary.Client.Get(context.Background(), "probe")
	if err != nil {
		e.t.Fatal(err)
	}
	ck := applier.Checkpoint{Position: streams.Position{ClusterID: resp.Header.ClusterId, Generation: 1, Revision: rev, Seq: uint64(rev)}}
	if mutate != nil {
		mutate(&ck)
	}
	b, err := json.Marshal(ck)
	if err != nil {
		e.t.Fatal(err)
	}
	put(e.t, e.standby.Client, ckKey, string(b))
	e.writeScope(e.scope, e.prefix)
}

// writeScope stands in for the applier: it records scope and the
// publisher's prefix as the applier's.
func (e *env) writeScope(scope keyspace.Config, prefix string) {
	e.t.Helper()
	rec, err := applier.NewScopeRecord(scope, prefix, true)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		e.t.Fatal(err)
	}
	put(e.t, e.standby.Client, applier.ScopeKey(ckKey), string(b))
}

// copyKeys puts each key=value on both sides and writes a checkpoint at the
// primary's revision, as if the applier had replicated them.
func (e *env) copyKeys(kv map[string]string) int64 {
	e.t.Helper()
	var rev int64
	for k, v := range kv {
		rev = put(e.t, e.primary.Client, k, v)
		put(e.t, e.standby.Client, k, v)
	}
	e.writeCheckpoint(rev, nil)
	return rev
}

// keysOf returns the keys of a drift list.
func keysOf(l auditor.DriftList) []string {
	out := []string{}
	for _, k := range l.Keys {
		out = append(out, k.Key)
	}
	return out
}

func fmtKeys(r auditor.Report) string {
	return fmt.Sprintf("missed %q surplus %q mismatched %q", keysOf(r.Missed), keysOf(r.Surplus), keysOf(r.Mismatched))
}
