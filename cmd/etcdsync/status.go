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
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/streams"
)

// statusError marks a status that could not be read (exit status 3).
type statusError struct{ err error }

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// errLagging is returned by status when the standby lags beyond --max-lag.
var errLagging = fmt.Errorf("standby lagging")

type statusOptions struct {
	standby       etcdFlags
	applierEtcd   etcdFlags
	nats          natsFlags
	site          string
	stream        string
	checkpointKey string
	driftStream   string
	maxLag        time.Duration
	json          bool
	logKey        logKeyFlag
	log           logFlags
}

func statusFlags(o *statusOptions) *flagSet {
	f := newFlagSet("status", "--standby-endpoints URLS --nats-url URL [--json] [--max-lag D]",
		"Shows the pipeline as the standby sees it: the log stream (first/last sequence, bytes,\n"+
			"generation, newest snapshot, the publisher's last revision), the applier's checkpoint\n"+
			"and the lag in messages, revisions and seconds.\n"+
			"With --log-key-file the MACs of the log messages it reads (the last one, the newest snapshot) are\n"+
			"checked: one that fails is reported and nothing is taken from it.\n"+
			"Exit status: 0 healthy, 1 lagging beyond --max-lag (or promoted/bootstrapping/refilling), or a\n"+
			"message read fails its MAC check; 2 bad usage,\n"+
			"3 could not read (or, without --nats-url, the stream and so the lag were not checked).")
	registerSide(f, &o.standby, "standby")
	registerApplierEtcd(f, &o.applierEtcd)
	o.nats.register(f, "`URL` of the NATS servers holding the standby's log stream (empty: stream and lag not checked, exit 3)")
	f.String(&o.site, "site", streams.DefaultSite, "`NAME` of the publishing site in subjects")
	f.String(&o.stream, "stream", streams.DefaultStream, "`NAME` of the log stream")
	f.String(&o.checkpointKey, "checkpoint-key", "", "standby `KEY` holding the checkpoint (default /etcdsync/checkpoint/<stream>)")
	f.String(&o.driftStream, "drift-stream", streams.DefaultDriftStream, "`NAME` of the stream holding the auditor's drift events (the last audit is shown)")
	f.Duration(&o.maxLag, "max-lag", 30*time.Second, "exit 1 when the standby is behind by more than `DURATION`")
	f.Bool(&o.json, "json", false, "print JSON instead of a table")
	o.logKey.register(f, "the MACs of the log's last message (the publisher's position) and of the newest snapshot are checked;\n"+
		"one that fails (forged, altered, replayed or unsigned) is reported, nothing is taken from it, and status exits 1",
		"the log's messages are trusted as they are (the table says so)")
	o.log.register(f, "warn")
	return f
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "status"
	var o statusOptions
	if err := statusFlags(&o).parse(args, stdout); err != nil {
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
	ring, err := o.logKey.load(cmd)
	if err != nil {
		return err
	}
	cli, err := o.standby.connect(ctx)
	if err != nil {
		return &statusError{fmt.Errorf("standby %w", err)}
	}
	defer cli.Close()
	var js jetstream.JetStream
	if o.nats.url != "" {
		nc, err := o.nats.connect(o.nats.url, "etcdsync-status", log)
		if err != nil {
			return &statusError{err}
		}
		defer nc.Close()
		if js, err = jetstream.New(nc); err != nil {
			return &statusError{err}
		}
	}
	st, err := applier.ReadVerifiedStatus(ctx, cli, js, o.stream, o.site, o.checkpointKey, ring)
	if err != nil {
		return &statusError{err}
	}
	out := statusOutput{Status: st}
	if v, ok, err := applier.ReadVerification(ctx, cli, o.stream); err == nil && ok {
		out.Verification = &v
	}
	if js != nil {
		out.LastAudit = lastAudit(ctx, js, o.driftStream, o.site)
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printStatus(stdout, st, o.maxLag)
		printLastAudit(stdout, out.LastAudit)
		printLastVerification(stdout, out.Verification)
	}
	if v := out.Verification; v != nil && v.Result == applier.Mismatch {
		return fmt.Errorf("the applier's last verification found the standby differs from the log in %d resource types: %w", len(v.Resources), errLagging)
	}
	if s := st.Stream; s != nil && len(s.Unauthenticated) > 0 {
		return fmt.Errorf("the log holds messages that fail their MAC check: %s: %w", strings.Join(s.Unauthenticated, "; "), streams.ErrUnauthenticated)
	}
	if st.State != "following" || st.LagSeconds > o.maxLag.Seconds() {
		return errLagging
	}
	if st.OriginUnknown {
		return errLagging
	}
	if !st.StreamChecked {
		return errStreamNotChecked
	}
	return nil
}

// errStreamNotChecked is returned by status without --nats-url: the lag is
// unknown, so it cannot say the standby is healthy (exit status 3).
var errStreamNotChecked = errors.New("stream not checked (no --nats-url): the lag is unknown")

// statusOutput is what `status --json` prints.
type statusOutput struct {
	applier.Status
	LastAudit *auditor.SummaryEvent `json:"last_audit,omitempty"`
	// Verification is the outcome of the applier's last check of the
	// standby against its checkpoint's digest (nil: none recorded).
	Verification *applier.Verification `json:"verification"`
}

// lastAudit reads the newest drift summary the auditor published (nil when
// there is none or it cannot be read: the audit part is informational).
func lastAudit(ctx context.Context, js jetstream.JetStream, stream, site string) *auditor.SummaryEvent {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil
	}
	m, err := s.GetLastMsgForSubject(ctx, auditor.SummarySubject(site))
	if err != nil {
		return nil
	}
	var sum auditor.SummaryEvent
	if json.Unmarshal(m.Data, &sum) != nil || sum.Schema != auditor.SummarySchema {
		return nil
	}
	return &sum
}

