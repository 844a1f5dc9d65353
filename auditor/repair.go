package auditor

import (
	"context"
	"encoding/json"
	"fmt"
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
	SkipPrimaryChanged = "in flight: changed on the primary since the audit (the applier will bring it)"
	SkipStandbyChanged = "in flight: changed on the standby since the audit"
	SkipNowOnPrimary   = "in flight: now on the primary (the applier will bring it)"
	SkipApplierBusy    = "the applier moved the checkpoint at every attempt; run the repair again"
	SkipSurplus        = "surplus key kept: deleting needs RepairSurplus (--repair-surplus)"
	SkipOutOfScope     = "out of scope: never written by a repair"
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

// Repair brings the drifted keys of rep back in line with the primary:
// missed and mismatched keys are put with the primary's current value, and
// surplus keys are deleted when Config.RepairSurplus is set. It never races
// the applier: for each key it checks that the primary's current value is
// still the one the audit compared at the source revision (or, for a
// surplus key, that the primary still lacks the key), reads the
// checkpoint, and writes in one transaction guarded by the checkpoint's mod
// revision just read and the key's mod revision the audit saw on the
// standby. The checkpoint is never written. A key that changed on either
// side since the audit is skipped as in flight; a transaction that fails
// only because the applier moved the checkpoint is retried with the new one
// up to Config.RepairRetries times, then skipped (SkipApplierBusy). Keys
// are written without a lease (the applier attaches one on the key's next
// write). Keys outside the scope are never touched. Repair blocks until
// every key is done.
//
// Repair stops with an error when the standby is being bootstrapped
// (ErrNotBootstrapped) or was promoted, when its checkpoint moved to
// another source cluster or generation than rep's, or on an etcd error;
// the result then holds what was changed so far.
func (a *Auditor) Repair(ctx context.Context, rep Report) (RepairResult, error) {
	keys, untracked := rep.keys()
	res := RepairResult{Untracked: untracked}
	for _, k := range keys {
		key, err := k.rawKey()
		if err != nil {
			return res, err
		}
		if !a.inScope([]byte(key)) {
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
// The primary is read first: its value is the key's latest, so writing it
// can only be overtaken by a newer write the applier brings later, or be
// refused because the applier already wrote the key on the standby (the
// key's mod revision compare). Then the transaction is tried with the
// checkpoint's mod revision; when only the checkpoint moved, the failed
// transaction's Else branch returns the new checkpoint and it is tried
// again at once, so the window the applier can slip into is one round trip.
func (a *Auditor) repairKey(ctx context.Context, rep *Report, k KeyDrift, key string) (KeyChange, string, error) {
	pr, err := a.primary.Get(ctx, key)
	if err != nil {
		return KeyChange{}, "", fmt.Errorf("read primary key %q: %w", key, err)
	}
	var op clientv3.Op
	action := "put"
	switch k.State {
	case Missed, Mismatched:
		if len(pr.Kvs) == 0 || pr.Kvs[0].ModRevision != k.PrimaryModRevision {
			return KeyChange{}, SkipPrimaryChanged, nil
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

	ckKey := a.cfg.checkpointKey()
	resp, err := a.standby.Get(ctx, ckKey)
	if err != nil {
		return KeyChange{}, "", fmt.Errorf("read standby checkpoint %s: %w", ckKey, err)
	}
	ckRev, err := a.checkRepairable(rep, resp.Kvs)
	if err != nil {
		return KeyChange{}, "", err
	}
	for attempt := 1; attempt <= a.cfg.RepairRetries; attempt++ {
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
		// Only the checkpoint moved: try again with the one just read.
		if ckRev, err = a.checkRepairable(rep, tr.Responses[0].GetResponseRange().Kvs); err != nil {
			return KeyChange{}, "", err
		}
	}
	return KeyChange{}, SkipApplierBusy, nil
}

// checkRepairable decodes the standby's checkpoint (kvs of a Get of its
// key) and returns its mod revision, or an error when the standby is not
// in a state to repair.
func (a *Auditor) checkRepairable(rep *Report, kvs []*mvccpb.KeyValue) (int64, error) {
	key := a.cfg.checkpointKey()
	if len(kvs) == 0 {
		return 0, fmt.Errorf("no checkpoint at %s on the standby: %w", key, ErrNotBootstrapped)
	}
	var ck applier.Checkpoint
	if err := json.Unmarshal(kvs[0].Value, &ck); err != nil {
		return 0, fmt.Errorf("decode standby checkpoint %s: %w", key, err)
	}
	switch pos := rep.Position(); {
	case ck.Promoted:
		return 0, fmt.Errorf("checkpoint %s: the standby was promoted; not repairing", key)
	case ck.Snapshot != nil:
		return 0, fmt.Errorf("checkpoint %s: snapshot being applied: %w", key, ErrNotBootstrapped)
	case ck.Position.ClusterID != pos.ClusterID || ck.Position.Generation != pos.Generation:
		return 0, fmt.Errorf("checkpoint %s moved from cluster %x generation %d to cluster %x generation %d since the audit: audit again",
			key, pos.ClusterID, pos.Generation, ck.Position.ClusterID, ck.Position.Generation)
	}
	return kvs[0].ModRevision, nil
}
