package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/keyspace"
)

// defaultAuditMetricsAddr is where `audit --interval` serves /check and
// /metrics by default: loopback, a port of its own (9094), since the
// auditor usually runs next to an applier serving on another port.
const defaultAuditMetricsAddr = "127.0.0.1:9094"

// auditError is an audit that could not run (an etcd unreachable, no
// checkpoint, the primary compacted past the source revision): exit 3.
type auditError struct{ err error }

func (e *auditError) Error() string { return e.err.Error() }
func (e *auditError) Unwrap() error { return e.err }

// auditOptions are the flags of `etcdsync audit`.
type auditOptions struct {
	primary       etcdFlags
	standby       etcdFlags
	nats          natsFlags
	site          string
	stream        string
	checkpointKey string
	prefix        string
	scope         scopeFlags
	once          bool
	interval      time.Duration
	json          bool
	maxKeys       int
	maxEvents     int
	pageSize      int
	pageBytes     int64
	repair        bool
	repairSurplus bool
	printRules    bool
	// scopeOrigins lists the scope options given and where (flagOrigins).
	scopeOrigins []string
	driftStream  string
	driftMaxAge  time.Duration
	metricsAddr  string
	logKey       logKeyFlag
	log          logFlags
}

// registerSide defines the connection flags of one etcd (side "primary" or
// "standby"): --<side>-endpoints, TLS and auth.
func registerSide(f *flagSet, e *etcdFlags, side string) {
	f.List(&e.endpoints, side+"-endpoints", nil, "comma-separated client `URLS` of the "+side+" etcd (required)")
	f.String(&e.cacert, side+"-cacert", "", "`FILE` with the CA certificates that verify the "+side+" etcd servers (TLS)")
	f.String(&e.cert, side+"-cert", "", "client certificate `FILE` for the "+side+" etcd (TLS; needs --"+side+"-key)")
	f.String(&e.key, side+"-key", "", "client key `FILE` for the "+side+" etcd (TLS; needs --"+side+"-cert)")
	f.String(&e.username, side+"-username", "", "`USER` of the "+side+" etcd (etcd auth)")
	f.String(&e.password, side+"-password", "", "`PASSWORD` of the "+side+" etcd (etcd auth; prefer the environment variable)")
}

// validateSide checks the flags of one etcd without touching the network.
func validateSide(cmd, side string, e *etcdFlags) error {
	if len(e.endpoints) == 0 {
		return usageErrorf(cmd, "--%s-endpoints is required", side)
	}
	if (e.cert == "") != (e.key == "") {
		return usageErrorf(cmd, "--%s-cert and --%s-key must be given together", side, side)
	}
	if e.password != "" && e.username == "" {
		return usageErrorf(cmd, "--%s-password needs --%s-username", side, side)
	}
	return nil
}

