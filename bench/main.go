// Command bench measures etcdsync against `etcdctl make-mirror` and against
// etcd's own ingest limit, on real etcd processes on this machine, and
// prints one table with the ratios (make-mirror time / etcdsync time).
//
// Workloads, run for each replicator on freshly wiped primary and standby:
//
//	W1 bootstrap: the primary holds N keys × 1 KiB (Kubernetes-like layout),
//	   the standby is empty: time until the standby holds every key.
//	W2 burst: pipeline caught up, then B single-key puts from 64 clients at
//	   the primary's full speed: time until the standby holds every key, and
//	   the replication lag sampled every 50 ms during the burst.
//	W3 steady: R revisions/s for D: replication lag p50/p99/max.
//
// Right after W1 of each etcdsync run, `etcdsync verify --standby-endpoints`
// runs as a process against the standby just bootstrapped (retried while it
// exits 3: the applier may still be applying the snapshot), and its wall
// time and peak RSS (getrusage ru_maxrss) are printed.
//
// etcdsync runs twice, unsigned and then signed (--signed, default on: a
// log key ring on publish and apply), and W2 and W3 are printed side by
// side with the signed/unsigned ratio (the target: within 5%). With --r3
// (default on) it runs once more, unsigned, its log stream at 3 replicas
// on a three-server NATS cluster, and W2 and W3 are printed beside the
// single-server run with the R3/R1 ratio.
//
// etcd's limit is the standby server's ingest rate with batched txns (128
// puts, 8 in flight) and with single puts (64 clients). Peak RSS is VmHWM of
// the `etcdsync publish` and `etcdsync apply` processes.
//
// Lag is measured identically for every replicator: a marker key is written
// on the primary every 50 ms and the standby is watched for it; a marker's
// lag is its arrival on the standby minus the return of its Put.
//
// --baseline BINARY runs the same etcdsync workloads (unsigned) with another
// etcdsync binary right before the main unsigned run, in the same sitting,
// and prints W1, W2 and W3 and the peak RSS of both as current/baseline
// ratios (the target of a change that adds work: within 10%).
//
// --scale runs the scale series instead: W1 of etcdsync (unsigned) at 100k,
// 400k and 1M keys (--scale-keys), each on fresh servers, with etcd's
// batched ingest measured on a fresh etcd at the same key count just
// before, and prints keys/s, the share of etcd's batched ingest, the time
// to the first applied key and the peak RSS of publisher and applier.
//
// --saturate D runs W4 instead (after --scale when both are given): on
// fresh servers, etcdsync (unsigned) bootstraps the standby from --keys
// keys, then 4 clients (--saturate-clients) overwrite random objects on the
// primary unthrottled for D, a marker every 10 s measures the standby's
// lag, and a marker written right after the writes says how far behind the
// standby ended.
//
// --profile DIR runs the publisher and applier inside this process instead
// and writes a CPU profile per workload (DIR/cpu-w1.pprof, ...).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// options are the benchmark's flags.
type options struct {
	quick        bool
	binDir       string
	workDir      string
	keep         bool
	only         string
	signed       bool
	r3           bool
	profileDir   string
	keys         int
	burst        int
	clients      int
	steadyRate   int
	steadyFor    time.Duration
	limitBatched int
	limitSingle  int
	poll         time.Duration
	lagEvery     time.Duration
	w1Timeout    time.Duration
	catchTimeout time.Duration
	// Experiments: another etcdsync binary, extra flags for the standby etcd
	// and for `etcdsync apply` / `etcdsync publish`.
	etcdsyncBin string
	baseline    string
	// Opt-in series run instead of W1–W3 (issue 17).
	scale           bool
	scaleKeys       []int
	saturate        time.Duration
	saturateClients int
	standbyArgs     []string
	applyArgs       []string
	publishArgs     []string
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.quick, "quick", false, "small run: 10k keys, 5k burst, 10s steady (under ~3 minutes)")
	fs.StringVar(&o.binDir, "bin", "bin", "`DIR` holding etcd, etcdctl and etcdsync binaries")
	fs.StringVar(&o.workDir, "work", "", "`DIR` for data and logs (default: a new temporary directory, removed at the end)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (logs of every process)")
	fs.StringVar(&o.only, "only", "both", "run `WHICH`: both, etcdsync (unsigned, then signed with --signed, then R3 with --r3) or make-mirror")
	fs.BoolVar(&o.signed, "signed", true, "also run etcdsync with a log key ring (--log-key-file on publish and apply), right after the unsigned run, and compare W2 and W3")
	fs.BoolVar(&o.r3, "r3", true, "also run etcdsync with its log stream at 3 replicas (--stream-replicas 3) on a three-server NATS cluster in this process, after the other etcdsync runs, and compare W2 and W3 with the single-server run")
	fs.StringVar(&o.profileDir, "profile", "", "run the publisher and applier in process and write CPU profiles per workload to `DIR` (etcdsync only)")
	fs.IntVar(&o.keys, "keys", 0, "W1 keys (default 100000, --quick 10000)")
	fs.IntVar(&o.burst, "burst", 0, "W2 puts (default 50000, --quick 5000)")
	fs.IntVar(&o.clients, "clients", 64, "W2 and single-put limit clients")
	fs.IntVar(&o.steadyRate, "steady-rate", 2000, "W3 revisions per second")
	fs.DurationVar(&o.steadyFor, "steady-duration", 0, "W3 duration (default 60s, --quick 10s)")
	fs.IntVar(&o.limitBatched, "limit-keys", 0, "keys written for the batched limit (default 100000, --quick 20000)")
	fs.IntVar(&o.limitSingle, "limit-puts", 0, "puts written for the single-put limit (default 50000, --quick 5000)")
	fs.DurationVar(&o.poll, "poll", 50*time.Millisecond, "standby count poll interval")
	fs.DurationVar(&o.lagEvery, "lag-interval", 50*time.Millisecond, "marker interval of lag sampling")
	fs.DurationVar(&o.w1Timeout, "w1-timeout", 0, "give up W1 after this (default 300s, --quick 90s)")
	fs.DurationVar(&o.catchTimeout, "catchup-timeout", 0, "give up waiting for the standby after a burst or steady run after this (default 180s, --quick 60s)")
	var standbyArgs, applyArgs, publishArgs, scaleKeys string
	fs.BoolVar(&o.scale, "scale", false, "run the scale series instead of W1–W3: W1 of etcdsync at each of --scale-keys on fresh servers, against etcd's batched ingest at the same key count")
	fs.DurationVar(&o.saturate, "saturate", 0, "run W4 instead of W1–W3: unthrottled writes to the primary for `DURATION` (e.g. 5m), with the standby's lag every 10s")
	fs.IntVar(&o.saturateClients, "saturate-clients", 4, "W4 writing clients")
	fs.StringVar(&scaleKeys, "scale-keys", "100000,400000,1000000", "comma-separated key `COUNTS` of the scale series (k and m suffixes allowed)")
	fs.StringVar(&o.baseline, "baseline", "", "also run the etcdsync workloads (unsigned) with etcdsync `BINARY` (e.g. built from main) right before the main unsigned run, and print current/baseline ratios")
	fs.StringVar(&o.etcdsyncBin, "etcdsync", "", "experiment: etcdsync `BINARY` to run instead of <bin>/etcdsync")
	fs.StringVar(&standbyArgs, "standby-etcd-args", "", "experiment: extra space-separated `FLAGS` for the standby etcd (e.g. --max-txn-ops=1024)")
	fs.StringVar(&applyArgs, "apply-args", "", "experiment: extra space-separated `FLAGS` for etcdsync apply")
	fs.StringVar(&publishArgs, "publish-args", "", "experiment: extra space-separated `FLAGS` for etcdsync publish")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.standbyArgs, o.applyArgs, o.publishArgs = strings.Fields(standbyArgs), strings.Fields(applyArgs), strings.Fields(publishArgs)
	var err error
	if o.scaleKeys, err = parseKeyList(scaleKeys); err != nil {
		return o, fmt.Errorf("--scale-keys: %w", err)
	}
	if (o.scale || o.saturate != 0) && o.profileDir != "" {
		return o, fmt.Errorf("--scale and --saturate run etcdsync processes: not with --profile")
	}
	if o.saturate < 0 || o.saturateClients <= 0 {
		return o, fmt.Errorf("--saturate %s with %d clients: want a positive duration and at least one client", o.saturate, o.saturateClients)
	}
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if o.quick {
				*v = quick
			}
		}
	}
	defD := func(v *time.Duration, full, quick time.Duration) {
		if *v == 0 {
			*v = full
			if o.quick {
				*v = quick
			}
		}
	}
	def(&o.keys, 100_000, 10_000)
	def(&o.burst, 50_000, 5_000)
	def(&o.limitBatched, 100_000, 20_000)
	def(&o.limitSingle, 50_000, 5_000)
	defD(&o.steadyFor, 60*time.Second, 10*time.Second)
	defD(&o.w1Timeout, 300*time.Second, 90*time.Second)
	defD(&o.catchTimeout, 180*time.Second, 60*time.Second)
	switch o.only {
	case "both", "etcdsync", "make-mirror":
	default:
		return o, fmt.Errorf("--only %q: want both, etcdsync or make-mirror", o.only)
	}
	if o.baseline != "" {
		if o.profileDir != "" || o.only == "make-mirror" {
			return o, fmt.Errorf("--baseline runs etcdsync processes: not with --profile or --only make-mirror")
		}
		if o.scale || o.saturate != 0 {
			return o, fmt.Errorf("--baseline compares W1–W3: not with --scale or --saturate")
		}
		abs, err := filepath.Abs(o.baseline)
		if err != nil {
			return o, fmt.Errorf("--baseline %q: %w", o.baseline, err)
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() {
			return o, fmt.Errorf("--baseline %q: not an etcdsync binary (build one: go build -o /tmp/etcdsync-base ./cmd/etcdsync)", o.baseline)
		}
		o.baseline = abs
	}
	if o.profileDir != "" {
		o.only, o.signed, o.r3 = "etcdsync", false, false
	}
	return o, nil
}

