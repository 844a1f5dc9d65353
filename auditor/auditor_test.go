package auditor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/internal/testenv"
)

// TestAuditDriftEventsRepair runs the real pipeline, injects drift on the
// standby (in scope and out of scope), and checks that the audit reports
// exactly the in-scope drift, that the drift events carry it, and that a
// repair makes the next audit clean.
func TestAuditDriftEventsRepair(t *testing.T) {
	e := newEnv(t, true)
	e.scope.ExcludeNamespaces = []string{"ops"}
	e.startPipeline()
	ctx := testenv.Context(t)
	p := e.primary.Client
	for _, k := range []string{"/registry/configmaps/app/a", "/registry/configmaps/app/b", "/registry/configmaps/app/c",
		"/registry/secrets/app/s", "/registry/configmaps/kube-system/k", "/registry/configmaps/ops/o", "/other/plain"} {
		put(t, p, k, "v-"+k)
	}
	e.waitApplied(put(t, p, "/registry/configmaps/app/d", "d"))

	a := e.auditor(e.config(), nil)
	rep, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Consistent || rep.Compared != 5 {
		t.Fatalf("before drift: consistent=%v compared=%d (%s)", rep.Consistent, rep.Compared, fmtKeys(rep))
	}

	// Drift on the standby: in scope...
	s := e.standby.Client
	del(t, s, "/registry/configmaps/app/a")
	put(t, s, "/registry/configmaps/app/b", "changed")
	put(t, s, "/registry/configmaps/app/zz-surplus", "mine")
	// ... and out of scope: an excluded namespace, the preset, outside the
	// Kubernetes prefix, etcdsync's own keys.
	put(t, s, "/registry/configmaps/kube-system/extra", "x")
	put(t, s, "/registry/configmaps/ops/o", "changed")
	del(t, s, "/other/plain")
	put(t, s, "/etcdsync/other", "x")
	// The pipeline keeps running meanwhile.
	e.waitApplied(put(t, p, "/registry/configmaps/app/e", "e"))

	rep, err = a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := `missed ["/registry/configmaps/app/a"] surplus ["/registry/configmaps/app/zz-surplus"] mismatched ["/registry/configmaps/app/b"]`
	if got := fmtKeys(rep); got != want || rep.Consistent || rep.Drifted() != 3 {
		t.Fatalf("drift report:\n got %s\nwant %s", got, want)
	}
	if m := rep.Mismatched.Keys[0]; m.PrimaryHMAC == "" || m.StandbyHMAC == "" || m.PrimaryHMAC == m.StandbyHMAC {
		t.Errorf("mismatched key hashes: %+v", m)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"LOCAL ETCD missed keys: 1", "LOCAL ETCD surplus keys: 1", "LOCAL ETCD mismatched keys: 1", "--repair-surplus", "drift events: 4 messages"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}

	// The drift events carry the same keys.
	if !rep.Events.Published || rep.Events.Messages != 4 {
		t.Fatalf("events: %+v", rep.Events)
	}
	keyEvents, summary := readRun(t, e.js.JS, rep.ID)
	var got []string
	for _, ev := range keyEvents {
		got = append(got, string(ev.State)+" "+ev.Key)
	}
	wantEvents := []string{"missed /registry/configmaps/app/a", "mismatched /registry/configmaps/app/b", "surplus /registry/configmaps/app/zz-surplus"}
	if !slices.Equal(got, wantEvents) {
		t.Errorf("key events %q, want %q", got, wantEvents)
	}
	if summary.Schema != auditor.SummarySchema || summary.Consistent || summary.Missed != 1 || summary.Surplus != 1 ||
		summary.Mismatched != 1 || summary.KeyEvents != 3 || summary.SourceRevision != rep.SourceRevision {
		t.Errorf("summary event: %+v", summary)
	}

	// Repair without --repair-surplus keeps the surplus key.
	res, err := a.Repair(ctx, rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 2 || len(res.Skipped) != 1 || res.Skipped[0].Reason != auditor.SkipSurplus {
		t.Fatalf("repair: %+v", res)
	}
	rep, err = a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmtKeys(rep); got != `missed [] surplus ["/registry/configmaps/app/zz-surplus"] mismatched []` {
		t.Fatalf("after repair: %s", got)
	}

	// With RepairSurplus the surplus key goes too; the pipeline still runs.
	cfg := e.config()
	cfg.RepairSurplus = true
	res, err = e.auditor(cfg, nil).Repair(ctx, rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 1 || res.Changed[0].Action != "delete" {
		t.Fatalf("surplus repair: %+v", res)
	}
	e.waitApplied(put(t, p, "/registry/configmaps/app/f", "f"))
	rep, err = a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Consistent || rep.Compared != 7 {
		t.Fatalf("after repairs: consistent=%v compared=%d %s", rep.Consistent, rep.Compared, fmtKeys(rep))
	}
	// Out-of-scope keys were left alone.
	resp, err := s.Get(ctx, "/registry/configmaps/ops/o")
	if err != nil || string(resp.Kvs[0].Value) != "changed" {
		t.Errorf("excluded key touched: %v %v", resp, err)
	}
}

// readRun reads the drift events of one run from the drift stream.
func readRun(t *testing.T, js jetstream.JetStream, runID string) ([]auditor.KeyEvent, auditor.SummaryEvent) {
	t.Helper()
	ctx := testenv.Context(t)
	cons, err := js.OrderedConsumer(ctx, "ETCDSYNC_DRIFT", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"etcdsync.primary.drift.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var keys []auditor.KeyEvent
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("read drift events: %v", err)
		}
		var probe struct {
			Schema string `json:"schema"`
			RunID  string `json:"run_id"`
		}
		if err := json.Unmarshal(msg.Data(), &probe); err != nil {
			t.Fatalf("drift event %s: %v", msg.Data(), err)
		}
		if probe.RunID != runID {
			continue
		}
		switch probe.Schema {
		case auditor.KeySchema:
			if msg.Subject() != "etcdsync.primary.drift.key" {
				t.Errorf("key event on %s", msg.Subject())
			}
			var ev auditor.KeyEvent
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, ev)
		case auditor.SummarySchema:
			if msg.Subject() != "etcdsync.primary.drift.summary" {
				t.Errorf("summary event on %s", msg.Subject())
			}
			var sum auditor.SummaryEvent
			if err := json.Unmarshal(msg.Data(), &sum); err != nil {
				t.Fatal(err)
			}
			return keys, sum
		default:
			t.Fatalf("unknown drift event schema %q", probe.Schema)
		}
	}
}

