package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// catchUpTimeout bounds the wait for the standby after the workload stops.
const catchUpTimeout = 30 * time.Second

// sandboxOptions are the flags of `etcdsync sandbox`.
type sandboxOptions struct {
	duration          time.Duration
	rate              int
	seed              int
	dataDir           string
	excludeNamespaces []string
	metricsAddr       string
	log               logFlags
}

func sandboxFlags(o *sandboxOptions) *flagSet {
	f := newFlagSet("sandbox", "[--duration D] [--rate N] [--data-dir DIR] [flags]",
		"Runs the whole pipeline in one process: a primary and a standby embedded etcd, an\n"+
			"embedded JetStream server, a publisher, an applier and a workload writing a\n"+
			"Kubernetes-like keyspace to the primary. On exit (--duration elapsed or Ctrl-C) it\n"+
			"stops the workload, waits for the standby to catch up, compares both sides'\n"+
			"in-scope keys and prints CONSISTENT (exit 0) or DRIFT (exit 1).")
	f.Duration(&o.duration, "duration", 0, "run the workload for `DURATION` (0: until Ctrl-C)")
	f.Int(&o.rate, "rate", 200, "workload write requests per second (`N`)")
	f.Int(&o.seed, "seed-keys", 2000, "`N` keys written before the pipeline starts, so the first snapshot has content")
	f.String(&o.dataDir, "data-dir", "", "`DIR` for the etcd and NATS data (default: a temporary directory removed at exit)")
	f.List(&o.excludeNamespaces, "exclude-namespace", []string{"cpaas-system"}, "comma-separated `NAMESPACES` the applier excludes besides the kubernetes preset's")
	f.String(&o.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on `ADDR` (empty: off)")
	o.log.register(f, "warn")
	return f
}

func runSandbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "sandbox"
	var o sandboxOptions
	if err := sandboxFlags(&o).parse(args, stdout); err != nil {
		return err
	}
	if o.rate < 1 {
		return usageErrorf(cmd, "--rate %d: must be at least 1", o.rate)
	}
	if o.seed < 0 {
		return usageErrorf(cmd, "--seed-keys %d: must not be negative", o.seed)
	}
	log, err := o.log.logger(cmd, stderr)
	if err != nil {
		return err
	}
	scope := keyspace.DefaultConfig()
	scope.ExcludeNamespaces = o.excludeNamespaces
	rules, err := keyspace.New(scope)
	if err != nil {
		return usageErrorf(cmd, "%v", err)
	}

	// Step 1: the data directory.
	dir := o.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "etcdsync-sandbox-"); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}

	// Step 2: servers and connections.
	sb, err := startSandbox(ctx, dir, log)
	if err != nil {
		return err
	}
	defer sb.close()

	fmt.Fprintf(stdout, "primary etcd: %s  standby etcd: %s  nats: %s\n", sb.primary.Endpoint, sb.standby.Endpoint, sb.natsURL)
	where := "data dir: " + dir
	if o.dataDir == "" {
		where += " (removed at exit)"
	}
	fmt.Fprintln(stdout, where)
	fmt.Fprintf(stdout, "scope: kubernetes preset, plus namespaces %s excluded (etcdsync apply --print-rules --exclude-namespace %s)\n",
		strings.Join(o.excludeNamespaces, ","), strings.Join(o.excludeNamespaces, ","))
	fmt.Fprintf(stdout, "look:  etcdctl --endpoints %s get --prefix /registry --keys-only\n", sb.standby.Endpoint)

	// Step 3: seed the primary so the first snapshot has content.
	wl := newWorkload(sb.primaryCli, o.excludeNamespaces, uint64(time.Now().UnixNano()))
	if err := wl.Seed(ctx, o.seed); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	fmt.Fprintf(stdout, "seeded %d keys (primary revision %d); writing %d requests/s", o.seed, wl.lastRev.Load(), o.rate)
	if o.duration > 0 {
		fmt.Fprintf(stdout, " for %s", o.duration)
	} else {
		fmt.Fprint(stdout, " until Ctrl-C")
	}
	fmt.Fprintln(stdout)

	// Step 4: the pipeline.
	reg := newRegistry()
	pcfg := publisher.DefaultConfig()
	pcfg.Logger = log.With("component", "publisher")
	pub, err := publisher.New(pcfg, sb.primaryCli, sb.pubConn, reg)
	if err != nil {
		return err
	}
	// The publisher creates the stream too; creating it first spares the
	// applier a retry when it starts before the publisher.
	js, err := jetstream.New(sb.pubConn)
	if err != nil {
		return err
	}
	if _, err := streams.EnsureLogStream(ctx, js, pcfg.Stream); err != nil {
		return err
	}
	acfg := applier.DefaultConfig()
	acfg.Scope = scope
	acfg.Logger = log.With("component", "applier")
	ap, err := applier.New(acfg, sb.standbyCli, sb.applyConn, reg)
	if err != nil {
		return err
	}

	// Step 5: run the pipeline; the driver runs the workload and the view
	// until ctx ends (or the duration elapses), waits for the standby to
	// catch up, then stops the pipeline. The pipeline outlives ctx so that
	// Ctrl-C still drains and checks; a second Ctrl-C kills the process.
	var target int64
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer pcancel()
	pipeline := func(sctx context.Context) error {
		g, gctx := errgroup.WithContext(sctx)
		g.Go(func() error { return pub.Run(gctx) })
		g.Go(func() error { return ap.Run(gctx) })
		g.Go(func() error {
			defer pcancel()
			var err error
			target, err = drive(ctx, gctx, o, sb, wl, pub, ap, stdout, stderr)
			return err
		})
		return g.Wait()
	}
	conns := []*nats.Conn{sb.pubConn, sb.applyConn}
	if err := runServed(pctx, log, o.metricsAddr, reg, conns, pipeline); err != nil {
		return err
	}

	// Step 6: compare both sides.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer ccancel()
	c, err := compareSides(cctx, sb.primaryCli, sb.standbyCli, target, rules)
	if err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	c.print(stdout)
	if !c.consistent() {
		return errDrift
	}
	return nil
}

