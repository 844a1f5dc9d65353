package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// natsCluster is three clustered JetStream servers in process, routed on
// loopback, each with its own store directory. A killed server restarts
// on the same client and route ports with the same store.
type natsCluster struct {
	t           *testing.T
	clientPorts []int
	routePorts  []int
	dirs        []string
	mu          sync.Mutex
	srvs        []*server.Server // nil while killed
}

func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t, srvs: make([]*server.Server, 3)}
	for range c.srvs {
		cp, err := embedded.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		rp, err := embedded.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		c.clientPorts, c.routePorts, c.dirs = append(c.clientPorts, cp), append(c.routePorts, rp), append(c.dirs, t.TempDir())
	}
	t.Cleanup(func() {
		for i := range c.srvs {
			c.kill(i)
		}
	})
	for i := range c.srvs {
		c.start(i)
	}
	return c
}

func (c *natsCluster) name(i int) string { return fmt.Sprintf("n%d", i) }

// index returns the index of the server named name, or -1.
func (c *natsCluster) index(name string) int {
	for i := range c.srvs {
		if c.name(i) == name {
			return i
		}
	}
	return -1
}

// urls returns the client URLs of the three servers, comma-separated,
// starting with server first.
func (c *natsCluster) urls(first int) string {
	var us []string
	for k := range c.srvs {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", c.clientPorts[(first+k)%len(c.srvs)]))
	}
	return strings.Join(us, ",")
}

func (c *natsCluster) start(i int) {
	c.t.Helper()
	var routes []string
	for _, p := range c.routePorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	s, err := server.NewServer(&server.Options{
		ServerName: c.name(i), Host: "127.0.0.1", Port: c.clientPorts[i],
		JetStream: true, StoreDir: c.dirs[i], MaxPayload: streams.DefaultMaxMsgSize,
		Cluster: server.ClusterOpts{Name: "etcdsync", Host: "127.0.0.1", Port: c.routePorts[i]},
		Routes:  server.RoutesFromStr(strings.Join(routes, ",")), NoSigs: true, NoLog: true,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("nats server %s not ready", c.name(i))
	}
	c.mu.Lock()
	c.srvs[i] = s
	c.mu.Unlock()
}

// kill shuts server i down (no-op when it is down).
func (c *natsCluster) kill(i int) {
	c.mu.Lock()
	s := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// connect connects to the cluster through the server list starting with
// server first, in that order (no shuffling), reconnecting forever as
// etcdsync's own connections do.
func (c *natsCluster) connect(first int, name string) *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.urls(first), nats.Name(name), nats.DontRandomize(),
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// streamLeader returns the name of the log stream's leader server and the
// stream's replica count ("" when no leader answers).
func streamLeader(js jetstream.JetStream) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, streams.DefaultStream)
	if err != nil {
		return "", 0
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return "", info.Config.Replicas
	}
	return info.Cluster.Leader, info.Config.Replicas
}

// burst writes the workload on the primary until stopped.
type burst struct {
	stopc  chan struct{}
	done   chan struct{}
	writes atomic.Int64
	err    error
}

