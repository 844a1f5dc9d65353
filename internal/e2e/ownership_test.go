package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// A publisher pointed at the standby site's NATS, where the log stream is a
// mirror of the primary's, refuses to touch it (only promote converts a
// mirror): it returns an error naming the stream and its mirror origin,
// and the mirror stays a mirror.
func TestPublisherRefusesMirrorStream(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	if _, err := p.js.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "ORIGIN", Subjects: []string{"origin.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.js.JS.CreateStream(ctx, jetstream.StreamConfig{Name: streams.DefaultStream, Mirror: &jetstream.StreamSource{Name: "ORIGIN"}}); err != nil {
		t.Fatal(err)
	}
	put(t, p.primary.Client, "/m/a", "1")
	_, r := p.startPublisher(p.publisherConfig())
	err := r.wait(t, 10*time.Second, "publisher on a mirror")
	if !errors.Is(err, publisher.ErrMirrorStream) || !strings.Contains(err.Error(), streams.DefaultStream) || !strings.Contains(err.Error(), "ORIGIN") {
		t.Fatalf("publisher on a mirror returned %v, want ErrMirrorStream naming %s and ORIGIN", err, streams.DefaultStream)
	}
	s, err := p.js.JS.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Mirror == nil || info.State.Msgs != 0 {
		t.Fatalf("the mirror was changed: mirror %+v, %d messages", info.Config.Mirror, info.State.Msgs)
	}
}

// The log stream's limits are the operator's: a publisher whose flags say
// otherwise (here the defaults: no max age, no max bytes, one replica of
// the default duplicate window) creates a missing stream but never changes
// an existing one, session after session; and `streams init --role
// primary`'s EnsureLogStream refuses a mirror as the publisher does.
func TestPublisherKeepsOperatorLimits(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	cfg := streams.DefaultLogConfig()
	cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs = 7*24*time.Hour, 1<<30, 1_000_000
	if _, err := streams.EnsureLogStream(ctx, p.js.JS, cfg); err != nil {
		t.Fatal(err)
	}
	put(t, p.primary.Client, "/o/a", "1")
	pub, run := p.startPublisher(p.publisherConfig())
	testenvEventually(t, func() bool { return pub.Published().Revision > 0 }, "first publish")
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	p.startPublisher(p.publisherConfig()) // a second session
	put(t, p.primary.Client, "/o/b", "2")
	testenvEventually(t, func() bool {
		s, err := p.js.JS.Stream(ctx, streams.DefaultStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs >= 4
	}, "the second session to publish")
	s, err := p.js.JS.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.MaxAge != cfg.MaxAge || c.MaxBytes != cfg.MaxBytes || c.MaxMsgs != cfg.MaxMsgs {
		t.Fatalf("the publisher changed the operator's limits: max age %s, max bytes %d, max msgs %d; want %s, %d, %d",
			c.MaxAge, c.MaxBytes, c.MaxMsgs, cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs)
	}

	if _, err := p.js.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "ORIGIN", Subjects: []string{"origin.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.js.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "MIRROR", Mirror: &jetstream.StreamSource{Name: "ORIGIN"}}); err != nil {
		t.Fatal(err)
	}
	mcfg := streams.DefaultLogConfig()
	mcfg.Name = "MIRROR"
	if _, err := streams.EnsureLogStream(ctx, p.js.JS, mcfg); !errors.Is(err, streams.ErrMirror) || !strings.Contains(err.Error(), "ORIGIN") {
		t.Fatalf("EnsureLogStream on a mirror: %v, want ErrMirror naming ORIGIN", err)
	}
	if m, err := p.js.JS.Stream(ctx, "MIRROR"); err != nil || m.CachedInfo().Config.Mirror == nil {
		t.Fatalf("the mirror was changed: %v", err)
	}
}

// A log stream that keeps messages for no longer than the snapshot interval
// loses its last complete snapshot between two of them, and a standby with
// a gap could not re-seed: the publisher refuses it, with the numbers, and
// does not retry.
func TestPublisherRefusesRetentionBelowSnapshotInterval(t *testing.T) {
	p := newPipeline(t)
	cfg := streams.DefaultLogConfig()
	cfg.MaxAge = time.Hour
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, cfg); err != nil {
		t.Fatal(err)
	}
	pcfg := p.publisherConfig()
	pcfg.SnapshotInterval = 4 * time.Hour
	_, r := p.startPublisher(pcfg)
	err := r.wait(t, 10*time.Second, "publisher on a stream of too short a max age")
	if !errors.Is(err, publisher.ErrRetention) || !strings.Contains(err.Error(), "1h0m0s") || !strings.Contains(err.Error(), "4h0m0s") {
		t.Fatalf("publisher returned %v, want ErrRetention naming 1h0m0s and 4h0m0s", err)
	}
}

// A log stream whose max bytes cannot hold two snapshots drops the last
// complete one while the next is published: the publisher refuses it after
// its first snapshot, naming the sizes, and does not retry.
func TestPublisherRefusesMaxBytesBelowTwoSnapshots(t *testing.T) {
	p := newPipeline(t)
	cfg := streams.DefaultLogConfig()
	cfg.MaxBytes = 256 << 10
	if _, err := streams.EnsureLogStream(context.Background(), p.js.JS, cfg); err != nil {
		t.Fatal(err)
	}
	value := strings.Repeat("v", 1<<10)
	for i := 0; i < 200; i++ { // a snapshot of ~200 KiB
		put(t, p.primary.Client, fmt.Sprintf("/b/k%03d", i), value)
	}
	_, r := p.startPublisher(p.publisherConfig())
	err := r.wait(t, 20*time.Second, "publisher on a stream of too few bytes")
	if !errors.Is(err, publisher.ErrRetention) || !strings.Contains(err.Error(), "262144") {
		t.Fatalf("publisher returned %v, want ErrRetention naming the stream's 262144 bytes", err)
	}
}