func auditFlags(o *auditOptions) *flagSet {
	def := auditor.DefaultConfig()
	f := newFlagSet("audit", "--primary-endpoints URLS --standby-endpoints URLS [--once|--interval D] [flags]",
		"The regular status check of a standby: `etcdsync audit --once` prints the lists\n"+
			"\"LOCAL ETCD missed keys\" (on the primary, not on the standby), \"LOCAL ETCD surplus keys\"\n"+
			"(only on the standby) and \"LOCAL ETCD mismatched keys\", each with what to do, and exits\n"+
			"0 consistent, 1 drift or a refused repair, 3 could not audit (3 also while the standby re-seeds).\n\n"+
			"Compares the standby etcd with the primary at one consistent point: the standby at its\n"+
			"revision S, the primary at the source revision P of the applier's checkpoint at S, so\n"+
			"writes in flight never show as drift. Reports keys missed (primary only), surplus\n"+
			"(standby only) and mismatched (values differ, compared byte for byte; a keyed hash shown),\n"+
			"within the scope the applier recorded in the standby next to its checkpoint (rules and\n"+
			"the publisher's prefix). Scope options (--keyspace, --exclude-namespace, --prefix, ...)\n"+
			"override it for the comparison; the report then lists every difference with the\n"+
			"applier's, and --repair refuses to write. --print-rules shows the scope in force.\n"+
			"With --nats-url every report is also published as drift events on\n"+
			"etcdsync.<site>.drift.summary and etcdsync.<site>.drift.key (stream --drift-stream).\n\n"+
			"--once audits once: exit 0 consistent, 1 drift found, 3 could not audit. Otherwise it\n"+
			"audits every --interval and serves /check (the last report; JSON with\n"+
			"Accept: application/json or ?format=json), /metrics, /healthz and /readyz on --metrics-addr.\n"+
			"--repair (implies --once) re-applies missed and mismatched keys from the primary, never\n"+
			"racing the applier, then audits again; surplus keys are deleted only with --repair-surplus.")
	registerSide(f, &o.primary, "primary")
	registerSide(f, &o.standby, "standby")
	o.nats.register(f, "`URL` of the NATS servers for drift events (comma-separated); empty: no drift events")
	f.String(&o.site, "site", def.Site, "`NAME` of the publishing site in subjects (etcdsync.<NAME>.drift.>)")
	f.String(&o.stream, "stream", def.Stream, "`NAME` of the log stream (names the checkpoint key)")
	f.String(&o.checkpointKey, "checkpoint-key", "", "standby `KEY` holding the applier's checkpoint (default "+keyspace.OwnPrefix+"checkpoint/<stream>)")
	f.String(&o.prefix, "prefix", "", "the publisher's --prefix: compare only keys under `PREFIX` (empty: every key)")
	o.scope.register(f, nil)
	f.Bool(&o.once, "once", false, "audit once and exit: 0 consistent, 1 drift, 3 could not audit")
	f.Duration(&o.interval, "interval", def.Interval, "time between audits without --once (the Data Check `INTERVAL`)")
	f.Bool(&o.json, "json", false, "print the report as JSON (with --once)")
	f.Int(&o.maxKeys, "max-keys", def.MaxKeys, "list the first `N` keys of each kind of drift")
	f.Int(&o.maxEvents, "max-events", def.MaxEvents, "publish at most `N` per-key drift events per audit (the summary is always published)")
	f.Int(&o.pageSize, "page-size", int(def.PageSize), "at most `N` keys per paginated read of each etcd")
	f.Bytes(&o.pageBytes, "page-bytes", def.PageBytes, "at most `SIZE` per paginated read of each etcd (fewer keys when values are large): bounds the audit's memory")
	f.Bool(&o.repair, "repair", false, "re-apply missed and mismatched keys from the primary, then audit again (implies --once)")
	f.Bool(&o.repairSurplus, "repair-surplus", false, "with --repair, also delete surplus keys from the standby (confirm with the team first)")
	f.Bool(&o.printRules, "print-rules", false, "print the scope in force (the applier's recorded scope, or these options and how they differ) and exit; reads the standby (and the primary, if given, for excluded namespaces)")
	f.String(&o.driftStream, "drift-stream", def.DriftStream, "`NAME` of the stream holding drift events")
	f.Duration(&o.driftMaxAge, "drift-max-age", def.DriftMaxAge, "keep drift events for `DURATION`")
	o.logKey.register(f, "the value hashes of reports and drift events are HMAC-SHA256 under its signing key (value_hmac_key log:<ID>),\n"+
		"comparable by every holder of the ring (the auditor reads no log message, so it verifies none)",
		"under a random key of this process (hashes compare within its reports only)")
	f.String(&o.metricsAddr, "metrics-addr", defaultAuditMetricsAddr, "serve /check, /metrics, /healthz and /readyz on `ADDR` without --once (empty: off)")
	o.log.register(f, "info")
	return f
}

