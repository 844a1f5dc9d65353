package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// auditPair is a primary and a standby etcd holding the same keys and a
// checkpoint as if the applier had replicated them.
type auditPair struct {
	t                  *testing.T
	primaryEP, standEP string
	primary, standby   *clientv3.Client
}

func newAuditPair(t *testing.T, checkpoint bool) *auditPair {
	t.Helper()
	pe, pcli := startEtcd(t)
	se, scli := startEtcd(t)
	p := &auditPair{t: t, primaryEP: pe.Endpoint, standEP: se.Endpoint, primary: pcli, standby: scli}
	var rev int64
	var cluster uint64
	for _, k := range []string{"/registry/configmaps/app/a", "/registry/configmaps/app/b", "/registry/configmaps/kube-system/x"} {
		resp, err := pcli.Put(context.Background(), k, "v")
		if err != nil {
			t.Fatal(err)
		}
		rev, cluster = resp.Header.Revision, resp.Header.ClusterId
		p.put(scli, k, "v")
	}
	if checkpoint {
		ck, err := json.Marshal(applier.Checkpoint{Position: streams.Position{ClusterID: cluster, Generation: 1, Revision: rev, Seq: 3}})
		if err != nil {
			t.Fatal(err)
		}
		p.put(scli, "/etcdsync/checkpoint/ETCDSYNC", string(ck))
		p.recordScope(keyspace.DefaultConfig())
	}
	return p
}

// recordScope stands in for the applier: it records scope as the
// applier's, with every key published.
func (p *auditPair) recordScope(scope keyspace.Config) {
	p.t.Helper()
	rec, err := applier.NewScopeRecord(scope, "", true)
	if err != nil {
		p.t.Fatal(err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		p.t.Fatal(err)
	}
	p.put(p.standby, applier.ScopeKey("/etcdsync/checkpoint/ETCDSYNC"), string(b))
}

func (p *auditPair) put(cli *clientv3.Client, k, v string) {
	p.t.Helper()
	if _, err := cli.Put(context.Background(), k, v); err != nil {
		p.t.Fatal(err)
	}
}

func (p *auditPair) args(extra ...string) []string {
	return append([]string{"audit", "--primary-endpoints", p.primaryEP, "--standby-endpoints", p.standEP}, extra...)
}

func TestAuditOnceExitStatus(t *testing.T) {
	p := newAuditPair(t, true)
	code, stdout, stderr := runCmd(t, p.args("--once")...)
	if code != exitOK || !strings.Contains(stdout, "CONSISTENT") || !strings.Contains(stdout, "drift events: not published: no JetStream connection (no --nats-url)") {
		t.Fatalf("consistent: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// The seed's check: both lists, under their names, also when empty.
	for _, s := range []string{"LOCAL ETCD missed keys: 0 (on the primary, not on the standby)", "LOCAL ETCD surplus keys: 0 (on the standby only)", "LOCAL ETCD mismatched keys: 0"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("consistent output lacks %q:\n%s", s, stdout)
		}
	}

	// Drift, including an excluded key that must not be reported.
	if _, err := p.standby.Delete(context.Background(), "/registry/configmaps/app/a"); err != nil {
		t.Fatal(err)
	}
	p.put(p.standby, "/registry/configmaps/app/b", "changed")
	p.put(p.standby, "/registry/configmaps/app/z", "surplus")
	p.put(p.standby, "/registry/configmaps/kube-system/x", "changed")
	code, stdout, stderr = runCmd(t, p.args("--once")...)
	for _, s := range []string{"LOCAL ETCD missed keys: 1", "LOCAL ETCD surplus keys: 1", "LOCAL ETCD mismatched keys: 1", "--repair-surplus"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("drift output lacks %q", s)
		}
	}
	if code != exitFailure || strings.Contains(stdout, "kube-system") || stderr != "" {
		t.Fatalf("drift: exit %d\n%s\nstderr: %s", code, stdout, stderr)
	}

	code, stdout, _ = runCmd(t, p.args("--once", "--json")...)
	var rep auditor.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != exitFailure || rep.Drifted() != 3 || rep.Missed.Keys[0].Key != "/registry/configmaps/app/a" {
		t.Fatalf("json: exit %d %v\n%s", code, err, stdout)
	}

	// --repair (implies --once) fixes missed and mismatched; surplus stays.
	code, stdout, _ = runCmd(t, p.args("--repair")...)
	if code != exitFailure || !strings.Contains(stdout, "2 keys changed, 1 skipped") || !strings.Contains(stdout, "after repair:") {
		t.Fatalf("repair: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runCmd(t, p.args("--repair", "--repair-surplus", "--json")...)
	var out struct {
		Repair auditor.RepairResult `json:"repair"`
		After  auditor.Report       `json:"after_repair"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil || code != exitOK || len(out.Repair.Changed) != 1 ||
		out.Repair.Changed[0].Action != "delete" || !out.After.Consistent {
		t.Fatalf("repair surplus: exit %d %v\n%s", code, err, stdout)
	}
}

// TestAuditScopeInForce records a scope excluding a namespace in which the
// standby keeps a key of its own: the audit compares the recorded scope,
// says so, and with other scope options reports the difference and
// refuses to repair.
func TestAuditScopeInForce(t *testing.T) {
	p := newAuditPair(t, true)
	p.recordScope(keyspace.Config{ExcludeNamespaces: []string{"ops"}})
	p.put(p.standby, "/registry/configmaps/ops/own", "standby's")

	code, stdout, stderr := runCmd(t, p.args("--once")...)
	if code != exitOK || !strings.Contains(stdout, "scope: recorded by the applier at /etcdsync/checkpoint/ETCDSYNC/scope") {
		t.Fatalf("audit with the recorded scope: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = runCmd(t, p.args("--print-rules")...)
	for _, w := range []string{"# scope in force: recorded by the applier at /etcdsync/checkpoint/ETCDSYNC/scope", `exclude namespace "ops"`,
		`# warning: excluded namespace "ops": its Namespace object is on neither side now: a typo?`} {
		if code != exitOK || !strings.Contains(stdout, w) {
			t.Errorf("audit --print-rules: exit %d, lacks %q\n%s\n%s", code, w, stdout, stderr)
		}
	}

	t.Setenv("ETCDSYNC_EXCLUDE_NAMESPACE", "other")
	code, stdout, stderr = runCmd(t, p.args("--once")...)
	for _, w := range []string{"LOCAL ETCD surplus keys: 1", "/registry/configmaps/ops/own", "--exclude-namespace ($ETCDSYNC_EXCLUDE_NAMESPACE)",
		"DIFFERS from the applier's", `applier only: exclude namespace "ops"`, `audit only: exclude namespace "other"`, "repair refused"} {
		if code != exitFailure || !strings.Contains(stdout, w) {
			t.Errorf("audit with other options: exit %d, lacks %q\n%s\n%s", code, w, stdout, stderr)
		}
	}
	code, stdout, stderr = runCmd(t, p.args("--repair", "--repair-surplus")...)
	if code != exitFailure || !strings.Contains(stderr, "differs from the applier's") {
		t.Errorf("repair with other options: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if resp, err := p.standby.Get(context.Background(), "/registry/configmaps/ops/own"); err != nil || len(resp.Kvs) != 1 {
		t.Errorf("the standby's own key after a refused repair: %v %v", resp, err)
	}
}

func TestAuditCouldNotAudit(t *testing.T) {
	p := newAuditPair(t, false)
	code, _, stderr := runCmd(t, p.args("--once")...)
	if code != exitUnavailable || !strings.Contains(stderr, "could not audit") || !strings.Contains(stderr, "not bootstrapped") {
		t.Fatalf("no checkpoint: exit %d: %s", code, stderr)
	}
	code, _, stderr = runCmd(t, "audit", "--once", "--primary-endpoints", "http://127.0.0.1:1", "--standby-endpoints", p.standEP)
	if code != exitUnavailable || !strings.Contains(stderr, "could not audit: primary etcd http://127.0.0.1:1") {
		t.Fatalf("unreachable primary: exit %d: %s", code, stderr)
	}
}

func TestAuditUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "--once", "--primary-endpoints", "http://x:2379"}, "--standby-endpoints is required"},
		{[]string{"audit", "--primary-endpoints", "a", "--standby-endpoints", "b", "--repair-surplus"}, "--repair-surplus needs --repair"},
		{[]string{"audit", "--primary-endpoints", "a", "--standby-endpoints", "b", "--primary-cert", "c"}, "--primary-cert and --primary-key"},
		{[]string{"audit", "--primary-endpoints", "a", "--standby-endpoints", "b", "--page-size", "0"}, "page size 0"},
	} {
		code, _, stderr := runCmd(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "Run 'etcdsync audit -h'") {
			t.Errorf("%q: exit %d: %s", tc.args, code, stderr)
		}
	}
}

