package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

type promoteOptions struct {
	standby       etcdFlags
	nats          natsFlags
	stream        string
	checkpointKey string
	drainTimeout  time.Duration
	bumpRevision  bool
	bumpMax       int
	newSite       string
	json          bool
	log           logFlags
}

func promoteFlags(o *promoteOptions) *flagSet {
	f := newFlagSet("promote", "--standby-endpoints URLS --nats-url URL [--drain-timeout D] [--bump-revision]",
		"Fails over: waits (up to --drain-timeout) until the applier has applied everything the\n"+
			"standby's stream holds, fences the applier (its next transaction fails and it exits),\n"+
			"and reports the standby's final source position: the failover's data-loss report.\n"+
			"With --bump-revision it raises the standby etcd's revision above the last source\n"+
			"revision seen, so clients' old resourceVersions cannot land inside history they never saw.\n"+
			"Without --nats-url (the stream is lost with the primary site) it fences at once.\n"+
			"Exit status: 0 promoted and drained, 1 promoted with messages left unapplied or with a revision\n"+
			"or snapshot half applied (the report says which and how much), or failed; 2 bad usage.")
	registerSide(f, &o.standby, "standby")
	o.nats.register(f, "`URL` of the NATS servers holding the standby's log stream (empty: unreachable, fence without draining)")
	f.String(&o.stream, "stream", streams.DefaultStream, "`NAME` of the log stream")
	f.String(&o.checkpointKey, "checkpoint-key", "", "standby `KEY` holding the checkpoint (default /etcdsync/checkpoint/<stream>)")
	f.Duration(&o.drainTimeout, "drain-timeout", 30*time.Second, "wait up to `DURATION` for the applier to drain the stream")
	f.Bool(&o.bumpRevision, "bump-revision", false, "raise the standby's revision above the last source revision seen")
	f.Int(&o.bumpMax, "bump-max", 10_000_000, "refuse --bump-revision when more than `N` revisions are needed (use etcdutl snapshot restore --bump-revision offline)")
	f.String(&o.newSite, "publish-site", "standby", "site `NAME` the new primary's publisher will use: a mirror stream becomes writable on etcdsync.<NAME>.log.>")
	f.Bool(&o.json, "json", false, "print the report as JSON")
	o.log.register(f, "info")
	return f
}

func runPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "promote"
	var o promoteOptions
	if err := promoteFlags(&o).parse(args, stdout); err != nil {
		return err
	}
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
		BumpRevision: o.bumpRevision, BumpMax: int64(o.bumpMax),
		Progress: func(done, total int64) { log.Info("bumping standby revision", "done", done, "total", total) }}
	rep, err := applier.Promote(ctx, cfg, cli, js)
	if err != nil && !errors.Is(err, applier.ErrNotDrained) && !errors.Is(err, applier.ErrInconsistent) {
		return err
	}
	if js != nil {
		// The standby's mirror becomes the new primary's writable log.
		if s, serr := js.Stream(ctx, o.stream); serr == nil && s.CachedInfo().Config.Mirror != nil {
			if _, serr := streams.PromoteMirror(ctx, js, o.stream, o.newSite); serr != nil {
				return serr
			}
			log.Info("mirror stream promoted to a writable log", "stream", o.stream, "site", o.newSite)
			fmt.Fprintf(stdout, "stream %s is now writable on etcdsync.%s.log.>: start `etcdsync publish --site %s` here\n", o.stream, o.newSite, o.newSite)
		}
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			return jerr
		}
	} else {
		printPromote(stdout, rep)
	}
	return err
}

func printPromote(w io.Writer, rep applier.PromoteReport) {
	ck := rep.Checkpoint
	fmt.Fprintf(w, "standby promoted: the applier is fenced and will not write again\n")
	if rep.Inconsistent != "" {
		fmt.Fprintf(w, "  WARNING          %s\n", rep.Inconsistent)
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
	fmt.Fprintf(w, "next: point DNS at the standby, enable its controllers (garbage collector), restart long-lived clients\n")
}