// TestAuditUnderLoad audits 20 times while a workload writes through the
// live pipeline: the consistent cut must never report drift.
func TestAuditUnderLoad(t *testing.T) {
	e := newEnv(t, true)
	e.startPipeline()
	ctx := testenv.Context(t)
	p := e.primary.Client
	for i := range 200 {
		put(t, p, keyN(i), "seed")
	}
	e.waitApplied(put(t, p, "/registry/configmaps/app/seeded", "1"))

	// A load of single puts, deletes and multi-key transactions, from 4
	// writers over overlapping keys.
	loadCtx, stopLoad := context.WithCancel(ctx)
	const writers = 4
	loadDone := make(chan int, writers)
	for w := range writers {
		go func() {
			n := 0
			defer func() { loadDone <- n }()
			for ; loadCtx.Err() == nil; n++ {
				i := n*writers + w
				var err error
				switch n % 5 {
				case 0, 1:
					_, err = p.Put(loadCtx, keyN(i*7%300), "v"+time.Now().String())
				case 2:
					_, err = p.Delete(loadCtx, keyN(i*11%300))
				default:
					_, err = p.Txn(loadCtx).Then(
						clientv3.OpPut(keyN(i%300), "t"),
						clientv3.OpPut(keyN((i+150)%300), "u"),
						clientv3.OpDelete(keyN((i+77)%300)),
					).Commit()
				}
				if err != nil && loadCtx.Err() == nil {
					t.Errorf("load: %v", err)
					return
				}
			}
		}()
	}

	a := e.auditor(e.config(), nil)
	var last int64
	for i := range 20 {
		rep, err := a.Audit(ctx)
		if err != nil {
			t.Fatalf("audit %d: %v", i, err)
		}
		if !rep.Consistent || rep.Compared == 0 {
			t.Fatalf("audit %d at S=%d P=%d: false drift: %s", i, rep.StandbyRevision, rep.SourceRevision, fmtKeys(rep))
		}
		if rep.SourceRevision < last {
			t.Fatalf("audit %d: source revision went back from %d to %d", i, last, rep.SourceRevision)
		}
		last = rep.SourceRevision
		time.Sleep(20 * time.Millisecond)
	}

	// A repair under load: drift on keys the load never touches.
	put(t, e.standby.Client, "/registry/configmaps/app/seeded", "drifted")
	del(t, e.standby.Client, keyN(1000))
	put(t, p, keyN(1000), "quiet")
	var rep auditor.Report
	testenv.Eventually(t, 10*time.Second, func() bool {
		var err error
		rep, err = a.Audit(ctx)
		return err == nil && rep.Drifted() == 1 && rep.Mismatched.Count == 1
	}, "the mismatched key reported")
	// "Run the repair again" is the documented answer to an applier that
	// moved the checkpoint at every attempt (a busy machine): at most thrice.
	var res auditor.RepairResult
	var err error
	for try := 0; try < 3; try++ {
		if res, err = a.Repair(ctx, rep); err != nil || len(res.Skipped) != 1 || res.Skipped[0].Reason != auditor.SkipApplierBusy {
			break
		}
	}
	if err != nil || len(res.Changed) != 1 {
		t.Fatalf("repair under load: %+v %v", res, err)
	}
	t.Logf("repair under load took %d attempt(s)", res.Changed[0].Attempts)
	rep, err = a.Audit(ctx)
	if err != nil || !rep.Consistent {
		t.Fatalf("after repair under load: %v %s", err, fmtKeys(rep))
	}

	stopLoad()
	n := 0
	for range writers {
		n += <-loadDone
	}
	if n < 100 {
		t.Errorf("load wrote only %d times", n)
	}
	t.Logf("%d writes through the pipeline during the audits; last source revision audited %d", n, last)
}