// etcdsyncPath is the etcdsync binary measured: --etcdsync, or <bin>/etcdsync.
func (o options) etcdsyncPath() string {
	if o.etcdsyncBin != "" {
		return o.etcdsyncBin
	}
	return filepath.Join(o.binDir, "etcdsync")
}

var benchStart = time.Now()

// progress prints a progress line on stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(benchStart).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	binDir, err := filepath.Abs(o.binDir)
	if err != nil {
		return err
	}
	o.binDir = binDir
	for _, b := range []string{"etcd", "etcdctl", "etcdsync"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return fmt.Errorf("binary %s missing (make bench builds it): %w", b, err)
		}
	}
	if o.workDir == "" {
		if o.workDir, err = os.MkdirTemp("", "etcdsync-bench-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(o.workDir)
		}
	} else if err := os.MkdirAll(o.workDir, 0o755); err != nil {
		return err
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	progress("work directory %s", o.workDir)
	env := describeEnv(binDir)
	if o.scale || o.saturate > 0 {
		var pts []scalePoint
		var sat *saturation
		if o.scale {
			pts = runScale(ctx, o)
		}
		if o.saturate > 0 && ctx.Err() == nil {
			sat = runSaturate(ctx, o)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		printHeader(out, o, env)
		if o.scale {
			printScale(out, o, pts)
		}
		if sat != nil {
			printSaturate(out, sat)
		}
		return nil
	}

	// Step 1: etcd's own limit on a fresh server.
	lim, err := measureLimit(ctx, o)
	if err != nil {
		return fmt.Errorf("etcd limit: %w", err)
	}

	// Step 2: each replicator on fresh servers.
	var results []*result
	if o.only != "make-mirror" {
		bin := o.etcdsyncPath()
		var r replicator = &etcdsyncProcs{bin: bin, workDir: filepath.Join(o.workDir, "etcdsync"), applyArgs: o.applyArgs, publishArgs: o.publishArgs}
		if o.profileDir != "" {
			logf, err := os.Create(filepath.Join(o.workDir, "etcdsync-inprocess.log"))
			if err != nil {
				return err
			}
			defer logf.Close()
			r = &etcdsyncInProcess{workDir: filepath.Join(o.workDir, "etcdsync"), log: slog.New(slog.NewTextHandler(logf, nil))}
		}
		if o.baseline != "" {
			// The baseline right before the run it is compared with: the
			// same sitting, as close in time as the two runs can be.
			results = append(results, runReplicator(ctx, o, &etcdsyncProcs{bin: o.baseline, workDir: filepath.Join(o.workDir, baselineName),
				applyArgs: o.applyArgs, publishArgs: o.publishArgs, baseline: true}))
		}
		if ctx.Err() == nil {
			results = append(results, runReplicator(ctx, o, r))
		}
		if o.signed && o.profileDir == "" && ctx.Err() == nil {
			// Signed right after unsigned: the same sitting, as close in
			// time as the two runs can be.
			results = append(results, runReplicator(ctx, o, &etcdsyncProcs{bin: bin, workDir: filepath.Join(o.workDir, signedName),
				applyArgs: o.applyArgs, publishArgs: o.publishArgs, signed: true}))
		}
		if o.r3 && o.profileDir == "" && ctx.Err() == nil {
			results = append(results, runReplicator(ctx, o, &etcdsyncProcs{bin: bin, workDir: filepath.Join(o.workDir, r3Name),
				applyArgs: o.applyArgs, publishArgs: o.publishArgs, replicas: 3}))
		}
	}
	if o.only != "etcdsync" {
		results = append(results, runReplicator(ctx, o, &makeMirror{bin: filepath.Join(binDir, "etcdctl"), workDir: filepath.Join(o.workDir, "make-mirror")}))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	printReport(out, o, env, lim, results)
	return nil
}

// limits are etcd's own ingest rates on the standby server.
type limits struct {
	batched float64 // keys/s with txns of 128 puts, 8 in flight
	serial  float64 // keys/s with txns of 128 puts, 1 in flight (a serial writer's ceiling)
	single  float64 // puts/s with single puts from o.clients clients
}

func measureLimit(ctx context.Context, o options) (limits, error) {
	var lim limits
	progress("etcd limit: starting a fresh etcd")
	srv, err := startEtcd(ctx, o.binDir, filepath.Join(o.workDir, "limit"), "standby", o.standbyArgs...)
	if err != nil {
		return lim, err
	}
	defer srv.stop()
	cli, err := dialEtcd(srv.endpoint)
	if err != nil {
		return lim, err
	}
	defer cli.Close()
	vals := newValues()
	l := newLayout(o.limitBatched)
	d, err := batchedPuts(ctx, cli, o.limitBatched, 128, 8, l.key, vals, "limit")
	if err != nil {
		return lim, err
	}
	lim.batched = float64(o.limitBatched) / d.Seconds()
	progress("etcd limit: %d keys in txns of 128 puts, 8 in flight: %s (%.0f keys/s)", o.limitBatched, fmtDur(d), lim.batched)
	serialKey := func(i int) string { return "/limit-serial" + l.key(i) }
	d, err = batchedPuts(ctx, cli, o.limitBatched/2, 128, 1, serialKey, vals, "limit")
	if err != nil {
		return lim, err
	}
	lim.serial = float64(o.limitBatched/2) / d.Seconds()
	progress("etcd limit: %d keys in txns of 128 puts, 1 in flight: %s (%.0f keys/s)", o.limitBatched/2, fmtDur(d), lim.serial)
	d, err = singlePuts(ctx, cli, o.limitSingle, o.clients, burstKey, vals, "limit-single")
	if err != nil {
		return lim, err
	}
	lim.single = float64(o.limitSingle) / d.Seconds()
	progress("etcd limit: %d single puts from %d clients: %s (%.0f puts/s)", o.limitSingle, o.clients, fmtDur(d), lim.single)
	return lim, nil
}

// burstKey is the i-th key of the W2 burst (new keys, so the standby's key
// count tells when it holds them all).
func burstKey(i int) string {
	return fmt.Sprintf("/registry/configmaps/burst-ns-%02d/burst-%07d", i%64, i)
}

// result is what one replicator achieved.
type result struct {
	name     string
	err      error // the first failure; later workloads did not run
	loadRate float64

	w1     time.Duration
	w1Keys int64
	// verify is the cost of `etcdsync verify` right after W1 (etcdsync
	// processes only); verifyErr why it is missing.
	verify    *verifyCost
	verifyErr error

	w2Primary  time.Duration // the burst itself on the primary
	w2Complete time.Duration // burst start until the standby holds every key
	w2After    time.Duration // burst end until the standby holds every key
	w2Lag      lagResult

	w3Lag  lagResult
	w3Rate float64

	rss []namedBytes
	cpu []string // per workload CPU breakdown
	// replCPU and primaryCPU are the CPU time of the replicator's
	// processes and of the primary etcd during W2 and W3.
	replCPU, primaryCPU map[string]time.Duration
}

type namedBytes struct {
	name  string
	bytes int64
}

// cluster is the primary and standby etcd of one replicator run.
type cluster struct {
	primary, standby *etcdServer
	pcli, scli       *clientv3.Client
}

func (c *cluster) close() {
	if c.pcli != nil {
		c.pcli.Close()
	}
	if c.scli != nil {
		c.scli.Close()
	}
	if c.primary != nil {
		c.primary.stop()
	}
	if c.standby != nil {
		c.standby.stop()
	}
}

// runReplicator runs W1, W2 and W3 for r on fresh servers. A failure ends
// the run and is recorded in the result.
func runReplicator(ctx context.Context, o options, r replicator) *result {
	res := &result{name: r.Name()}
	dir := filepath.Join(o.workDir, strings.ReplaceAll(strings.Fields(r.Name())[0], "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.err = err
		return res
	}
	c := &cluster{}
	defer c.close()
	res.err = runWorkloads(ctx, o, r, c, dir, res)
	if res.err != nil {
		progress("%s: %v", r.Name(), res.err)
	}
	return res
}

func runWorkloads(ctx context.Context, o options, r replicator, c *cluster, dir string, res *result) error {
	name := r.Name()
	var err error
	// Step 1: fresh servers, the primary loaded.
	progress("%s: starting fresh primary and standby etcd", name)
	if c.primary, err = startEtcd(ctx, o.binDir, dir, "primary"); err != nil {
		return err
	}
	if c.standby, err = startEtcd(ctx, o.binDir, dir, "standby", o.standbyArgs...); err != nil {
		return err
	}
	if c.pcli, err = dialEtcd(c.primary.endpoint); err != nil {
		return err
	}
	if c.scli, err = dialEtcd(c.standby.endpoint); err != nil {
		return err
	}
	vals := newValues()
	l := newLayout(o.keys)
	d, err := batchedPuts(ctx, c.pcli, o.keys, 128, 8, l.key, vals, "load")
	if err != nil {
		return fmt.Errorf("load primary: %w", err)
	}
	res.loadRate = float64(o.keys) / d.Seconds()
	progress("%s: primary loaded with %d keys × %d B in %s", name, o.keys, valueSize, fmtDur(d))
	want, err := countKeys(ctx, c.pcli, registry)
	if err != nil {
		return err
	}
	cpu := newCPUMeter(c)
	poll := &poller{cli: c.scli, interval: o.poll, failed: r.Failed}
	prof := profiler{dir: o.profileDir}
	defer prof.stop()

	// W1: bootstrap.
	progress("%s: W1 bootstrap: starting the replicator", name)
	cpu.mark()
	prof.start("w1")
	t0 := time.Now()
	if err := r.Start(ctx, c.primary.endpoint, c.standby.endpoint); err != nil {
		return err
	}
	defer r.Stop()
	cpu.track(r)
	stopWatch := watchPipeline(r)
	defer stopWatch()
	t1, n, err := poll.waitCount(ctx, registry, want, o.w1Timeout, "W1")
	if err != nil {
		return fmt.Errorf("W1: %w", err)
	}
	prof.stop()
	res.w1, res.w1Keys = t1.Sub(t0), n
	res.cpu = append(res.cpu, cpu.report("W1", t1.Sub(t0)))
	progress("%s: peak RSS after W1: %s", name, peakRSS(r))
	progress("%s: W1 standby holds %d keys after %s (%.0f keys/s; %s)", name, n, fmtDur(res.w1), float64(n)/res.w1.Seconds(), poll.stats())

	// etcdsync verify of the standby just bootstrapped, before the applier
	// has verified anything itself (not for a baseline binary, which may
	// predate verify).
	if e, ok := r.(*etcdsyncProcs); ok && !e.baseline {
		v, err := measureVerify(ctx, e.bin, c.standby.endpoint, n, o.catchTimeout)
		if err != nil {
			res.verifyErr = err
			progress("%s: verify after W1: %v", name, err)
		} else {
			res.verify = &v
			progress("%s: verify of %d keys after W1: %s", name, n, v)
		}
	}

	// Caught up: a marker written now reaches the standby.
	if err := syncMarker(ctx, c, "sync-w2", o.catchTimeout); err != nil {
		return fmt.Errorf("before W2: %w", err)
	}

	// W2: burst.
	progress("%s: W2 burst: %d single puts from %d clients", name, o.burst, o.clients)
	cpu.mark()
	prof.start("w2")
	lp, err := startLagProbe(ctx, c.pcli, c.scli, "w2", o.lagEvery)
	if err != nil {
		return err
	}
	bstart := time.Now()
	d, err = singlePuts(ctx, c.pcli, o.burst, o.clients, burstKey, vals, "burst")
	if err != nil {
		lp.finish(0)
		return fmt.Errorf("W2: %w", err)
	}
	bend := time.Now()
	lp.stopWriting()
	res.w2Primary = d
	progress("%s: W2 burst written in %s (%.0f puts/s); waiting for the standby", name, fmtDur(d), float64(o.burst)/d.Seconds())
	if want, err = countKeys(ctx, c.pcli, registry); err != nil {
		return err
	}
	t2, _, err := poll.waitCount(ctx, registry, want, o.catchTimeout, "W2")
	if err != nil {
		lp.finish(0)
		return fmt.Errorf("W2: %w", err)
	}
	res.w2Complete, res.w2After = t2.Sub(bstart), max(t2.Sub(bend), 0)
	res.w2Lag = lp.finish(o.catchTimeout)
	prof.stop()
	res.cpu = append(res.cpu, cpu.report("W2", t2.Sub(bstart)))
	res.replCPU, res.primaryCPU = map[string]time.Duration{"W2": cpu.lastReplicator}, map[string]time.Duration{"W2": cpu.lastPrimary}
	progress("%s: peak RSS after W2: %s", name, peakRSS(r))
	progress("%s: W2 standby complete %s after the burst started, %s after it ended; lag p50/p99/max %s",
		name, fmtDur(res.w2Complete), fmtDur(res.w2After), res.w2Lag)

	// W3: steady.
	if err := syncMarker(ctx, c, "sync-w3", o.catchTimeout); err != nil {
		return fmt.Errorf("before W3: %w", err)
	}
	progress("%s: W3 steady: %d revisions/s for %s", name, o.steadyRate, o.steadyFor)
	cpu.mark()
	prof.start("w3")
	lp, err = startLagProbe(ctx, c.pcli, c.scli, "w3", o.lagEvery)
	if err != nil {
		return err
	}
	wrote, d, err := pacedPuts(ctx, c.pcli, l, o.steadyRate, o.steadyFor, 32, vals)
	if err != nil {
		lp.finish(0)
		return fmt.Errorf("W3: %w", err)
	}
	res.w3Rate = float64(wrote) / d.Seconds()
	progress("%s: W3 wrote %d revisions in %s (%.0f/s); waiting for the last markers", name, wrote, fmtDur(d), res.w3Rate)
	res.w3Lag = lp.finish(o.catchTimeout)
	prof.stop()
	res.cpu = append(res.cpu, cpu.report("W3", d))
	res.replCPU["W3"], res.primaryCPU["W3"] = cpu.lastReplicator, cpu.lastPrimary
	progress("%s: W3 lag p50/p99/max %s", name, res.w3Lag)
	if err := r.Failed(); err != nil {
		return err
	}

	// Peak RSS of the replicator's processes, read while they still run.
	for _, p := range r.Procs() {
		b, err := procStatus(p.pid(), "VmHWM")
		if err != nil {
			return fmt.Errorf("peak RSS of %s: %w", p.name, err)
		}
		res.rss = append(res.rss, namedBytes{p.name, b})
	}
	return nil
}

// syncMarker writes a key on the primary and waits until the standby has it.
func syncMarker(ctx context.Context, c *cluster, name string, timeout time.Duration) error {
	lp, err := startLagProbe(ctx, c.pcli, c.scli, name, time.Hour)
	if err != nil {
		return err
	}
	r := lp.finish(timeout)
	if r.missing > 0 || len(r.samples) == 0 {
		return fmt.Errorf("marker %s did not reach the standby within %s", name, timeout)
	}
	return nil
}
