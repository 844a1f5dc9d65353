package e2e

import (
	"context"
	"errors"
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