// config builds the auditor configuration from the flags.
func (o *auditOptions) config() auditor.Config {
	cfg := auditor.DefaultConfig()
	cfg.Stream = o.stream
	cfg.Site = o.site
	cfg.CheckpointKey = o.checkpointKey
	cfg.Prefix = o.prefix
	cfg.Scope = o.scope.config()
	for _, origin := range o.scopeOrigins {
		if strings.HasPrefix(origin, "--prefix ") {
			cfg.ExplicitPrefix = true
		} else {
			cfg.ExplicitScope = true
		}
	}
	cfg.ScopeOrigin = strings.Join(o.scopeOrigins, ", ")
	cfg.Interval = o.interval
	cfg.MaxKeys = o.maxKeys
	cfg.MaxEvents = o.maxEvents
	cfg.PageSize = int64(o.pageSize)
	cfg.PageBytes = o.pageBytes
	cfg.RepairSurplus = o.repairSurplus
	cfg.DriftStream = o.driftStream
	cfg.DriftMaxAge = o.driftMaxAge
	return cfg
}

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "audit"
	var o auditOptions
	fs := auditFlags(&o)
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	o.scopeOrigins = flagOrigins(fs, args, scopeFlagNames())
	if o.printRules {
		if err := validateSide(cmd, "standby", &o.standby); err != nil {
			return err
		}
		return auditPrintRules(ctx, &o, stdout)
	}
	if err := validateSide(cmd, "primary", &o.primary); err != nil {
		return err
	}
	if err := validateSide(cmd, "standby", &o.standby); err != nil {
		return err
	}
	if err := o.nats.validate(cmd); err != nil {
		return err
	}
	if o.repairSurplus && !o.repair {
		return usageErrorf(cmd, "--repair-surplus needs --repair")
	}
	once := o.once || o.repair
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
	if once && !o.json && isTerminal(stderr) {
		cfg.Progress = func(n int64, d time.Duration) {
			fmt.Fprintf(stderr, "\raudit: %d keys compared (%.0f keys/s)   ", n, float64(n)/max(d.Seconds(), 1e-3))
		}
	}
	// A single audit that cannot reach an etcd could not audit (exit 3).
	fail := func(err error) error {
		if once && !errors.Is(err, context.Canceled) {
			return &auditError{err: err}
		}
		return err
	}

	primary, err := o.primary.connect(ctx)
	if err != nil && (once || errors.Is(err, context.Canceled)) {
		return fail(fmt.Errorf("primary %w", err))
	}
	if err != nil {
		// The primary site may be lost: the auditor keeps running (not
		// ready, etcdsync_auditor_primary_up 0), so the failover commands
		// have a pod to run in, and audits again once it answers.
		log.Warn("primary unreachable at start-up: auditing when it answers", "err", err)
		if primary, err = o.primary.client(); err != nil {
			return err
		}
	}
	defer primary.Close()
	standby, err := o.standby.connect(ctx)
	if err != nil {
		return fail(fmt.Errorf("standby %w", err))
	}
	defer standby.Close()
	var (
		js    jetstream.JetStream
		conns []*nats.Conn
	)
	if o.nats.url != "" {
		nc, err := o.nats.connect(o.nats.url, "etcdsync-audit", log)
		if err != nil {
			return fail(err)
		}
		defer nc.Close()
		if js, err = jetstream.New(nc); err != nil {
			return fail(fmt.Errorf("nats %s: %w", redactURL(o.nats.url), err))
		}
		conns = append(conns, nc)
	}

	reg := newRegistry()
	creg := labelled(reg, cfg.Site, cfg.Stream)
	a, err := auditor.New(cfg, primary, standby, js, creg)
	if err != nil {
		return err
	}
	if !once {
		log.Info("auditor starting", "primary", o.primary.endpoints, "standby", o.standby.endpoints, "nats", redactURL(o.nats.url),
			"interval", cfg.Interval, "site", cfg.Site, "scope_options", cfg.ScopeOrigin)
		if js == nil {
			log.Warn("no --nats-url: reports are not published as drift events")
		}
		return runAuditServed(ctx, log, o.metricsAddr, reg, conns, a, newPrimaryProbe(primary, creg))
	}
	return auditOnce(ctx, &o, a, stdout, stderr)
}

