package main

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/embedded"
)

// freezer is a TCP proxy whose connections can be frozen: bytes stop
// flowing both ways and nothing is closed, as with a peer that vanished
// without a FIN. Connections opened after a freeze flow again.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []chan struct{} // per connection: closed when frozen
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go f.serve()
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

func (f *freezer) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		stop := make(chan struct{})
		f.mu.Lock()
		f.frozen = append(f.frozen, stop)
		f.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				select {
				case <-stop:
					<-make(chan struct{}) // frozen: hold both ends open, forever
				default:
				}
				if n > 0 {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err == io.EOF || err != nil {
					dst.Close()
					return
				}
			}
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// freeze stops every connection open now.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.frozen {
		close(c)
	}
	f.frozen = nil
}

// TestEtcdClientSurvivesHalfOpenConnection: every etcd client etcdsync
// dials sends keepalive pings, so a connection that silently stops
// carrying bytes is given up within seconds (the request in flight fails,
// and the component retries it) and the next request goes over a new
// connection, instead of hanging for the kernel's TCP timeout (many
// minutes: the context's deadline here).
func TestEtcdClientSurvivesHalfOpenConnection(t *testing.T) {
	e, _ := startEtcd(t)
	proxy := newFreezer(t, strings.TrimPrefix(e.Endpoint, "http://"))
	cli, err := dialEtcd(context.Background(), clientv3.Config{Endpoints: []string{"http://" + proxy.addr()}, DialTimeout: connectTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	proxy.freeze()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	_, err = cli.Put(ctx, "/after-freeze", "v")
	if ctx.Err() != nil {
		t.Fatalf("put over a frozen connection hung for %s: %v (no keepalive?)", time.Since(start).Round(time.Second), err)
	}
	t.Logf("put over the frozen connection returned after %s: %v", time.Since(start).Round(time.Second), err)
	if _, err := cli.Put(ctx, "/after-freeze", "v"); err != nil {
		t.Fatalf("put after the frozen connection was given up: %v", err)
	}
}

// TestEtcdClientSendsUpToServerLimit: the clients etcdsync dials leave the
// request bound to etcd, so a 3 MiB value reaches an etcd whose
// --max-request-bytes is 4 MiB (the client's own 2 MiB default would
// refuse it and read as the standby refusing it).
func TestEtcdClientSendsUpToServerLimit(t *testing.T) {
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: t.TempDir(), MaxRequestBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := dialEtcd(context.Background(), clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: connectTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(context.Background(), "/big", strings.Repeat("v", 3<<20)); err != nil {
		t.Fatalf("3 MiB put to an etcd that takes 4 MiB: %v", err)
	}
}
