package publisher

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/streams"
)

type metrics struct {
	revisions     prometheus.Counter
	bytes         prometheus.Counter
	lastRevision  prometheus.Gauge
	sourceRev     prometheus.Gauge
	generation    prometheus.Gauge
	errors        prometheus.Counter
	snapshots     *prometheus.CounterVec
	snapshotsKeys prometheus.Counter
	snapshotAge   prometheus.GaugeFunc
	snapshotEvery prometheus.Gauge
	stalls        prometheus.Counter
	verified      prometheus.Gauge
	mismatches    prometheus.Counter
}

var nan = math.NaN()

// newMetrics creates the publisher's metrics; age returns the seconds since
// the newest complete snapshot started.
func newMetrics(reg prometheus.Registerer, age func() float64, interval time.Duration) *metrics {
	m := &metrics{
		revisions:     prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_publisher_revisions_total", Help: "Source revisions published and acknowledged."}),
		bytes:         prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_publisher_bytes_total", Help: "Message bytes published."}),
		lastRevision:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_publisher_last_revision", Help: "Last source revision acknowledged by the stream."}),
		sourceRev:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_publisher_source_revision", Help: "Current revision of the source etcd as last seen (events or progress notifications)."}),
		generation:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_publisher_generation", Help: "Generation being published."}),
		errors:        prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_publisher_errors_total", Help: "Sessions ended by an error (each is followed by a retry from the stream tail)."}),
		snapshots:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdsync_publisher_snapshots_total", Help: "Snapshots published, by reason."}, []string{"reason"}),
		snapshotsKeys: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_publisher_snapshot_keys_total", Help: "Keys published in snapshots."}),
		snapshotAge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "etcdsync_publisher_snapshot_age_seconds",
			Help: "Seconds since the newest complete snapshot in the stream started (NaN until one is known)."}, age),
		snapshotEvery: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_publisher_snapshot_interval_seconds",
			Help: "The configured interval of periodic snapshots (0: disabled)."}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_publisher_watch_stalls_total",
			Help: "Sessions ended because the etcd watch answered no progress request while the source moved (each reconnects)."}),
		verified: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_publisher_last_verified_timestamp_seconds",
			Help: "When a rescan of the source last matched the keyspace digest the log carries (0: never)."}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_publisher_verify_mismatches_total",
			Help: "Rescans of the source whose keyspace digest differed from the log's (each starts a new generation)."}),
	}
	m.snapshotEvery.Set(interval.Seconds())
	if reg != nil {
		reg.MustRegister(m.revisions, m.bytes, m.lastRevision, m.sourceRev, m.generation, m.errors, m.snapshots, m.snapshotsKeys, m.snapshotAge, m.snapshotEvery, m.stalls, m.verified, m.mismatches)
	}
	return m
}

func (m *metrics) published(pos streams.Position) {
	m.revisions.Inc()
	m.lastRevision.Set(float64(pos.Revision))
	m.generation.Set(float64(pos.Generation))
}
