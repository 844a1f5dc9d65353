package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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

// Promote with messages the applier never applied (it is down): the
// drain is given up after DrainTimeout, the standby is fenced anyway,
// the report counts the unapplied messages and the error wraps
// ErrNotDrained; the revision bump passes the newest source revision the
// stream holds, not only the standby's last applied one.
func TestPromoteNotDrained(t *testing.T) {
	p := newPipeline(t)
	p.startPublisher(p.publisherConfig())
	ap, ar := p.startApplier(rawApplierConfig(p))
	applied := put(t, p.primary.Client, "/pn/applied", "x")
	testenvEventually(t, func() bool { return ap.Applied().Position.Revision >= applied }, "the first write applied")
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	// Let the primary's revision run ahead, then leave writes unapplied.
	for i := 0; i < 100; i++ {
		put(t, p.primary.Client, "/etcdsync/not-replicated", fmt.Sprint(i))
	}
	var firstLate, last int64
	for i := 0; i < 5; i++ {
		last = put(t, p.primary.Client, fmt.Sprintf("/pn/late%d", i), "x")
		if i == 0 {
			firstLate = last
		}
	}
	testenvEventually(t, func() bool { return p.publishedRevision(t) >= last }, "stream holds the last revision")

	ctx := context.Background()
	rep, err := applier.Promote(ctx, applier.PromoteConfig{Stream: streams.DefaultStream, DrainTimeout: 200 * time.Millisecond, BumpRevision: true},
		p.standby.Client, p.js.JS)
	if !errors.Is(err, applier.ErrNotDrained) {
		t.Fatalf("promote with unapplied messages: %v, want ErrNotDrained", err)
	}
	// (The applier may have applied a progress record after the first
	// write before it stopped, never a late write.)
	if pos := rep.Checkpoint.Position.Revision; rep.Drained || !rep.Checkpoint.Promoted || pos < applied || pos >= firstLate || rep.StreamLastRevision != last ||
		rep.Unapplied == 0 || rep.Unapplied != rep.StreamLastSeq-rep.Checkpoint.Position.Seq {
		t.Fatalf("promote report %+v: want not drained, fenced at a revision in [%d, %d), stream up to revision %d, the messages after the checkpoint unapplied", rep, applied, firstLate, last)
	}
	if rep.StandbyRevision <= last {
		t.Fatalf("standby revision %d not above the newest source revision in the stream %d", rep.StandbyRevision, last)
	}
	ck, _, err := applier.ReadCheckpoint(ctx, p.standby.Client, "/etcdsync/checkpoint/"+streams.DefaultStream)
	if err != nil || !ck.Promoted {
		t.Fatalf("standby checkpoint after promote: %+v, %v; want promoted", ck, err)
	}
	if resp, err := p.standby.Client.Get(ctx, "/pn/late", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("unapplied writes on the standby (%v)", err)
	}
}