// TestAuditInterval runs the periodic auditor with drift events and checks
// /check, /metrics and a clean stop.
func TestAuditInterval(t *testing.T) {
	p := newAuditPair(t, true)
	js := testenv.StartJetStream(t)
	p.put(p.standby, "/registry/configmaps/app/b", "changed")
	addr := freeAddr(t)
	b := runBackground(t, p.args("--interval", "100ms", "--metrics-addr", addr, "--nats-url", js.URL)...)
	base := "http://" + addr
	eventually(t, 20*time.Second, "a report on /check", func() bool {
		code, body := httpGet(base + "/check")
		return code == http.StatusConflict && strings.Contains(body, "LOCAL ETCD mismatched keys: 1") && strings.Contains(body, "drift events: 2 messages published")
	})
	code, body := httpGet(base + "/check?format=json")
	var resp auditor.CheckResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != http.StatusConflict || resp.Report == nil || resp.Report.Mismatched.Count != 1 {
		t.Errorf("/check json: %d %v\n%s", code, err, body)
	}
	if _, body := httpGet(base + "/metrics"); !strings.Contains(body, `etcdsync_auditor_keys{site="primary",state="mismatched",stream="ETCDSYNC"} 1`) ||
		!strings.Contains(body, "etcdsync_auditor_last_run_timestamp_seconds") {
		t.Errorf("metrics:\n%s", body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(base + path); code != 200 {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	if code := b.stop(t); code != exitOK {
		t.Errorf("exit %d:\n%s", code, b.stderr)
	}
}
