package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// The publisher decides it is fenced (Run returns ErrFenced, which it does
// not retry: `publish` without leader election exits, with it the replica
// resigns and campaigns again) from a message no MAC check has passed: any message on the epoch subject. Whoever may
// publish on the log subjects, without the key, publishes one; the
// publisher's next write fails its expected-sequence check, and
// whyRejected, reading the newest message on the epoch subject without
// decoding or verifying it, takes it for a newer publisher's marker. A
// forged revision at the tail instead makes the publisher start a new
// generation after it (TestPublisherDistrustsForgedTail), as the runbook
// says ("a publisher restart starts a new generation with a snapshot after
// any tail it cannot authenticate"); a forged marker should too.
func TestForgedEpochNeverFencesPublisher(t *testing.T) {
	p := newPipeline(t)
	ctx := context.Background()
	subj := streams.Subjects{Site: streams.DefaultSite}
	pcfg := p.publisherConfig()
	pcfg.LogKeys = keyRing(t, keyLine("k1", 1))
	pcfg.ProgressInterval = time.Hour
	pub, run := p.startPublisher(pcfg)
	rev := put(t, p.primary.Client, "/app/a", "1")
	testenvEventually(t, func() bool { return pub.Published().Revision >= rev }, "first write published")

	before := pub.Published()
	forged, err := p.js.JS.PublishMsg(ctx, &nats.Msg{Subject: subj.Epoch(), Data: []byte("not a frame")})
	if err != nil {
		t.Fatal(err)
	}

	next := put(t, p.primary.Client, "/app/b", "2")
	testenv.Eventually(t, 20*time.Second, func() bool {
		select {
		case <-run.done:
			t.Fatalf("a forged epoch message stopped the publisher: %v", run.err)
		default:
		}
		return pub.Published().Revision >= next
	}, "the write after the forged epoch is published")
	// It goes on after the tail it cannot trust, in a new generation.
	if after := pub.Published(); after.Seq <= forged.Sequence || after.Generation <= before.Generation {
		t.Fatalf("published %s after the forged message at seq %d (was %s): want a new generation after it", after, forged.Sequence, before)
	}
}

