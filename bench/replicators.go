package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// replicator is one way of keeping the standby a copy of the primary.
type replicator interface {
	// Name names it in the table.
	Name() string
	// Start starts replicating primary into standby (client URLs) and
	// returns at once.
	Start(ctx context.Context, primary, standby string) error
	// Procs are its processes (for RSS and CPU); empty when in process.
	Procs() []*proc
	// Failed returns an error once a part of it has stopped on its own.
	Failed() error
	// Stop stops it and releases what Start took.
	Stop()
}

// natsServer starts a fresh embedded JetStream server (in the benchmark
// process) with its store under dir.
func natsServer(dir string) (*server.Server, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("wipe %s: %w", dir, err)
	}
	cfg := streams.DefaultServerConfig()
	cfg.StoreDir, cfg.Listen = dir, "127.0.0.1:0"
	return streams.StartServer(cfg)
}

// natsCluster starts n fresh clustered JetStream servers (in the
// benchmark process, routes on loopback), each with its store under
// dir/n<i>, and returns them once the cluster's JetStream answers.
func natsCluster(dir string, n int) ([]*server.Server, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("wipe %s: %w", dir, err)
	}
	routePorts := make([]int, n)
	var routes []*url.URL
	for i := range routePorts {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		routePorts[i] = p
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	def := streams.DefaultServerConfig()
	var srvs []*server.Server
	for i, rp := range routePorts {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i)),
			MaxPayload: def.MaxPayload, SyncInterval: def.SyncInterval,
			Cluster: server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: rp},
			Routes:  routes, NoSigs: true, NoLog: true,
		})
		if err != nil {
			stopNATS(srvs)
			return nil, fmt.Errorf("start nats n%d: %w", i, err)
		}
		go s.Start()
		srvs = append(srvs, s)
		if !s.ReadyForConnections(10 * time.Second) {
			stopNATS(srvs)
			return nil, fmt.Errorf("start nats n%d: not ready after 10s", i)
		}
	}
	// The meta group elects a leader before the JetStream API answers.
	nc, err := nats.Connect(srvs[0].ClientURL())
	if err != nil {
		stopNATS(srvs)
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		stopNATS(srvs)
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return srvs, nil
		}
		if time.Now().After(deadline) {
			stopNATS(srvs)
			return nil, fmt.Errorf("nats cluster: jetstream not ready after 30s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func stopNATS(srvs []*server.Server) {
	for _, s := range srvs {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// etcdsyncProcs runs `etcdsync publish` and `etcdsync apply` as processes
// against a JetStream server embedded in the benchmark process. With
// signed, both get a fresh log key ring (--log-key-file): every message is
// signed by the publisher and verified by the applier. With replicas 3,
// the server is a cluster of three (all in the benchmark process), the log
// stream has three replicas (--stream-replicas 3) and both processes are
// given the three client URLs (--nats-url, comma-separated).
type etcdsyncProcs struct {
	bin, workDir           string
	applyArgs, publishArgs []string
	signed                 bool
	baseline               bool // bin is the --baseline binary
	replicas               int  // 0 or 1: one server
	nats                   []*server.Server
	pub, app               *proc
}

// signedName and r3Name name the signed and the R3 etcdsync runs in the
// report, and the --baseline run.
const (
	signedName   = "etcdsync-signed"
	r3Name       = "etcdsync-r3"
	baselineName = "etcdsync-baseline"
)

func (e *etcdsyncProcs) Name() string {
	switch {
	case e.baseline:
		return baselineName
	case e.signed:
		return signedName
	case e.replicas == 3:
		return r3Name
	case e.replicas > 1:
		return fmt.Sprintf("etcdsync-r%d", e.replicas)
	}
	return "etcdsync"
}

func (e *etcdsyncProcs) Start(ctx context.Context, primary, standby string) error {
	var replicaArgs []string
	if e.replicas > 1 {
		srvs, err := natsCluster(filepath.Join(e.workDir, "nats"), e.replicas)
		if err != nil {
			return err
		}
		e.nats = srvs
		replicaArgs = []string{"--stream-replicas", strconv.Itoa(e.replicas)}
	} else {
		srv, err := natsServer(filepath.Join(e.workDir, "nats"))
		if err != nil {
			return err
		}
		e.nats = []*server.Server{srv}
	}
	var urls []string
	for _, s := range e.nats {
		urls = append(urls, s.ClientURL())
	}
	natsURL := strings.Join(urls, ",")
	var err error
	var keyArgs []string
	if e.signed {
		path, err := writeKeyRing(e.workDir)
		if err != nil {
			return err
		}
		keyArgs = []string{"--log-key-file", path}
	}
	e.pub, err = startProc("publisher", filepath.Join(e.workDir, "publish.log"), e.bin,
		append(append(append([]string{"publish", "--etcd-endpoints", primary, "--nats-url", natsURL}, keyArgs...), replicaArgs...), e.publishArgs...)...)
	if err != nil {
		return err
	}
	e.app, err = startProc("applier", filepath.Join(e.workDir, "apply.log"), e.bin,
		append(append([]string{"apply", "--etcd-endpoints", standby, "--nats-url", natsURL}, keyArgs...), e.applyArgs...)...)
	return err
}

// writeKeyRing writes a key ring of one fresh random key into dir.
func writeKeyRing(dir string) (string, error) {
	key := make([]byte, streams.MinKeyBytes)
	_, _ = rand.Read(key) // crypto/rand.Read never fails
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "log.key")
	if err := os.WriteFile(path, []byte("bench:"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write log key ring: %w", err)
	}
	return path, nil
}

func (e *etcdsyncProcs) Procs() []*proc {
	var ps []*proc
	for _, p := range []*proc{e.pub, e.app} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

func (e *etcdsyncProcs) Failed() error {
	for _, p := range e.Procs() {
		if p.exited() {
			return fmt.Errorf("%s exited: %v (see %s)", p.name, p.err, p.log.Name())
		}
	}
	return nil
}

func (e *etcdsyncProcs) Stop() {
	for _, p := range e.Procs() {
		p.stop()
	}
	stopNATS(e.nats)
}

// etcdsyncInProcess runs the publisher and the applier in the benchmark
// process, so a CPU profile covers them (--profile).
type etcdsyncInProcess struct {
	workDir string
	log     *slog.Logger
	nats    *server.Server
	ncs     []*nats.Conn
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	err     error
	Pub     *publisher.Publisher
	App     *applier.Applier
}

func (e *etcdsyncInProcess) Name() string { return "etcdsync (in process)" }

func (e *etcdsyncInProcess) Start(ctx context.Context, primary, standby string) error {
	srv, err := natsServer(filepath.Join(e.workDir, "nats"))
	if err != nil {
		return err
	}
	e.nats = srv
	pcli, err := dialEtcd(primary)
	if err != nil {
		return err
	}
	scli, err := dialEtcd(standby)
	if err != nil {
		return err
	}
	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(srv.ClientURL(), nats.Name(name), nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("connect nats: %w", err)
		}
		e.ncs = append(e.ncs, nc)
		return nc, nil
	}
	pnc, err := connect("bench-publish")
	if err != nil {
		return err
	}
	anc, err := connect("bench-apply")
	if err != nil {
		return err
	}
	pcfg := publisher.DefaultConfig()
	pcfg.Logger = e.log.With("component", "publisher")
	e.Pub, err = publisher.New(pcfg, pcli, pnc, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	acfg := applier.DefaultConfig()
	acfg.Logger = e.log.With("component", "applier")
	e.App, err = applier.New(acfg, scli, anc, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	run := func(name string, f func(context.Context) error, closeFn func() error) {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer closeFn()
			if err := f(rctx); err != nil {
				e.mu.Lock()
				e.err = errors.Join(e.err, fmt.Errorf("%s: %w", name, err))
				e.mu.Unlock()
			}
		}()
	}
	run("publisher", e.Pub.Run, pcli.Close)
	run("applier", e.App.Run, scli.Close)
	return nil
}

func (e *etcdsyncInProcess) Procs() []*proc { return nil }

func (e *etcdsyncInProcess) Failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

func (e *etcdsyncInProcess) Stop() {
	if e.cancel != nil {
		e.cancel()
	}
	e.wg.Wait()
	for _, nc := range e.ncs {
		nc.Close()
	}
	if e.nats != nil {
		e.nats.Shutdown()
		e.nats.WaitForShutdown()
	}
}

// makeMirror runs `etcdctl make-mirror --endpoints <primary> <standby>`.
type makeMirror struct {
	bin, workDir string
	p            *proc
}

func (m *makeMirror) Name() string { return "make-mirror" }

func (m *makeMirror) Start(ctx context.Context, primary, standby string) error {
	var err error
	m.p, err = startProc("make-mirror", filepath.Join(m.workDir, "make-mirror.log"), m.bin,
		"make-mirror", "--endpoints", primary, standby)
	return err
}

func (m *makeMirror) Procs() []*proc {
	if m.p == nil {
		return nil
	}
	return []*proc{m.p}
}

func (m *makeMirror) Failed() error {
	if m.p != nil && m.p.exited() {
		return fmt.Errorf("make-mirror exited: %v (see %s)", m.p.err, m.p.log.Name())
	}
	return nil
}

func (m *makeMirror) Stop() {
	if m.p != nil {
		m.p.stop()
	}
}