func keyN(i int) string { return "/registry/configmaps/load/k" + itoa(i) }

func itoa(i int) string { return fmt.Sprintf("%04d", i) }

// TestRepairSkipsInFlight leaves keys alone that changed on the standby
// since the audit, and repairs the others to the primary's values at the
// checkpoint's source revision, not at the primary's newer ones (the
// applier brings those).
func TestRepairSkipsInFlight(t *testing.T) {
	e := newEnv(t, false)
	ctx := testenv.Context(t)
	e.copyKeys(map[string]string{"/registry/configmaps/app/a": "1", "/registry/configmaps/app/b": "2",
		"/registry/configmaps/app/c": "3", "/registry/configmaps/app/d": "4"})
	s := e.standby.Client
	del(t, s, "/registry/configmaps/app/a")
	put(t, s, "/registry/configmaps/app/b", "x")
	put(t, s, "/registry/configmaps/app/c", "x")
	put(t, s, "/registry/configmaps/app/zz", "x")
	cfg := e.config()
	cfg.RepairSurplus = true
	a := e.auditor(cfg, nil)
	rep, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Drifted() != 4 {
		t.Fatalf("drift: %s", fmtKeys(rep))
	}
	// After the audit: a changes on the primary, b on the standby, zz
	// appears on the primary; c is still as audited. The checkpoint does
	// not move: the standby must hold the primary at the audited revision.
	put(t, e.primary.Client, "/registry/configmaps/app/a", "new")
	put(t, s, "/registry/configmaps/app/b", "y")
	put(t, e.primary.Client, "/registry/configmaps/app/zz", "now")
	res, err := a.Repair(ctx, rep)
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	for _, c := range res.Changed {
		changed = append(changed, c.Action+" "+c.Key)
	}
	if want := []string{"put /registry/configmaps/app/a", "put /registry/configmaps/app/c", "delete /registry/configmaps/app/zz"}; !slices.Equal(changed, want) {
		t.Errorf("changed %q, want %q", changed, want)
	}
	reasons := map[string]string{}
	for _, k := range res.Skipped {
		reasons[k.Key] = k.Reason
	}
	want := map[string]string{
		"/registry/configmaps/app/b": auditor.SkipStandbyChanged,
	}
	if len(reasons) != len(want) {
		t.Errorf("skipped: %+v", res.Skipped)
	}
	for k, r := range want {
		if reasons[k] != r {
			t.Errorf("%s skipped for %q, want %q", k, reasons[k], r)
		}
	}
	for k, v := range map[string]string{"/registry/configmaps/app/a": "1", "/registry/configmaps/app/c": "3"} {
		resp, err := s.Get(ctx, k)
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != v {
			t.Errorf("%s not repaired to %q: %v %v", k, v, resp, err)
		}
	}
	// The checkpoint was not written by the repair.
	ck, _, err := applier.ReadCheckpoint(ctx, s, ckKey)
	if err != nil || ck.Position.Revision != rep.SourceRevision {
		t.Errorf("checkpoint after repair: %+v %v", ck, err)
	}
}

