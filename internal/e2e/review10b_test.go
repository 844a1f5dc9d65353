package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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

	if _, err := p.js.JS.PublishMsg(ctx, &nats.Msg{Subject: subj.Epoch(), Data: []byte("not a frame")}); err != nil {
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
