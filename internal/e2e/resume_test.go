package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// resumeFixture is a signed pipeline whose standby follows the log, with the
// publisher stopped: the state a publisher crash leaves, before the test
// appends what the dead publisher had half written.
type resumeFixture struct {
	p      *pipeline
	pcfg   publisher.Config
	reg    *prometheus.Registry
	ring   *streams.KeyRing
	stream jetstream.Stream
	at     streams.Position // the dead publisher's last published position
}

func newResumeFixture(t *testing.T) *resumeFixture {
	t.Helper()
	f := &resumeFixture{p: newPipeline(t), ring: keyRing(t, keyLine("k1", 1)), reg: prometheus.NewRegistry()}
	f.pcfg = f.p.publisherConfig()
	f.pcfg.LogKeys = f.ring
	f.pcfg.ProgressInterval = time.Hour // the stream's tail is what the test writes
	pub, run := f.p.startPublisher(f.pcfg)
	acfg := rawApplierConfig(f.p)
	acfg.LogKeys = f.ring
	ap, err := applier.New(acfg, f.p.standby.Client, f.p.conn(), f.reg)
	if err != nil {
		t.Fatal(err)
	}
	f.p.runs = append(f.p.runs, start(t, ap.Run))
	for _, k := range []string{"/r/a", "/r/b", "/r/c"} {
		put(t, f.p.primary.Client, k, "v")
	}
	f.p.waitConverged(rawRules(t), 20*time.Second)
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	f.at = pub.Published()
	if f.stream, err = f.p.js.JS.Stream(context.Background(), streams.DefaultStream); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, f.reg, "etcdsync_applier_snapshots_applied_total"); got != 1 {
		t.Fatalf("snapshots applied while bootstrapping: %v, want 1", got)
	}
	return f
}

// appendParts publishes the first n parts of rec at the stream's tail, signed,
// as the dead publisher had.
func (f *resumeFixture) appendParts(t *testing.T, rec *streams.Record, maxMsg, n int) {
	t.Helper()
	rec.ClusterID, rec.Generation = f.at.ClusterID, f.at.Generation
	msgs, err := streams.NewMsgs(streams.Subjects{Site: streams.DefaultSite}, rec, maxMsg, f.ring, lastSeq(t, f.stream))
	if err != nil {
		t.Fatal(err)
	}
	if n > len(msgs) {
		t.Fatalf("record of %d parts, want at least %d", len(msgs), n)
	}
	for _, m := range msgs[:n] {
		if _, err := f.p.js.JS.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

// appendBigRevisionFragment writes a 256 KiB value on the primary and
// publishes the first 2 of the 64 KiB parts of its revision record, as a
// publisher that died half-way through it had; it returns the revision.
func (f *resumeFixture) appendBigRevisionFragment(t *testing.T) int64 {
	t.Helper()
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB: several 64 KiB messages
	rev := put(t, f.p.primary.Client, "/r/big", string(big))
	resp, err := f.p.primary.Client.Get(context.Background(), "/r/big")
	if err != nil {
		t.Fatal(err)
	}
	kv := resp.Kvs[0]
	rec := &streams.Record{Kind: streams.KindRevision, Revision: rev, Time: time.Now(), Events: []streams.Event{{Type: streams.EventPut,
		Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version}}}
	f.appendParts(t, rec, 64<<10, 2)
	return rev
}

// restart starts the successor publisher and checks that it continues the
// same generation, that the standby converges, and that the standby that
// followed the log applied no snapshot because of the crash.
func (f *resumeFixture) restart(t *testing.T) *publisher.Publisher {
	t.Helper()
	pub, _ := f.p.startPublisher(f.pcfg)
	put(t, f.p.primary.Client, "/r/after", "x")
	f.p.waitConverged(rawRules(t), 30*time.Second)
	if got := pub.Published(); got.ClusterID != f.at.ClusterID || got.Generation != f.at.Generation {
		t.Fatalf("the successor publishes %s, want generation %d of cluster %x continued", got, f.at.Generation, f.at.ClusterID)
	}
	if got := metricValue(t, f.reg, "etcdsync_applier_snapshots_applied_total"); got != 1 {
		t.Fatalf("snapshots applied by the standby that followed the log: %v, want still 1 (none because of the crash)", got)
	}
	return pub
}

// A publisher that dies half-way through a revision split across messages
// leaves the log continuous: its successor publishes the revision again,
// whole, in the same generation; the standby drops the fragment at the
// successor's epoch and applies the revision once.
func TestInterruptedRevisionKeepsGeneration(t *testing.T) {
	f := newResumeFixture(t)
	f.appendBigRevisionFragment(t)
	f.pcfg.MaxMessageBytes = 64 << 10 // the successor splits the same way
	f.restart(t)
}

// A publisher that dies half-way through a periodic snapshot leaves the
// log continuous: its successor takes the snapshot again at the same
// revision, in the same generation, and a standby that follows the log
// skips it as it skips every periodic snapshot it is past.
func TestInterruptedSnapshotKeepsGeneration(t *testing.T) {
	f := newResumeFixture(t)
	ctx := context.Background()
	resp, err := f.p.primary.Client.Get(ctx, "/r/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	rev, now := resp.Header.Revision, time.Now()
	f.appendParts(t, &streams.Record{Kind: streams.KindSnapshotBegin, Revision: rev, Time: now, Prefix: []byte(f.pcfg.Prefix), Reason: publisher.ReasonPeriodic}, 1<<20, 1)
	chunk := &streams.Record{Kind: streams.KindSnapshotChunk, Revision: rev, Time: now}
	for _, kv := range resp.Kvs[:1] {
		chunk.Events = append(chunk.Events, streams.Event{Type: streams.EventPut, Key: kv.Key, Value: kv.Value,
			CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version})
	}
	f.appendParts(t, chunk, 1<<20, 1)
	f.restart(t)
	// The successor completed the snapshot at the interrupted one's
	// revision, and its snapshot-begin says why.
	begin := lastRecord(t, f.stream, streams.Subjects{Site: streams.DefaultSite}.SnapshotBegin())
	end := lastRecord(t, f.stream, streams.Subjects{Site: streams.DefaultSite}.SnapshotEnd())
	if begin.Reason != publisher.ReasonResumed || begin.Revision != rev || end.Revision != rev || end.Generation != f.at.Generation || end.Keys != uint64(len(resp.Kvs)) {
		t.Fatalf("newest snapshot: begin reason %q revision %d, end revision %d generation %d keys %d; want reason %q, revision %d, generation %d, %d keys",
			begin.Reason, begin.Revision, end.Revision, end.Generation, end.Keys, publisher.ReasonResumed, rev, f.at.Generation, len(resp.Kvs))
	}
}

// lastRecord decodes the newest single-message record on subject.
func lastRecord(t *testing.T, s jetstream.Stream, subject string) streams.Record {
	t.Helper()
	m, err := s.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		t.Fatal(err)
	}
	fr, err := streams.DecodeFrame(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	var a streams.Assembler
	rec, done, err := a.Add(fr)
	if err != nil || !done {
		t.Fatalf("decode the newest %s: done %v, %v", subject, done, err)
	}
	return rec
}