// auditOnce audits, prints the report, repairs on request and maps the
// outcome to the exit status.
func auditOnce(ctx context.Context, o *auditOptions, a *auditor.Auditor, stdout, stderr io.Writer) error {
	rep, err := a.Audit(ctx)
	clearProgress(stderr, o)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return &auditError{err: err}
	}
	out := struct {
		Report *auditor.Report       `json:"report"`
		Repair *auditor.RepairResult `json:"repair,omitempty"`
		After  *auditor.Report       `json:"after_repair,omitempty"`
	}{Report: &rep}
	if !o.json {
		if err := rep.WriteText(stdout); err != nil {
			return err
		}
	}
	final := &rep
	if o.repair && !rep.Consistent {
		res, err := a.Repair(ctx, rep)
		out.Repair = &res
		if !o.json {
			writeRepair(stdout, &rep, &res)
		}
		if errors.Is(err, auditor.ErrScopeMismatch) {
			return fmt.Errorf("repair refused: %w", err) // refused, not unreachable: exit 1
		}
		if err != nil {
			return &auditError{err: fmt.Errorf("repair: %w", err)}
		}
		after, err := a.Audit(ctx)
		clearProgress(stderr, o)
		if err != nil {
			return &auditError{err: fmt.Errorf("audit after repair: %w", err)}
		}
		out.After, final = &after, &after
		if !o.json {
			fmt.Fprintf(stdout, "\nafter repair:\n")
			if err := after.WriteText(stdout); err != nil {
				return err
			}
		}
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		var v any = out
		if out.Repair == nil {
			v = out.Report // without --repair: the report alone
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	if !final.Consistent {
		return errDrift
	}
	return nil
}

// auditPrintRules prints the scope an audit would compare now, where it
// comes from, and how it differs from the applier's.
func auditPrintRules(ctx context.Context, o *auditOptions, stdout io.Writer) error {
	cfg := o.config()
	if err := cfg.Validate(); err != nil {
		return usageErrorf("audit", "%v", err)
	}
	standby, err := o.standby.connect(ctx)
	if err != nil {
		return &auditError{err: fmt.Errorf("standby %w", err)}
	}
	defer standby.Close()
	// The primary is read only to look for excluded namespaces, when given.
	primary, where := standby, "on neither side"
	if len(o.primary.endpoints) > 0 {
		if primary, err = o.primary.connect(ctx); err != nil {
			return &auditError{err: fmt.Errorf("primary %w", err)}
		}
		defer primary.Close()
	} else {
		where = "not on the standby (the primary not checked: no --primary-endpoints)"
	}
	a, err := auditor.New(cfg, primary, standby, nil, nil)
	if err != nil {
		return err
	}
	info, prefix, err := a.Scope(ctx)
	if err != nil {
		return &auditError{err: err}
	}
	var b strings.Builder
	switch {
	case info.Source == auditor.ScopeFromApplier:
		fmt.Fprintf(&b, "# scope in force: recorded by the applier at %s (%s)\n", info.Key, info.RecordedAt.UTC().Format(time.RFC3339))
	case !info.Recorded:
		fmt.Fprintf(&b, "# scope in force: this audit's options%s; the applier recorded none at %s\n", parenthesized(info.Origin), info.Key)
	default:
		fmt.Fprintf(&b, "# scope in force: this audit's options%s, instead of the applier's recorded at %s\n", parenthesized(info.Origin), info.Key)
	}
	fmt.Fprintf(&b, "# fingerprint %s", info.Fingerprint)
	if info.ApplierFingerprint != "" {
		fmt.Fprintf(&b, " (the applier's: %s)", info.ApplierFingerprint)
	}
	b.WriteString("\n")
	if prefix == "" {
		b.WriteString("# publisher prefix: every key\n")
	} else {
		fmt.Fprintf(&b, "# publisher prefix: %q\n", prefix)
	}
	for _, d := range info.Differences {
		fmt.Fprintf(&b, "# differs: %s\n", d)
	}
	for _, ns := range info.UnknownNamespaces {
		fmt.Fprintf(&b, "# warning: excluded namespace %q: its Namespace object is %s now: a typo? (the namespace meant is replicated)\n", ns, where)
	}
	if !info.Repairable {
		fmt.Fprintf(&b, "# repair refused: %s\n", info.NotRepairable)
	}
	b.WriteString(info.Rules)
	_, err = io.WriteString(stdout, b.String())
	return err
}

// writeRepair prints what a repair changed and skipped.
func writeRepair(w io.Writer, rep *auditor.Report, res *auditor.RepairResult) {
	fmt.Fprintf(w, "\nrepair of audit %s: %d keys changed, %d skipped\n", rep.ID, len(res.Changed), len(res.Skipped))
	for _, c := range res.Changed {
		fmt.Fprintf(w, "  %-6s %-10s %q (standby revision %d)\n", c.Action, c.State, c.Key, c.StandbyRevision)
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(w, "  skip   %-10s %q: %s\n", s.State, s.Key, s.Reason)
	}
	if res.Untracked > 0 {
		fmt.Fprintf(w, "  %d drifted keys were not tracked by this audit: run the repair again\n", res.Untracked)
	}
}

// clearProgress erases the progress line, if one was drawn.
func clearProgress(stderr io.Writer, o *auditOptions) {
	if !o.json && isTerminal(stderr) {
		fmt.Fprintf(stderr, "\r%60s\r", "")
	}
}

// runAuditServed runs the auditor's interval loop and, when addr is set, an
// HTTP server with /check, /metrics, /healthz and /readyz, like runServed.
// /readyz answers 503 "primary unreachable" while the probe fails.
func runAuditServed(ctx context.Context, log *slog.Logger, addr string, reg *prometheus.Registry, conns []*nats.Conn, a *auditor.Auditor, probe *primaryProbe) error {
	run := func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { probe.run(gctx); return nil })
		g.Go(func() error { return a.Run(gctx) })
		return g.Wait()
	}
	return runServedReady(ctx, log, addr, reg, conns, probe.ready, run, route{path: "/check", handler: a.CheckHandler()})
}

