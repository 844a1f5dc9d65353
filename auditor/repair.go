package auditor

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
)

// KeyChange is one key Repair changed on the standby.
type KeyChange struct {
	Key       string `json:"key"`
	KeyBase64 string `json:"key_base64,omitempty"`
	State     State  `json:"state"`
	// Action is "put" (missed, mismatched: the primary's value at the
	// source revision) or "delete" (surplus).
	Action string `json:"action"`
	// StandbyRevision is the standby revision of the repair transaction.
	StandbyRevision int64 `json:"standby_revision"`
	// Attempts is the number of transactions tried (more than one when the
	// applier moved the checkpoint in between).
	Attempts int `json:"attempts"`
}

// KeySkip is one drifted key Repair left alone, and why.
type KeySkip struct {
	Key       string `json:"key"`
	KeyBase64 string `json:"key_base64,omitempty"`
	State     State  `json:"state"`
	Reason    string `json:"reason"`
}

// Reasons for skipping a key.
const (
	SkipPrimaryChanged = "in flight: changed or deleted on the primary since the audit (the applier will bring it)"
	SkipStandbyChanged = "in flight: changed on the standby since the audit"
	SkipNowOnPrimary   = "in flight: now on the primary (the applier will bring it)"
	SkipApplierBusy    = "the applier moved the checkpoint at every attempt; run the repair again"
	SkipSurplus        = "surplus key kept: deleting needs RepairSurplus (--repair-surplus)"
	SkipOutOfScope     = "out of scope: never written by a repair"
	SkipLeased         = "attached to a lease on the primary: the applier writes it with a standby lease on its next write (a repair without one would outlive the lease)"
)

// RepairResult says what Repair changed and what it left.
type RepairResult struct {
	// Changed lists the keys written or deleted, in key order.
	Changed []KeyChange `json:"changed"`
	// Skipped lists the drifted keys left alone, with the reason.
	Skipped []KeySkip `json:"skipped"`
	// Untracked counts drifted keys the report did not list (more than
	// Config.MaxTrackedKeys, or a report read back from JSON with
	// Config.MaxKeys keys per state): audit and repair again.
	Untracked int64 `json:"untracked"`
}

// Repair brings the drifted keys of rep back in line with the primary at
// the standby's source revision: missed and mismatched keys are put with
// the primary's value at that revision, and surplus keys are deleted when
// Config.RepairSurplus is set. It never races the applier and never
// writes back a key the primary deleted: for each key it reads the
// checkpoint (source revision P, mod revision M), reads the key on the
// primary at P, and writes in one transaction guarded by M and by the
// key's mod revision the audit saw on the standby. The checkpoint is never
// written. A key the primary no longer holds at P (or, for a surplus key,
// now holds) or that changed on the standby since the audit is skipped as
// in flight; when only the checkpoint moved, both reads are made again, up
// to Config.RepairRetries times, then the key is skipped
// (SkipApplierBusy). A key attached to a lease on the primary is skipped
// (SkipLeased): written without one it would outlive the lease, and sit
// outside the applier's keyspace digest (a verification MISMATCH). Keys outside the scope are never
// touched. Repair blocks until every key is done.
//
// Repair writes nothing and returns ErrScopeMismatch when the scope it
// would compare is not the one the applier recorded in the standby (see
// ScopeInfo; a scope given by Config.ExplicitScope that differs, or no
// record at all), or when that scope changed since rep. It stops with an
// error when the standby is being bootstrapped (ErrNotBootstrapped) or was
// promoted, when its checkpoint moved to another source cluster or
// generation than rep's, or on an etcd error; the result then holds what
// was changed so far.
func (a *Auditor) Repair(ctx context.Context, rep Report) (RepairResult, error) {
	keys, untracked := rep.keys()
	res := RepairResult{Untracked: untracked}
	// The scope as the applier records it now: it may have restarted with
	// other options since the audit.
	sc, err := a.resolveScope(ctx, 0)
	if err != nil {
		return res, err
	}
	switch {
	case !sc.info.Repairable:
		return res, fmt.Errorf("not repairing: %s: %w", sc.info.NotRepairable, ErrScopeMismatch)
	case rep.Scope.Fingerprint != "" && rep.Scope.Fingerprint != sc.info.Fingerprint:
		return res, fmt.Errorf("not repairing: the scope changed since the audit (fingerprint %s, now %s): audit again: %w",
			rep.Scope.Fingerprint, sc.info.Fingerprint, ErrScopeMismatch)
	}
	for _, k := range keys {
		key, err := k.rawKey()
		if err != nil {
			return res, err
		}
		if !sc.inScope([]byte(key)) {
			res.Skipped = append(res.Skipped, KeySkip{Key: k.Key, KeyBase64: k.KeyBase64, State: k.State, Reason: SkipOutOfScope})
			continue
		}
		if k.State == Surplus && !a.cfg.RepairSurplus {
			res.Skipped = append(res.Skipped, KeySkip{Key: k.Key, KeyBase64: k.KeyBase64, State: k.State, Reason: SkipSurplus})
			continue
		}
		change, reason, err := a.repairKey(ctx, &rep, k, key)
		if err != nil {
			return res, err
		}
		if reason != "" {
			res.Skipped = append(res.Skipped, KeySkip{Key: k.Key, KeyBase64: k.KeyBase64, State: k.State, Reason: reason})
			continue
		}
		a.metrics.repaired.Inc()
		a.log.Info("key repaired", "key", k.Key, "state", k.State, "action", change.Action, "standby_revision", change.StandbyRevision)
		res.Changed = append(res.Changed, change)
	}
	return res, nil
}

