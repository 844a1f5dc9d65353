package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

// storedMsg is a log message as a reader of the stream saw it.
type storedMsg struct {
	seq     uint64
	subject string
	header  nats.Header
	data    []byte
}

// copyLog returns every message of the log stream, as anyone allowed to
// read it (a reader identity, a backup of the store) can keep them.
func copyLog(t *testing.T, p *pipeline) []storedMsg {
	t.Helper()
	ctx := context.Background()
	stream, err := p.js.JS.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, storedMsg{seq: m.Sequence, subject: m.Subject, header: m.Header, data: m.Data})
	}
	return out
}

// streamLastSeq returns the log stream's last sequence.
func streamLastSeq(t *testing.T, p *pipeline) uint64 {
	t.Helper()
	stream, err := p.js.JS.Stream(context.Background(), streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// lastSeqOn returns the sequence of the newest message on subject.
func lastSeqOn(t *testing.T, p *pipeline, subject string) uint64 {
	t.Helper()
	stream, err := p.js.JS.Stream(context.Background(), streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		return 0
	}
	return m.Sequence
}

func getValue(t *testing.T, cli *clientv3.Client, key string) string {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// A log stream recreated from scratch (an SRE deletes it and runs `streams
// init`, or the primary's NATS loses its store) restarts its sequences at
// 1, and the log key stays the same: every genuine message of the old
// stream verifies again at its old sequence. An attacker who kept a copy of
// the old log and may publish on the log subjects, but holds no key, waits
// until the new stream's last sequence is one before an old snapshot's
// begin record and publishes that old snapshot's messages there. The
// applier never applies a snapshot of an older generation of its cluster
// mid-session: it hands over to Reset, which waits rather than roll the
// standby back without `apply --reseed`.
func TestReplayedOldHistoryNeverRollsBackStandby(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	ring := keyRing(t, keyLine("k1", 1))
	subj := streams.Subjects{Site: streams.DefaultSite}
	pcfg := p.publisherConfig()
	pcfg.LogKeys = ring
	pcfg.ProgressInterval = time.Hour // no idle progress records: the test counts sequences
	acfg := rawApplierConfig(p)
	acfg.LogKeys = ring
	ap, arun := p.startApplier(acfg)

	// The old history: a snapshot, 20 revisions, a snapshot on request.
	const keys = 20
	put(t, p.primary.Client, "/app/secret", "old")
	for i := 0; i < keys; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/app/h-%02d", i), "old")
	}
	_, prun := p.startPublisher(pcfg)
	p.waitConverged(rawRules(t), 20*time.Second)
	for i := 0; i < keys; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/app/h-%02d", i), fmt.Sprintf("old-%d", i))
	}
	p.waitConverged(rawRules(t), 20*time.Second)
	firstBegin := lastSeqOn(t, p, subj.SnapshotBegin())
	if _, err := p.conn().Request(subj.ControlSnapshot(), nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		b := lastSeqOn(t, p, subj.SnapshotBegin())
		return b > firstBegin && lastSeqOn(t, p, subj.SnapshotEnd()) > b
	}, "the requested snapshot is in the old stream")
	if err := prun.stop(); err != nil {
		t.Fatal(err)
	}
	old := copyLog(t, p)
	oldBegin, oldEnd := lastSeqOn(t, p, subj.SnapshotBegin()), lastSeqOn(t, p, subj.SnapshotEnd())
	testenvEventually(t, func() bool { return ap.Applied().Position.Seq >= oldEnd }, "old log applied")
	oldGen := ap.Applied().Position.Generation
	if err := arun.stop(); err != nil {
		t.Fatal(err)
	}

	// The stream is recreated; the primary moves on; a publisher starts
	// the new history (a new generation, above the old one), and the
	// applier, restarted, re-seeds from it.
	recreateLogStream(t, p)
	put(t, p.primary.Client, "/app/secret", "new")
	pub2, prun2 := p.startPublisher(pcfg)
	reg := prometheus.NewRegistry()
	ap, err := applier.New(acfg, p.standby.Client, p.conn(), reg)
	if err != nil {
		t.Fatal(err)
	}
	arun = start(t, ap.Run)
	p.runs = append(p.runs, arun)
	p.waitConverged(rawRules(t), 30*time.Second)
	// The new stream grows (one message per write) to just before the
	// old snapshot's sequence.
	for i := 0; streamLastSeq(t, p) < oldBegin-1; i++ {
		rev := put(t, p.primary.Client, fmt.Sprintf("/app/h-%02d", i%keys), fmt.Sprintf("new-%d", i))
		testenvEventually(t, func() bool { return pub2.Published().Revision >= rev }, "write published")
	}
	if got := streamLastSeq(t, p); got != oldBegin-1 {
		t.Fatalf("setup: the new stream is at seq %d, want %d", got, oldBegin-1)
	}
	p.waitConverged(rawRules(t), 20*time.Second)
	if err := prun2.stop(); err != nil {
		t.Fatal(err)
	}
	newGen := ap.Applied().Position.Generation
	if newGen <= oldGen {
		t.Fatalf("setup: new generation %d is not above the old %d", newGen, oldGen)
	}
	want := dump(t, p.standby.Client, rawRules(t))

	// The replay: the old snapshot's messages, byte for byte, each only at
	// its old sequence.
	for _, m := range old {
		if m.seq < oldBegin || m.seq > oldEnd {
			continue
		}
		msg := &nats.Msg{Subject: m.subject, Header: m.header, Data: m.data}
		if _, err := p.js.JS.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(m.seq-1)); err != nil {
			t.Fatalf("replay of seq %d: %v", m.seq, err)
		}
	}

	// The applier consumes them (or refuses them: stops).
	stopped := func() bool {
		select {
		case <-arun.done:
			return true
		default:
			return false
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		return stopped() || ap.Applied().Position.Seq >= oldEnd || metricValue(t, reg, "etcdsync_applier_waiting_for_stream_seq") > 0 ||
			metricValue(t, reg, "etcdsync_applier_waiting_for_snapshot") > 0
	}, "the applier reached the replayed messages")
	ck, _, err := applier.ReadCheckpoint(ctx, p.standby.Client, "/etcdsync/checkpoint/"+streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(want, dump(t, p.standby.Client, rawRules(t))); d != "" || ck.Position.Generation != newGen {
		t.Fatalf("a replayed snapshot of the older generation %d rolled the standby back (checkpoint %s, was generation %d; /app/secret = %q):\n%s",
			oldGen, ck.Position, newGen, getValue(t, p.standby.Client, "/app/secret"), d)
	}
}

