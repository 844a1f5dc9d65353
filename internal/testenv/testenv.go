// Package testenv starts real etcd and NATS JetStream servers in process for
// tests, on random ports and temporary directories, stopped by t.Cleanup.
package testenv

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/streams"
)

// Etcd is a running test etcd with a client.
type Etcd struct {
	*embedded.Etcd
	Client *clientv3.Client
	dir    string
	cfg    embedded.EtcdConfig
	t      testing.TB
}

// StartEtcd starts an embedded etcd and a client for it.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return StartEtcdConfig(t, embedded.EtcdConfig{})
}

// StartEtcdConfig is StartEtcd with server settings (MaxTxnOps,
// MaxRequestBytes); the directory and the port are the test's own.
func StartEtcdConfig(t testing.TB, cfg embedded.EtcdConfig) *Etcd {
	t.Helper()
	e := &Etcd{dir: t.TempDir(), cfg: cfg, t: t}
	e.start(0)
	return e
}

func (e *Etcd) start(port int) {
	e.t.Helper()
	cfg := e.cfg
	cfg.Dir, cfg.ClientPort = e.dir, port
	srv, err := embedded.StartEtcd(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.Etcd = srv
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second, Logger: nopLogger()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.Client = cli
	e.t.Cleanup(func() {
		cli.Close()
		srv.Close()
	})
}

// Stop stops the server and closes the client; Restart starts it again on
// the same port and data directory.
func (e *Etcd) Stop() {
	e.Client.Close()
	e.Etcd.Close()
}

// Restart starts a stopped server again, same port, same data.
func (e *Etcd) Restart() {
	e.t.Helper()
	e.start(e.port())
}

// Dir returns the data directory.
func (e *Etcd) Dir() string { return e.dir }

func (e *Etcd) port() int {
	u, err := url.Parse(e.Endpoint)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// Endpoints returns the client endpoints.
func (e *Etcd) Endpoints() []string { return []string{e.Endpoint} }

// JetStream is a running test NATS server with a connection.
type JetStream struct {
	Server *server.Server
	URL    string
	Conn   *nats.Conn
	JS     jetstream.JetStream
}

// StartJetStream starts an embedded JetStream server and connects to it.
func StartJetStream(t testing.TB) *JetStream {
	t.Helper()
	cfg := streams.DefaultServerConfig()
	cfg.StoreDir = t.TempDir()
	cfg.Listen = "127.0.0.1:-1"
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
	t.Cleanup(func() {
		nc.Close()
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &JetStream{Server: s, URL: s.ClientURL(), Conn: nc, JS: js}
}

// Eventually polls cond every 20ms until it returns true or timeout passes,
// then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Context returns a context cancelled at test cleanup.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}
