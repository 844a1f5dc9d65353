package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// publishOptions are the flags of `etcdsync publish`.
type publishOptions struct {
	etcd        etcdFlags
	nats        natsFlags
	dataDir     string
	natsListen  string
	listen      listenFlags
	site        string
	stream      string
	replicas    int
	prefix      string
	maxAge      time.Duration
	maxBytes    int64
	snapEvery   time.Duration
	verifyEvery time.Duration
	elect       electFlags
	metricsAddr string
	log         logFlags
	logKey      logKeyFlag
}

func publishFlags(o *publishOptions) *flagSet {
	f := newFlagSet("publish", "--etcd-endpoints URLS [--nats-url URL] [flags]",
		"Watches the primary etcd and publishes every revision to the JetStream log.\n"+
			"Without --nats-url it runs an embedded JetStream server (store under --data-dir,\n"+
			"clients on --nats-listen), so a pair needs no other infrastructure.")
	o.etcd.register(f, "source (primary)")
	o.nats.register(f, "`URL` of the NATS servers (comma-separated); empty: run an embedded JetStream server")
	f.String(&o.dataDir, "data-dir", "./etcdsync-data", "`DIR` of the embedded JetStream store (<DIR>/nats); unused with --nats-url")
	f.String(&o.natsListen, "nats-listen", streams.DefaultServerConfig().Listen, "client `ADDR` (host:port) of the embedded JetStream server; unused with --nats-url")
	o.listen.register(f)
	f.String(&o.site, "site", streams.DefaultSite, "`NAME` of this site in subjects (etcdsync.<NAME>.log.>)")
	f.String(&o.stream, "stream", streams.DefaultStream, "`NAME` of the log stream")
	f.Int(&o.replicas, "stream-replicas", 1, "`N` replicas of the log stream (1 embedded, 3 in a NATS cluster), when the publisher creates it; an existing stream keeps its own (see streams init)")
	f.String(&o.prefix, "prefix", "", "publish only keys under `PREFIX` (empty: every key)")
	f.Duration(&o.maxAge, "max-age", 0, "drop log messages older than `DURATION` (0: keep forever; snapshots keep a complete base), when the publisher creates the stream")
	f.Bytes(&o.maxBytes, "max-bytes", 0, "cap the log stream at `SIZE` (e.g. 10GiB; 0: unlimited; oldest messages go first), when the publisher creates it")
	f.Duration(&o.snapEvery, "snapshot-interval", publisher.DefaultConfig().SnapshotInterval,
		"publish a snapshot every `DURATION` (0: off), so retention can drop old messages while a complete base stays; must be below --max-age")
	f.Duration(&o.verifyEvery, "verify-interval", publisher.DefaultConfig().VerifyInterval,
		"rescan the primary every `DURATION` (0: only at session start) and compare its keyspace digest with the log's; a mismatch starts a new generation")
	o.elect.register(f, "primary")
	o.logKey.register(f, "every message is signed for its stream position", "")
	f.String(&o.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on `ADDR` (e.g. :9090; empty: off)")
	o.log.register(f, "info")
	return f
}

// config builds the publisher configuration from the flags.
func (o *publishOptions) config() publisher.Config {
	cfg := publisher.DefaultConfig()
	cfg.Stream.Name = o.stream
	cfg.Stream.Site = o.site
	cfg.Stream.Replicas = o.replicas
	cfg.Stream.MaxAge = o.maxAge
	cfg.Stream.MaxBytes = o.maxBytes
	cfg.Prefix = o.prefix
	cfg.SnapshotInterval = o.snapEvery
	cfg.VerifyInterval = o.verifyEvery
	return cfg
}

func runPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "publish"
	var o publishOptions
	flags := publishFlags(&o)
	if err := flags.parse(args, stdout); err != nil {
		return err
	}
	if err := o.etcd.validate(cmd); err != nil {
		return err
	}
	electDefault := false
	if o.nats.url == "" && o.elect.enabled {
		// Each replica's embedded server writes a store of its own: a
		// handover would move the log to a server no applier reads.
		if flags.isSet("leader-elect") {
			return usageErrorf(cmd, "--leader-elect with the embedded NATS server (no --nats-url): each replica would write its own store, and a handover would move the log to a server the applier does not read; give --nats-url of a NATS server or cluster all replicas share, or run one replica with --leader-elect=false")
		}
		o.elect.enabled, electDefault = false, true
	}
	if err := o.elect.validate(cmd); err != nil {
		return err
	}
	if err := o.nats.validate(cmd); err != nil {
		return err
	}
	if err := o.listen.validate(cmd); err != nil {
		return err
	}
	log, err := o.log.logger(cmd, stderr)
	if err != nil {
		return err
	}
	if electDefault {
		log.Info("leader election off: the embedded NATS server serves this one replica (run several replicas against a shared --nats-url)")
	}
	cfg := o.config()
	cfg.Logger = log
	if cfg.LogKeys, err = o.logKey.load(cmd); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageErrorf(cmd, "%v", err)
	}

	// Step 1: the embedded JetStream server, unless one is given.
	natsURL := o.nats.url
	var srv *server.Server
	var local nkeys.KeyPair
	if natsURL == "" {
		dir := filepath.Join(o.dataDir, "nats")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
		scfg := streams.DefaultServerConfig()
		scfg.StoreDir, scfg.Listen = dir, o.natsListen
		scfg.Access = streams.Access{Site: o.site, Stream: o.stream, DriftStream: streams.DefaultDriftStream}
		if err := o.listen.apply(&scfg); err != nil {
			return err
		}
		if len(scfg.Users) > 0 {
			// The publisher's own identity: a fresh NKey that may connect
			// only in process.
			if local, err = nkeys.CreateUser(); err != nil {
				return fmt.Errorf("create publisher nkey: %w", err)
			}
			if scfg.LocalNKey, err = local.PublicKey(); err != nil {
				return fmt.Errorf("create publisher nkey: %w", err)
			}
		}
		// The server takes 10s to report a taken address; check it first.
		if err := checkListen(o.natsListen); err != nil {
			return err
		}
		if srv, err = streams.StartServer(scfg); err != nil {
			if errors.Is(err, streams.ErrNoClientAuth) {
				return usageErrorf(cmd, "--nats-listen %s: %v; give --nats-listen-users-file", o.natsListen, err)
			}
			return err
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		natsURL = srv.ClientURL()
		log.Info("embedded nats started", "url", natsURL, "store_dir", dir, "users", len(scfg.Users), "tls", scfg.TLSCert != "", "client_certs", scfg.TLSCA != "", "store_encrypted", scfg.StoreKey != "")
		if len(scfg.Users) == 0 {
			log.Warn("embedded nats accepts anonymous clients (loopback only); give --nats-listen-users-file to require authentication")
		}
	}

	// Step 2: connections, checked before anything runs.
	cli, err := o.etcd.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	var nc *nats.Conn
	if srv != nil {
		nc, err = connectInProcess(srv, local, "etcdsync-publish", log)
	} else {
		nc, err = o.nats.connect(natsURL, "etcdsync-publish", log)
	}
	if err != nil {
		return err
	}
	defer nc.Close()
	if local != nil {
		// Readers may not create streams (a stream can republish onto the
		// log's subjects), so the drift stream exists before an auditor
		// connects.
		if err := ensureDriftStream(ctx, nc, o.site); err != nil {
			return err
		}
	}

	// Step 3: run until a signal.
	reg := newRegistry()
	pub, err := publisher.New(cfg, cli, nc, labelled(reg, cfg.Stream.Site, cfg.Stream.Name))
	if err != nil {
		return err
	}
	log.Info("publisher starting", "etcd", o.etcd.endpoints, "nats", redactURL(natsURL), "stream", cfg.Stream.Name, "site", cfg.Stream.Site, "prefix", cfg.Prefix)
	isFenced := func(err error) bool { return errors.Is(err, publisher.ErrFenced) }
	// /readyz fails while the stream does not acknowledge writes (a full
	// store or disk, a stream limit), saying why.
	ready := func(context.Context) error { return pub.Ready() }
	err = runServedReady(ctx, log, o.metricsAddr, reg, []*nats.Conn{nc}, ready, o.elect.wrap(cmd, cfg.Stream.Name, cli, log, isFenced, pub.Run))
	log.Info("publisher stopped", "position", pub.Published().String())
	return err
}

// checkListen reports an error when addr cannot be listened on now.
func checkListen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("embedded nats: %w", err)
	}
	return ln.Close()
}

// ensureDriftStream creates the drift stream of site with the auditor's
// default configuration, unless it exists.
func ensureDriftStream(ctx context.Context, nc *nats.Conn, site string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	acfg := auditor.DefaultConfig()
	acfg.Site = site
	sc := auditor.DriftStreamConfig(acfg)
	if _, err := js.Stream(ctx, sc.Name); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up drift stream %s: %w", sc.Name, err)
	}
	if _, err := js.CreateStream(ctx, sc); err != nil {
		return fmt.Errorf("create drift stream %s: %w", sc.Name, err)
	}
	return nil
}