func printLastAudit(w io.Writer, a *auditor.SummaryEvent) {
	if a == nil {
		fmt.Fprintf(w, "last audit       none published (run etcdsync audit with --nats-url)\n")
		return
	}
	verdict := "consistent"
	if !a.Consistent {
		verdict = fmt.Sprintf("DRIFT: %d missed, %d surplus, %d mismatched", a.Missed, a.Surplus, a.Mismatched)
	}
	fmt.Fprintf(w, "last audit       %s at source revision %d: %s (%d keys compared)\n", a.Time.UTC().Format(time.RFC3339), a.SourceRevision, verdict, a.KeysCompared)
}

// printLastVerification prints the applier's last verification.
func printLastVerification(w io.Writer, v *applier.Verification) {
	switch {
	case v == nil:
		fmt.Fprintf(w, "verification     UNVERIFIED: none recorded yet (the applier checks every --verify-interval)\n")
	case v.Result == applier.Verified:
		fmt.Fprintf(w, "verification     VERIFIED %s at source revision %d: %d keys, digest %s\n", v.At.UTC().Format(time.RFC3339), v.Position.Revision, v.Keys, v.Digest.Short())
	case v.Result == applier.Mismatch:
		names := make([]string, len(v.Resources))
		for i, r := range v.Resources {
			names[i] = r.Resource
		}
		fmt.Fprintf(w, "verification     UNVERIFIED: MISMATCH %s at source revision %d, in %s (etcdsync verify; RUNBOOK \"What a MISMATCH means\")\n",
			v.At.UTC().Format(time.RFC3339), v.Position.Revision, strings.Join(names, ", "))
	default:
		fmt.Fprintf(w, "verification     UNVERIFIED %s: %s\n", v.At.UTC().Format(time.RFC3339), v.Reason)
	}
}

