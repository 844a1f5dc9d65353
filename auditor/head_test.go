package auditor_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/etcdsync/etcdsync/internal/testenv"
)

// TestAuditBehindPrimaryHead: the standby holds the primary at source
// revision P while the primary has moved on by 7 revisions. The report
// compares at P and says how far P is behind the primary's head, in the
// text and in JSON; when the standby has caught up it says 0.
func TestAuditBehindPrimaryHead(t *testing.T) {
	e := newEnv(t, false)
	e.scope.Mode = "raw"
	ctx := testenv.Context(t)
	p := e.copyKeys(map[string]string{"/a": "1", "/b": "2"})
	var head int64
	for i := range 7 {
		head = put(t, e.primary.Client, fmt.Sprintf("/later/%d", i), "v")
	}
	rep, err := e.auditor(e.config(), nil).Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.SourceRevision != p || rep.PrimaryHeadRevision != head || rep.BehindHeadRevisions != 7 {
		t.Fatalf("report: source revision %d, primary head %d, behind %d: want %d, %d, 7", rep.SourceRevision, rep.PrimaryHeadRevision, rep.BehindHeadRevisions, p, head)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("primary head: revision %d, the compared position is 7 revisions behind it", head); !strings.Contains(text.String(), want) {
		t.Errorf("text report lacks %q:\n%s", want, text.String())
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil || raw["behind_head_revisions"] != 7.0 || raw["primary_head_revision"] != float64(head) {
		t.Errorf("JSON report: behind_head_revisions %v, primary_head_revision %v (%v)", raw["behind_head_revisions"], raw["primary_head_revision"], err)
	}

	// Caught up: nothing behind.
	e.writeCheckpoint(head, nil)
	for i := range 7 {
		put(t, e.standby.Client, fmt.Sprintf("/later/%d", i), "v")
	}
	rep, err = e.auditor(e.config(), nil).Audit(ctx)
	if err != nil || !rep.Consistent || rep.BehindHeadRevisions != 0 || rep.PrimaryHeadRevision != head {
		t.Fatalf("caught up: %+v, %v", rep, err)
	}
}
