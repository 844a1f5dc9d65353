package applier

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/streams"
)

// beginSnapshot starts applying a snapshot unless the standby already holds
// this generation (a periodic snapshot it is past).
func (a *Applier) beginSnapshot(ctx context.Context, r *record) error {
	if err := a.sawSourcePrefix(ctx, string(r.Prefix)); err != nil {
		return err
	}
	w := &a.work
	if !a.reseed && w.olderGeneration(&r.Record) {
		// Never applied mid-session: Reset decides, and without
		// Config.Reseed it waits rather than roll the standby back.
		return fmt.Errorf("snapshot of generation %d at seq %d is older than the standby's history (%s): %w",
			r.Generation, r.seq, w.Position, ErrNoBase)
	}
	if !a.reseed && w.Snapshot == nil && w.Position.Seq != 0 && w.Position.ClusterID == r.ClusterID && w.Position.Generation == r.Generation &&
		r.Revision <= w.Position.Revision {
		// A periodic snapshot of the history the standby follows, at or
		// below its position: nothing to learn from it. (One above the
		// position would mean revisions missing before it: apply it.)
		w.Position.Seq = r.seq
		a.shadow = nil
		if r.Revision == w.Position.Revision {
			// Exactly at the position: its keys are the standby's scope
			// as the log has it now.
			a.shadow = &shadowDigest{cluster: r.ClusterID, gen: r.Generation, rev: r.Revision, d: newScopeDigest(string(r.Prefix), a.rules)}
		}
		return nil
	}
	a.reseed = false // from here on the snapshot state is in the checkpoint
	if err := a.flushIfPending(ctx); err != nil {
		return err
	}
	s := &SnapshotState{ClusterID: r.ClusterID, Generation: r.Generation, Revision: r.Revision, Prefix: string(r.Prefix), BeginSeq: r.seq}
	// Every key this snapshot writes gets a mod revision above the base;
	// whatever is not above it at the end (including keys an interrupted
	// earlier snapshot wrote) is absent from this snapshot.
	base, n, err := a.countInScope(ctx, s.Prefix)
	if err != nil {
		return err
	}
	s.BaseRevision, s.FirstBaseRevision, s.InScopeBefore = base, base, n
	if w.Snapshot != nil {
		// An interrupted snapshot: the mass-delete guard still compares
		// with the keyspace as it was before the first one began, and the
		// keys the interrupted one created are the pipeline's own.
		s.FirstBaseRevision, s.InScopeBefore = w.Snapshot.firstBase(), w.Snapshot.InScopeBefore
	}
	a.log.Info("snapshot apply started", "cluster_id", fmt.Sprintf("%x", r.ClusterID), "generation", r.Generation,
		"revision", r.Revision, "reason", r.Reason, "standby_in_scope_keys", s.InScopeBefore, "seq", r.seq)
	w.Snapshot = s
	w.Position.Seq = r.seq
	// The digests start again with the snapshot: its in-scope keys, and
	// all of its keys.
	w.Digest = newScopeDigest(s.Prefix, a.rules)
	w.LogDigest = &streams.Digest{}
	// A record half applied before (Partial) belongs to the history this
	// snapshot replaces: resuming it would skip events of a record that
	// happens to sit at its sequence.
	w.Partial = nil
	return a.flush(ctx)
}

