package applier

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// PromoteConfig configures Promote.
type PromoteConfig struct {
	// Stream is the log stream name and CheckpointKey the standby's
	// checkpoint key (default "/etcdsync/checkpoint/<Stream>").
	Stream, CheckpointKey string
	// DrainTimeout bounds the wait for the applier to apply everything the
	// standby's stream holds. Default 30s.
	DrainTimeout time.Duration
	// BumpRevision raises the standby etcd's revision above the last
	// source revision seen, so clients' old resourceVersions cannot land
	// inside history they never saw, then compacts the standby at the
	// bumped revision (what `etcdutl snapshot restore --bump-revision
	// --mark-compacted` does offline): a watch from any older revision is
	// refused as compacted (410 Gone from a kube-apiserver), so every
	// client re-lists instead of resuming with changes it never saw.
	BumpRevision bool
	// BumpMax bounds the revisions BumpRevision may add. Default 10,000,000.
	BumpMax int64
	// Progress, if set, is called while bumping.
	Progress func(done, total int64)
	// Force promotes an etcd that holds no checkpoint (it never received a
	// replica: most likely the primary itself). Without it Promote refuses
	// with ErrNoCheckpoint before writing anything.
	Force bool
	// DryRun reads the checkpoint and the stream and reports what Promote
	// would do, without waiting, fencing or bumping.
	DryRun bool
	// LogKeys, when set, checks the MACs of the messages at the end of the
	// stream that Promote takes its drain target and StreamLastRevision
	// from: a message that does not verify is never applied, so it counts
	// for neither (PromoteReport.Unauthenticated says which).
	LogKeys *streams.KeyRing
}

// PromoteReport is the failover's data-loss report.
type PromoteReport struct {
	// Checkpoint is the fenced checkpoint: the standby's final position.
	Checkpoint Checkpoint `json:"checkpoint"`
	// StreamLastSeq is the last message the standby's stream held.
	StreamLastSeq uint64 `json:"stream_last_seq"`
	// StreamLastRevision is the newest source revision the stream held.
	StreamLastRevision int64 `json:"stream_last_revision"`
	// Unapplied counts stream messages after the checkpoint (0 when drained).
	Unapplied uint64 `json:"unapplied_messages"`
	// Drained reports whether the applier caught up before the fence.
	Drained bool `json:"drained"`
	// AlreadyPromoted reports that an earlier run fenced the standby:
	// nothing was fenced now, Checkpoint is the one that run fenced, and
	// only what that run may have left undone (the revision bump here, the
	// stream step in the command) is done again. Promote's error then
	// wraps ErrPromoted.
	AlreadyPromoted bool `json:"already_promoted,omitempty"`
	// DataLossSince is the source time of the last applied revision:
	// anything the primary committed after it is not on the standby.
	DataLossSince time.Time `json:"data_loss_since"`
	// StandbyRevision is the standby etcd's revision after promotion.
	StandbyRevision int64 `json:"standby_revision"`
	// Bumped is the number of revisions added by BumpRevision.
	Bumped int64 `json:"bumped_revisions"`
	// CompactedRevision is the standby's compaction revision after
	// BumpRevision: the bumped revision, or a later one an earlier run or
	// the standby's own compactor chose. Every revision below it is gone,
	// so a watch resumed from an older resourceVersion gets 410 Gone.
	// Zero without a bump and in a dry run.
	CompactedRevision int64 `json:"compacted_revision,omitempty"`
	// Inconsistent, when set, says why the standby's keyspace is not a copy
	// of the primary at any one revision (a snapshot or a revision was half
	// applied); Promote then returns an error wrapping ErrInconsistent.
	Inconsistent string `json:"inconsistent,omitempty"`
	// ClusterID is the cluster ID (hex) of the primary whose copy the
	// standby holds: the cluster promoted.
	ClusterID string `json:"cluster_id"`
	// DryRun reports that nothing was changed: Checkpoint is the current
	// one, Drained says whether it already covers the stream and Bumped
	// counts the revisions a bump would add.
	DryRun bool `json:"dry_run,omitempty"`
	// HalfApplied is set when the revision after the checkpoint's is half
	// applied (the checkpoint's Partial marker).
	HalfApplied *HalfApplied `json:"half_applied,omitempty"`
	// Authenticated reports that the stream's last messages had their MACs
	// checked (PromoteConfig.LogKeys).
	Authenticated bool `json:"authenticated"`
	// Unauthenticated, set with PromoteConfig.LogKeys, says which messages
	// at the end of the stream fail their MAC check (forged, altered,
	// replayed at another position, or unsigned): the applier never
	// applies them, so neither the drain nor StreamLastRevision counts
	// them, and Promote's error wraps streams.ErrUnauthenticated (the
	// standby is fenced regardless).
	Unauthenticated string `json:"unauthenticated,omitempty"`

	drainTo uint64 // last sequence the applier can reach
}