// A message that is not a frame at all (any bytes: what someone without
// the key is most likely to publish) at the stream's tail is, with a key
// ring, unauthenticated like a frame with a wrong MAC: status lists it
// (where the applier stopped and why) instead of failing outright.
func TestStatusListsForgedTailThatIsNoFrame(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	ring := keyRing(t, keyLine("k1", 1))
	pcfg := p.publisherConfig()
	pcfg.LogKeys = ring
	_, prun := p.startPublisher(pcfg)
	acfg := rawApplierConfig(p)
	acfg.LogKeys = ring
	_, arun := p.startApplier(acfg)
	put(t, p.primary.Client, "/app/a", "1")
	p.waitConverged(rawRules(t), 20*time.Second)
	if err := prun.stop(); err != nil {
		t.Fatal(err)
	}

	ack, err := p.js.JS.PublishMsg(ctx, &nats.Msg{Subject: streams.Subjects{Site: streams.DefaultSite}.Revision(), Data: []byte("junk")})
	if err != nil {
		t.Fatal(err)
	}
	if err := arun.wait(t, 20*time.Second, "applier after a junk message"); !errors.Is(err, streams.ErrUnauthenticated) {
		t.Fatalf("applier after a junk message: %v, want streams.ErrUnauthenticated", err)
	}

	st, err := applier.ReadVerifiedStatus(ctx, p.standby.Client, p.js.JS, streams.DefaultStream, streams.DefaultSite, "", ring)
	if err != nil {
		t.Fatalf("status with a junk message at the tail (seq %d): %v; want it listed as unauthenticated", ack.Sequence, err)
	}
	if st.Stream == nil || len(st.Stream.Unauthenticated) == 0 || !strings.Contains(strings.Join(st.Stream.Unauthenticated, "\n"), fmt.Sprint(ack.Sequence)) {
		t.Fatalf("status lists no unauthenticated message at seq %d: %+v", ack.Sequence, st.Stream)
	}
}