// TestAuditCannotRun covers the states in which there is no consistent
// point to compare at.
func TestAuditCannotRun(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(e *env)
		wantErr error
		wantMsg string
	}{
		{"no checkpoint", func(e *env) {}, auditor.ErrNotBootstrapped, ""},
		{"snapshot in progress", func(e *env) {
			e.writeCheckpoint(put(e.t, e.primary.Client, "/registry/configmaps/app/a", "1"), func(ck *applier.Checkpoint) {
				ck.Snapshot = &applier.SnapshotState{Revision: 5}
			})
		}, auditor.ErrNotBootstrapped, ""},
		{"primary compacted past P", func(e *env) {
			rev := put(e.t, e.primary.Client, "/registry/configmaps/app/a", "1")
			e.writeCheckpoint(rev, nil)
			cur := put(e.t, e.primary.Client, "/registry/configmaps/app/a", "2")
			if _, err := e.primary.Client.Compact(context.Background(), cur); err != nil {
				e.t.Fatal(err)
			}
		}, auditor.ErrCompacted, ""},
		{"other cluster", func(e *env) {
			e.writeCheckpoint(put(e.t, e.primary.Client, "/registry/configmaps/app/a", "1"), func(ck *applier.Checkpoint) {
				ck.Position.ClusterID++
			})
		}, nil, "check --primary-endpoints"},
		{"record half applied", func(e *env) {
			e.writeCheckpoint(put(e.t, e.primary.Client, "/registry/configmaps/app/a", "1"), func(ck *applier.Checkpoint) {
				ck.Partial = &applier.Partial{Seq: 9, Events: 3}
			})
		}, nil, "half applied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, false)
			tt.setup(e)
			_, err := e.auditor(e.config(), nil).Audit(testenv.Context(t))
			if err == nil {
				t.Fatal("audit succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

// TestAuditPagesAndPrefix compares across many small pages, with drift
// interleaved, and only under the configured prefix (raw keyspace).
func TestAuditPagesAndPrefix(t *testing.T) {
	e := newEnv(t, false)
	e.scope.Mode = "raw"
	e.prefix = "/app/"
	ctx := testenv.Context(t)
	kv := map[string]string{}
	for i := range 50 {
		kv["/app/"+itoa(i)] = "v"
		kv["/zzz/"+itoa(i)] = "v"
	}
	e.copyKeys(kv)
	s := e.standby.Client
	del(t, s, "/app/"+itoa(0))
	del(t, s, "/app/"+itoa(49))
	put(t, s, "/app/"+itoa(20)+"x", "surplus")
	put(t, s, "/app/"+itoa(33), "changed")
	put(t, s, "/zzz/"+itoa(1), "outside the prefix")
	put(t, s, "/ap", "outside the prefix")
	cfg := e.config()
	cfg.Prefix, cfg.PageSize, cfg.MaxKeys = "/app/", 3, 1
	rep, err := e.auditor(cfg, nil).Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Missed.Count != 2 || rep.Surplus.Count != 1 || rep.Mismatched.Count != 1 || rep.Compared != 51 ||
		rep.PrimaryKeys != 50 || rep.StandbyKeys != 49 {
		t.Fatalf("report: %+v", rep)
	}
	if len(rep.Missed.Keys) != 1 || rep.Missed.Keys[0].Key != "/app/"+itoa(0) {
		t.Errorf("MaxKeys not applied: %s", fmtKeys(rep))
	}
	var text strings.Builder
	_ = rep.WriteText(&text)
	if !strings.Contains(text.String(), "... and 1 more") {
		t.Errorf("truncation not shown:\n%s", text.String())
	}
	// Every tracked key is repaired, beyond MaxKeys.
	res, err := e.auditor(cfg, nil).Repair(ctx, rep)
	if err != nil || len(res.Changed) != 3 || res.Untracked != 0 {
		t.Fatalf("repair: %+v %v", res, err)
	}
}

// TestRepairFromJSONReport repairs from a report read back from --json,
// including a key that is not valid UTF-8.
func TestRepairFromJSONReport(t *testing.T) {
	e := newEnv(t, false)
	e.scope.Mode = "raw"
	ctx := testenv.Context(t)
	bad := "/app/\xff\xfe"
	e.copyKeys(map[string]string{bad: "1", "/app/ok": "2"})
	del(t, e.standby.Client, bad)
	a := e.auditor(e.config(), nil)
	rep, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back auditor.Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Missed.Keys[0].KeyBase64 == "" {
		t.Fatalf("no key_base64 for a non-UTF-8 key: %s", b)
	}
	res, err := a.Repair(ctx, back)
	if err != nil || len(res.Changed) != 1 {
		t.Fatalf("repair: %+v %v", res, err)
	}
	if rep, err := a.Audit(ctx); err != nil || !rep.Consistent {
		t.Fatalf("after repair: %v %s", err, fmtKeys(rep))
	}
}