// epochMsg returns the newest message on the epoch subject.
func epochMsg(t *testing.T, p *pipeline) *jetstream.RawStreamMsg {
	t.Helper()
	stream, err := p.js.JS.Stream(context.Background(), streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(context.Background(), streams.Subjects{Site: streams.DefaultSite}.Epoch())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// replayEpoch publishes m again, byte for byte, at the stream's next
// sequence: with its own headers, without the server's (Nats-*: a Msg-Id
// would make it a duplicate, an expected sequence would refuse it).
func replayEpoch(t *testing.T, p *pipeline, m *jetstream.RawStreamMsg) {
	t.Helper()
	h := nats.Header{}
	for k, v := range m.Header {
		if !strings.HasPrefix(k, "Nats-") {
			h[k] = v
		}
	}
	if _, err := p.js.JS.PublishMsg(context.Background(), &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}); err != nil {
		t.Fatal(err)
	}
}

// A genuine epoch marker copied to a later place of the log (anyone who
// may read the log and publish on its subjects can) is a well-formed,
// signed epoch frame, but its MAC binds it to the sequence it was written
// after: it does not verify there, and fences nobody.
func TestReplayedEpochNeverFencesPublisher(t *testing.T) {
	p := newPipeline(t)
	pcfg := p.publisherConfig()
	pcfg.LogKeys = keyRing(t, keyLine("k1", 1))
	pcfg.ProgressInterval = time.Hour
	pub, run := p.startPublisher(pcfg)
	rev := put(t, p.primary.Client, "/app/a", "1")
	testenvEventually(t, func() bool { return pub.Published().Revision >= rev }, "first write published")

	replayEpoch(t, p, epochMsg(t, p))

	next := put(t, p.primary.Client, "/app/b", "2")
	testenv.Eventually(t, 20*time.Second, func() bool {
		select {
		case <-run.done:
			t.Fatalf("a replayed epoch marker stopped the publisher: %v", run.err)
		default:
		}
		return pub.Published().Revision >= next
	}, "the write after the replayed epoch marker is published")
}

// A message on the epoch subject that is no marker does not free a zombie
// publisher either: when a newer publisher's genuine marker lies between
// the zombie's own and the forged one, the zombie is fenced all the same
// (and does not go on to fence the newer publisher in turn).
func TestForgedEpochAfterNewerMarkerStillFences(t *testing.T) {
	p := newPipeline(t)
	pcfg := p.publisherConfig()
	pcfg.LogKeys = keyRing(t, keyLine("k1", 1))
	pcfg.ProgressInterval = time.Hour // idle, the zombie publishes nothing
	zombie, zrun := p.startPublisher(pcfg)
	rev := put(t, p.primary.Client, "/app/a", "1")
	testenvEventually(t, func() bool { return zombie.Published().Revision >= rev }, "first write published")
	ours := epochMsg(t, p)

	// A newer publisher takes over (its epoch marker), then stops.
	_, nrun := p.startPublisher(pcfg)
	testenvEventually(t, func() bool { return epochMsg(t, p).Sequence > ours.Sequence }, "the newer publisher's epoch marker")
	if err := nrun.stop(); err != nil {
		t.Fatal(err)
	}
	replayEpoch(t, p, ours)

	put(t, p.primary.Client, "/app/b", "2")
	if err := zrun.wait(t, 20*time.Second, "the zombie publisher"); !errors.Is(err, publisher.ErrFenced) {
		t.Fatalf("zombie publisher: %v, want ErrFenced by the newer publisher's marker", err)
	}
}

// An applier that needs a snapshot (a gap, a stream that holds none after
// its checkpoint) asks the publisher for one on
// etcdsync.<site>.control.snapshot; the applier runs on the standby site
// and asks its own NATS server, whose readers are allowed that subject
// (deploy/nats/standby-values.yaml), but the publisher listens on the
// primary site's. The only way across is the leafnode link, and the leaf
// role lets through only what a mirror needs: the request is refused at
// the link (and the answer would be too), so no snapshot request from the
// standby site ever reaches the publisher. The applier logs "snapshot
// request not answered" and waits for the next periodic snapshot (4h by
// default) instead of re-seeding at once.
func TestSnapshotRequestCrossesLeafLink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leafPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	cfg := streams.DefaultServerConfig()
	cfg.StoreDir, cfg.Listen, cfg.Domain, cfg.Name = t.TempDir(), "127.0.0.1:-1", "primary", "primary"
	cfg.LeafListen = fmt.Sprintf("0.0.0.0:%d", leafPort)
	cfg.Users = []streams.ServerUser{
		{Role: streams.RolePublisher, Name: "publisher", Password: "publisher-secret"},
		{Role: streams.RoleLeaf, Name: "standby-site", Password: "leaf-secret"},
	}
	primary, err := streams.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Shutdown(); primary.WaitForShutdown() })
	scfg := streams.DefaultServerConfig()
	scfg.StoreDir, scfg.Listen, scfg.Domain, scfg.Name = t.TempDir(), "127.0.0.1:-1", "standby", "standby"
	scfg.LeafRemotes = []string{fmt.Sprintf("nats-leaf://standby-site:leaf-secret@127.0.0.1:%d", leafPort)}
	standby, err := streams.StartServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Shutdown(); standby.WaitForShutdown() })
	testenvEventually(t, func() bool { return primary.NumLeafNodes() == 1 }, "the standby's leafnode to connect")

	// The publisher, with its identity, on the primary site.
	p := &pipeline{t: t, primary: testenv.StartEtcd(t)}
	pubID := mustConnectAs(t, "publisher", primary.ClientURL(), nats.UserInfo("publisher", "publisher-secret"))
	pb, err := publisher.New(p.publisherConfig(), p.primary.Client, pubID.nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, pb.Run)
	put(t, p.primary.Client, "/app/a", "1")
	testenvEventually(t, func() bool { return pb.Published().Revision > 0 }, "the publisher publishes")

	// The standby site's applier asks for a snapshot on its own server.
	local := mustConnectAs(t, "standby applier", standby.ClientURL())
	subj := streams.Subjects{Site: streams.DefaultSite}
	var reqErr error
	testenv.Eventually(t, 30*time.Second, func() bool {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		_, reqErr = local.nc.RequestWithContext(rctx, subj.ControlSnapshot(), nil)
		return reqErr == nil
	}, "a snapshot request from the standby site is answered by the primary's publisher")

	// The link carries the request one way and replies the other only: a
	// message from the standby site on a request inbox of a client of the
	// primary (a forged acknowledgement, a forged API reply) never reaches
	// it. A second answered request after it shows that the link carried
	// whatever was sent before it, and that the primary delivered it.
	probe := mustConnectAs(t, "primary client", primary.ClientURL(), nats.UserInfo("publisher", "publisher-secret"))
	inbox := probe.nc.NewInbox() + ".1"
	sub, err := probe.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := probe.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	barrier := func() {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		if _, err := local.nc.RequestWithContext(rctx, subj.ControlSnapshot(), nil); err != nil {
			t.Fatalf("snapshot request from the standby site: %v", err)
		}
	}
	barrier() // the primary's interest in the inbox, if announced, reached the standby
	if err := local.nc.Publish(inbox, []byte("forged reply")); err != nil {
		t.Fatal(err)
	}
	barrier()
	if err := probe.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, err := sub.Pending(); err != nil || n != 0 {
		t.Fatalf("a message from the standby site reached a primary client's inbox %s (%d pending, %v)", inbox, n, err)
	}
}
