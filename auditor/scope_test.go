package auditor_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
)

// TestAuditUsesApplierScope runs the real pipeline with a namespace the
// applier excludes, in which the standby keeps keys of its own. An audit
// without scope options compares the applier's recorded scope; one with
// other options reports the difference and its repair writes nothing.
func TestAuditUsesApplierScope(t *testing.T) {
	e := newEnv(t, true)
	e.scope.ExcludeNamespaces = []string{"ops"}
	e.startPipeline()
	ctx := testenv.Context(t)
	p, s := e.primary.Client, e.standby.Client
	put(t, p, "/registry/configmaps/ops/primary-only", "p")
	put(t, s, "/registry/configmaps/ops/standby-own", "s")
	e.waitApplied(put(t, p, "/registry/configmaps/app/a", "a"))

	// Default: the applier's scope, whatever this auditor's options say.
	cfg := auditor.DefaultConfig()
	cfg.Logger = testLogger(t)
	a := e.auditor(cfg, nil)
	rep, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Consistent || rep.Scope.Source != auditor.ScopeFromApplier || !rep.Scope.Repairable || len(rep.Scope.Differences) != 0 {
		t.Fatalf("audit with the recorded scope: %s scope %+v", fmtKeys(rep), rep.Scope)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "scope: recorded by the applier at "+applier.ScopeKey(ckKey)) {
		t.Errorf("text report does not say where the scope came from:\n%s", text.String())
	}

	// Explicit options without the applier's exclusion: the drift in
	// "ops" shows, with the difference, and repair refuses to write.
	cfg.ExplicitScope, cfg.Scope, cfg.RepairSurplus = true, keyspace.DefaultConfig(), true
	a = e.auditor(cfg, nil)
	rep, err = a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := `missed ["/registry/configmaps/ops/primary-only"] surplus ["/registry/configmaps/ops/standby-own"] mismatched []`
	if got := fmtKeys(rep); got != want {
		t.Fatalf("audit with other options:\n got %s\nwant %s", got, want)
	}
	if rep.Scope.Source != auditor.ScopeFromConfig || rep.Scope.Repairable || rep.Scope.Fingerprint == rep.Scope.ApplierFingerprint ||
		!slices.ContainsFunc(rep.Scope.Differences, func(d string) bool {
			return strings.HasPrefix(d, "applier only: ") && strings.Contains(d, `namespace "ops"`)
		}) {
		t.Errorf("scope: %+v", rep.Scope)
	}
	text.Reset()
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"DIFFERS from the applier's", `applier only: exclude namespace "ops"`, "repair refused"} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("text report lacks %q:\n%s", w, text.String())
		}
	}
	res, err := a.Repair(ctx, rep)
	if !errors.Is(err, auditor.ErrScopeMismatch) || len(res.Changed) != 0 {
		t.Fatalf("repair with another scope: %+v %v", res, err)
	}
	for k, want := range map[string]int{"/registry/configmaps/ops/standby-own": 1, "/registry/configmaps/ops/primary-only": 0} {
		resp, err := s.Get(ctx, k)
		if err != nil || len(resp.Kvs) != want {
			t.Errorf("%s on the standby: %v %v, want %d keys", k, resp, err, want)
		}
	}

	// The same options as the applier's, in another order: the same scope.
	cfg.Scope.ExcludeNamespaces = []string{"ops"}
	rep, err = e.auditor(cfg, nil).Audit(ctx)
	if err != nil || !rep.Consistent || !rep.Scope.Repairable || rep.Scope.Fingerprint != rep.Scope.ApplierFingerprint {
		t.Fatalf("audit with the applier's options: %v %s %+v", err, fmtKeys(rep), rep.Scope)
	}
}

// TestAuditUsesPublisherPrefix runs the pipeline with a publisher prefix;
// the standby keeps keys of its own outside it. The applier records the
// prefix the snapshot announced, and the audit compares under it.
func TestAuditUsesPublisherPrefix(t *testing.T) {
	e := newEnv(t, true)
	e.scope = keyspace.Config{Mode: keyspace.ModeRaw}
	e.prefix = "/app/"
	e.startPipeline()
	ctx := testenv.Context(t)
	put(t, e.standby.Client, "/local/own", "s")
	put(t, e.primary.Client, "/other/unpublished", "p")
	e.waitApplied(put(t, e.primary.Client, "/app/a", "a"))

	cfg := auditor.DefaultConfig()
	cfg.Logger = testLogger(t)
	rep, err := e.auditor(cfg, nil).Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Consistent || rep.Prefix != "/app/" || rep.Compared != 1 || !rep.Scope.Repairable {
		t.Fatalf("audit: prefix %q %s scope %+v", rep.Prefix, fmtKeys(rep), rep.Scope)
	}

	// Scope options without a prefix: still the recorded prefix.
	cfg.ExplicitScope, cfg.Scope = true, e.scope
	rep, err = e.auditor(cfg, nil).Audit(ctx)
	if err != nil || !rep.Consistent || rep.Prefix != "/app/" || !rep.Scope.Repairable || rep.Scope.Source != auditor.ScopeFromConfig {
		t.Fatalf("audit with scope options: %v prefix %q %s scope %+v", err, rep.Prefix, fmtKeys(rep), rep.Scope)
	}
	// Another prefix: compared, and not repairable.
	cfg.ExplicitPrefix, cfg.Prefix = true, ""
	rep, err = e.auditor(cfg, nil).Audit(ctx)
	if err != nil || rep.Surplus.Count != 1 || rep.Scope.Repairable || len(rep.Scope.Differences) != 2 {
		t.Fatalf("audit with another prefix: %v %s scope %+v", err, fmtKeys(rep), rep.Scope)
	}
}

