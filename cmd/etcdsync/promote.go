package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

type promoteOptions struct {
	standby       etcdFlags
	applierEtcd   etcdFlags
	nats          natsFlags
	stream        string
	checkpointKey string
	drainTimeout  time.Duration
	bumpRevision  bool
	bumpMax       int
	newSite       string
	json          bool
	force         bool
	dryRun        bool
	logKey        logKeyFlag
	log           logFlags
}

func promoteFlags(o *promoteOptions) *flagSet {
	f := newFlagSet("promote", "--standby-endpoints URLS --nats-url URL [--drain-timeout D] [--bump-revision]",
		"Fails over: waits (up to --drain-timeout) until the applier has applied everything the\n"+
			"standby's stream holds, fences the applier (its next transaction fails and it exits),\n"+
			"and reports the standby's final source position: the failover's data-loss report.\n"+
			"With --bump-revision it raises the standby etcd's revision above the last source\n"+
			"revision seen, so clients' old resourceVersions cannot land inside history they never saw,\n"+
			"and compacts the standby there: a watch from an older resourceVersion gets 410 Gone (re-list).\n"+
			"Without --nats-url (the stream is lost with the primary site) it fences at once.\n"+
			"With --log-key-file the messages at the end of the stream are MAC-checked: those that fail are never\n"+
			"applied, so they count neither for draining nor for the stream's last revision, and are reported.\n"+
			"Exit status: 0 promoted and drained, 1 promoted with messages left unapplied, with a revision\n"+
			"or snapshot half applied, or with messages failing their MAC check at the stream's end (the report\n"+
			"says which and how much), refused or failed; 2 bad usage,\n"+
			"3 the standby etcd or NATS unreachable.")
	registerSide(f, &o.standby, "standby")
	registerApplierEtcd(f, &o.applierEtcd)
	o.nats.register(f, "`URL` of the NATS servers holding the standby's log stream (empty: unreachable, fence without draining)")
	f.String(&o.stream, "stream", streams.DefaultStream, "`NAME` of the log stream")
	f.String(&o.checkpointKey, "checkpoint-key", "", "standby `KEY` holding the checkpoint (default /etcdsync/checkpoint/<stream>)")
	f.Duration(&o.drainTimeout, "drain-timeout", 30*time.Second, "wait up to `DURATION` for the applier to drain the stream")
	f.Bool(&o.bumpRevision, "bump-revision", false, "raise the standby's revision above the last source revision seen, and compact the standby there")
	f.Int(&o.bumpMax, "bump-max", 10_000_000, "refuse --bump-revision when more than `N` revisions are needed (use etcdutl snapshot restore --bump-revision offline)")
	f.String(&o.newSite, "publish-site", "standby", "site `NAME` the new primary's publisher will use: a mirror stream becomes writable on etcdsync.<NAME>.log.>")
	f.Bool(&o.json, "json", false, "print the report as JSON (and nothing else on stdout)")
	f.Bool(&o.force, "force", false, "promote an etcd that holds no checkpoint (never a standby: perhaps the primary)")
	f.Bool(&o.dryRun, "dry-run", false, "print what would happen and the cluster ID promoted; change nothing")
	o.logKey.register(f, "the stream's last messages are MAC-checked; the drain target and the last source revision (--bump-revision)\n"+
		"come from the newest one that verifies, and those that fail are reported (exit status 1; the standby is fenced regardless)",
		"the stream's last message is trusted as it is")
	o.log.register(f, "info")
	return f
}

func runPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "promote"
	var o promoteOptions
	if err := promoteFlags(&o).parse(args, stdout); err != nil {
		return err
	}
	useApplierEtcd(&o.standby, &o.applierEtcd)
	if err := validateSide(cmd, "standby", &o.standby); err != nil {
		return err
	}
	if err := o.nats.validate(cmd); err != nil {
		return err
	}
	if o.drainTimeout <= 0 {
		return usageErrorf(cmd, "--drain-timeout %s: must be positive", o.drainTimeout)
	}
	log, err := o.log.logger(cmd, stderr)
	if err != nil {
		return err
	}
	ring, err := o.logKey.load(cmd)
	if err != nil {
		return err
	}
	cli, err := o.standby.connect(ctx)
	if err != nil {
		return fmt.Errorf("standby %w", err)
	}
	defer cli.Close()
	var js jetstream.JetStream
	if o.nats.url != "" {
		nc, err := o.nats.connect(o.nats.url, "etcdsync-promote", log)
		if err != nil {
			return err
		}
		defer nc.Close()
		if js, err = jetstream.New(nc); err != nil {
			return err
		}
	} else {
		log.Warn("no --nats-url: fencing without draining; messages that reached the standby's stream but were not applied are unknown")
	}
	cfg := applier.PromoteConfig{Stream: o.stream, CheckpointKey: o.checkpointKey, DrainTimeout: o.drainTimeout,
		BumpRevision: o.bumpRevision, BumpMax: int64(o.bumpMax), Force: o.force, DryRun: o.dryRun, LogKeys: ring,
		Progress: func(done, total int64) { log.Info("bumping standby revision", "done", done, "total", total) }}
	rep, err := applier.Promote(ctx, cfg, cli, js)
	if errors.Is(err, applier.ErrPromoted) && rep.AlreadyPromoted {
		// A re-run: the fence holds; finish what an earlier run left.
		log.Warn("the standby was promoted by an earlier run: the applier is fenced already; completing the steps after the fence",
			"position", rep.Checkpoint.Position.String())
		err = nil
	} else if err != nil && !errors.Is(err, applier.ErrNotDrained) && !errors.Is(err, applier.ErrInconsistent) && !errors.Is(err, streams.ErrUnauthenticated) {
		if errors.Is(err, applier.ErrNoCheckpoint) {
			return fmt.Errorf("%w; refusing to promote an etcd no applier ever wrote to (is it the primary?); --force promotes it anyway", err)
		}
		return err
	}
	out := promoteOutput{PromoteReport: rep}
	if !o.dryRun && (err == nil || errors.Is(err, applier.ErrNotDrained)) {
		// The proof beside the data-loss report: the standby's in-scope
		// keys are exactly what the log applied up to the final position.
		key := o.checkpointKey
		if key == "" {
			key = applier.Config{Stream: o.stream}.EffectiveCheckpointKey()
		}
		v, verr := applier.VerifyStandby(ctx, cli, key)
		if verr != nil {
			v = applier.Verification{Result: applier.Unverified, Reason: "could not verify: " + verr.Error(), At: time.Now(), Resources: []applier.ResourceDiff{}}
		}
		out.Verification = &v
	}
	// The stream step: the standby's mirror becomes the new primary's
	// writable log. The data-loss report is printed before it is tried
	// (as text) or together with its outcome (--json): a failure here
	// loses nothing, and a re-run completes it.
	var mirror bool
	if js != nil {
		s, serr := js.Stream(ctx, o.stream)
		if serr != nil {
			serr = fmt.Errorf("promote: look up stream %s for the stream step: %w (the standby is fenced; re-run promote to complete)", o.stream, serr)
			out.StreamError, err = serr.Error(), errors.Join(err, serr)
		} else if mirror = s.CachedInfo().Config.Mirror != nil; mirror {
			out.WritableStream = &writableStream{Stream: o.stream, Subjects: "etcdsync." + o.newSite + ".log.>", Site: o.newSite}
		}
	}
	promoteStream := func() error {
		if !mirror || o.dryRun {
			return nil
		}
		if _, serr := streams.PromoteMirror(ctx, js, o.stream, o.newSite); serr != nil {
			out.WritableStream = nil
			serr = fmt.Errorf("promote: the standby is fenced, but mirror stream %s is still a mirror: %w; re-run promote to complete the stream step", o.stream, serr)
			out.StreamError = serr.Error()
			return serr
		}
		log.Info("mirror stream promoted to a writable log", "stream", o.stream, "site", o.newSite)
		return nil
	}
	switch {
	case o.json:
		err = errors.Join(err, promoteStream())
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(out); jerr != nil {
			return errors.Join(err, jerr)
		}
	case o.dryRun:
		printPromoteDryRun(stdout, out, o)
	default:
		printPromote(stdout, out)
		if serr := promoteStream(); serr != nil {
			return errors.Join(err, serr)
		}
		printWritableStream(stdout, out)
	}
	return err
}

// promoteOutput is what promote prints (--json: as JSON).
type promoteOutput struct {
	applier.PromoteReport
	// WritableStream is set when the standby's mirror stream became (or,
	// in a dry run, would become) the new primary's writable log.
	WritableStream *writableStream `json:"writable_stream,omitempty"`
	// StreamError says why the stream step failed (the standby is fenced;
	// a re-run completes the step).
	StreamError string `json:"stream_error,omitempty"`
	// Verification is the check of the promoted standby against the
	// keyspace digest in its checkpoint (etcdsync verify), made after the
	// drain; nil in a dry run.
	Verification *applier.Verification `json:"verification,omitempty"`
}

// writableStream is a mirror stream promoted to a writable log.
type writableStream struct {
	Stream   string `json:"stream"`
	Subjects string `json:"subjects"`
	Site     string `json:"publish_site"`
}

