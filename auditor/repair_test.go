package auditor_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/internal/testenv"
)

// TestRepairNeverResurrectsDelete deletes a missed key on the primary
// while a repair is between its reads of the checkpoint and of the
// primary, and lets the real applier apply the delete (a no-op on the
// standby, where the key is missing, that only moves the checkpoint). The
// repair must not write the deleted key back.
func TestRepairNeverResurrectsDelete(t *testing.T) {
	e := newEnv(t, true)
	e.startPipeline()
	ctx := testenv.Context(t)
	p, s := e.primary.Client, e.standby.Client
	const gone = "/registry/rolebindings/app/revoked"
	put(t, p, gone, "binding")
	e.waitApplied(put(t, p, "/registry/configmaps/app/a", "a"))
	del(t, s, gone) // the standby lost it: missed

	a := e.auditor(e.config(), nil)
	rep, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(rep.Missed); len(got) != 1 || got[0] != gone || rep.Drifted() != 1 {
		t.Fatalf("drift before repair: %s", fmtKeys(rep))
	}
	var once sync.Once
	auditor.SetBetweenReads(a, func(string) {
		once.Do(func() {
			// The RoleBinding is revoked on the primary and the applier
			// applies the revocation before the repair writes.
			resp, err := p.Delete(context.Background(), gone)
			if err != nil {
				t.Error(err)
				return
			}
			e.waitApplied(resp.Header.Revision)
		})
	})
	res, err := a.Repair(ctx, rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Reason != auditor.SkipPrimaryChanged {
		t.Errorf("repair: %+v", res)
	}
	resp, err := s.Get(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("repair wrote back %s, deleted on the primary (standby mod revision %d)", gone, resp.Kvs[0].ModRevision)
	}
	rep, err = a.Audit(ctx)
	if err != nil || !rep.Consistent {
		t.Fatalf("after repair: %v %s", err, fmtKeys(rep))
	}
}

// TestRepairApplierBusySkips: while the applier moves the checkpoint
// between every read of it and the repair's transaction, the repair
// writes nothing (each transaction fails its checkpoint compare), reads
// both again for each of Config.RepairRetries attempts, and then skips the
// key with SkipApplierBusy.
func TestRepairApplierBusySkips(t *testing.T) {
	e := newEnv(t, false)
	ctx := testenv.Context(t)
	const missed = "/registry/configmaps/app/missed"
	e.copyKeys(map[string]string{missed: "v", "/registry/configmaps/app/b": "b"})
	del(t, e.standby.Client, missed)
	cfg := e.config()
	cfg.RepairRetries = 3
	a := e.auditor(cfg, nil)
	rep, err := a.Audit(ctx)
	if err != nil || rep.Drifted() != 1 || rep.Missed.Count != 1 {
		t.Fatalf("drift before repair: %v %s", err, fmtKeys(rep))
	}
	attempts := 0
	auditor.SetBetweenReads(a, func(string) {
		attempts++
		rewriteCheckpoint(t, e, nil)
	})
	res, err := a.Repair(ctx, rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Reason != auditor.SkipApplierBusy || attempts != cfg.RepairRetries {
		t.Errorf("repair with the checkpoint moving at every attempt: %+v after %d attempts, want %q after %d", res, attempts, auditor.SkipApplierBusy, cfg.RepairRetries)
	}
	if resp, err := e.standby.Client.Get(ctx, missed); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("repair wrote %s while the checkpoint moved (%v)", missed, err)
	}
}

// TestRepairRefusesPromoted: a standby promoted while a repair runs (the
// checkpoint moved, now with the promoted marker) is not written to: the
// repair stops with an error at its next read of the checkpoint.
func TestRepairRefusesPromoted(t *testing.T) {
	e := newEnv(t, false)
	ctx := testenv.Context(t)
	const missed = "/registry/configmaps/app/missed"
	e.copyKeys(map[string]string{missed: "v", "/registry/configmaps/app/b": "b"})
	del(t, e.standby.Client, missed)
	a := e.auditor(e.config(), nil)
	rep, err := a.Audit(ctx)
	if err != nil || rep.Drifted() != 1 {
		t.Fatalf("drift before repair: %v %s", err, fmtKeys(rep))
	}
	auditor.SetBetweenReads(a, func(string) {
		rewriteCheckpoint(t, e, func(ck *applier.Checkpoint) { ck.Promoted = true })
	})
	res, err := a.Repair(ctx, rep)
	if err == nil || !strings.Contains(err.Error(), "promoted") || len(res.Changed) != 0 {
		t.Errorf("repair of a standby promoted meanwhile: %+v, %v; want an error saying promoted and nothing changed", res, err)
	}
	if resp, err := e.standby.Client.Get(ctx, missed); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("repair wrote %s to a promoted standby (%v)", missed, err)
	}
}

// rewriteCheckpoint writes the standby's checkpoint again (a new mod
// revision), changed by mutate if set, as the applier or promote would.
func rewriteCheckpoint(t *testing.T, e *env, mutate func(*applier.Checkpoint)) {
	t.Helper()
	resp, err := e.standby.Client.Get(context.Background(), ckKey)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read checkpoint: %v", err)
	}
	var ck applier.Checkpoint
	if err := json.Unmarshal(resp.Kvs[0].Value, &ck); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&ck)
	}
	b, err := json.Marshal(ck)
	if err != nil {
		t.Fatal(err)
	}
	put(t, e.standby.Client, ckKey, string(b))
}

// A missed key attached to a lease on the primary is not repaired: written
// without a lease it would outlive the lease, and it would sit outside the
// applier's keyspace digest (a verification MISMATCH). The applier writes
// it, with a standby lease, on its next write.
func TestRepairSkipsLeasedKeys(t *testing.T) {
	e := newEnv(t, true)
	e.startPipeline()
	ctx := testenv.Context(t)
	p, s := e.primary.Client, e.standby.Client
	const leased = "/registry/configmaps/app/leased"
	l, err := p.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.Put(ctx, leased, "v", clientv3.WithLease(l.ID))
	if err != nil {
		t.Fatal(err)
	}
	e.waitApplied(resp.Header.Revision)
	e.waitApplied(put(t, p, "/registry/configmaps/app/a", "a"))
	del(t, s, leased) // the standby lost it (its standby lease expired early): missed

	a := e.auditor(e.config(), nil)
	rep, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(rep.Missed); len(got) != 1 || got[0] != leased {
		t.Fatalf("drift before repair: %s", fmtKeys(rep))
	}
	res, err := a.Repair(ctx, rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Reason != auditor.SkipLeased {
		t.Errorf("repair: %+v", res)
	}
	if got, err := s.Get(ctx, leased); err != nil || len(got.Kvs) != 0 {
		t.Fatalf("repair wrote the leased key without its lease (%v)", err)
	}
}