// primaryProbeEvery is how often the auditor checks that the primary answers.
const primaryProbeEvery = 10 * time.Second

// primaryProbe tracks whether the primary etcd answers, for /readyz and
// the etcdsync_auditor_primary_up gauge.
type primaryProbe struct {
	cli  *clientv3.Client
	up   prometheus.Gauge
	last atomic.Pointer[error] // nil pointer: not probed yet; *nil: up
}

func newPrimaryProbe(cli *clientv3.Client, reg prometheus.Registerer) *primaryProbe {
	p := &primaryProbe{cli: cli, up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_auditor_primary_up",
		Help: "1 when the primary etcd answered the auditor's last probe (every 10s), 0 when it did not (primary unreachable)."})}
	reg.MustRegister(p.up)
	return p
}

// probe asks the primary for its member list once.
func (p *primaryProbe) probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	_, err := p.cli.MemberList(ctx)
	if err != nil {
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return
		}
		err = fmt.Errorf("primary unreachable: %w", err)
		p.up.Set(0)
	} else {
		p.up.Set(1)
	}
	p.last.Store(&err)
}

// run probes until ctx ends.
func (p *primaryProbe) run(ctx context.Context) {
	t := time.NewTicker(primaryProbeEvery)
	defer t.Stop()
	for {
		p.probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ready is the auditor's readiness: the primary answered the last probe.
func (p *primaryProbe) ready(context.Context) error {
	last := p.last.Load()
	if last == nil {
		return errors.New("primary not probed yet")
	}
	return *last
}
