package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
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

// etcdsyncProcs runs `etcdsync publish` and `etcdsync apply` as processes
// against a JetStream server embedded in the benchmark process. With
// signed, both get a fresh log key ring (--log-key-file): every message is
// signed by the publisher and verified by the applier.
type etcdsyncProcs struct {
	bin, workDir           string
	applyArgs, publishArgs []string
	signed                 bool
	nats                   *server.Server
	pub, app               *proc
}

// signedName names the signed etcdsync run in the report.
const signedName = "etcdsync-signed"

func (e *etcdsyncProcs) Name() string {
	if e.signed {
		return signedName
	}
	return "etcdsync"
}

func (e *etcdsyncProcs) Start(ctx context.Context, primary, standby string) error {
	srv, err := natsServer(filepath.Join(e.workDir, "nats"))
	if err != nil {
		return err
	}
	e.nats = srv
	url := srv.ClientURL()
	var keyArgs []string
	if e.signed {
		path, err := writeKeyRing(e.workDir)
		if err != nil {
			return err
		}
		keyArgs = []string{"--log-key-file", path}
	}
	e.pub, err = startProc("publisher", filepath.Join(e.workDir, "publish.log"), e.bin,
		append(append([]string{"publish", "--etcd-endpoints", primary, "--nats-url", url}, keyArgs...), e.publishArgs...)...)
	if err != nil {
		return err
	}
	e.app, err = startProc("applier", filepath.Join(e.workDir, "apply.log"), e.bin,
		append(append([]string{"apply", "--etcd-endpoints", standby, "--nats-url", url}, keyArgs...), e.applyArgs...)...)
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
	if e.nats != nil {
		e.nats.Shutdown()
		e.nats.WaitForShutdown()
	}
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
