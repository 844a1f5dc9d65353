package deploy

import (
	"encoding/json"
	"io"
	"log/slog"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// siteLabels are the constant labels every etcdsync component metric
// carries (cmd/etcdsync labelled): the site whose log it serves and the log
// stream.
var siteLabels = []string{"site", "stream"}

// checkAggregations checks that every aggregation over an etcdsync metric
// in expr keeps the site and stream labels, so that two sites in one
// Prometheus are never summed or maxed together.
func checkAggregations(t *testing.T, where, expr string) {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		agg, ok := n.(*parser.AggregateExpr)
		if !ok {
			return nil
		}
		ours := false
		parser.Inspect(agg.Expr, func(m parser.Node, _ []parser.Node) error {
			if vs, ok := m.(*parser.VectorSelector); ok && strings.HasPrefix(vs.Name, "etcdsync_") {
				ours = true
			}
			return nil
		})
		for _, l := range siteLabels {
			if ours && (agg.Without || !slices.Contains(agg.Grouping, l)) {
				t.Errorf("%s: %s does not keep the label %s: write %s by (site, stream, ...)", where, agg, l, agg.Op)
			}
		}
		return nil
	})
}

// TestAlertsKeepSiteAndStream: every alert aggregates etcdsync metrics by
// site and stream, so that with both sites in one Prometheus an alert
// names the site, EtcdsyncStandbyBehind compares a publisher with the
// applier of its own log, and after a role swap (the new primary
// publishes as another site) the old site's series do not mix in.
func TestAlertsKeepSiteAndStream(t *testing.T) {
	for _, src := range rulesFiles {
		// The chart's copies (the same bytes, TestChartFilesAreTheSources),
		// embedded so that the mutants' -overlay edits reach them.
		file := chartDir + "/files/" + path.Base(src)
		b, err := chartFiles.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		groups, errs := rulefmt.Parse(b, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if len(errs) > 0 {
			t.Fatalf("%s: %v", file, errs)
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				checkAggregations(t, file+": alert "+r.Alert, r.Expr)
			}
		}
	}
}

// TestDashboardSelectsSiteAndStream: the dashboard has $site and $stream
// variables, every etcdsync series it shows is selected by them, and its
// aggregations keep both labels.
func TestDashboardSelectsSiteAndStream(t *testing.T) {
	b, err := chartFiles.ReadFile(chartDir + "/files/" + path.Base(dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
	}
	for _, l := range siteLabels {
		if !vars[l] {
			t.Errorf("dashboard has no $%s variable", l)
		}
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			expr := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m").Replace(tg.Expr)
			e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
				continue
			}
			parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok || !strings.HasPrefix(vs.Name, "etcdsync_") {
					return nil
				}
				for _, l := range siteLabels {
					if !slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
						return m.Name == l && m.Type == labels.MatchRegexp && m.Value == "$"+l
					}) {
						t.Errorf("panel %q: %s is not selected by %s=~\"$%s\"", p.Title, vs, l, l)
					}
				}
				return nil
			})
			checkAggregations(t, "panel "+p.Title, expr)
		}
	}
}