func printStatus(w io.Writer, st applier.Status, maxLag time.Duration) {
	if s := st.Stream; s == nil {
		fmt.Fprintf(w, "stream           NOT CHECKED (no --nats-url): the lag is unknown\n")
	} else {
		fmt.Fprintf(w, "stream %s\n", s.Name)
		fmt.Fprintf(w, "  sequences      %d..%d (%d messages, %d bytes)\n", s.FirstSeq, s.LastSeq, s.Msgs, s.Bytes)
		switch {
		case !s.Authenticated:
			fmt.Fprintf(w, "  MACs           NOT CHECKED (no --log-key-file): the positions below are trusted as they are\n")
		case len(s.Unauthenticated) == 0:
			fmt.Fprintf(w, "  MACs           verified (the last message and the newest snapshot)\n")
		}
		if m := s.Mirror; m != nil {
			printMirror(w, m, maxLag)
		}
		for _, u := range s.Unauthenticated {
			fmt.Fprintf(w, "  UNAUTHENTICATED %s: not trusted\n", u)
		}
		if s.Generation == 0 && len(s.Unauthenticated) > 0 {
			fmt.Fprintf(w, "  publisher at   unknown (the log's last message is not authenticated)\n")
		} else {
			fmt.Fprintf(w, "  publisher at   generation %d, revision %d\n", s.Generation, s.Revision)
		}
		if n := s.NewestSnapshot; n != nil {
			fmt.Fprintf(w, "  newest snapshot seq %d, generation %d, revision %d, stored %s\n", n.Seq, n.Generation, n.Revision, n.Stored.UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "  newest snapshot none (an applier that needs one will request it)\n")
		}
	}
	fmt.Fprintf(w, "standby applier  %s\n", st.State)
	if s := st.Stream; st.State == "refilling" && s != nil {
		fmt.Fprintf(w, "  the stream ends at seq %d, before the checkpoint's %d: the applier waits for it to refill (apply --reseed would roll the standby back)\n",
			s.LastSeq, st.Checkpoint.Position.Seq)
	}
	if ck := st.Checkpoint; ck != nil {
		fmt.Fprintf(w, "  checkpoint     generation %d, revision %d, seq %d (%s)\n", ck.Position.Generation, ck.Position.Revision, ck.Position.Seq, ck.Position)
		fmt.Fprintf(w, "  applied at     %s (source time %s)\n", ck.AppliedAt.UTC().Format(time.RFC3339), ck.SourceTime.UTC().Format(time.RFC3339Nano))
		if sp := ck.Stopped; sp != nil {
			fmt.Fprintf(w, "  stopped        %s: %s\n", sp.At.UTC().Format(time.RFC3339), sp.Reason)
		}
		if sn := ck.Snapshot; sn != nil {
			fmt.Fprintf(w, "  snapshot       applying revision %d of generation %d: %d keys in %d chunks so far\n", sn.Revision, sn.Generation, sn.Keys, sn.Chunks)
		}
		if h := st.HalfApplied; h != nil {
			fmt.Fprintf(w, "  HALF APPLIED   %s\n", h)
		}
	}
	lagRev := "n/a (different generation or bootstrapping)"
	if st.LagRevisions >= 0 {
		lagRev = fmt.Sprint(st.LagRevisions)
	}
	if !st.StreamChecked {
		fmt.Fprintf(w, "lag              unknown (stream not checked)\n")
		return
	}
	lagSec := fmt.Sprintf("%.3fs", st.LagSeconds)
	if st.OriginUnknown {
		lagSec = "unknown (the mirror never reached its origin)"
	}
	fmt.Fprintf(w, "lag              %d messages, %s revisions, %s\n", st.LagMessages, lagRev, lagSec)
}

// printMirror prints the link from the standby's mirror to its origin: a
// link silent for longer than maxLag is a stall, whatever the local lag.
func printMirror(w io.Writer, m *applier.MirrorStatus, maxLag time.Duration) {
	origin := m.Origin
	if m.OriginDomain != "" {
		origin += " in domain " + m.OriginDomain
	}
	switch {
	case m.LastContactSeconds < 0:
		fmt.Fprintf(w, "  mirror of      %s: NEVER REACHED its origin since the server started: the lag against the primary is unknown\n", origin)
	case m.LastContactSeconds > maxLag.Seconds():
		fmt.Fprintf(w, "  mirror of      %s: STALLED, last contact %.1fs ago (more than --max-lag %s): writes on the primary since then have not reached this site\n",
			origin, m.LastContactSeconds, maxLag)
	default:
		fmt.Fprintf(w, "  mirror of      %s: last contact %.1fs ago\n", origin, m.LastContactSeconds)
	}
	fmt.Fprintf(w, "  origin lag     %d messages not yet copied (as of the last contact)\n", m.OriginLagMessages)
	if m.Error != "" {
		fmt.Fprintf(w, "  MIRROR ERROR   %s\n", m.Error)
	}
}