// ErrNotDrained is wrapped by Promote's error when the applier did not catch
// up within the drain timeout; the standby is fenced regardless.
var ErrNotDrained = errors.New("applier did not drain the stream in time")

// ErrNoCheckpoint is returned by Promote when the etcd holds no checkpoint:
// no applier ever wrote to it, so it is not a standby (perhaps the primary).
var ErrNoCheckpoint = errors.New("no checkpoint: this etcd never received a replica")

// ErrInconsistent is wrapped by Promote's error when the promoted standby
// holds part of a revision or of a snapshot: it is not a copy of the
// primary at any one revision (PromoteReport.Inconsistent says which).
// The standby is fenced regardless.
var ErrInconsistent = errors.New("the promoted standby holds a half-applied revision or snapshot")

// Promote makes the standby independent: it waits (bounded) until the
// applier has applied everything the standby's stream holds, fences the
// applier (writes the promoted marker into the checkpoint, so its next
// transaction fails and it stops with ErrPromoted), optionally bumps the
// standby's revision, and reports the final position. js may be nil when
// the stream is unreachable (lost with the primary site): the fence still
// happens, and the report says nothing is known of unapplied messages.
// Errors after the fence wrap ErrNotDrained (messages left unapplied) and
// ErrInconsistent (a revision or snapshot half applied); the report is
// complete in both cases.
func Promote(ctx context.Context, cfg PromoteConfig, standby *clientv3.Client, js jetstream.JetStream) (PromoteReport, error) {
	if cfg.CheckpointKey == "" {
		cfg.CheckpointKey = keyspace.OwnPrefix + "checkpoint/" + cfg.Stream
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.BumpMax == 0 {
		cfg.BumpMax = 10_000_000
	}
	var rep PromoteReport
	// Step 0: only a standby is promoted.
	ck, ckRev, err := ReadCheckpoint(ctx, standby, cfg.CheckpointKey)
	if err != nil {
		return rep, err
	}
	if ckRev == 0 && !cfg.Force {
		return rep, fmt.Errorf("promote: checkpoint %s absent: %w", cfg.CheckpointKey, ErrNoCheckpoint)
	}
	rep.ClusterID = fmt.Sprintf("%x", ck.Position.ClusterID)
	// Step 1: how far the standby's stream goes.
	if js != nil {
		if err := rep.readStream(ctx, js, cfg.Stream, cfg.LogKeys); err != nil {
			return rep, err
		}
	}
	if ck.Promoted {
		return rep.promotedEarlier(ctx, standby, ck, ckRev, cfg)
	}
	if cfg.DryRun {
		return rep.dryRun(ctx, standby, ck, js != nil, cfg)
	}
	// Step 2: wait for the applier to drain it.
	deadline := time.Now().Add(cfg.DrainTimeout)
	for {
		ck, _, err := ReadCheckpoint(ctx, standby, cfg.CheckpointKey)
		if err != nil {
			return rep, err
		}
		if ck.Promoted {
			return rep, fmt.Errorf("promote: standby already promoted at %s: %w", ck.Position, ErrPromoted)
		}
		if js == nil || (ck.Position.Seq >= rep.drainTo && ck.Snapshot == nil) {
			rep.Drained = js != nil
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Step 3: fence the applier, guarded by the checkpoint's mod revision.
	for attempt := 0; ; attempt++ {
		ck, rev, err := ReadCheckpoint(ctx, standby, cfg.CheckpointKey)
		if err != nil {
			return rep, err
		}
		ck.Promoted = true
		resp, err := standby.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(cfg.CheckpointKey), "=", rev)).
			Then(clientv3.OpPut(cfg.CheckpointKey, ck.encode())).Commit()
		if err != nil {
			return rep, fmt.Errorf("promote: fence applier: %w", err)
		}
		if resp.Succeeded {
			rep.Checkpoint, rep.StandbyRevision = ck, resp.Header.Revision
			break
		}
		if attempt > 100 {
			return rep, fmt.Errorf("promote: fence applier: checkpoint kept changing: %w", ErrConflict)
		}
	}
	rep.DataLossSince = rep.Checkpoint.SourceTime
	if sn := rep.Checkpoint.Snapshot; sn != nil {
		rep.Inconsistent = fmt.Sprintf("a snapshot at source revision %d (generation %d) was half applied (%d keys): the standby mixes its older state with part of that snapshot; re-seed it or audit before serving", sn.Revision, sn.Generation, sn.Keys)
	}
	var logStream jetstream.Stream
	if js != nil {
		if s, err := js.Stream(ctx, cfg.Stream); err == nil {
			logStream = s
		}
	}
	if rep.HalfApplied = halfApplied(ctx, logStream, &rep.Checkpoint); rep.HalfApplied != nil {
		rep.Inconsistent = rep.HalfApplied.String() + ": the standby holds part of one source transaction; audit (and repair) before serving"
	}
	if rep.StreamLastSeq > rep.Checkpoint.Position.Seq {
		rep.Unapplied = rep.StreamLastSeq - rep.Checkpoint.Position.Seq
	}
	// Step 4: make the standby's revision pass every source revision seen.
	if cfg.BumpRevision {
		target := max(rep.Checkpoint.Position.Revision, rep.StreamLastRevision)
		n, rev, err := bumpRevision(ctx, standby, target, cfg)
		rep.Bumped, rep.StandbyRevision = n, max(rev, rep.StandbyRevision)
		if err != nil {
			return rep, err
		}
		// Step 5: no history older than the bump stays watchable.
		if rep.CompactedRevision, err = compactBumped(ctx, standby, rep.StandbyRevision); err != nil {
			return rep, err
		}
	}
	var errs []error
	if !rep.Drained && js != nil {
		errs = append(errs, fmt.Errorf("promote: %d messages unapplied after %s (the standby is fenced): %w", rep.Unapplied, cfg.DrainTimeout, ErrNotDrained))
	}
	if rep.Inconsistent != "" {
		errs = append(errs, fmt.Errorf("promote: %s (the standby is fenced): %w", rep.Inconsistent, ErrInconsistent))
	}
	if rep.Unauthenticated != "" {
		errs = append(errs, fmt.Errorf("promote: %s (the standby is fenced): %w", rep.Unauthenticated, streams.ErrUnauthenticated))
	}
	return rep, errors.Join(errs...)
}

// promotedEarlier completes the report of a standby an earlier run fenced
// (ck is its promoted checkpoint, written at revision fence): a re-run
// after a failure past the fence reports the same position, and finishes
// the revision bump if asked and the standby's revision has not passed the
// target yet, and the compaction if the history before the fence is still
// readable (not in a dry run). Its error wraps ErrPromoted unless the bump fails.
func (rep *PromoteReport) promotedEarlier(ctx context.Context, standby *clientv3.Client, ck Checkpoint, fence int64, cfg PromoteConfig) (PromoteReport, error) {
	resp, err := standby.Get(ctx, cfg.CheckpointKey, clientv3.WithCountOnly())
	if err != nil {
		return *rep, fmt.Errorf("promote: read standby revision: %w", err)
	}
	rep.AlreadyPromoted, rep.DryRun, rep.Checkpoint, rep.StandbyRevision = true, cfg.DryRun, ck, resp.Header.Revision
	rep.DataLossSince = ck.SourceTime
	if rep.StreamLastSeq > ck.Position.Seq {
		rep.Unapplied = rep.StreamLastSeq - ck.Position.Seq
	}
	if target := max(ck.Position.Revision, rep.StreamLastRevision); cfg.BumpRevision {
		if rep.StandbyRevision <= target {
			if cfg.DryRun {
				rep.Bumped = target + 1 - rep.StandbyRevision
			} else {
				n, rev, err := bumpRevision(ctx, standby, target, cfg)
				rep.Bumped, rep.StandbyRevision = n, max(rev, rep.StandbyRevision)
				if err != nil {
					return *rep, err
				}
			}
		}
		if !cfg.DryRun {
			// The earlier run may have stopped between the bump and the
			// compaction: compact now unless it did.
			var err error
			if rep.CompactedRevision, err = compactAfterFence(ctx, standby, fence, rep.StandbyRevision); err != nil {
				return *rep, err
			}
		}
	}
	return *rep, fmt.Errorf("promote: standby already promoted at %s: %w", ck.Position, ErrPromoted)
}

// dryRun completes the report of a dry run from the checkpoint ck.
func (rep *PromoteReport) dryRun(ctx context.Context, standby *clientv3.Client, ck Checkpoint, streamRead bool, cfg PromoteConfig) (PromoteReport, error) {
	resp, err := standby.Get(ctx, cfg.CheckpointKey, clientv3.WithCountOnly())
	if err != nil {
		return *rep, fmt.Errorf("promote: read standby revision: %w", err)
	}
	rep.DryRun, rep.Checkpoint, rep.StandbyRevision = true, ck, resp.Header.Revision
	rep.DataLossSince = ck.SourceTime
	rep.Drained = streamRead && ck.Position.Seq >= rep.drainTo && ck.Snapshot == nil
	if rep.StreamLastSeq > ck.Position.Seq {
		rep.Unapplied = rep.StreamLastSeq - ck.Position.Seq
	}
	if sn := ck.Snapshot; sn != nil {
		rep.Inconsistent = fmt.Sprintf("a snapshot at source revision %d (generation %d) is half applied (%d keys): promoted now, the standby would mix its older state with part of that snapshot", sn.Revision, sn.Generation, sn.Keys)
	}
	if cfg.BumpRevision {
		rep.Bumped = max(max(ck.Position.Revision, rep.StreamLastRevision)+1-rep.StandbyRevision, 0)
	}
	return *rep, nil
}

// maxUnauthenticatedTail bounds the messages readStream reads back from
// the end of the stream looking for one whose MAC verifies.
const maxUnauthenticatedTail = 64

// readStream records the stream's last sequence and newest source
// revision. With a key ring, they come from the newest message whose MAC
// verifies among the last maxUnauthenticatedTail: the applier stops at the
// first one that does not, so what follows it is never applied.
func (rep *PromoteReport) readStream(ctx context.Context, js jetstream.JetStream, name string, ring *streams.KeyRing) error {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("promote: open stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("promote: read stream %s: %w", name, err)
	}
	rep.StreamLastSeq, rep.Authenticated = info.State.LastSeq, ring != nil
	if info.State.LastSeq == 0 {
		return nil
	}
	var (
		bad      int
		firstBad error  // the failure at the lowest sequence read
		lowBad   uint64 // its sequence
		found    bool   // a message was trusted
	)
	for seq := info.State.LastSeq; seq >= max(info.State.FirstSeq, 1) && info.State.LastSeq-seq < maxUnauthenticatedTail; seq-- {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted from the stream's middle
		}
		if err != nil {
			return fmt.Errorf("promote: read stream %s at seq %d: %w", name, seq, err)
		}
		f, ferr := ring.DecodeVerified(m.Data, m.Subject, seq-1)
		if ring != nil {
			if ferr != nil {
				bad, firstBad, lowBad = bad+1, ferr, seq
				continue
			}
		}
		if ferr == nil {
			// From the authenticated record, not the message headers.
			if h, err := streams.RecordHeader(ctx, s, m, f, ring); err == nil {
				rep.StreamLastRevision = h.Revision
			}
		}
		rep.drainTo, found = seq, true
		if ferr == nil && f.Part < f.Parts-1 {
			// The primary died half-way through a record: its first parts
			// can never be applied, so drained means everything before it.
			rep.drainTo = seq - uint64(f.Part) - 1
		}
		break
	}
	if bad == 0 {
		return nil
	}
	if !found {
		// No message verified among those read: the applier can reach
		// at most the one before the lowest of them.
		rep.drainTo = lowBad - 1
	}
	more := ""
	if !found {
		more = fmt.Sprintf("; no message among the last %d verifies, so the stream's newest source revision is unknown", maxUnauthenticatedTail)
	}
	rep.Unauthenticated = fmt.Sprintf("%d message(s) at the end of the stream, seq %d..%d, fail their MAC check and are never applied (at seq %d: %v)%s",
		bad, lowBad, info.State.LastSeq, lowBad, firstBad, more)
	return nil
}

