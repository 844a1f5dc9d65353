package e2e

import (
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdsync/etcdsync/publisher"
)

// stallProxy forwards TCP connections to target and can stop forwarding
// without closing anything: a half-open connection, as a dead NAT entry or
// a silently rebooted middlebox leaves it.
type stallProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	gate   chan struct{} // closed while traffic flows
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, gate: make(chan struct{})}
	close(p.gate)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.thaw()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(u, c)
		go p.pipe(c, u)
	}
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// freeze stops forwarding in both directions; nothing is closed.
func (p *stallProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
}

// thaw forwards again what was held and everything after it.
func (p *stallProxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// The publisher's etcd connection goes half-open: nothing arrives, nothing
// is closed. The session notices that its progress requests go unanswered
// while the source moves, ends (counted), and once the path works again the
// standby catches up.
func TestStalledWatchEndsSession(t *testing.T) {
	p := newPipeline(t)
	u, err := url.Parse(p.primary.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newStallProxy(t, u.Host)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + proxy.ln.Addr().String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	cfg := p.publisherConfig()
	cfg.ProgressInterval = 200 * time.Millisecond
	reg := prometheus.NewRegistry()
	pub, err := publisher.New(cfg, cli, p.conn(), reg)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, pub.Run)
	p.runs = append(p.runs, r)
	p.startApplier(rawApplierConfig(p))
	rules := rawRules(t)
	put(t, p.primary.Client, "/st/a", "1")
	p.waitConverged(rules, 20*time.Second)

	proxy.freeze()
	put(t, p.primary.Client, "/st/b", "written while the watch is stalled")
	testenvEventually(t, func() bool { return metricValue(t, reg, "etcdsync_publisher_watch_stalls_total") >= 1 },
		"the stalled watch is noticed")
	proxy.thaw()
	put(t, p.primary.Client, "/st/c", "written after")
	p.waitConverged(rules, 20*time.Second)
	select {
	case <-r.done:
		t.Fatalf("publisher stopped: %v", r.err)
	default:
	}
}
