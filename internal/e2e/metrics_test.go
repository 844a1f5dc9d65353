package e2e

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/publisher"
)

// metricValue returns the value of the unlabelled counter or gauge name
// gathered from g, failing the test when it is not there.
func metricValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%s has %d series, want 1", name, len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		}
		t.Fatalf("%s is a %s, want a counter or a gauge", name, mf.GetType())
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// seriesCount returns how many series the metric name has in g. (The
// client's testutil.GatherAndCount would do, but it needs a module go.mod
// does not list.)
func seriesCount(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// TestMetricsFollowRevisions runs a publisher and an applier with their own
// registries and checks that the revision metrics move by exactly the
// revisions written: counters by N, positions to the last revision, and
// the applier's lag is set to a small positive value.
func TestMetricsFollowRevisions(t *testing.T) {
	p := newPipeline(t)
	put(t, p.primary.Client, "/app/seed", "0")

	pubReg, apReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	pub, err := publisher.New(p.publisherConfig(), p.primary.Client, p.conn(), pubReg)
	if err != nil {
		t.Fatal(err)
	}
	p.runs = append(p.runs, start(t, pub.Run))
	acfg := p.applierConfig()
	acfg.Scope.Mode = keyspace.ModeRaw
	ap, err := applier.New(acfg, p.standby.Client, p.conn(), apReg)
	if err != nil {
		t.Fatal(err)
	}
	p.runs = append(p.runs, start(t, ap.Run))
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)

	// After the bootstrap snapshot: one snapshot each side, the applier's
	// checkpoint at the snapshot's revision.
	testenvEventually(t, func() bool {
		return metricValue(t, apReg, "etcdsync_applier_snapshots_applied_total") == 1
	}, "the applier to count the bootstrap snapshot")
	if n := seriesCount(t, pubReg, "etcdsync_publisher_snapshots_total"); n != 1 {
		t.Errorf("etcdsync_publisher_snapshots_total has %d series, want 1 (one reason)", n)
	}
	pubRevs := metricValue(t, pubReg, "etcdsync_publisher_revisions_total")
	apRevs := metricValue(t, apReg, "etcdsync_applier_revisions_total")
	apKeys := metricValue(t, apReg, "etcdsync_applier_keys_total")

	// N revisions: four single puts and a transaction of two keys.
	const n = 5
	var last int64
	for i := range n - 1 {
		last = put(t, p.primary.Client, fmt.Sprintf("/app/live/%d", i), fmt.Sprint(i))
	}
	resp, err := p.primary.Client.Txn(context.Background()).Then(
		clientv3.OpPut("/app/txn/a", "a"), clientv3.OpPut("/app/txn/b", "b")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	last = resp.Header.Revision

	testenvEventually(t, func() bool {
		return metricValue(t, apReg, "etcdsync_applier_checkpoint_revision") == float64(last)
	}, fmt.Sprintf("etcdsync_applier_checkpoint_revision to reach %d", last))
	testenvEventually(t, func() bool {
		return metricValue(t, pubReg, "etcdsync_publisher_last_revision") == float64(last)
	}, fmt.Sprintf("etcdsync_publisher_last_revision to reach %d", last))

	for _, c := range []struct {
		reg  prometheus.Gatherer
		name string
		want float64
	}{
		{pubReg, "etcdsync_publisher_revisions_total", pubRevs + n},
		{apReg, "etcdsync_applier_revisions_total", apRevs + n},
		{apReg, "etcdsync_applier_keys_total", apKeys + n + 1},
		{apReg, "etcdsync_applier_snapshots_applied_total", 1},
		{apReg, "etcdsync_applier_gaps_total", 0},
		{pubReg, "etcdsync_publisher_errors_total", 0},
	} {
		if got := metricValue(t, c.reg, c.name); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if lag := metricValue(t, apReg, "etcdsync_applier_lag_seconds"); lag <= 0 || lag > 10 {
		t.Errorf("etcdsync_applier_lag_seconds = %v, want in (0, 10]", lag)
	}
	if ck := ap.Applied(); ck.Position.Revision != last {
		t.Errorf("Applied() at revision %d, metrics at %d", ck.Position.Revision, last)
	}
	if got := pub.Published().Revision; got != last {
		t.Errorf("Published() at revision %d, metrics at %d", got, last)
	}
}

// While the standby stalls (its transactions hang), the lag gauges show
// the messages and revisions waiting and a lag that grows, not the last
// apply latency.
func TestLagGaugesWhileStalled(t *testing.T) {
	p := newPipeline(t)
	stall := make(chan struct{})
	var stalled atomic.Bool
	cli, err := clientv3.New(clientv3.Config{Endpoints: p.standby.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if method == "/etcdserverpb.KV/Txn" && stalled.Load() {
				select {
				case <-stall:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	p.startPublisher(p.publisherConfig())
	reg := prometheus.NewRegistry()
	ap, err := applier.New(rawApplierConfig(p), cli, p.conn(), reg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, ap.Run)
	put(t, p.primary.Client, "/lag/a", "1")
	p.waitConverged(rawRules(t), 20*time.Second)
	stalled.Store(true)
	defer close(stall)
	for i := 0; i < 3; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/lag/k%d", i), "v")
	}
	// A liveness bound, not a timing assertion: on a loaded machine the
	// publisher alone can take seconds to get the three revisions out.
	testenv.Eventually(t, 60*time.Second, func() bool {
		return metricValue(t, reg, "etcdsync_applier_lag_messages") >= 3 &&
			metricValue(t, reg, "etcdsync_applier_lag_revisions") >= 3 &&
			metricValue(t, reg, "etcdsync_applier_lag_seconds") >= 2
	}, "lag gauges reflect the stall")
	t.Logf("lag while stalled: %v messages, %v revisions, %vs",
		metricValue(t, reg, "etcdsync_applier_lag_messages"), metricValue(t, reg, "etcdsync_applier_lag_revisions"),
		metricValue(t, reg, "etcdsync_applier_lag_seconds"))
}
