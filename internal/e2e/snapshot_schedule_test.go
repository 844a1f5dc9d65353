package e2e

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// snapshotReasons returns the reason of every snapshot-begin in the log, in
// stream order.
func snapshotReasons(t *testing.T, p *pipeline) []string {
	t.Helper()
	ctx := context.Background()
	s := logStream(t, p)
	var out []string
	for seq := uint64(1); seq <= lastSeq(t, s); seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(streams.HeaderKind) != streams.KindSnapshotBegin.String() {
			continue
		}
		f, err := streams.DecodeFrame(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := streams.DecodeRecord(f.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec.Reason)
	}
	return out
}

// Sessions that end more often than the snapshot interval (pod restarts,
// leader handovers, NATS reconnects) still get periodic snapshots: the next
// one is due from the newest snapshot-begin in the stream, not from the
// start of the session. And a session does not take one while the newest is
// younger than the interval.
func TestPeriodicSnapshotsSurviveShortSessions(t *testing.T) {
	p := newPipeline(t)
	cfg := p.publisherConfig()
	cfg.SnapshotInterval = 2 * time.Second
	put(t, p.primary.Client, "/ps/a", "1")
	// Sessions until two periodic snapshots are in the stream (60s at
	// most): each lives well under the interval, as a crash-looping pod's
	// would.
	periodic := func(reasons []string) (n int) {
		for _, r := range reasons {
			if strings.HasPrefix(r, publisher.ReasonPeriodic) {
				n++
			}
		}
		return n
	}
	sessions := 0
	var reasons []string
	for end := time.Now().Add(60 * time.Second); periodic(reasons) < 2 && time.Now().Before(end); sessions++ {
		_, r := p.startPublisher(cfg)
		time.Sleep(cfg.SnapshotInterval / 2) // the session's lifetime, not a wait for something
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		reasons = snapshotReasons(t, p)
	}
	t.Logf("%d sessions, snapshots %q", sessions, reasons)
	if periodic(reasons) < 2 || len(reasons) >= sessions {
		t.Fatalf("%d sessions with a %s interval published snapshots %q: want at least 2 periodic ones, and not one per session",
			sessions, cfg.SnapshotInterval, reasons)
	}
}

// The publisher exports the age of the newest complete snapshot in the
// stream (read from the stream at session start, so a restarted publisher
// knows it) beside the interval, for the snapshot-age alert.
func TestSnapshotAgeGauge(t *testing.T) {
	p := newPipeline(t)
	cfg := p.publisherConfig()
	cfg.SnapshotInterval = time.Hour
	put(t, p.primary.Client, "/sa/a", "1")
	pub0, r := p.startPublisher(cfg)
	// epoch, snapshot-begin, one chunk, snapshot-end
	testenvEventually(t, func() bool { return pub0.Published().Seq >= 4 }, "the first snapshot")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	pub, err := publisher.New(cfg, p.primary.Client, p.conn(), reg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, pub.Run)
	testenvEventually(t, func() bool {
		age := metricValue(t, reg, "etcdsync_publisher_snapshot_age_seconds")
		return !math.IsNaN(age) && age >= 0 && age < cfg.SnapshotInterval.Seconds()
	}, "the age of the snapshot the first publisher took")
	if got := metricValue(t, reg, "etcdsync_publisher_snapshot_interval_seconds"); got != cfg.SnapshotInterval.Seconds() {
		t.Fatalf("etcdsync_publisher_snapshot_interval_seconds %v, want %v", got, cfg.SnapshotInterval.Seconds())
	}
	if n := len(snapshotReasons(t, p)); n != 1 {
		t.Fatalf("%d snapshots, want 1: the second session's snapshot is not due", n)
	}
}

// A snapshot lists the primary's keys in pages of SnapshotPageSize: with
// pages of 3 keys, a first-start snapshot of 10 keys (written before the
// publisher started, so carried by the snapshot alone) brings all 10.
func TestSnapshotListsPastOnePage(t *testing.T) {
	p := newPipeline(t)
	for i := range 10 {
		put(t, p.primary.Client, "/page/k"+strconv.Itoa(i), "v")
	}
	pcfg := p.publisherConfig()
	pcfg.SnapshotPageSize = 3
	p.startPublisher(pcfg)
	p.startApplier(rawApplierConfig(p))
	p.waitConverged(rawRules(t), 30*time.Second)
	resp, err := p.standby.Client.Get(context.Background(), "/page/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 10 {
		t.Fatalf("standby holds %d keys under /page/, want 10", resp.Count)
	}
}