// drive runs the workload and the live view until ctx ends or the duration
// elapses, then waits (bounded) until the applier reaches the primary's
// revision, which it returns. pctx is the pipeline's context.
func drive(ctx, pctx context.Context, o sandboxOptions, sb *sandbox, wl *workload, pub *publisher.Publisher, ap *applier.Applier, stdout, stderr io.Writer) (int64, error) {
	vctx, vcancel := context.WithCancel(pctx)
	defer vcancel()
	view := newLiveView(stderr, pub, ap, wl)
	vdone := make(chan struct{})
	go func() { defer close(vdone); _ = view.Run(vctx) }()
	stopView := sync.OnceFunc(func() { vcancel(); <-vdone })
	defer stopView()

	// Step 1: the workload.
	wctx, wcancel := context.WithCancel(pctx)
	defer wcancel()
	stop := context.AfterFunc(ctx, wcancel)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(wctx, o.duration)
		defer cancel()
	}
	if err := wl.Run(wctx, o.rate); err != nil {
		return 0, err
	}
	if pctx.Err() != nil {
		return 0, nil // the pipeline failed; its error is reported
	}

	// Step 2: the primary's revision, and the wait for the standby.
	rctx, rcancel := context.WithTimeout(pctx, connectTimeout)
	resp, err := sb.primaryCli.Get(rctx, "compact_rev_key", clientv3.WithKeysOnly())
	rcancel()
	if err != nil {
		return 0, fmt.Errorf("read primary revision: %w", err)
	}
	target := resp.Header.Revision
	if view.tty {
		fmt.Fprintln(stderr)
	}
	fmt.Fprintf(stderr, "workload stopped after %d writes; waiting up to %s for the standby to reach primary revision %d\n",
		wl.writes.Load(), catchUpTimeout, target)
	deadline := time.NewTimer(catchUpTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	start := time.Now()
	for ap.Applied().Position.Revision < target {
		select {
		case <-pctx.Done():
			return target, nil
		case <-deadline.C:
			fmt.Fprintf(stderr, "standby did not reach revision %d within %s (at %d)\n", target, catchUpTimeout, ap.Applied().Position.Revision)
			return target, nil
		case <-poll.C:
		}
	}
	stopView()
	fmt.Fprintf(stderr, "standby reached revision %d %s after the workload stopped\n", target, fmtLag(time.Since(start)))
	return target, nil
}

// sandbox holds the servers and connections of a sandbox run.
type sandbox struct {
	primary, standby       *embedded.Etcd
	natsSrv                *server.Server
	natsURL                string
	primaryCli, standbyCli *clientv3.Client
	pubConn, applyConn     *nats.Conn
}

// startSandbox starts both etcd servers and the JetStream server under dir
// and connects to them. On error everything started is closed.
func startSandbox(ctx context.Context, dir string, log *slog.Logger) (_ *sandbox, err error) {
	sb := &sandbox{}
	defer func() {
		if err != nil {
			sb.close()
		}
	}()
	if sb.primary, err = embedded.StartEtcd(embedded.EtcdConfig{Dir: filepath.Join(dir, "primary"), Name: "primary"}); err != nil {
		return nil, err
	}
	if sb.standby, err = embedded.StartEtcd(embedded.EtcdConfig{Dir: filepath.Join(dir, "standby"), Name: "standby"}); err != nil {
		return nil, err
	}
	scfg := streams.DefaultServerConfig()
	scfg.StoreDir, scfg.Listen = filepath.Join(dir, "nats"), "127.0.0.1:0"
	srv, err := streams.StartServer(scfg)
	if err != nil {
		return nil, err
	}
	sb.natsSrv, sb.natsURL = srv, srv.ClientURL()
	if sb.primaryCli, err = dialEtcd(ctx, clientv3.Config{Endpoints: []string{sb.primary.Endpoint}, DialTimeout: connectTimeout}); err != nil {
		return nil, err
	}
	if sb.standbyCli, err = dialEtcd(ctx, clientv3.Config{Endpoints: []string{sb.standby.Endpoint}, DialTimeout: connectTimeout}); err != nil {
		return nil, err
	}
	var nf natsFlags
	if sb.pubConn, err = nf.connect(sb.natsURL, "etcdsync-publish", log); err != nil {
		return nil, err
	}
	if sb.applyConn, err = nf.connect(sb.natsURL, "etcdsync-apply", log); err != nil {
		return nil, err
	}
	return sb, nil
}

// close closes whatever was started, in reverse order.
func (sb *sandbox) close() {
	for _, nc := range []*nats.Conn{sb.applyConn, sb.pubConn} {
		if nc != nil {
			nc.Close()
		}
	}
	for _, cli := range []*clientv3.Client{sb.standbyCli, sb.primaryCli} {
		if cli != nil {
			cli.Close()
		}
	}
	if sb.natsSrv != nil {
		sb.natsSrv.Shutdown()
		sb.natsSrv.WaitForShutdown()
	}
	for _, e := range []*embedded.Etcd{sb.standby, sb.primary} {
		if e != nil {
			e.Close()
		}
	}
}
