package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// Promote drains what reached the standby, fences the applier (it stops
// with ErrPromoted and writes nothing more), reports the exact position and
// bumps the standby's revision above every source revision seen.
func TestPromoteDrainsFencesAndBumps(t *testing.T) {
	p := newPipeline(t)
	p.startPublisher(p.publisherConfig())
	_, ar := p.startApplier(rawApplierConfig(p))
	var last int64
	for i := 0; i < 300; i++ {
		last = put(t, p.primary.Client, fmt.Sprintf("/pm/k%03d", i%50), fmt.Sprint(i))
	}
	// Let the primary's revision run far ahead of the standby's.
	for i := 0; i < 200; i++ {
		last = put(t, p.primary.Client, "/etcdsync/not-replicated", fmt.Sprint(i))
	}
	last = put(t, p.primary.Client, "/pm/final", "x")
	testenvEventually(t, func() bool { return p.publishedRevision(t) >= last }, "stream holds the last revision")

	ctx := context.Background()
	rep, err := applier.Promote(ctx, applier.PromoteConfig{Stream: streams.DefaultStream, DrainTimeout: 20 * time.Second, BumpRevision: true},
		p.standby.Client, p.js.JS)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Drained || rep.Unapplied != 0 || rep.Checkpoint.Position.Revision != last || !rep.Checkpoint.Promoted {
		t.Fatalf("promote report %+v: want drained, nothing unapplied, position at revision %d", rep, last)
	}
	if rep.StandbyRevision <= last {
		t.Fatalf("standby revision %d not above the last source revision %d", rep.StandbyRevision, last)
	}
	if err := ar.wait(t, 20*time.Second, "fenced applier"); !errors.Is(err, applier.ErrPromoted) {
		t.Fatalf("applier after promote: want ErrPromoted, got %v", err)
	}
	// That a fenced applier with a batch in hand writes nothing is
	// applier's TestFencedApplierWritesNothing (here the applier has
	// returned: nothing is left to write).
	// A second applier refuses to start on a promoted standby.
	_, ar2 := p.startApplier(rawApplierConfig(p))
	if err := ar2.wait(t, 10*time.Second, "applier on a promoted standby"); !errors.Is(err, applier.ErrPromoted) {
		t.Fatalf("want ErrPromoted, got %v", err)
	}
}

// publishedRevision returns the source revision of the stream's last message.
func (p *pipeline) publishedRevision(t *testing.T) int64 {
	s := logStream(t, p)
	m, err := s.GetMsg(context.Background(), lastSeq(t, s))
	if err != nil {
		return 0
	}
	var rev int64
	fmt.Sscan(m.Header.Get(streams.HeaderRevision), &rev)
	return rev
}
