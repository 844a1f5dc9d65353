package auditor_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/internal/testenv"
)

// TestAuditDuringReseed audits while a snapshot is being applied: a state,
// reported as re-seeding, neither counted as an audit error nor served as
// a failure on /check.
func TestAuditDuringReseed(t *testing.T) {
	e := newEnv(t, false)
	e.writeCheckpoint(put(t, e.primary.Client, "/registry/configmaps/app/a", "1"), func(ck *applier.Checkpoint) {
		ck.Snapshot = &applier.SnapshotState{Generation: 2, Revision: 40, Keys: 1200}
	})
	reg := prometheus.NewRegistry()
	a := e.auditor(e.config(), reg)
	_, err := a.Audit(testenv.Context(t))
	if !errors.Is(err, auditor.ErrReseeding) || !errors.Is(err, auditor.ErrNotBootstrapped) || !strings.Contains(err.Error(), "re-seeding") {
		t.Fatalf("audit during a re-seed: %v", err)
	}
	if n := gauge(t, reg, "etcdsync_auditor_errors_total"); n != 0 {
		t.Errorf("etcdsync_auditor_errors_total = %v during a re-seed, want 0", n)
	}
	if g := gauge(t, reg, "etcdsync_auditor_reseeding"); g != 1 {
		t.Errorf("etcdsync_auditor_reseeding = %v, want 1", g)
	}
	code, body := get(t, a.CheckHandler(), "/check", "")
	if code != http.StatusOK || !strings.Contains(body, "re-seeding") || !strings.Contains(body, "1200 keys") {
		t.Errorf("/check during a re-seed: %d\n%s", code, body)
	}

	// The snapshot applied: an audit completes and the state clears.
	e.writeCheckpoint(put(t, e.primary.Client, "/registry/configmaps/app/b", "2"), nil)
	put(t, e.standby.Client, "/registry/configmaps/app/a", "1")
	put(t, e.standby.Client, "/registry/configmaps/app/b", "2")
	if rep, err := a.Audit(testenv.Context(t)); err != nil || !rep.Consistent {
		t.Fatalf("audit after the re-seed: %v %s", err, fmtKeys(rep))
	}
	if g := gauge(t, reg, "etcdsync_auditor_reseeding"); g != 0 {
		t.Errorf("etcdsync_auditor_reseeding = %v after the re-seed, want 0", g)
	}
}

// TestReportSaysHowOld checks that a report says which revisions it
// compared and how old the primary's state compared is.
func TestReportSaysHowOld(t *testing.T) {
	e := newEnv(t, false)
	observed := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	e.writeCheckpoint(put(t, e.primary.Client, "/registry/configmaps/app/a", "1"), func(ck *applier.Checkpoint) {
		ck.SourceTime = observed
	})
	put(t, e.standby.Client, "/registry/configmaps/app/a", "1")
	rep, err := e.auditor(e.config(), nil).Audit(testenv.Context(t))
	if err != nil || !rep.Consistent {
		t.Fatalf("audit: %v %s", err, fmtKeys(rep))
	}
	if !rep.SourceTime.Equal(observed) || rep.SourceAgeSeconds < 3600 {
		t.Errorf("source time %s, age %.0fs; want %s, at least 3600s", rep.SourceTime, rep.SourceAgeSeconds, observed)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"CONSISTENT at source revision", "observed on the primary at " + observed.Format(time.RFC3339), "1h0m"} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("text report lacks %q:\n%s", w, text.String())
		}
	}
}
