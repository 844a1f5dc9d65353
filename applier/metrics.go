package applier

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type metrics struct {
	revisions  prometheus.Counter
	ops        prometheus.Counter
	unparsed   prometheus.Counter
	txns       prometheus.Histogram
	checkpoint prometheus.Gauge
	lag        prometheus.Gauge
	lagMsgs    prometheus.Gauge
	lagRevs    prometheus.Gauge
	snapshots  prometheus.Counter
	gaps       prometheus.Counter
	errors     prometheus.Counter
	stopped    prometheus.Counter

	unauthenticated prometheus.Counter
	unguardedPuts   prometheus.Counter
	// waitSeq and waitSnapshot say what the applier waits for.
	waitSeq      prometheus.Gauge
	waitSnapshot prometheus.Gauge
	// mirrorContact and mirrorLag describe the link from a mirror stream
	// to its origin.
	mirrorContact prometheus.Gauge
	mirrorLag     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		revisions: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_revisions_total", Help: "Source revisions applied to the standby."}),
		ops:       prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_keys_total", Help: "Key operations (puts and deletes) written to the standby."}),
		unparsed: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_unparsed_keys_total",
			Help: "Key operations written to the standby whose key does not parse as a Kubernetes key (kubernetes keyspace): in scope by the prefix rules alone, no namespace or resource exclusion applies to them, e.g. an aggregated API server storing under its own --etcd-prefix inside the prefix."}),
		txns:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "etcdsync_applier_txn_duration_seconds", Help: "Latency of standby transactions.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		checkpoint: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_checkpoint_revision", Help: "Source revision of the standby's checkpoint."}),
		lag:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_lag_seconds", Help: "Apply time minus the time the publisher observed the last applied revision; while messages wait, now minus that time."}),
		lagMsgs:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_lag_messages", Help: "Stream messages not yet applied (checked every 2s)."}),
		lagRevs:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_lag_revisions", Help: "Newest source revision in the stream minus the checkpoint's (same generation; checked every 2s)."}),
		snapshots:  prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_snapshots_applied_total", Help: "Snapshots applied (bootstraps and re-seeds)."}),
		gaps:       prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_gaps_total", Help: "Gaps detected in the log (each leads to a re-seed)."}),
		errors:     prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_errors_total", Help: "Sessions ended by a retryable error."}),
		stopped:    prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_stopped_total", Help: "Times the applier stopped on an error that needs an operator or a re-seed."}),

		unauthenticated: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_unauthenticated_messages_total", Help: "Log messages rejected because their MAC is missing, unknown or wrong for their position."}),
		unguardedPuts: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_unguarded_puts_total",
			Help: "Puts written without the checkpoint compare because etcd refused them with it (a value within a few dozen bytes of the request limit)."}),
		waitSeq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_waiting_for_stream_seq",
			Help: "The stream sequence the applier waits for the stream to reach (its checkpoint's: a mirror refilling); 0 when not waiting for the stream."}),
		waitSnapshot: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_waiting_for_snapshot",
			Help: "1 while the applier waits for a snapshot it can re-seed from (none in the stream, or only ones older than its checkpoint), else 0."}),
		mirrorContact: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_mirror_last_contact_seconds",
			Help: "Seconds since the stream, a mirror, last heard from its origin (the primary's log; about every second while the link works); +Inf when it never has since its server started, 0 when the stream is not a mirror (checked every 2s)."}),
		mirrorLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_mirror_origin_lag_messages",
			Help: "Origin messages the mirror has not copied yet, as of its last contact with the origin (0 when the stream is not a mirror; checked every 2s)."}),
	}
	if reg != nil {
		reg.MustRegister(m.revisions, m.ops, m.unparsed, m.txns, m.checkpoint, m.lag, m.lagMsgs, m.lagRevs, m.snapshots, m.gaps, m.errors, m.stopped,
			m.unauthenticated, m.unguardedPuts, m.waitSeq, m.waitSnapshot, m.mirrorContact, m.mirrorLag)
	}
	return m
}

// observeTxn records a committed transaction of ops key operations,
// unparsed of them on keys that do not parse, completing revs revisions.
func (m *metrics) observeTxn(d time.Duration, ops, unparsed, revs int, ck Checkpoint) {
	m.txns.Observe(d.Seconds())
	m.ops.Add(float64(ops))
	m.unparsed.Add(float64(unparsed))
	m.revisions.Add(float64(revs))
	m.checkpoint.Set(float64(ck.Position.Revision))
	if !ck.SourceTime.IsZero() {
		m.lag.Set(ck.AppliedAt.Sub(ck.SourceTime).Seconds())
	}
}

// waitFor records what the applier waits for: the stream to reach seq
// (0: not), a usable snapshot.
func (m *metrics) waitFor(seq uint64, snapshot bool) {
	m.waitSeq.Set(float64(seq))
	if snapshot {
		m.waitSnapshot.Set(1)
	} else {
		m.waitSnapshot.Set(0)
	}
}

// observeMirror records the link from a mirror stream to its origin (m
// nil: the stream is not a mirror).
func (m *metrics) observeMirror(ms *MirrorStatus) {
	switch {
	case ms == nil:
		m.mirrorContact.Set(0)
		m.mirrorLag.Set(0)
		return
	case ms.LastContactSeconds < 0:
		m.mirrorContact.Set(math.Inf(1))
	default:
		m.mirrorContact.Set(ms.LastContactSeconds)
	}
	m.mirrorLag.Set(float64(ms.OriginLagMessages))
}

// verifyMetrics are the applier's verification metrics.
type verifyMetrics struct {
	last       prometheus.Gauge
	mismatches prometheus.Counter
	state      prometheus.Gauge
	// chainBreaks counts digested records whose digest the log's events
	// before them do not give.
	chainBreaks prometheus.Counter
}

func newVerifyMetrics(reg prometheus.Registerer) *verifyMetrics {
	m := &verifyMetrics{
		last: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_last_verified_timestamp_seconds",
			Help: "When a scan of the standby's in-scope keys last matched the checkpoint's digest (0: never)."}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_verify_mismatches_total",
			Help: "Scans of the standby's in-scope keys that differed from the checkpoint's digest: something wrote the standby behind the applier's back."}),
		state: prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdsync_applier_verified",
			Help: "Outcome of the last verification: 1 verified, 0 mismatch, -1 unverified (nothing to compare with yet)."}),
	}
	m.chainBreaks = prometheus.NewCounter(prometheus.CounterOpts{Name: "etcdsync_applier_log_chain_breaks_total",
		Help: "Digested log records whose keyspace digest the log's events before them do not give: the log is not the history it claims, or the applier skipped a record."})
	m.state.Set(-1)
	if reg != nil {
		reg.MustRegister(m.last, m.mismatches, m.state, m.chainBreaks)
	}
	return m
}

// testutilCounter reads a counter's value.
func testutilCounter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
