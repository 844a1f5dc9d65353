package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// startJetStreamCluster starts three clustered JetStream servers (the
// production shape: a replicated stream checks a Msg-Id before the
// expected sequences) and returns a client URL of the first.
func startJetStreamCluster(t *testing.T) string {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	routes := server.RoutesFromStr(fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d", ports[0], ports[1], ports[2]))
	var urls []string
	for i, port := range ports {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), MaxPayload: streams.DefaultMaxMsgSize,
			Cluster: server.ClusterOpts{Name: "etcdsync", Host: "127.0.0.1", Port: port},
			Routes:  routes, NoSigs: true, NoLog: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats server %d not ready", i)
		}
		urls = append(urls, s.ClientURL())
	}
	nc, err := nats.Connect(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, err := js.AccountInfo(context.Background())
		return err == nil
	}, "jetstream cluster ready")
	return urls[0]
}

// A message already in the stream under the Msg-Id of the publisher's next
// record (another publisher of the same cluster and generation wrote it
// first) makes a replicated stream answer the publisher's record with a
// duplicate acknowledgement: in a NATS cluster the Msg-Id is checked before
// the expected sequences (a single server checks the sequences first and
// rejects the record instead). The publisher takes the duplicate for what
// it is, a second writer, and stops with ErrFenced instead of counting the
// foreign message as its record and publishing on after it.
func TestDuplicateAckFencesPublisher(t *testing.T) {
	primary := testenv.StartEtcd(t)
	url := startJetStreamCluster(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := publisher.DefaultConfig()
	cfg.Logger = testLogger(t)
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	cfg.Stream.Replicas = 3
	pub, err := publisher.New(cfg, primary.Client, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, pub.Run)
	ctx := context.Background()
	s := waitStream(t, js)
	// A revision record at the stream's tail: the session's snapshot is
	// complete and nothing of the publisher is in flight.
	rev := put(t, primary.Client, "/dup/a", "v")
	testenv.Eventually(t, 30*time.Second, func() bool {
		if pub.Published().Revision < rev {
			return false
		}
		m, err := s.GetLastMsgForSubject(ctx, streams.Subjects{Site: streams.DefaultSite}.Revision())
		if err == nil && m.Header.Get(streams.HeaderRevision) == strconv.FormatInt(rev, 10) && m.Sequence == lastSeq(t, s) {
			return true
		}
		rev = put(t, primary.Client, "/dup/a", "v") // published within a snapshot: one more
		return false
	}, "a revision record at the stream's tail")
	pos := pub.Published()
	if pos.Revision != rev {
		t.Fatalf("published %s, want revision %d", pos, rev)
	}

	// The record for revision rev+1 of this cluster and generation, as
	// another writer would publish it, carrying a key the primary never held.
	foreign := &streams.Record{Kind: streams.KindRevision, ClusterID: pos.ClusterID, Generation: pos.Generation, Revision: rev + 1,
		Time: time.Now(), Events: []streams.Event{{Type: streams.EventPut, Key: []byte("/dup/foreign"), Value: []byte("x"),
			CreateRevision: rev + 1, ModRevision: rev + 1, Version: 1}}}
	msgs, err := streams.NewMsgs(streams.Subjects{Site: streams.DefaultSite}, foreign, 64<<10, nil, lastSeq(t, s))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("foreign record: %d parts, want 1", len(msgs))
	}
	id := msgs[0].Header.Get(nats.MsgIdHdr)
	if want := streams.MsgID(&streams.Record{Kind: streams.KindRevision, ClusterID: pos.ClusterID, Generation: pos.Generation, Revision: rev + 1}, 0, 1); id != want {
		t.Fatalf("foreign Msg-Id %q, want the publisher's %q", id, want)
	}
	ack, err := js.PublishMsg(ctx, msgs[0])
	if err != nil {
		t.Fatal(err)
	}

	// The primary's revision rev+1: the publisher's record for it is the
	// stream's duplicate. Later revisions give a publisher that took the
	// duplicate for its own something to publish after it.
	if got := put(t, primary.Client, "/dup/b", "2"); got != rev+1 {
		t.Fatalf("primary wrote revision %d, want %d", got, rev+1)
	}
	for _, k := range []string{"/dup/c", "/dup/d", "/dup/e"} {
		put(t, primary.Client, k, "3")
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for seq := uint64(1); seq <= lastSeq(t, s); seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				t.Logf("seq %d: %v", seq, err)
				continue
			}
			t.Logf("seq %d: %s gen %s rev %s id %s", seq, m.Header.Get(streams.HeaderKind), m.Header.Get(streams.HeaderGeneration), m.Header.Get(streams.HeaderRevision), m.Header.Get(nats.MsgIdHdr))
		}
	})
	if err := r.wait(t, 10*time.Second, "publisher whose record another writer published"); !errors.Is(err, publisher.ErrFenced) {
		t.Fatalf("Run: want ErrFenced, got %v", err)
	}
	if got := pub.Published(); got.Revision > rev {
		t.Fatalf("publisher counts %s as published: the foreign message at seq %d is not its record", got, ack.Sequence)
	}
	if last := lastSeq(t, s); last != ack.Sequence {
		t.Fatalf("stream last seq %d: the publisher wrote after the foreign message at seq %d", last, ack.Sequence)
	}
}

