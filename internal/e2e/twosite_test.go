package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// link is a TCP proxy standing for the WAN link between the sites; cut
// drops every connection and refuses new ones until restore.
type link struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	up     bool
	conns  []net.Conn
}

func newLink(t *testing.T, target string) *link {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &link{l: l, target: target, up: true}
	t.Cleanup(func() { l.Close(); k.cut() })
	go k.serve()
	return k
}

func (k *link) addr() string { return k.l.Addr().String() }

func (k *link) serve() {
	for {
		c, err := k.l.Accept()
		if err != nil {
			return
		}
		k.mu.Lock()
		if !k.up {
			k.mu.Unlock()
			c.Close()
			continue
		}
		d, err := net.Dial("tcp", k.target)
		if err != nil {
			k.mu.Unlock()
			c.Close()
			continue
		}
		k.conns = append(k.conns, c, d)
		k.mu.Unlock()
		go func() { _, _ = io.Copy(d, c); d.Close() }()
		go func() { _, _ = io.Copy(c, d); c.Close() }()
	}
}

func (k *link) cut() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.up = false
	for _, c := range k.conns {
		c.Close()
	}
	k.conns = nil
}

func (k *link) restore() {
	k.mu.Lock()
	k.up = true
	k.mu.Unlock()
}

// site is one site's NATS server (its own JetStream domain) and a connection.
type site struct {
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func startSite(t *testing.T, domain, leafListen string, leafRemotes ...string) *site {
	t.Helper()
	cfg := streams.DefaultServerConfig()
	cfg.StoreDir, cfg.Listen, cfg.Domain, cfg.Name = t.TempDir(), "127.0.0.1:-1", domain, domain
	cfg.LeafListen, cfg.LeafRemotes = leafListen, leafRemotes
	s, err := streams.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); s.Shutdown(); s.WaitForShutdown() })
	return &site{srv: s, nc: nc, js: js}
}

// Two sites, each with its own etcd and its own JetStream domain, the
// standby's NATS a leafnode of the primary's and its stream a mirror: live
// replication; the link cut while the primary keeps writing, then
// restored, and the standby catches up exactly; failover (promote, the
// mirror becomes writable, a publisher starts on the new primary); the old
// primary becomes the standby (its stream a mirror of the new primary's,
// its applier re-seeds); a final exact comparison.
func TestTwoSitesLinkLossFailoverAndReverse(t *testing.T) {
	ctx := context.Background()
	etcdA, etcdB := testenv.StartEtcd(t), testenv.StartEtcd(t)
	leafPort, err := embedded.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	leafA := fmt.Sprintf("127.0.0.1:%d", leafPort)
	natsA := startSite(t, "primary", leafA)
	wan := newLink(t, leafA)
	natsB := startSite(t, "standby", "", "nats-leaf://"+wan.addr())
	rules := rawRules(t)
	converged := func(from, to *testenv.Etcd, d time.Duration) {
		t.Helper()
		(&pipeline{t: t, primary: from, standby: to}).waitConverged(rules, d)
	}

	// Site A publishes; site B mirrors A's stream and applies from the mirror.
	pcfg := publisher.DefaultConfig()
	pcfg.Logger, pcfg.MinBackoff, pcfg.MaxBackoff = testLogger(t), 10*time.Millisecond, 200*time.Millisecond
	pubA, err := publisher.New(pcfg, etcdA.Client, natsA.nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	runPubA := start(t, pubA.Run)
	testenv.Eventually(t, 10*time.Second, func() bool { _, err := natsA.js.Stream(ctx, streams.DefaultStream); return err == nil }, "primary stream created")
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, err := streams.EnsureMirror(ctx, natsB.js, streams.MirrorConfig{Name: streams.DefaultStream, OriginDomain: "primary"})
		return err == nil
	}, "mirror created across the leafnode")
	acfg := applier.DefaultConfig()
	acfg.Scope.Mode = "raw"
	acfg.Logger, acfg.MinBackoff, acfg.MaxBackoff = testLogger(t), 10*time.Millisecond, 200*time.Millisecond
	apB, err := applier.New(acfg, etcdB.Client, natsB.nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	runApB := start(t, apB.Run)
	w := newWorkload(etcdA.Client, 21, "/two/", 40)
	w.run(t, 200)
	converged(etcdA, etcdB, 30*time.Second)

	// The link goes down while the primary keeps writing; then comes back.
	wan.cut()
	w.run(t, 300)
	time.Sleep(2 * time.Second)
	wan.restore()
	converged(etcdA, etcdB, 60*time.Second)

	// Failover: the primary site is lost. Promote site B.
	if err := runPubA.stop(); err != nil {
		t.Fatal(err)
	}
	rep, err := applier.Promote(ctx, applier.PromoteConfig{Stream: streams.DefaultStream, DrainTimeout: 20 * time.Second}, etcdB.Client, natsB.js)
	if err != nil || !rep.Drained {
		t.Fatalf("promote: %+v, %v", rep, err)
	}
	if err := runApB.wait(t, 10*time.Second, "fenced applier"); err == nil {
		t.Fatal("applier on the promoted site kept running")
	}
	if _, err := streams.PromoteMirror(ctx, natsB.js, streams.DefaultStream, "standby"); err != nil {
		t.Fatal(err)
	}
	pcfgB := pcfg
	pcfgB.Stream.Site = "standby"
	pubB, err := publisher.New(pcfgB, etcdB.Client, natsB.nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, pubB.Run)
	// Clients now write to site B; site A (the old primary) also took a
	// write after the last replicated revision: it is replaced.
	put(t, etcdA.Client, "/two/written-on-old-primary-after-failover", "lost")
	wB := newWorkload(etcdB.Client, 22, "/two/", 40)
	wB.run(t, 100)

	// The old primary returns as the standby: its stream becomes a mirror
	// of B's (a stream cannot become a mirror, so it is recreated).
	if err := natsA.js.DeleteStream(ctx, streams.DefaultStream); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, err := streams.EnsureMirror(ctx, natsA.js, streams.MirrorConfig{Name: streams.DefaultStream, OriginDomain: "standby"})
		return err == nil
	}, "reverse mirror created")
	acfgA := acfg
	acfgA.Site = "standby"
	acfgA.AllowMassDelete = true
	apA, err := applier.New(acfgA, etcdA.Client, natsA.nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, apA.Run)
	wB.run(t, 100)
	converged(etcdB, etcdA, 60*time.Second)
	if resp, _ := etcdA.Client.Get(ctx, "/two/written-on-old-primary-after-failover"); len(resp.Kvs) != 0 {
		t.Fatal("a write the old primary took after failover survived the re-seed")
	}
	if got := apA.Applied().Position.ClusterID; got != pubB.Published().ClusterID {
		t.Fatalf("old primary follows cluster %x, want the new primary's %x", got, pubB.Published().ClusterID)
	}
}