// newerFrame is what anyone can write without a key: the magic, a frame
// version above this etcdsync's, anything, and the CRC-32C (no secret).
func newerFrame() []byte {
	b := []byte{'E', 'S', 3, 1, 0, 0, 1, 'x'}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

// A well-checksummed frame claiming a version above this etcdsync's, from
// anyone who may publish on the log subjects without the key, is
// unauthenticated, not believed: the applier stops with
// ErrUnauthenticated and counts it (EtcdsyncApplierUnauthenticatedMessage
// fires), and the publisher does not stop for good on it ("upgrade this
// publisher"): it treats the tail as untrusted, starts a new generation
// after it, and goes on publishing.
func TestForgedNewerFrameIsUnauthenticated(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	ring := keyRing(t, keyLine("k1", 1))
	pcfg := p.publisherConfig()
	pcfg.LogKeys = ring
	pcfg.ProgressInterval = time.Hour
	pub, prun := p.startPublisher(pcfg)
	acfg := rawApplierConfig(p)
	acfg.LogKeys = ring
	_, arun, reg := startApplierWithMetrics(t, p, acfg)
	put(t, p.primary.Client, "/app/a", "1")
	p.waitConverged(rawRules(t), 20*time.Second)

	ack, err := p.js.JS.PublishMsg(ctx, &nats.Msg{Subject: streams.Subjects{Site: streams.DefaultSite}.Revision(), Data: newerFrame()})
	if err != nil {
		t.Fatal(err)
	}
	err = arun.wait(t, 20*time.Second, "applier after a forged newer frame")
	if !errors.Is(err, streams.ErrUnauthenticated) || metricValue(t, reg, "etcdsync_applier_unauthenticated_messages_total") != 1 {
		t.Errorf("applier stopped with %v (unauthenticated messages counted: %v); want ErrUnauthenticated naming seq %d, counted",
			err, metricValue(t, reg, "etcdsync_applier_unauthenticated_messages_total"), ack.Sequence)
	}

	// The publisher goes on, restarted if it stops (as a Deployment does).
	next := put(t, p.primary.Client, "/app/b", "2")
	for restarts := 0; ; restarts++ {
		published := false
		testenv.Eventually(t, 20*time.Second, func() bool {
			select {
			case <-prun.done:
				return true
			default:
			}
			published = pub.Published().Revision >= next
			return published
		}, "the publisher publishes the next write or stops")
		if published {
			return
		}
		if restarts == 1 {
			t.Fatalf("a forged newer frame at seq %d stops the publisher, restarted too: %v", ack.Sequence, prun.err)
		}
		pub, prun = p.startPublisher(pcfg)
	}
}

// publishRecordIn publishes r unsigned in parts of at most maxMsg bytes.
func publishRecordIn(t *testing.T, p *pipeline, r *streams.Record, maxMsg int) int {
	t.Helper()
	msgs, err := streams.NewMsgs(streams.Subjects{Site: streams.DefaultSite}, r, maxMsg, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := p.js.JS.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	return len(msgs)
}

// The log stream is recreated (another history: a new generation) under a
// running applier. Its session survives the deletion and waits for the
// sequence after its checkpoint (as for a mirror refilling,
// TestRefillUnderRunningApplier). When the new stream grows past the
// checkpoint, the first message delivered belongs to the new history; even
// when it is a later part of a multi-part record (a revision with a large
// value), the applier sees a history it holds no base of (ErrNoBase) and
// re-seeds, rather than stop for good on a record "without its first
// part".
func TestRecreatedStreamUnderRunningApplierMidRecord(t *testing.T) {
	p := newPipeline(t)
	log := twoGenerations()
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, streams.DefaultLogConfig()); err != nil {
		t.Fatal(err)
	}
	for _, r := range log {
		publishRecord(t, p, r)
	}
	ap, run, reg := startApplierWithMetrics(t, p, rawApplierConfig(p))
	ckSeq := uint64(len(log))
	testenvEventually(t, func() bool { return ap.Applied().Position.Seq == ckSeq }, "whole log applied")

	// A new history of the same cluster: its snapshot, revisions up to
	// the seq before the checkpoint's, then a revision in 3 parts from
	// there, so that the checkpoint's seq + 1 is its second part.
	recreateLogStream(t, p)
	now := time.Now()
	const gen = 7
	kv := func(k, v string, rev int64) streams.Event {
		return streams.Event{Type: streams.EventPut, Key: []byte(k), Value: []byte(v), CreateRevision: rev, ModRevision: rev, Version: 1}
	}
	seq := 0
	for _, r := range []*streams.Record{
		{Kind: streams.KindEpoch, ClusterID: 1, Generation: gen, Leader: "p7"},
		{Kind: streams.KindSnapshotBegin, ClusterID: 1, Generation: gen, Revision: 40, Time: now},
		{Kind: streams.KindSnapshotChunk, ClusterID: 1, Generation: gen, Revision: 40, Time: now, Events: []streams.Event{kv("/rf/n", "1", 40)}},
		{Kind: streams.KindSnapshotEnd, ClusterID: 1, Generation: gen, Revision: 40, Time: now, Chunk: 1, Keys: 1},
	} {
		seq += publishRecordIn(t, p, r, 1<<20)
	}
	rev := int64(41)
	for ; uint64(seq) < ckSeq-1; rev++ {
		seq += publishRecordIn(t, p, &streams.Record{Kind: streams.KindRevision, ClusterID: 1, Generation: gen, Revision: rev, Time: now,
			Events: []streams.Event{kv(fmt.Sprintf("/rf/n%d", rev), "1", rev)}}, 1<<20)
	}
	big := &streams.Record{Kind: streams.KindRevision, ClusterID: 1, Generation: gen, Revision: rev, Time: now,
		Events: []streams.Event{kv("/rf/big", strings.Repeat("x", 5000), rev)}}
	if n := publishRecordIn(t, p, big, streams.HeaderRoom+2500); n != 3 {
		t.Fatalf("setup: the large revision is in %d parts, want 3", n)
	}

	// The applier re-seeds (it waits for a snapshot after its checkpoint,
	// asking the publisher for one); it does not stop.
	testenv.Eventually(t, 15*time.Second, func() bool {
		select {
		case <-run.done:
			t.Fatalf("the applier stopped on the new history's message at seq %d: %v", ckSeq+1, run.err)
		default:
		}
		return seriesCount(t, reg, "etcdsync_applier_waiting_for_snapshot") == 1 && metricValue(t, reg, "etcdsync_applier_waiting_for_snapshot") == 1
	}, "the applier waits for a snapshot of the new history")
}
