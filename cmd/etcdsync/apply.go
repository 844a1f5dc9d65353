package main

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
)

// scopeFlags select the replicated keys (keyspace.Config).
type scopeFlags struct {
	mode              string
	prefix            string
	excludeNamespaces []string
	excludePrefixes   []string
	includePrefixes   []string
	excludeResources  []string
}

func (s *scopeFlags) register(f *flagSet, defExcludeNamespaces []string) {
	def := keyspace.DefaultConfig()
	f.String(&s.mode, "keyspace", def.Mode, "`MODE`: kubernetes (parse Kubernetes keys, apply the kubernetes preset) or raw (plain etcd)")
	f.String(&s.prefix, "etcd-prefix", def.Prefix, "Kubernetes etcd `PREFIX` (kube-apiserver --etcd-prefix); kubernetes mode only")
	f.List(&s.excludeNamespaces, "exclude-namespace", defExcludeNamespaces, "comma-separated `NAMESPACES` to exclude besides the preset's (their keys and Namespace objects)")
	f.List(&s.excludePrefixes, "exclude-prefix", nil, "comma-separated key `PREFIXES` to exclude, e.g. /registry/secrets/")
	f.List(&s.includePrefixes, "include-prefix", nil, "comma-separated key `PREFIXES`; if given, only keys under one of them are in scope")
	f.List(&s.excludeResources, "exclude-resource", nil, "comma-separated `RESOURCES` to exclude: built-in by name (pods, services) or group/resource (cr.example.com/foos)")
}

// podNamespaceEnv names the namespace etcdsync runs in, set from the
// downward API in every shipped manifest. The applier and auditor always
// exclude it: both sites run etcdsync (and its Secrets and configuration)
// there, and neither may receive the other's.
const podNamespaceEnv = "POD_NAMESPACE"

// config builds the scope; the own namespace comes from $POD_NAMESPACE.
func (s *scopeFlags) config() keyspace.Config {
	return keyspace.Config{
		Mode:              s.mode,
		Prefix:            s.prefix,
		OwnNamespace:      os.Getenv(podNamespaceEnv),
		ExcludeNamespaces: s.excludeNamespaces,
		ExcludePrefixes:   s.excludePrefixes,
		IncludePrefixes:   s.includePrefixes,
		ExcludeResources:  s.excludeResources,
	}
}

// applyOptions are the flags of `etcdsync apply`.
type applyOptions struct {
	etcd            etcdFlags
	nats            natsFlags
	site            string
	stream          string
	scope           scopeFlags
	maxTxnOps       int
	maxTxnBytes     int64
	maxRequestBytes int64
	maxDeleteRatio  float64
	allowMassDelete bool
	reseed          bool
	checkpointKey   string
	verifyEvery     time.Duration
	printRules      bool
	elect           electFlags
	metricsAddr     string
	readyMaxLag     time.Duration
	log             logFlags
	logKey          logKeyFlag
}

