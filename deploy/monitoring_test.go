package deploy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

const dashboardFile = "grafana/etcdsync.json"

// rulesFiles are the alerting rules of each role: a site loads its role's
// file only, as the chart renders it.
var rulesFiles = map[string]string{
	"primary": "prometheus/etcdsync-primary-rules.yaml",
	"standby": "prometheus/etcdsync-standby-rules.yaml",
}

// roleComponents are the components each role runs.
var roleComponents = map[string][]string{
	"primary": {"publisher"},
	"standby": {"applier", "auditor"},
}

// promqlMetrics parses expr and returns the metric names it selects.
func promqlMetrics(t *testing.T, expr string) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("PromQL %q: %v", expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// checkMetricNames fails on a metric etcdsync does not export (a typo, or a
// renamed metric).
func checkMetricNames(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	names := promqlMetrics(t, expr)
	if len(names) == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	for _, n := range names {
		if !known[n] && !externalMetrics[n] {
			t.Errorf("%s: metric %q is not exported by etcdsync (publisher/applier/auditor metrics.go)", where, n)
		}
	}
}

// TestPrometheusRules validates each role's rules file as Prometheus loads
// it (`promtool check rules` does the same parse), then checks each
// alert's labels, annotations, runbook link and metric names, and that a
// role's file alerts on the components that role runs only.
func TestPrometheusRules(t *testing.T) {
	known := exportedMetrics(t)
	anchors := runbookAnchors(t)
	seen := map[string]bool{}
	for _, role := range []string{"primary", "standby"} {
		file := rulesFiles[role]
		p := parser.NewParser(parser.Options{})
		groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
		for _, err := range errs {
			t.Errorf("%s: rulefmt: %v", file, err)
		}
		if groups == nil {
			t.FailNow()
		}
		// rulefmt cannot tell "for: 0m" from no "for": read the raw file too.
		var raw struct {
			Groups []struct {
				Rules []map[string]any `json:"rules"`
			} `json:"groups"`
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &raw); err != nil {
			t.Fatal(err)
		}
		hasFor := map[string]bool{}
		for _, g := range raw.Groups {
			for _, r := range g.Rules {
				if _, ok := r["for"]; ok {
					hasFor[r["alert"].(string)] = true
				}
			}
		}
		alerted := map[string]bool{}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					t.Errorf("%s: group %s: recording rule %q: only alerts are expected", file, g.Name, r.Record)
					continue
				}
				where := file + ": alert " + r.Alert
				if seen[r.Alert] {
					t.Errorf("%s: defined twice", where)
				}
				seen[r.Alert] = true
				if strings.TrimSpace(r.Expr) == "" {
					t.Errorf("%s: no expr", where)
				}
				if !hasFor[r.Alert] {
					t.Errorf("%s: no for", where)
				}
				if sev := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, sev) {
					t.Errorf("%s: labels.severity %q", where, sev)
				}
				// The chart leaves out the auditor's group when the
				// auditor is off: a group holds one component's alerts.
				c := r.Labels["component"]
				if !slices.Contains(roleComponents[role], c) || g.Name != "etcdsync-"+c {
					t.Errorf("%s: group %s, labels.component %q: want a component of role %s %v, in group etcdsync-<component>", where, g.Name, c, role, roleComponents[role])
				}
				alerted[c] = true
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: annotations.summary and .description are required", where)
				}
				u, err := url.Parse(r.Annotations["runbook_url"])
				if err != nil || !strings.HasSuffix(u.Path, "deploy/RUNBOOK.md") || u.Fragment == "" {
					t.Errorf("%s: runbook_url %q: want .../deploy/RUNBOOK.md#section", where, r.Annotations["runbook_url"])
				} else if !anchors[u.Fragment] {
					t.Errorf("%s: runbook_url fragment #%s is no heading of RUNBOOK.md", where, u.Fragment)
				}
				checkMetricNames(t, where, r.Expr, known)
			}
		}
		for _, c := range roleComponents[role] {
			if !alerted[c] {
				t.Errorf("%s: no alert for the %s", file, c)
			}
		}
	}
	// The alerts the runbook promises.
	for _, want := range []string{"EtcdsyncApplierLagHigh", "EtcdsyncDriftDetected", "EtcdsyncPublisherDown", "EtcdsyncPublisherStalled",
		"EtcdsyncApplierStopped", "EtcdsyncApplierGap", "EtcdsyncAuditorNotRunning", "EtcdsyncStandbyMismatch", "EtcdsyncPublisherVerifyMismatch"} {
		if !seen[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
}

// TestGrafanaDashboard parses the dashboard and the PromQL of every panel.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		ID      int      `json:"id"`
		Type    string   `json:"type"`
		Title   string   `json:"title"`
		Targets []target `json:"targets"`
		GridPos struct {
			X, Y, W, H int
		} `json:"gridPos"`
	}
	var dash struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	var hasDS bool
	for _, v := range dash.Templating.List {
		hasDS = hasDS || v.Name == "datasource" && v.Type == "datasource"
	}
	if !hasDS {
		t.Error("dashboard needs a $datasource variable")
	}
	known := exportedMetrics(t)
	ids := map[int]bool{}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			expr := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m").Replace(tg.Expr)
			checkMetricNames(t, "panel "+p.Title, expr, known)
			for _, n := range promqlMetrics(t, expr) {
				used[n] = true
			}
		}
	}
	// The panels the dashboard promises.
	for _, m := range []string{"etcdsync_publisher_revisions_total", "etcdsync_applier_revisions_total", "etcdsync_applier_lag_seconds",
		"etcdsync_applier_checkpoint_revision", "etcdsync_publisher_last_revision", "etcdsync_applier_txn_duration_seconds_bucket",
		"etcdsync_auditor_keys", "etcdsync_applier_gaps_total", "etcdsync_publisher_snapshots_total", "etcdsync_applier_errors_total",
		"etcdsync_applier_verified", "etcdsync_publisher_last_verified_timestamp_seconds"} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// TestServiceMonitor checks that the scrape selects the Services' labels
// and port name.
func TestServiceMonitor(t *testing.T) {
	b, err := os.ReadFile("prometheus/servicemonitor.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port string `json:"port"`
				Path string `json:"path"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &sm); err != nil {
		t.Fatal(err)
	}
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Kind != "ServiceMonitor" {
		t.Errorf("apiVersion/kind %s/%s", sm.APIVersion, sm.Kind)
	}
	for _, overlay := range overlays {
		bt := build(t, overlay)
		for name, s := range bt.services {
			if !selects(sm.Spec.Selector.MatchLabels, s.Labels) {
				t.Errorf("ServiceMonitor does not select Service %s (labels %v)", name, s.Labels)
			}
			for _, ep := range sm.Spec.Endpoints {
				var ok bool
				for _, p := range s.Spec.Ports {
					ok = ok || p.Name == ep.Port
				}
				if !ok {
					t.Errorf("Service %s has no port %q", name, ep.Port)
				}
			}
		}
	}
}