// bumpKey is written repeatedly to raise the standby's revision: each
// write adds exactly one revision.
const bumpKey = keyspace.OwnPrefix + "promote/bump"

// bumpWorkers is the number of concurrent writers raising the revision.
const bumpWorkers = 8

// bumpRevision writes bumpKey until the standby's revision exceeds target,
// from bumpWorkers writers at once.
func bumpRevision(ctx context.Context, cli *clientv3.Client, target int64, cfg PromoteConfig) (int64, int64, error) {
	resp, err := cli.Put(ctx, bumpKey, "start")
	if err != nil {
		return 0, 0, fmt.Errorf("promote: bump revision: %w", err)
	}
	start := resp.Header.Revision
	need := target + 1 - start
	if need > cfg.BumpMax {
		return 1, start, fmt.Errorf("promote: bump revision: %d revisions needed, more than the limit %d; use `etcdutl snapshot restore --bump-revision` offline instead", need, cfg.BumpMax)
	}
	var done, rev atomic.Int64
	rev.Store(start)
	g, gctx := errgroup.WithContext(ctx)
	for range bumpWorkers {
		g.Go(func() error {
			for rev.Load() <= target {
				r, err := cli.Put(gctx, bumpKey, "bump")
				if err != nil {
					return fmt.Errorf("promote: bump revision at %d of %d: %w", rev.Load(), target, err)
				}
				for cur := rev.Load(); r.Header.Revision > cur && !rev.CompareAndSwap(cur, r.Header.Revision); cur = rev.Load() {
				}
				if n := done.Add(1); cfg.Progress != nil && n%10000 == 0 {
					cfg.Progress(n, need)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return done.Load() + 1, rev.Load(), err
	}
	d, err := cli.Delete(ctx, bumpKey)
	if err != nil {
		return done.Load() + 1, rev.Load(), fmt.Errorf("promote: bump revision: remove %s: %w", bumpKey, err)
	}
	return done.Load() + 2, d.Header.Revision, nil
}

// compactBumped compacts the standby at rev, its revision after the bump,
// and returns the standby's compaction revision: rev, or a later one if
// the standby was compacted past it meanwhile (its own compactor).
func compactBumped(ctx context.Context, cli *clientv3.Client, rev int64) (int64, error) {
	if _, err := cli.Compact(ctx, rev); err != nil {
		if !errors.Is(err, rpctypes.ErrCompacted) {
			return 0, fmt.Errorf("promote: compact standby at revision %d: %w", rev, err)
		}
		return compactRevision(ctx, cli, rev)
	}
	return rev, nil
}

// compactAfterFence completes an earlier run's compaction: if the history
// before fence (the promoted checkpoint's revision) is still readable, that
// run stopped between the bump and the compaction, and the standby is
// compacted at its current revision rev; otherwise the compaction it made
// stands (compacting again would discard history written since the
// promotion). It returns the standby's compaction revision.
func compactAfterFence(ctx context.Context, cli *clientv3.Client, fence, rev int64) (int64, error) {
	gone, err := compactedBelow(ctx, cli, fence)
	if err != nil {
		return 0, err
	}
	if !gone {
		return compactBumped(ctx, cli, rev)
	}
	return compactRevision(ctx, cli, fence)
}

// compactedBelow reports whether the standby's history at revision rev-1
// is compacted away: its compaction revision is at least rev.
func compactedBelow(ctx context.Context, cli *clientv3.Client, rev int64) (bool, error) {
	if rev <= 1 {
		return true, nil
	}
	_, err := cli.Get(ctx, bumpKey, clientv3.WithRev(rev-1), clientv3.WithCountOnly())
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("promote: read standby at revision %d: %w", rev-1, err)
	}
	return false, nil
}

// compactRevision returns the standby's compaction revision, known to be
// at least lo: the lowest revision still readable, found by bisection up
// to the standby's current revision.
func compactRevision(ctx context.Context, cli *clientv3.Client, lo int64) (int64, error) {
	resp, err := cli.Get(ctx, bumpKey, clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("promote: read standby revision: %w", err)
	}
	hi := resp.Header.Revision
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		gone, err := compactedBelow(ctx, cli, mid)
		if err != nil {
			return 0, err
		}
		if gone {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}