// printPromoteDryRun prints what promote would do.
func printPromoteDryRun(w io.Writer, out promoteOutput, o promoteOptions) {
	rep, ck := out.PromoteReport, out.Checkpoint
	fmt.Fprintf(w, "dry run: nothing changed\n")
	fmt.Fprintf(w, "  would promote    the copy of cluster %s held at generation %d, source revision %d, stream seq %d (%s)\n", rep.ClusterID, ck.Position.Generation, ck.Position.Revision, ck.Position.Seq, ck.Position)
	if rep.Inconsistent != "" {
		fmt.Fprintf(w, "  WARNING          %s\n", rep.Inconsistent)
	}
	if rep.Unauthenticated != "" {
		fmt.Fprintf(w, "  UNAUTHENTICATED  %s\n", rep.Unauthenticated)
	}
	switch {
	case rep.AlreadyPromoted:
		fmt.Fprintf(w, "  already fenced   by an earlier promote: nothing to fence\n")
	case o.nats.url == "":
		fmt.Fprintf(w, "  would fence      at once, without draining (no --nats-url: unapplied messages unknown)\n")
	case rep.Drained:
		fmt.Fprintf(w, "  would fence      at once: the applier has applied everything the stream holds (up to seq %d)\n", rep.StreamLastSeq)
	default:
		fmt.Fprintf(w, "  would wait       up to %s for the applier to apply %d messages (the stream holds up to seq %d, source revision %d), then fence\n", o.drainTimeout, rep.Unapplied, rep.StreamLastSeq, rep.StreamLastRevision)
	}
	fmt.Fprintf(w, "  source time      %s: anything the primary committed after it would not be on the standby\n", rep.DataLossSince.UTC().Format(time.RFC3339Nano))
	if o.bumpRevision {
		fmt.Fprintf(w, "  would bump       the standby revision %d by about %d revisions\n", rep.StandbyRevision, rep.Bumped)
		fmt.Fprintf(w, "  would compact    the standby at the bumped revision: a watch or read at an older revision (resourceVersion)\n"+
			"                   is refused as compacted, 410 Gone from a restarted kube-apiserver, so clients re-list\n")
	}
	if ws := out.WritableStream; ws != nil {
		fmt.Fprintf(w, "  would make       mirror stream %s writable on %s\n", ws.Stream, ws.Subjects)
	}
}

// printWritableStream prints the outcome of the stream step.
func printWritableStream(w io.Writer, out promoteOutput) {
	if ws := out.WritableStream; ws != nil {
		fmt.Fprintf(w, "stream %s is now writable on %s: start `etcdsync publish --site %s` here\n", ws.Stream, ws.Subjects, ws.Site)
	} else if out.AlreadyPromoted && out.StreamError == "" {
		fmt.Fprintf(w, "no mirror stream left to make writable: the stream step is done\n")
	}
	fmt.Fprintf(w, "next: point DNS at the standby, enable its controllers (garbage collector), restart its kube-apiservers, then long-lived clients\n")
}

// printPromote prints the data-loss report of a promotion.
func printPromote(w io.Writer, out promoteOutput) {
	rep, ck := out.PromoteReport, out.Checkpoint
	if rep.AlreadyPromoted {
		fmt.Fprintf(w, "standby already promoted by an earlier run: the applier is fenced and will not write again\n")
	} else {
		fmt.Fprintf(w, "standby promoted: the applier is fenced and will not write again\n")
	}
	fmt.Fprintf(w, "  cluster          %s (the primary whose copy is promoted)\n", rep.ClusterID)
	if rep.Inconsistent != "" {
		fmt.Fprintf(w, "  WARNING          %s\n", rep.Inconsistent)
	}
	if rep.Unauthenticated != "" {
		fmt.Fprintf(w, "  UNAUTHENTICATED  %s\n", rep.Unauthenticated)
	}
	fmt.Fprintf(w, "  final position   generation %d, source revision %d, stream seq %d (%s)\n", ck.Position.Generation, ck.Position.Revision, ck.Position.Seq, ck.Position)
	fmt.Fprintf(w, "  source time      %s: anything the primary committed after it is not on the standby\n", rep.DataLossSince.UTC().Format(time.RFC3339Nano))
	if rep.StreamLastSeq > 0 {
		fmt.Fprintf(w, "  stream held      up to seq %d, source revision %d; %d messages left unapplied\n", rep.StreamLastSeq, rep.StreamLastRevision, rep.Unapplied)
	}
	if rep.Bumped > 0 {
		fmt.Fprintf(w, "  standby revision %d (raised by %d revisions)\n", rep.StandbyRevision, rep.Bumped)
	} else {
		fmt.Fprintf(w, "  standby revision %d\n", rep.StandbyRevision)
	}
	if rep.CompactedRevision > 0 {
		fmt.Fprintf(w, "  compacted at revision %d: a watch or read at an older revision (resourceVersion) is refused as\n"+
			"                   compacted, 410 Gone from a restarted kube-apiserver, so clients re-list (a running\n"+
			"                   kube-apiserver's watch cache does not see the compaction: restart the apiservers)\n", rep.CompactedRevision)
	}
	switch v := out.Verification; {
	case v == nil:
	case v.Result == applier.Verified:
		fmt.Fprintf(w, "  verification     VERIFIED: the in-scope keys are exactly what the log applied up to source revision %d (%d keys, digest %s)\n", v.Position.Revision, v.Keys, v.Digest.Short())
	case v.Result == applier.Mismatch:
		names := make([]string, len(v.Resources))
		for i, r := range v.Resources {
			names[i] = r.Resource
		}
		fmt.Fprintf(w, "  verification     UNVERIFIED: MISMATCH in %s: the standby was written behind the applier's back (RUNBOOK \"What a MISMATCH means\")\n", strings.Join(names, ", "))
	default:
		fmt.Fprintf(w, "  verification     UNVERIFIED: %s\n", v.Reason)
	}
}