// TestRepairNeedsRecordedScope refuses to repair when the applier recorded
// no scope: nothing confirms the audit compared what it replicates.
func TestRepairNeedsRecordedScope(t *testing.T) {
	e := newEnv(t, false)
	ctx := testenv.Context(t)
	e.copyKeys(map[string]string{"/registry/configmaps/app/a": "1"})
	del(t, e.standby.Client, applier.ScopeKey(ckKey))
	del(t, e.standby.Client, "/registry/configmaps/app/a")
	a := e.auditor(e.config(), nil)
	rep, err := a.Audit(ctx)
	if err != nil || rep.Missed.Count != 1 || rep.Scope.Recorded || rep.Scope.Repairable {
		t.Fatalf("audit: %v %s %+v", err, fmtKeys(rep), rep.Scope)
	}
	if _, err := a.Repair(ctx, rep); !errors.Is(err, auditor.ErrScopeMismatch) {
		t.Fatalf("repair without a recorded scope: %v", err)
	}
}

// TestAuditWarnsUnknownNamespace excludes a namespace that exists and one
// that exists on neither side (a typo): the report warns about the second.
func TestAuditWarnsUnknownNamespace(t *testing.T) {
	e := newEnv(t, false)
	e.scope.ExcludeNamespaces = []string{"cpaas-system", "cpaas-sytem"}
	e.copyKeys(map[string]string{"/registry/namespaces/cpaas-system": "ns", "/registry/configmaps/app/a": "1"})
	rep, err := e.auditor(e.config(), nil).Audit(testenv.Context(t))
	if err != nil || !rep.Consistent {
		t.Fatalf("audit: %v %s", err, fmtKeys(rep))
	}
	if !slices.Equal(rep.Scope.UnknownNamespaces, []string{"cpaas-sytem"}) {
		t.Errorf("unknown namespaces %q, want [cpaas-sytem]", rep.Scope.UnknownNamespaces)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if w := `warning: excluded namespace "cpaas-sytem" exists on neither side: a typo?`; !strings.Contains(text.String(), w) {
		t.Errorf("text report lacks %q:\n%s", w, text.String())
	}
}

// TestAuditCountsUnparsedKeys: the compared keys that do not parse as
// Kubernetes keys, to which no namespace or resource exclusion applies (an
// aggregated API server storing under its own --etcd-prefix
// "/registry/<group>"), are counted once each, on either side, named in
// the report and set in etcdsync_auditor_unparsed_keys.
func TestAuditCountsUnparsedKeys(t *testing.T) {
	e := newEnv(t, false)
	e.scope.ExcludeNamespaces = []string{"app"}
	const aggregated = "/registry/wardle.example.com/wardle.example.com/flunders/app/f" // namespace "app" is not seen
	e.copyKeys(map[string]string{
		"/registry/configmaps/web/c": "v", // parses
		"/registry/configmaps/app/c": "v", // excluded
		aggregated:                   "v", // on both sides: counted once
		"/registry/pods/web/p/x":     "v",
		"/other/app/x":               "v", // outside the prefix: excluded
	})
	put(t, e.standby.Client, "/registry//standby-only", "v") // surplus
	put(t, e.primary.Client, "/registry/pods/web/p/y", "v")  // missed
	e.writeCheckpoint(put(t, e.primary.Client, "/registry/configmaps/web/d", "v"), nil)
	reg := prometheus.NewRegistry()
	rep, err := e.auditor(e.config(), reg).Audit(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/registry//standby-only", "/registry/pods/web/p/x", "/registry/pods/web/p/y", aggregated}
	if rep.Unparsed.Count != 4 || !slices.Equal(rep.Unparsed.FirstKeys, want) {
		t.Errorf("unparsed keys: %d %q, want %d %q", rep.Unparsed.Count, rep.Unparsed.FirstKeys, len(want), want)
	}
	if rep.Compared != 6 || rep.Missed.Count != 2 || rep.Surplus.Count != 1 {
		t.Errorf("report: compared %d, %s", rep.Compared, fmtKeys(rep))
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"warning: 4 of them do not parse as Kubernetes keys", "no namespace or resource exclusion applies", "  " + aggregated + "\n"} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, text.String())
		}
	}
	if v := gauge(t, reg, "etcdsync_auditor_unparsed_keys"); v != 4 {
		t.Errorf("etcdsync_auditor_unparsed_keys = %v, want 4", v)
	}
}