// endSnapshot deletes the in-scope standby keys the snapshot did not write
// and makes the snapshot's revision the standby's position.
func (a *Applier) endSnapshot(ctx context.Context, r *record) error {
	w := &a.work
	s := w.Snapshot
	if s == nil || s.ClusterID != r.ClusterID || s.Generation != r.Generation || s.Revision != r.Revision {
		if err := a.checkHistory(r); err != nil {
			return err
		}
		w.Position.Seq = r.seq
		a.endShadow(r)
		return nil
	}
	if s.Chunks != r.Chunk || s.Keys != r.Keys {
		return fmt.Errorf("snapshot at revision %d ended at seq %d with %d chunks and %d keys, applied %d chunks and %d keys: %w",
			r.Revision, r.seq, r.Chunk, r.Keys, s.Chunks, s.Keys, streams.ErrCorrupt)
	}
	if err := a.flushIfPending(ctx); err != nil {
		return err
	}
	// Step 1: find in-scope keys the snapshot did not write.
	stale, guarded, err := a.staleKeys(ctx, s)
	if err != nil {
		return err
	}
	// Step 2: refuse a mass deletion unless allowed. Only keys that were
	// on the standby before the bootstrap began count: those an
	// interrupted snapshot of this bootstrap created are the pipeline's own.
	n := int64(len(stale))
	if guarded > a.cfg.MassDeleteMinKeys && !a.cfg.AllowMassDelete && float64(guarded) > a.cfg.MaxDeleteRatio*float64(s.InScopeBefore) {
		return &MassDeleteError{Delete: guarded, InScope: s.InScopeBefore, MaxRatio: a.cfg.MaxDeleteRatio}
	}
	if n > 0 {
		// Say what goes: on a re-joining old primary these are the writes
		// it took after the last revision that reached this side.
		shown := make([]string, 0, min(n, 20))
		for _, k := range stale[:min(n, 20)] {
			shown = append(shown, string(k))
		}
		a.log.Warn("snapshot deletes standby keys it does not hold", "count", n, "first_keys", shown)
	}
	// Step 3: delete them, then move the position to the snapshot.
	for _, k := range stale {
		_, unparsed := a.rules.Check(k)
		if err := a.add(ctx, &streams.Event{Type: streams.EventDelete, Key: k}, unparsed); err != nil {
			return err
		}
	}
	a.chainSnapshotEnd(r, "applied")
	a.log.Info("snapshot applied", "generation", r.Generation, "revision", r.Revision, "keys", s.Keys, "deleted", n, "seq", r.seq)
	w.Position = streams.Position{ClusterID: r.ClusterID, Generation: r.Generation, Revision: r.Revision, Part: r.part, Seq: r.seq}
	w.SourceTime = r.Time
	w.Snapshot = nil
	a.metrics.snapshots.Inc()
	return a.flush(ctx)
}

func (a *Applier) flushIfPending(ctx context.Context) error {
	if len(a.txn.ops) == 0 {
		return nil
	}
	return a.flush(ctx)
}

// scanRange returns the key range a snapshot with prefix covers.
func scanRange(prefix string) (string, string) {
	if prefix == "" {
		return "\x00", "\x00"
	}
	return prefix, clientv3.GetPrefixRangeEnd(prefix)
}

const scanPage = 5000

// scan pages through the standby's keys (keys only) in the prefix, pinned
// at the revision of the first page, and calls fn for each in-scope key.
func (a *Applier) scan(ctx context.Context, prefix string, fn func(kv *mvccpb.KeyValue)) (int64, error) {
	key, end := scanRange(prefix)
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(scanPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := a.etcd.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("scan standby keys under %q: %w", prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if a.rules.Allowed(kv.Key) {
				fn(kv)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (a *Applier) countInScope(ctx context.Context, prefix string) (int64, int64, error) {
	var n int64
	rev, err := a.scan(ctx, prefix, func(*mvccpb.KeyValue) { n++ })
	return rev, n, err
}

// staleKeys returns the in-scope keys the snapshot s did not write (their
// mod revision is not above its base) and how many of them were on the
// standby before the bootstrap's first snapshot began (created at or below
// its base): the deletions the mass-delete guard counts.
func (a *Applier) staleKeys(ctx context.Context, s *SnapshotState) ([][]byte, int64, error) {
	var stale [][]byte
	var guarded int64
	first := s.firstBase()
	_, err := a.scan(ctx, s.Prefix, func(kv *mvccpb.KeyValue) {
		if kv.ModRevision <= s.BaseRevision {
			stale = append(stale, kv.Key)
			if kv.CreateRevision <= first {
				guarded++
			}
		}
	})
	return stale, guarded, err
}