// repairKey repairs one key; a non-empty reason means it was skipped.
//
// Each attempt reads the standby's checkpoint first (source revision P,
// mod revision M), then the key on the primary pinned at P, and writes in
// one transaction guarded by M and by the key's standby mod revision as
// the audit saw it. While M holds, the standby's in-scope keyspace is the
// primary's at P, so the value read at P is the one the standby must hold,
// and a key deleted on the primary at or before P is never written back
// (the applier's delete of a key absent on the standby changes nothing but
// the checkpoint). When only the checkpoint moved, the attempt starts over
// with both reads.
func (a *Auditor) repairKey(ctx context.Context, rep *Report, k KeyDrift, key string) (KeyChange, string, error) {
	ckKey := a.cfg.checkpointKey()
	resp, err := a.standby.Get(ctx, ckKey)
	if err != nil {
		return KeyChange{}, "", fmt.Errorf("read standby checkpoint %s: %w", ckKey, err)
	}
	kvs := resp.Kvs
	for attempt := 1; attempt <= a.cfg.RepairRetries; attempt++ {
		// Step 1: the checkpoint (P, M), read just before or returned by
		// the previous attempt's failed transaction.
		ck, ckRev, err := a.checkRepairable(rep, kvs)
		if err != nil {
			return KeyChange{}, "", err
		}
		if ck.Partial != nil {
			// A record half applied: the standby is not the primary at
			// any revision. Wait for the applier to finish it.
			if kvs, err = a.waitCheckpoint(ctx); err != nil {
				return KeyChange{}, "", err
			}
			continue
		}
		if a.betweenReads != nil {
			a.betweenReads(key)
		}
		// Step 2: the key on the primary at P.
		pr, err := a.primary.Get(ctx, key, clientv3.WithRev(ck.Position.Revision))
		if err != nil {
			return KeyChange{}, "", a.primaryErr(fmt.Errorf("read primary key %q: %w", key, err), cut{pos: ck.Position})
		}
		var op clientv3.Op
		action := "put"
		switch k.State {
		case Missed, Mismatched:
			if len(pr.Kvs) == 0 || pr.Kvs[0].ModRevision != k.PrimaryModRevision {
				return KeyChange{}, SkipPrimaryChanged, nil
			}
			if pr.Kvs[0].Lease != 0 {
				return KeyChange{}, SkipLeased, nil
			}
			op = clientv3.OpPut(key, string(pr.Kvs[0].Value))
		case Surplus:
			if len(pr.Kvs) != 0 {
				return KeyChange{}, SkipNowOnPrimary, nil
			}
			op, action = clientv3.OpDelete(key), "delete"
		default:
			return KeyChange{}, "", fmt.Errorf("repair key %q: unknown state %q", key, k.State)
		}
		// Step 3: write, guarded by M and the key as audited.
		tr, err := a.standby.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(ckKey), "=", ckRev),
			clientv3.Compare(clientv3.ModRevision(key), "=", k.StandbyModRevision),
		).Then(op).Else(clientv3.OpGet(ckKey), clientv3.OpGet(key, clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return KeyChange{}, "", fmt.Errorf("repair key %q: %w", key, err)
		}
		if tr.Succeeded {
			return KeyChange{Key: k.Key, KeyBase64: k.KeyBase64, State: k.State, Action: action, StandbyRevision: tr.Header.Revision, Attempts: attempt}, "", nil
		}
		var standbyRev int64
		if kvs := tr.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			standbyRev = kvs[0].ModRevision
		}
		if standbyRev != k.StandbyModRevision {
			return KeyChange{}, SkipStandbyChanged, nil
		}
		// Only the checkpoint moved: start over from the one just read.
		kvs = tr.Responses[0].GetResponseRange().Kvs
	}
	return KeyChange{}, SkipApplierBusy, nil
}

// waitCheckpoint waits a little and reads the checkpoint again.
func (a *Auditor) waitCheckpoint(ctx context.Context) ([]*mvccpb.KeyValue, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(partialWait):
	}
	key := a.cfg.checkpointKey()
	resp, err := a.standby.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read standby checkpoint %s: %w", key, err)
	}
	return resp.Kvs, nil
}

// checkRepairable decodes the standby's checkpoint (kvs of a Get of its
// key) and returns it with its mod revision, or an error when the standby
// is not in a state to repair.
func (a *Auditor) checkRepairable(rep *Report, kvs []*mvccpb.KeyValue) (applier.Checkpoint, int64, error) {
	key := a.cfg.checkpointKey()
	if len(kvs) == 0 {
		return applier.Checkpoint{}, 0, fmt.Errorf("no checkpoint at %s on the standby: %w", key, ErrNotBootstrapped)
	}
	var ck applier.Checkpoint
	if err := json.Unmarshal(kvs[0].Value, &ck); err != nil {
		return applier.Checkpoint{}, 0, fmt.Errorf("decode standby checkpoint %s: %w", key, err)
	}
	switch pos := rep.Position(); {
	case ck.Promoted:
		return ck, 0, fmt.Errorf("checkpoint %s: the standby was promoted; not repairing", key)
	case ck.Snapshot != nil:
		return ck, 0, fmt.Errorf("checkpoint %s: snapshot being applied: %w", key, ErrNotBootstrapped)
	case ck.Position.ClusterID != pos.ClusterID || ck.Position.Generation != pos.Generation:
		return ck, 0, fmt.Errorf("checkpoint %s moved from cluster %x generation %d to cluster %x generation %d since the audit: audit again",
			key, pos.ClusterID, pos.Generation, ck.Position.ClusterID, ck.Position.Generation)
	}
	return ck, kvs[0].ModRevision, nil
}
