package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/etcdsync/etcdsync/applier"
)

// A checkpoint whose next revision is half applied (its Partial marker):
// status says so in its table and its JSON, and promote reports it and exits
// 1 even without a stream to drain (issue 15.5).
func TestStatusAndPromoteSayHalfApplied(t *testing.T) {
	standby, cli := startEtcd(t)
	if _, err := cli.Put(context.Background(), "/etcdsync/checkpoint/ETCDSYNC",
		`{"position":{"ClusterID":1,"Generation":1,"Revision":41,"Part":0,"Seq":9},"partial":{"seq":12,"events":7}}`); err != nil {
		t.Fatal(err)
	}
	const want = "the revision after 41 (stream seq 12) is half applied: the first 7 events are on the standby"

	code, out, stderr := runCmd(t, "status", "--standby-endpoints", standby.Endpoint)
	if !strings.Contains(out, "HALF APPLIED   "+want) {
		t.Fatalf("status: exit %d, output lacks %q:\n%s%s", code, want, out, stderr)
	}
	code, out, stderr = runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--json")
	var st applier.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	if h := st.HalfApplied; h == nil || h.AfterRevision != 41 || h.Seq != 12 || h.EventsApplied != 7 {
		t.Fatalf("status --json half_applied %+v", st.HalfApplied)
	}

	code, out, stderr = runCmd(t, "promote", "--standby-endpoints", standby.Endpoint, "--json")
	var rep applier.PromoteReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("promote --json: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	if code != exitFailure || rep.HalfApplied == nil || rep.HalfApplied.EventsApplied != 7 || !rep.Checkpoint.Promoted ||
		!strings.Contains(stderr, want) {
		t.Fatalf("promote --json: exit %d (want %d), report %+v\nstderr %s", code, exitFailure, rep, stderr)
	}
}

// The promote table says which revision is half applied.
func TestPrintPromoteHalfApplied(t *testing.T) {
	var b strings.Builder
	h := &applier.HalfApplied{AfterRevision: 41, Seq: 12, Revision: 42, EventsApplied: 7, Events: 30}
	printPromote(&b, promoteOutput{PromoteReport: applier.PromoteReport{HalfApplied: h, Inconsistent: h.String()}})
	if want := "revision 42 (stream seq 12) is half applied: the first 7 of its 30 events are on the standby"; !strings.Contains(b.String(), want) {
		t.Fatalf("promote table lacks %q:\n%s", want, b.String())
	}
}
