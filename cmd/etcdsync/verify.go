package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// errUnverified is returned by verify when there was nothing to compare
// with (no digest in the checkpoint yet, a snapshot in progress).
var errUnverified = errors.New("standby not verified")

type verifyOptions struct {
	standby       etcdFlags
	applierEtcd   etcdFlags
	nats          natsFlags
	site          string
	stream        string
	checkpointKey string
	json          bool
	log           logFlags
}

func verifyFlags(o *verifyOptions) *flagSet {
	f := newFlagSet("verify", "--standby-endpoints URLS [--nats-url URL] [--json]",
		"Proves the standby equals the log in scope, with no access to the primary: scans the\n"+
			"standby's in-scope keys (the scope its applier recorded) at one revision and compares\n"+
			"them with the keyspace digest the applier keeps in its checkpoint. Prints VERIFIED with\n"+
			"the source position, digest and key count, or MISMATCH with the resource types that\n"+
			"differ (something wrote the standby behind the applier's back). With --nats-url it also\n"+
			"says how far the verified position is behind the log.\n"+
			"Exit status: 0 verified, 1 mismatch, 2 bad usage, 3 could not verify (unreachable, or\n"+
			"nothing to compare with yet: no digest in the checkpoint, a snapshot being applied).")
	registerSide(f, &o.standby, "standby")
	registerApplierEtcd(f, &o.applierEtcd)
	o.nats.register(f, "`URL` of the NATS servers holding the standby's log stream (optional: how far the log is ahead)")
	f.String(&o.site, "site", streams.DefaultSite, "`NAME` of the publishing site in subjects")
	f.String(&o.stream, "stream", streams.DefaultStream, "`NAME` of the log stream")
	f.String(&o.checkpointKey, "checkpoint-key", "", "standby `KEY` holding the checkpoint (default "+keyspace.OwnPrefix+"checkpoint/<stream>)")
	f.Bool(&o.json, "json", false, "print JSON instead of text")
	o.log.register(f, "warn")
	return f
}

// verifyOutput is verify's JSON.
type verifyOutput struct {
	applier.Verification
	// LogRevision is the newest source revision in the stream (with
	// --nats-url; -1 when not checked).
	LogRevision int64 `json:"log_revision"`
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "verify"
	var o verifyOptions
	if err := verifyFlags(&o).parse(args, stdout); err != nil {
		return err
	}
	useApplierEtcd(&o.standby, &o.applierEtcd)
	if err := validateSide(cmd, "standby", &o.standby); err != nil {
		return err
	}
	if err := o.nats.validate(cmd); err != nil {
		return err
	}
	log, err := o.log.logger(cmd, stderr)
	if err != nil {
		return err
	}
	cli, err := o.standby.connect(ctx)
	if err != nil {
		return &unreachableError{fmt.Errorf("standby %w", err)}
	}
	defer cli.Close()
	key := o.checkpointKey
	if key == "" {
		key = applier.Config{Stream: o.stream}.EffectiveCheckpointKey()
	}
	v, err := applier.VerifyStandby(ctx, cli, key)
	if err != nil {
		return &unreachableError{err}
	}
	if v.Promoted && v.Result != applier.Verified {
		// Its own clients write it now: a difference proves nothing.
		v.Result, v.Reason = applier.Unverified, "the standby was promoted: from the fence on it takes writes of its own"
	}
	out := verifyOutput{Verification: v, LogRevision: -1}
	if o.nats.url != "" {
		nc, err := o.nats.connect(o.nats.url, "etcdsync-verify", log)
		if err != nil {
			return &unreachableError{err}
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return &unreachableError{err}
		}
		stream, err := js.Stream(ctx, o.stream)
		if err != nil {
			return &unreachableError{fmt.Errorf("open stream %s: %w", o.stream, err)}
		}
		tail, err := streams.ReadTail(ctx, stream, streams.Subjects{Site: o.site})
		if err != nil {
			return &unreachableError{err}
		}
		if tail.ClusterID == v.Position.ClusterID && tail.Generation == v.Position.Generation {
			out.LogRevision = tail.Revision
		}
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printVerification(stdout, out)
	}
	switch {
	case v.Result == applier.Verified:
		return nil
	case v.Result == applier.Mismatch:
		return errDrift
	}
	return errUnverified
}

// printVerification prints a verification as text.
func printVerification(w io.Writer, out verifyOutput) {
	v := out.Verification
	if v.Promoted && v.Result != applier.Verified {
		fmt.Fprintf(w, "UNVERIFIED: the standby was promoted: from the fence on it takes writes of its own, so it differs from the log it followed\n")
		fmt.Fprintf(w, "  position         %s (the last source revision applied)\n", v.Position)
		return
	}
	switch v.Result {
	case applier.Verified:
		fmt.Fprintf(w, "VERIFIED: the standby's in-scope keys are exactly what the log applied\n")
	case applier.Mismatch:
		fmt.Fprintf(w, "MISMATCH: the standby's in-scope keys differ from what the log applied\n")
	default:
		fmt.Fprintf(w, "UNVERIFIED: %s\n", v.Reason)
		return
	}
	fmt.Fprintf(w, "  position         %s (source revision %d)\n", v.Position, v.Position.Revision)
	fmt.Fprintf(w, "  standby revision %d\n", v.StandbyRevision)
	fmt.Fprintf(w, "  digest           %s (%d keys)\n", v.Digest, v.Keys)
	if out.LogRevision >= 0 {
		fmt.Fprintf(w, "  log              at source revision %d (%d revisions ahead)\n", out.LogRevision, out.LogRevision-v.Position.Revision)
	}
	if v.Result == applier.Mismatch {
		fmt.Fprintf(w, "  found            %s (%d keys)\n", v.FoundDigest, v.FoundKeys)
		names := make([]string, len(v.Resources))
		for i, r := range v.Resources {
			names[i] = fmt.Sprintf("%s (%d keys expected, %d found)", r.Resource, r.Keys, r.FoundKeys)
		}
		fmt.Fprintf(w, "  differs in       %s\n", strings.Join(names, ", "))
		fmt.Fprintf(w, "next: see RUNBOOK \"What a MISMATCH means\"; etcdsync audit locates and repairs the keys\n")
	}
}
