package auditor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	keys      *prometheus.GaugeVec
	lastRun   prometheus.Gauge
	duration  prometheus.Gauge
	compared  prometheus.Gauge
	unparsed  prometheus.Gauge
	errors    prometheus.Counter
	repaired  prometheus.Counter
	reseeding prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcdsync_auditor_keys",
			Help: "Drifted keys found by the last completed audit, by state (missed, surplus, mismatched)."}, []string{"state"}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_auditor_last_run_timestamp_seconds",
			Help: "Unix time the last completed audit started."}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_auditor_last_run_duration_seconds",
			Help: "Duration of the last completed audit."}),
		compared: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_auditor_keys_compared",
			Help: "In-scope keys compared by the last completed audit."}),
		unparsed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_auditor_unparsed_keys",
			Help: "In-scope keys compared by the last completed audit that do not parse as Kubernetes keys (kubernetes keyspace): in scope by the prefix rules alone, no namespace or resource exclusion applies to them."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_auditor_errors_total",
			Help: "Audits that could not complete, and reports whose drift events could not be published."}),
		repaired: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_auditor_repaired_keys_total",
			Help: "Keys written or deleted on the standby by repairs."}),
		reseeding: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_auditor_reseeding",
			Help: "1 while the last audit found the standby re-seeding from a snapshot (nothing to compare; not an error)."}),
	}
	for _, st := range []State{Missed, Surplus, Mismatched} {
		m.keys.WithLabelValues(string(st))
	}
	if reg != nil {
		reg.MustRegister(m.keys, m.lastRun, m.duration, m.compared, m.unparsed, m.errors, m.repaired, m.reseeding)
	}
	return m
}

func (m *metrics) observe(rep *Report, start time.Time) {
	m.keys.WithLabelValues(string(Missed)).Set(float64(rep.Missed.Count))
	m.keys.WithLabelValues(string(Surplus)).Set(float64(rep.Surplus.Count))
	m.keys.WithLabelValues(string(Mismatched)).Set(float64(rep.Mismatched.Count))
	m.lastRun.Set(float64(start.UnixNano()) / 1e9)
	m.duration.Set(rep.DurationSeconds)
	m.compared.Set(float64(rep.Compared))
	m.unparsed.Set(float64(rep.Unparsed.Count))
}
