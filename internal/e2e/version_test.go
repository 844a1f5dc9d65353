package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// A message of a later frame version (magic and trailing CRC kept, as
// streams/doc.go promises) stops the applier with "written by a newer
// etcdsync ... upgrade the applier", not as corruption, and nothing of it
// is written; a publisher whose stream tail is such a message stops too
// instead of starting a new generation over it.
func TestNewerFormatStopsApplierAndPublisher(t *testing.T) {
	p := newPipeline(t)
	_, pr := p.startPublisher(p.publisherConfig())
	_, ar := p.startApplier(rawApplierConfig(p))
	put(t, p.primary.Client, "/x/before", "1")
	p.waitConverged(rawRules(t), 20*time.Second)
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	before := dump(t, p.standby.Client, rawRules(t))

	ctx := context.Background()
	stream, err := p.js.JS.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last, err := stream.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte{}, last.Data...)
	b[2] = 3
	body := b[:len(b)-4]
	b = binary.BigEndian.AppendUint32(body, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	ack, err := p.js.JS.Publish(ctx, last.Subject, b)
	if err != nil {
		t.Fatal(err)
	}

	err = ar.wait(t, 20*time.Second, "applier")
	if !errors.Is(err, streams.ErrNewerFormat) || errors.Is(err, streams.ErrCorrupt) {
		t.Fatalf("applier: got %v, want ErrNewerFormat and not ErrCorrupt", err)
	}
	for _, want := range []string{"written by a newer etcdsync", "frame version 3", "upgrade the applier"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("applier error %q does not say %q", err, want)
		}
	}
	if d := diff(before, dump(t, p.standby.Client, rawRules(t))); d != "" {
		t.Errorf("standby changed:\n%s", d)
	}
	cfg := rawApplierConfig(p)
	st, err := applier.ReadStatus(ctx, p.standby.Client, nil, cfg.Stream, cfg.Site, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "stopped" || st.Checkpoint == nil || st.Checkpoint.Stopped == nil || !strings.Contains(st.Checkpoint.Stopped.Reason, "upgrade the applier") {
		t.Errorf("status: state %q, checkpoint %+v: want stopped, saying to upgrade the applier", st.State, st.Checkpoint)
	}

	_, pr2 := p.startPublisher(p.publisherConfig())
	err = pr2.wait(t, 20*time.Second, "publisher over a newer tail")
	if !errors.Is(err, streams.ErrNewerFormat) || !strings.Contains(err.Error(), "upgrade this publisher") {
		t.Fatalf("publisher: got %v, want ErrNewerFormat asking for an upgrade", err)
	}
	info, err = stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != ack.Sequence {
		t.Errorf("publisher wrote after a newer tail: last seq %d, the newer message is %d", info.State.LastSeq, ack.Sequence)
	}
}

// A publisher whose writes the stream does not acknowledge (the JetStream
// store is full) is not ready and says why; it is ready while writes are
// acknowledged.
func TestPublisherNotReadyWhenStoreFull(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		JetStreamMaxStore: 512 << 10, JetStreamMaxMemory: 1 << 20, NoSigs: true, NoLog: true}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	primary := testenv.StartEtcd(t)
	cfg := publisher.DefaultConfig()
	cfg.Logger = testLogger(t)
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	pub, err := publisher.New(cfg, primary.Client, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, pub.Run)
	put(t, primary.Client, "/x/first", "1")
	testenv.Eventually(t, 20*time.Second, func() bool { return pub.Published().Revision > 0 }, "first revision published")
	if err := pub.Ready(); err != nil {
		t.Fatalf("publishing, yet not ready: %v", err)
	}

	value := strings.Repeat("v", 64<<10)
	for i := 0; i < 16; i++ {
		put(t, primary.Client, "/x/big/"+string(rune('a'+i)), value)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return pub.Ready() != nil }, "publisher not ready with a full store")
	t.Logf("ready: %v", pub.Ready())
	if !strings.Contains(pub.Ready().Error(), "not publishing") {
		t.Errorf("Ready() = %v, want it to say the publisher is not publishing and why", pub.Ready())
	}
}