func applyFlags(o *applyOptions) *flagSet {
	def := applier.DefaultConfig()
	f := newFlagSet("apply", "--etcd-endpoints URLS --nats-url URL [flags]",
		"Replays the JetStream log into the standby etcd, exactly once, from the checkpoint\n"+
			"kept in the standby (bootstrapping from the newest snapshot when it holds none).\n"+
			"Keys outside the scope rules are never written or deleted on the standby;\n"+
			"--print-rules shows the effective rules and exits.")
	o.etcd.register(f, "standby")
	o.nats.register(f, "`URL` of the NATS servers holding the log (comma-separated; required)")
	f.String(&o.site, "site", def.Site, "`NAME` of the publishing site in subjects (etcdsync.<NAME>.log.>)")
	f.String(&o.stream, "stream", def.Stream, "`NAME` of the log stream (on the standby site: its local mirror)")
	o.scope.register(f, nil)
	f.Int(&o.maxTxnOps, "max-txn-ops", def.MaxTxnOps, "`N` operations per standby transaction, checkpoint included (the standby's --max-txn-ops)")
	f.Bytes(&o.maxTxnBytes, "max-txn-bytes", int64(def.MaxTxnBytes), "`SIZE` bound of one standby transaction, checkpoint included (at most --max-request-bytes)")
	f.Bytes(&o.maxRequestBytes, "max-request-bytes", int64(def.MaxRequestBytes), "`SIZE` the standby etcd's --max-request-bytes: a value too large to go with the checkpoint is written alone; one the standby refuses even alone stops the applier")
	f.Float(&o.maxDeleteRatio, "max-delete-ratio", def.MaxDeleteRatio, "largest `RATIO` (0..1) of the standby's in-scope keys a snapshot may delete without --allow-mass-delete")
	f.Float(&o.maxDeleteRatio, "max-reseed-delete-ratio", def.MaxDeleteRatio, "the same as --max-delete-ratio (`RATIO`)")
	f.Bool(&o.allowMassDelete, "allow-mass-delete", false, "let a snapshot delete more than --max-delete-ratio of the standby's in-scope keys")
	f.Bool(&o.reseed, "reseed", false, "re-seed from the stream's newest snapshot even when it is older than the checkpoint (rolls the standby back) instead of waiting for a refilling stream to reach the checkpoint; remove once re-seeded")
	f.String(&o.checkpointKey, "checkpoint-key", "", "standby `KEY` holding the checkpoint (default "+keyspace.OwnPrefix+"checkpoint/<stream>)")
	f.Duration(&o.verifyEvery, "verify-interval", def.VerifyInterval,
		"scan the standby's in-scope keys every `DURATION` (0: never) and compare them with the keyspace digest in the checkpoint (as etcdsync verify does); a mismatch is logged, counted and shown by status")
	o.elect.register(f, "standby")
	o.logKey.register(f, "a message without a valid MAC for its position stops the applier before anything of its batch is written", "")
	f.Bool(&o.printRules, "print-rules", false, "print the effective scope rules and exit without connecting anywhere")
	f.String(&o.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on `ADDR` (e.g. :9091; empty: off)")
	f.Duration(&o.readyMaxLag, "ready-max-lag", 30*time.Second, "/readyz answers 503 while the stream holds unapplied messages and the last applied revision was observed more than `DURATION` ago")
	o.log.register(f, "info")
	return f
}

// config builds the applier configuration from the flags.
func (o *applyOptions) config() applier.Config {
	cfg := applier.DefaultConfig()
	cfg.Stream = o.stream
	cfg.Site = o.site
	cfg.Scope = o.scope.config()
	cfg.MaxTxnOps = o.maxTxnOps
	cfg.MaxTxnBytes = int(o.maxTxnBytes)
	cfg.MaxRequestBytes = int(o.maxRequestBytes)
	cfg.MaxDeleteRatio = o.maxDeleteRatio
	cfg.AllowMassDelete = o.allowMassDelete
	cfg.Reseed = o.reseed
	cfg.CheckpointKey = o.checkpointKey
	cfg.VerifyInterval = o.verifyEvery
	return cfg
}

func runApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "apply"
	var o applyOptions
	fs := applyFlags(&o)
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if o.printRules {
		if err := applyPrintRules(stdout, o.config(), flagOrigins(fs, args, scopeFlagNames())); err != nil {
			return usageErrorf(cmd, "%v", err)
		}
		return nil
	}
	if err := o.etcd.validate(cmd); err != nil {
		return err
	}
	if err := o.elect.validate(cmd); err != nil {
		return err
	}
	if o.readyMaxLag <= 0 {
		return usageErrorf(cmd, "--ready-max-lag must be positive")
	}
	if o.nats.url == "" {
		return usageErrorf(cmd, "--nats-url is required (the NATS servers holding the log, e.g. nats://nats.standby:4222)")
	}
	if err := o.nats.validate(cmd); err != nil {
		return err
	}
	log, err := o.log.logger(cmd, stderr)
	if err != nil {
		return err
	}
	cfg := o.config()
	cfg.Logger = log
	if cfg.LogKeys, err = o.logKey.load(cmd); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageErrorf(cmd, "%v", err)
	}

	cli, err := o.etcd.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	nc, err := o.nats.connect(o.nats.url, "etcdsync-apply", log)
	if err != nil {
		return err
	}
	defer nc.Close()

	reg := newRegistry()
	ap, err := applier.New(cfg, cli, nc, labelled(reg, cfg.Site, cfg.Stream))
	if err != nil {
		return err
	}
	log.Info("applier starting", "etcd", o.etcd.endpoints, "nats", redactURL(o.nats.url), "stream", cfg.Stream, "site", cfg.Site,
		"exclude_namespaces", cfg.Scope.ExcludeNamespaces, "keyspace", cfg.Scope.Mode)
	ready, err := applyReadiness(cli, nc, cfg, o.readyMaxLag)
	if err != nil {
		return err
	}
	err = runServedReady(ctx, log, o.metricsAddr, reg, []*nats.Conn{nc}, ready, o.elect.wrap(cmd, cfg.Stream, cli, log, nil, ap.Run))
	log.Info("applier stopped", "position", ap.Applied().Position.String())
	return err
}
