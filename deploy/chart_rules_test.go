package deploy

import (
	"strings"
	"testing"
)

// TestChartRulesPerRole: a site's PrometheusRule holds the alerts of the
// components it runs, and only those: the publisher's on the primary, the
// applier's and the auditor's (when it runs) on the standby. An alert of a
// component the site does not run fires there for good
// (EtcdsyncPublisherDown's absent(up{job="etcdsync-publisher"}) on every
// standby, EtcdsyncAuditorNotRunning on every primary).
func TestChartRulesPerRole(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		set          map[string]any
	}{
		{"primary", "ci/primary-values.yaml", nil},
		{"standby", "ci/standby-values.yaml", nil},
		{"standby without auditor", "ci/standby-values.yaml", map[string]any{"auditor": map[string]any{"enabled": false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := chartValues(t, tc.values)
			for k, v := range tc.set {
				vals[k] = v
			}
			r := renderDecoded(t, vals)
			if len(r.prometheusRules) != 1 {
				t.Fatalf("%d PrometheusRules, want 1", len(r.prometheusRules))
			}
			running := map[string]bool{}
			for name := range r.deployments {
				running[strings.TrimPrefix(name, "etcdsync-")] = true
			}
			alerted := map[string]bool{}
			for _, g := range r.prometheusRules[0].Spec.Groups {
				for _, rule := range g.Rules {
					c := rule.Labels["component"]
					if !running[c] {
						t.Errorf("group %s: alert %s of component %q, which this site does not run (it runs %v)", g.Name, rule.Alert, c, keys(running))
					}
					alerted[c] = true
				}
			}
			for c := range running {
				if !alerted[c] {
					t.Errorf("no alert for the %s, which this site runs", c)
				}
			}
			checkMonitoring(t, r, valuesOf(t, vals))
		})
	}
}
