package auditor_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/testenv"
)

// TestDriftEventsTruncatedWithMsgIDs: with more drifted keys than
// Config.MaxEvents, a run publishes the first MaxEvents key events in key
// order and a summary saying it truncated them; every message carries the
// Nats-Msg-Id "<run_id>:<index>" or "<run_id>:summary", so a retried
// publish is stored once.
func TestDriftEventsTruncatedWithMsgIDs(t *testing.T) {
	e := newEnv(t, true)
	ctx := testenv.Context(t)
	kv := map[string]string{}
	for i := range 5 {
		kv["/registry/configmaps/app/k"+strconv.Itoa(i)] = "v"
	}
	e.copyKeys(kv)
	for i := range 5 {
		put(t, e.standby.Client, "/registry/configmaps/app/k"+strconv.Itoa(i), "drifted")
	}
	cfg := e.config()
	cfg.MaxEvents = 2
	rep, err := e.auditor(cfg, nil).Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mismatched.Count != 5 || !rep.Events.Truncated || rep.Events.Messages != 3 {
		t.Fatalf("report: %d mismatched, events %+v; want 5 mismatched, 3 messages, truncated", rep.Mismatched.Count, rep.Events)
	}
	keys, sum := readRun(t, e.js.JS, rep.ID)
	var got []string
	for _, ev := range keys {
		got = append(got, strconv.Itoa(ev.Index)+" "+ev.Key)
	}
	if want := []string{"0 /registry/configmaps/app/k0", "1 /registry/configmaps/app/k1"}; !slices.Equal(got, want) {
		t.Errorf("key events %q, want %q", got, want)
	}
	if sum.KeyEvents != 2 || !sum.KeyEventsTruncated || sum.Mismatched != 5 {
		t.Errorf("summary: %d key events, truncated %v, %d mismatched; want 2, true, 5", sum.KeyEvents, sum.KeyEventsTruncated, sum.Mismatched)
	}
	if ids, want := runMsgIDs(t, e.js.JS, rep.ID), []string{rep.ID + ":0", rep.ID + ":1", rep.ID + ":summary"}; !slices.Equal(ids, want) {
		t.Errorf("message ids %q, want %q", ids, want)
	}
}

// runMsgIDs returns the Nats-Msg-Id of each drift message of one run, in
// stream order.
func runMsgIDs(t *testing.T, js jetstream.JetStream, runID string) []string {
	t.Helper()
	ctx := testenv.Context(t)
	s, err := js.Stream(ctx, "ETCDSYNC_DRIFT")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var probe struct {
			RunID string `json:"run_id"`
		}
		if err := json.Unmarshal(m.Data, &probe); err != nil {
			t.Fatal(err)
		}
		if probe.RunID == runID {
			ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		}
	}
	return ids
}

// TestAuditNeverWrites: audits of a drifted standby, with events
// published, change neither etcd (their revisions stay where they were).
func TestAuditNeverWrites(t *testing.T) {
	e := newEnv(t, true)
	ctx := testenv.Context(t)
	e.copyKeys(map[string]string{"/registry/configmaps/app/a": "1", "/registry/configmaps/app/b": "2"})
	del(t, e.standby.Client, "/registry/configmaps/app/a")
	put(t, e.standby.Client, "/registry/configmaps/app/b", "x")
	put(t, e.standby.Client, "/registry/configmaps/app/c", "surplus")
	revision := func(cli *clientv3.Client) int64 {
		resp, err := cli.Get(context.Background(), "probe")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	p0, s0 := revision(e.primary.Client), revision(e.standby.Client)
	cfg := e.config()
	cfg.RepairSurplus = true // allowed to delete on repair, never on audit
	a := e.auditor(cfg, nil)
	for range 3 {
		rep, err := a.Audit(ctx)
		if err != nil || rep.Drifted() != 3 {
			t.Fatalf("audit: %v %s", err, fmtKeys(rep))
		}
	}
	if p, s := revision(e.primary.Client), revision(e.standby.Client); p != p0 || s != s0 {
		t.Fatalf("audits moved the primary from revision %d to %d and the standby from %d to %d", p0, p, s0, s)
	}
}
