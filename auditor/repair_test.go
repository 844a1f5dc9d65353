package auditor_test

import (
	"context"
	"sync"
	"testing"

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