func startBurst(w *workload) *burst {
	b := &burst{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			select {
			case <-b.stopc:
				return
			default:
			}
			if err := w.step(context.Background()); err != nil {
				b.err = err
				return
			}
			b.writes.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	return b
}

func (b *burst) stop(t *testing.T) {
	t.Helper()
	close(b.stopc)
	<-b.done
	if b.err != nil {
		t.Fatal(b.err)
	}
}

// probeLag writes a fresh value on the primary and returns how long it
// took to reach the standby (at most limit).
func probeLag(t *testing.T, primary, standby *clientv3.Client, key, val string, limit time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	if _, err := primary.Put(context.Background(), key, val); err != nil {
		t.Fatal(err)
	}
	for time.Since(begin) < limit {
		resp, err := standby.Get(context.Background(), key)
		if err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == val {
			return time.Since(begin)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(begin)
}

// A three-server JetStream cluster holds the log at three replicas; the
// publisher and the applier are connected to different servers and given
// all three. During a write burst on the primary the stream's leader
// server is killed, then (once the two others serve the stream) the server
// the publisher is connected to, which leaves the stream without a quorum;
// then both come back on their ports and stores. The standby ends exactly
// equal to the primary with no revision applied twice, the log holds no
// revision twice, and the lag is back under a second after the restart.
func TestJetStreamClusterSurvivesLeaderAndPublisherServerLoss(t *testing.T) {
	c := startNATSCluster(t)
	primary, standby := testenv.StartEtcd(t), testenv.StartEtcd(t)
	// The test's own connection, to read the stream's cluster state.
	tnc := c.connect(2, "test")
	tjs, err := jetstream.New(tnc)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, err := tjs.AccountInfo(context.Background())
		return err == nil
	}, "jetstream cluster ready")
	p := &pipeline{t: t, primary: primary, standby: standby, js: &testenv.JetStream{URL: c.urls(2), Conn: tnc, JS: tjs}}

	pubConn, apConn := c.connect(0, "publisher"), c.connect(1, "applier")
	if a, b := pubConn.ConnectedServerName(), apConn.ConnectedServerName(); a == b || a == "" || b == "" {
		t.Fatalf("publisher connected to %q, applier to %q: want two different servers", a, b)
	}
	pcfg := p.publisherConfig()
	pcfg.Stream.Replicas = 3
	pub, err := publisher.New(pcfg, primary.Client, pubConn, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.runs = append(p.runs, start(t, pub.Run))
	ap, err := applier.New(rawApplierConfig(p), standby.Client, apConn, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.runs = append(p.runs, start(t, ap.Run))

	w := newWorkload(primary.Client, 13, "/cl/", 40)
	w.run(t, 100)
	rules := rawRules(t)
	p.waitConverged(rules, 30*time.Second)
	leader, replicas := streamLeader(tjs)
	if replicas != 3 || leader == "" {
		t.Fatalf("log stream: %d replicas, leader %q; want 3 replicas and a leader", replicas, leader)
	}
	t.Logf("stream leader %s; publisher on %s, applier on %s", leader, pubConn.ConnectedServerName(), apConn.ConnectedServerName())

	b := startBurst(w)
	defer func() {
		select {
		case <-b.done:
		default:
			b.stop(t)
		}
	}()
	from := pub.Published().Revision
	testenv.Eventually(t, 30*time.Second, func() bool { return pub.Published().Revision > from+100 }, "the burst published")

	// Kill the stream's leader; the two others elect a new one and the
	// publisher publishes on.
	first := c.index(leader)
	c.kill(first)
	killed, at := time.Now(), pub.Published().Revision
	t.Logf("killed %s (stream leader) at published revision %d", leader, at)
	testenv.Eventually(t, 30*time.Second, func() bool {
		l, _ := streamLeader(tjs)
		return l != "" && l != leader && pub.Published().Revision > at+100
	}, "a new stream leader and publishing on after %s was killed", leader)
	t.Logf("publishing on %s after the leader was killed", time.Since(killed).Round(time.Millisecond))

	// Kill the server the publisher is connected to now: one server of
	// three is left and the stream has no quorum.
	var pubServer string
	testenv.Eventually(t, 30*time.Second, func() bool {
		pubServer = pubConn.ConnectedServerName()
		return pubConn.IsConnected() && pubServer != "" && pubServer != leader
	}, "publisher connected to a live server")
	second := c.index(pubServer)
	l, _ := streamLeader(tjs)
	c.kill(second)
	t.Logf("killed %s (the publisher's server; stream leader was %s) at published revision %d", pubServer, l, pub.Published().Revision)
	time.Sleep(2 * time.Second)

	// Both come back, same ports, same stores.
	c.start(first)
	c.start(second)
	restarted := time.Now()
	t.Logf("restarted %s and %s; %d burst writes so far", leader, pubServer, b.writes.Load())

	// The lag, measured end to end with fresh writes during the burst,
	// is back under a second.
	var lag time.Duration
	for i := 0; ; i++ {
		lag = probeLag(t, primary.Client, standby.Client, "/probe", fmt.Sprintf("p%d", i), 10*time.Second)
		if lag < time.Second {
			break
		}
		if time.Since(restarted) > 45*time.Second {
			t.Fatalf("lag still %s 45s after the restart", lag)
		}
	}
	t.Logf("lag back to %s, %s after the restart", lag.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	b.stop(t)
	t.Logf("%d burst writes", b.writes.Load())

	p.waitConverged(rules, 30*time.Second)
	for i, r := range p.runs {
		select {
		case <-r.done:
			t.Fatalf("component %d stopped: %v", i, r.err)
		default:
		}
	}
	checkExactlyOnce(t, primary, standby, rules)
	checkLogStrictlyIncreasing(t, p)
}
