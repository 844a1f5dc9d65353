package auditor_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/internal/testenv"
)

// gauge returns the value of the metric name with the given label pairs.
func gauge(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

func get(t *testing.T, h http.Handler, target, accept string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestRunCheckAndMetrics runs the interval loop and reads /check and the
// metrics, through drift (409, so a blackbox probe alerts), consistency
// (200) and a failure (503).
func TestRunCheckAndMetrics(t *testing.T) {
	e := newEnv(t, false)
	e.copyKeys(map[string]string{"/registry/configmaps/app/a": "1", "/registry/configmaps/app/b": "2"})
	del(t, e.standby.Client, "/registry/configmaps/app/a")
	reg := prometheus.NewRegistry()
	cfg := e.config()
	cfg.Interval = 50 * time.Millisecond
	a := e.auditor(cfg, reg)
	h := a.CheckHandler()
	if code, body := get(t, h, "/check", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "no audit has completed yet") {
		t.Fatalf("/check before the first audit: %d %q", code, body)
	}

	runBG(t, a.Run)
	testenv.Eventually(t, 10*time.Second, func() bool { _, ok := a.Last(); return ok }, "a completed audit")
	code, body := get(t, h, "/check", "")
	if code != http.StatusConflict || !strings.Contains(body, "LOCAL ETCD missed keys: 1") || !strings.Contains(body, "/registry/configmaps/app/a") ||
		!strings.Contains(body, "drift events: not published") {
		t.Errorf("/check text: %d\n%s", code, body)
	}
	for _, target := range []string{"/check?format=json", "/check"} {
		code, body := get(t, h, target, "application/json")
		var resp auditor.CheckResponse
		if err := json.Unmarshal([]byte(body), &resp); err != nil || code != http.StatusConflict || resp.Report == nil ||
			resp.Report.Missed.Count != 1 || resp.Report.Missed.Keys[0].Key != "/registry/configmaps/app/a" {
			t.Errorf("/check json via %s: %d %v\n%s", target, code, err, body)
		}
	}
	if v := gauge(t, reg, "etcdsync_auditor_keys", "state", "missed"); v != 1 {
		t.Errorf("missed gauge = %v", v)
	}
	if v := gauge(t, reg, "etcdsync_auditor_keys", "state", "surplus"); v != 0 {
		t.Errorf("surplus gauge = %v", v)
	}
	if v := gauge(t, reg, "etcdsync_auditor_keys_compared"); v != 2 {
		t.Errorf("keys compared = %v", v)
	}
	if v := gauge(t, reg, "etcdsync_auditor_last_run_timestamp_seconds"); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last run timestamp = %v", v)
	}

	// The drift repaired, /check answers 200.
	put(t, e.standby.Client, "/registry/configmaps/app/a", "1")
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, body := get(t, h, "/check", "")
		return code == http.StatusOK && strings.Contains(body, "result: CONSISTENT")
	}, "/check 200 once consistent")

	// Audits now fail: /check says so, with the previous report.
	del(t, e.standby.Client, ckKey)
	testenv.Eventually(t, 10*time.Second, func() bool { return gauge(t, reg, "etcdsync_auditor_errors_total") > 0 }, "a failed audit counted")
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, body := get(t, h, "/check", "")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "not bootstrapped") && strings.Contains(body, "previous report")
	}, "/check reporting the failure")
}