func waitStream(t *testing.T, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	var s jetstream.Stream
	testenv.Eventually(t, 30*time.Second, func() bool {
		var err error
		s, err = js.Stream(context.Background(), streams.DefaultStream)
		return err == nil
	}, "log stream created")
	return s
}

// dropProxy passes a NATS client connection through to the server and
// drops exactly one client message when armed: the first HPUB on subject
// whose headers carry the armed revision. Everything else passes intact.
type dropProxy struct {
	t       *testing.T
	ln      net.Listener
	server  string
	subject string
	target  atomic.Int64 // revision whose next publish is dropped (0: none)
	dropped atomic.Int64
}

func newDropProxy(t *testing.T, serverURL, subject string) *dropProxy {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dropProxy{t: t, ln: ln, server: u.Host, subject: subject}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", d.server)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, s)
			mu.Unlock()
			conns.Add(2)
			go func() { defer conns.Done(); _, _ = io.Copy(c, s); c.Close() }()
			go func() { defer conns.Done(); d.clientToServer(c, s); s.Close() }()
		}
	}()
	return d
}

func (d *dropProxy) URL() string { return "nats://" + d.ln.Addr().String() }

// dropRevision arms the proxy: the next publish of rev is lost.
func (d *dropProxy) dropRevision(rev int64) { d.target.Store(rev) }

// clientToServer copies the client's protocol to the server frame by frame:
// a control line, and for PUB and HPUB the payload its sizes announce.
func (d *dropProxy) clientToServer(c, s net.Conn) {
	r := bufio.NewReaderSize(c, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		f := strings.Fields(string(line))
		var payload []byte
		if len(f) > 0 && (strings.EqualFold(f[0], "PUB") || strings.EqualFold(f[0], "HPUB")) {
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return
			}
			payload = make([]byte, n+2) // the payload and its CRLF
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			if rev := d.target.Load(); rev != 0 && strings.EqualFold(f[0], "HPUB") && len(f) >= 4 && f[1] == d.subject {
				hdrLen, _ := strconv.Atoi(f[len(f)-2])
				if hdrLen <= n && bytes.Contains(payload[:hdrLen], []byte(streams.HeaderRevision+": "+strconv.FormatInt(rev, 10)+"\r\n")) &&
					d.target.CompareAndSwap(rev, 0) {
					d.dropped.Add(1)
					continue
				}
			}
		}
		if _, err := s.Write(append(line, payload...)); err != nil {
			return
		}
	}
}

// One publish lost on its way to the server (a connection that dropped
// a write, a server that lost it) never leaves a hole: every message is
// chained to the stream sequence before it, so the publishes after the
// lost one are rejected, the session restarts from the stream's tail and
// publishes the lost revision again. The standby ends up with every write.
func TestLostPublishLeavesNoHole(t *testing.T) {
	p := newPipeline(t)
	proxy := newDropProxy(t, p.js.URL, streams.Subjects{Site: streams.DefaultSite}.Revision())
	nc, err := nats.Connect(proxy.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := p.publisherConfig()
	cfg.AckTimeout = 2 * time.Second
	pub, err := publisher.New(cfg, p.primary.Client, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.runs = append(p.runs, start(t, pub.Run))
	rev := put(t, p.primary.Client, "/hole/a", "1")
	testenvEventually(t, func() bool { return pub.Published().Revision >= rev }, "revision published")
	// The stream holds a snapshot before the applier starts: it asks for
	// none, which could carry the lost write past a hole.
	p.startApplier(rawApplierConfig(p))

	proxy.dropRevision(rev + 1)
	if got := put(t, p.primary.Client, "/hole/lost", "carried by the lost publish"); got != rev+1 {
		t.Fatalf("primary wrote revision %d, want %d", got, rev+1)
	}
	for i := 0; i < 5; i++ {
		put(t, p.primary.Client, "/hole/k"+strconv.Itoa(i), "v")
	}
	testenvEventually(t, func() bool { return proxy.dropped.Load() == 1 }, "the publish of the armed revision dropped")
	// The log itself holds the lost revision, published again.
	s := logStream(t, p)
	testenv.Eventually(t, 15*time.Second, func() bool {
		for seq := uint64(1); seq <= lastSeq(t, s); seq++ {
			m, err := s.GetMsg(context.Background(), seq)
			if err != nil {
				t.Fatal(err)
			}
			if m.Header.Get(streams.HeaderKind) == streams.KindRevision.String() && m.Header.Get(streams.HeaderRevision) == strconv.FormatInt(rev+1, 10) {
				return true
			}
		}
		return false
	}, "no record of revision %d in the log: a hole between revisions %d and %d", rev+1, rev, rev+2)
	p.waitConverged(rawRules(t), 30*time.Second)
	checkLogStrictlyIncreasing(t, p)
}
