package deploy

import (
	"context"
	"io"
	"log/slog"
	"math"
	"path"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// evalEvery is the scrape and rule evaluation interval of the evaluations
// below (a common 30s; Prometheus' default is 1m for both: an operator
// who keeps it gets alerts later).
const evalEvery = 30 * time.Second

// floatSample is one scraped float value.
type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                      { return s.t }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }

// oneSeries is a series set of one series.
type oneSeries struct {
	series storage.Series
	done   bool
}

func (s *oneSeries) Next() bool {
	next := !s.done
	s.done = true
	return next
}
func (s *oneSeries) At() storage.Series              { return s.series }
func (*oneSeries) Err() error                        { return nil }
func (*oneSeries) Warnings() annotations.Annotations { return nil }

// firstFiring evaluates alert of role's rules file (as the chart packages it) with Prometheus' PromQL
// engine every evalEvery from time 0 to end, keeping its pending state as
// Prometheus' rule manager does (it fires once its expression has held at
// every evaluation for its "for" duration), over one series (metric with
// the label job) scraped every evalEvery with the values value returns,
// and returns the first evaluation time at which it fires (-1: never).
func firstFiring(t *testing.T, role, alert, metric string, value func(at time.Duration) float64, end time.Duration) time.Duration {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The chart's copy (the same bytes, TestChartFilesAreTheSources),
	// embedded so that the mutants' -overlay edits reach it.
	file := chartDir + "/files/" + path.Base(rulesFiles[role])
	b, err := chartFiles.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(b, false, model.UTF8Validation, parser.NewParser(parser.Options{}), log)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", file, errs)
	}
	var rule *rulefmt.Rule
	for _, g := range groups.Groups {
		for i := range g.Rules {
			if g.Rules[i].Alert == alert {
				rule = &g.Rules[i]
			}
		}
	}
	if rule == nil {
		t.Fatalf("%s: no alert %s", file, alert)
	}
	var samples []chunks.Sample
	for at := time.Duration(0); at <= end; at += evalEvery {
		samples = append(samples, floatSample{t: at.Milliseconds(), f: value(at)})
	}
	series := storage.NewListSeries(labels.FromStrings(labels.MetricName, metric, "job", "etcdsync-"+roleComponents[role][0]), samples)
	queryable := &storage.MockQueryable{MockQuerier: &storage.MockQuerier{
		SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			for _, m := range ms {
				if !m.Matches(series.Labels().Get(m.Name)) {
					return storage.EmptySeriesSet()
				}
			}
			return &oneSeries{series: series}
		},
	}}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, Parser: parser.NewParser(parser.Options{})})
	activeAt := time.Duration(-1)
	for at := time.Duration(0); at <= end; at += evalEvery {
		q, err := engine.NewInstantQuery(context.Background(), queryable, nil, rule.Expr, time.UnixMilli(at.Milliseconds()))
		if err != nil {
			t.Fatalf("alert %s: %v", alert, err)
		}
		res := q.Exec(context.Background())
		q.Close()
		v, err := res.Vector()
		if err != nil {
			t.Fatalf("alert %s at %s: %v", alert, at, err)
		}
		switch {
		case len(v) == 0:
			activeAt = -1
		case activeAt < 0:
			activeAt = at
		}
		if activeAt >= 0 && at-activeAt >= time.Duration(rule.For) {
			return at
		}
	}
	return -1
}

// TestAlertCrossSiteLinkStalled: the standby's mirror hears from its
// origin about every second; when the link stalls at 5m its last contact
// grows with every scrape, while the applier's local lag stays 0. The
// alert fires within 2 minutes of the stall, never while the link works,
// and also when the mirror never reached its origin (+Inf).
func TestAlertCrossSiteLinkStalled(t *testing.T) {
	const alert, metric = "EtcdsyncCrossSiteLinkStalled", "etcdsync_applier_mirror_last_contact_seconds"
	stall := 5 * time.Minute
	lastContact := func(at time.Duration) float64 {
		if at <= stall {
			return 0.8
		}
		return (at - stall).Seconds() - 0.1
	}
	at := firstFiring(t, "standby", alert, metric, lastContact, stall+10*time.Minute)
	if at <= stall || at-stall > 2*time.Minute {
		t.Errorf("%s fired at %s for a link stalled at %s: want within 2m of the stall", alert, at, stall)
	}
	healthy := func(time.Duration) float64 { return 0.8 }
	if at := firstFiring(t, "standby", alert, metric, healthy, time.Hour); at >= 0 {
		t.Errorf("%s fired at %s while the link worked", alert, at)
	}
	never := func(time.Duration) float64 { return math.Inf(1) }
	if at := firstFiring(t, "standby", alert, metric, never, 10*time.Minute); at < 0 || at > 2*time.Minute {
		t.Errorf("%s for a mirror that never reached its origin: fired at %s, want within 2m", alert, at)
	}
}
