package auditor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// Auditor compares the standby with the primary at a consistent point,
// reports and publishes the drift, and repairs it on request.
type Auditor struct {
	cfg     Config
	primary *clientv3.Client
	standby *clientv3.Client
	js      jetstream.JetStream // nil: no drift events
	rules   *keyspace.Rules     // of Config.Scope
	hasher  *streams.ValueHasher
	log     *slog.Logger
	metrics *metrics

	driftReady atomic.Bool
	last       atomic.Pointer[Report]
	lastErr    atomic.Pointer[failure]

	// betweenReads, if set, is called by Repair between its reads of the
	// checkpoint and of the key on the primary (tests inject faults there).
	betweenReads func(key string)
}

// failure is the outcome of an audit that could not complete.
type failure struct {
	err  error
	time time.Time
	// reseeding: the standby was being re-seeded (a state, not a failure).
	reseeding bool
}

// New validates cfg and returns an Auditor reading the primary and the
// standby etcd. js may be nil: reports are then not published as drift
// events. With js, the drift stream is created or updated on the first
// audit. Metrics are registered on reg (nil: not registered).
func New(cfg Config, primary, standby *clientv3.Client, js jetstream.JetStream, reg prometheus.Registerer) (*Auditor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("auditor config: %w", err)
	}
	if primary == nil || standby == nil {
		return nil, fmt.Errorf("auditor: primary and standby etcd clients are required")
	}
	rules, err := keyspace.New(cfg.Scope)
	if err != nil {
		return nil, fmt.Errorf("auditor scope: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Auditor{cfg: cfg, primary: primary, standby: standby, js: js, rules: rules,
		hasher: cfg.LogKeys.ValueHasher(), log: log, metrics: newMetrics(reg)}, nil
}

// Rules returns the rules of Config.Scope (an audit may compare the
// applier's recorded scope instead: see Report.Scope).
func (a *Auditor) Rules() *keyspace.Rules { return a.rules }

// Last returns the last completed report, if any.
func (a *Auditor) Last() (Report, bool) {
	if r := a.last.Load(); r != nil {
		return *r, true
	}
	return Report{}, false
}

// Audit runs one audit: it reads the standby's checkpoint at the standby's
// current revision S (its source position P), reads the standby at S and
// the primary at P page by page, and compares the in-scope keys. With a
// JetStream context the report is published as drift events; a failure to
// publish is recorded in Report.Events (and counted in the errors metric),
// not returned. Audit blocks until done.
//
// Errors: ErrNotBootstrapped (no checkpoint, or a snapshot is being
// applied), ErrCompacted (the primary no longer holds revision P), or an
// error reading either side. Nothing is written to either etcd.
func (a *Auditor) Audit(ctx context.Context) (Report, error) {
	start := time.Now()
	rep, err := a.audit(ctx, start)
	reseed := errors.Is(err, ErrReseeding)
	a.metrics.reseeding.Set(0)
	if reseed {
		a.metrics.reseeding.Set(1)
	}
	if err != nil {
		if !reseed {
			a.metrics.errors.Inc()
		}
		a.lastErr.Store(&failure{err: err, time: start, reseeding: reseed})
		return Report{}, err
	}
	if err := a.publish(ctx, &rep); err != nil {
		a.metrics.errors.Inc()
	}
	a.metrics.observe(&rep, start)
	a.last.Store(&rep)
	a.lastErr.Store(nil)
	return rep, nil
}

func (a *Auditor) audit(ctx context.Context, start time.Time) (Report, error) {
	c, err := a.readCut(ctx)
	if err != nil {
		return Report{}, err
	}
	sc, err := a.resolveScope(ctx, c.standbyRev)
	if err != nil {
		return Report{}, err
	}
	head, err := a.checkPrimary(ctx, c, sc)
	if err != nil {
		return Report{}, err
	}
	if err := a.findUnknownNamespaces(ctx, sc, c.pos.Revision, c.standbyRev); err != nil {
		return Report{}, err
	}
	rep := Report{
		ID:              runID(start),
		Time:            start.UTC(),
		Site:            a.cfg.Site,
		Prefix:          sc.prefix,
		Scope:           sc.info,
		ClusterID:       clusterHex(c.pos.ClusterID),
		Generation:      c.pos.Generation,
		SourceRevision:  c.pos.Revision,
		StreamSeq:       c.pos.Seq,
		StandbyRevision: c.standbyRev,
		SourceTime:      c.sourceTime,
		ValueHMACKey:    a.hasher.KeyID(),

		PrimaryHeadRevision: head,
		BehindHeadRevisions: max(head-c.pos.Revision, 0),
	}
	if !c.sourceTime.IsZero() {
		rep.SourceAgeSeconds = start.Sub(c.sourceTime).Seconds()
	}
	if err := a.compare(ctx, &rep, c, sc); err != nil {
		return Report{}, err
	}
	rep.Consistent = rep.Drifted() == 0
	rep.DurationSeconds = time.Since(start).Seconds()
	return rep, nil
}

// runID returns a new run identifier: the start time and a random suffix.
func runID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Run audits every Config.Interval, starting at once, until ctx is
// cancelled; it then returns nil. An audit that fails is logged, counted in
// etcdsync_auditor_errors_total and retried at the next interval. The last
// report is served by CheckHandler.
func (a *Auditor) Run(ctx context.Context) error {
	for {
		rep, err := a.Audit(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrReseeding):
			a.log.Info("standby re-seeding, nothing to compare yet", "reason", err, "retry_in", a.cfg.Interval)
		case err != nil:
			a.log.Warn("audit failed", "err", err, "retry_in", a.cfg.Interval)
		default:
			attrs := []any{"run_id", rep.ID, "standby_revision", rep.StandbyRevision, "source_revision", rep.SourceRevision,
				"generation", rep.Generation, "keys_compared", rep.Compared, "missed", rep.Missed.Count,
				"surplus", rep.Surplus.Count, "mismatched", rep.Mismatched.Count, "duration_seconds", rep.DurationSeconds}
			if rep.Consistent {
				a.log.Info("audit consistent", attrs...)
			} else {
				a.log.Warn("audit found drift", attrs...)
			}
			if a.js != nil && !rep.Events.Published {
				a.log.Warn("drift events not published", "run_id", rep.ID, "err", rep.Events.Error)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.cfg.Interval):
		}
	}
}
