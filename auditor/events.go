package auditor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/streams"
)

// Drift event schemas (the "schema" field of each event).
const (
	SummarySchema = "etcdsync.drift.summary/v1"
	KeySchema     = "etcdsync.drift.key/v2"
)

// eventAckTimeout bounds the wait for the drift events' acknowledgements.
const eventAckTimeout = 30 * time.Second

// SummarySubject returns the subject of the per-run summary event:
// "etcdsync.<site>.drift.summary".
func SummarySubject(site string) string { return streams.Subjects{Site: site}.Drift() + ".summary" }

// KeySubject returns the subject of per-key drift events:
// "etcdsync.<site>.drift.key".
func KeySubject(site string) string { return streams.Subjects{Site: site}.Drift() + ".key" }

// DriftStreamConfig returns the JetStream configuration of the drift
// stream: subjects "etcdsync.<site>.drift" and "etcdsync.<site>.drift.>",
// file storage, limits retention with MaxAge, discard old.
func DriftStreamConfig(cfg Config) jetstream.StreamConfig {
	subj := streams.Subjects{Site: cfg.Site}.Drift()
	return jetstream.StreamConfig{
		Name:        cfg.DriftStream,
		Description: "etcdsync drift events of site " + cfg.Site,
		Subjects:    []string{subj, subj + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.DriftReplicas,
		MaxAge:      cfg.DriftMaxAge,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	}
}

// SummaryEvent is the JSON body of a summary event, one per audit run.
type SummaryEvent struct {
	Schema             string    `json:"schema"`
	RunID              string    `json:"run_id"`
	Time               time.Time `json:"time"`
	Site               string    `json:"site"`
	Prefix             string    `json:"prefix"`
	ClusterID          string    `json:"cluster_id"`
	Generation         uint64    `json:"generation"`
	SourceRevision     int64     `json:"source_revision"`
	StandbyRevision    int64     `json:"standby_revision"`
	StreamSeq          uint64    `json:"stream_seq"`
	Consistent         bool      `json:"consistent"`
	KeysCompared       int64     `json:"keys_compared"`
	Missed             int64     `json:"missed"`
	Surplus            int64     `json:"surplus"`
	Mismatched         int64     `json:"mismatched"`
	KeyEvents          int       `json:"key_events"`
	KeyEventsTruncated bool      `json:"key_events_truncated"`
	DurationSeconds    float64   `json:"duration_seconds"`
}

// KeyEvent is the JSON body of a per-key drift event.
type KeyEvent struct {
	Schema          string    `json:"schema"`
	RunID           string    `json:"run_id"`
	Time            time.Time `json:"time"`
	Site            string    `json:"site"`
	ClusterID       string    `json:"cluster_id"`
	Generation      uint64    `json:"generation"`
	SourceRevision  int64     `json:"source_revision"`
	StandbyRevision int64     `json:"standby_revision"`
	// Index numbers the run's key events from 0.
	Index int `json:"index"`
	// ValueHMACKey names the key of the value hashes (Report.ValueHMACKey).
	ValueHMACKey string `json:"value_hmac_key"`
	KeyDrift
}

// publish sends rep as drift events: the key events, then the summary,
// all asynchronously, then waits for every acknowledgement. It records the
// outcome in rep.Events and returns an error when an event was not stored.
func (a *Auditor) publish(ctx context.Context, rep *Report) error {
	if a.js == nil {
		rep.Events = EventStatus{Error: "no JetStream connection (no --nats-url)"}
		return nil
	}
	rep.Events = EventStatus{Stream: a.cfg.DriftStream, Subject: streams.Subjects{Site: a.cfg.Site}.Drift()}
	if err := a.ensureDriftStream(ctx); err != nil {
		rep.Events.Error = err.Error()
		return err
	}
	keys := rep.tracked
	if len(keys) > a.cfg.MaxEvents {
		keys = keys[:a.cfg.MaxEvents]
	}
	rep.Events.Truncated = int64(len(keys)) < rep.Drifted()
	var futures []jetstream.PubAckFuture
	send := func(subject, id string, body any) error {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode drift event %s: %w", id, err)
		}
		msg := &nats.Msg{Subject: subject, Data: b, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		f, err := a.js.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("publish drift event %s: %w", id, err)
		}
		futures = append(futures, f)
		return nil
	}
	now := time.Now().UTC()
	for i, k := range keys {
		ev := KeyEvent{Schema: KeySchema, RunID: rep.ID, Time: now, Site: rep.Site, ClusterID: rep.ClusterID,
			Generation: rep.Generation, SourceRevision: rep.SourceRevision, StandbyRevision: rep.StandbyRevision, Index: i, ValueHMACKey: rep.ValueHMACKey, KeyDrift: k}
		if err := send(KeySubject(a.cfg.Site), rep.ID+":"+strconv.Itoa(i), ev); err != nil {
			rep.Events.Error = err.Error()
			return err
		}
	}
	sum := SummaryEvent{Schema: SummarySchema, RunID: rep.ID, Time: now, Site: rep.Site, Prefix: rep.Prefix,
		ClusterID: rep.ClusterID, Generation: rep.Generation, SourceRevision: rep.SourceRevision,
		StandbyRevision: rep.StandbyRevision, StreamSeq: rep.StreamSeq, Consistent: rep.Consistent,
		KeysCompared: rep.Compared, Missed: rep.Missed.Count, Surplus: rep.Surplus.Count, Mismatched: rep.Mismatched.Count,
		KeyEvents: len(keys), KeyEventsTruncated: rep.Events.Truncated, DurationSeconds: rep.DurationSeconds}
	if err := send(SummarySubject(a.cfg.Site), rep.ID+":summary", sum); err != nil {
		rep.Events.Error = err.Error()
		return err
	}
	timeout := time.NewTimer(eventAckTimeout)
	defer timeout.Stop()
	for _, f := range futures {
		select {
		case <-f.Ok():
			rep.Events.Messages++
		case err := <-f.Err():
			rep.Events.Error = fmt.Sprintf("drift event on %s not stored: %v", f.Msg().Subject, err)
			return fmt.Errorf("publish drift event on %s: %w", f.Msg().Subject, err)
		case <-timeout.C:
			rep.Events.Error = fmt.Sprintf("no acknowledgement within %s", eventAckTimeout)
			return fmt.Errorf("publish drift events: no acknowledgement within %s", eventAckTimeout)
		case <-ctx.Done():
			rep.Events.Error = ctx.Err().Error()
			return ctx.Err()
		}
	}
	rep.Events.Published = true
	return nil
}

// ensureDriftStream creates or updates the drift stream once per Auditor
// (again after a failure). A stream that exists with the configured
// subjects, age and replicas is used as it is: an auditor whose NATS
// identity may not manage streams (the reader role) publishes into the
// drift stream that the publisher or `streams init` created.
func (a *Auditor) ensureDriftStream(ctx context.Context) error {
	if a.driftReady.Load() {
		return nil
	}
	want := DriftStreamConfig(a.cfg)
	if s, err := a.js.Stream(ctx, want.Name); err == nil {
		have := s.CachedInfo().Config
		if slices.Equal(have.Subjects, want.Subjects) && have.MaxAge == want.MaxAge && have.Replicas == want.Replicas {
			a.driftReady.Store(true)
			return nil
		}
	}
	if _, err := a.js.CreateOrUpdateStream(ctx, want); err != nil {
		return fmt.Errorf("ensure drift stream %s: %w", a.cfg.DriftStream, err)
	}
	a.driftReady.Store(true)
	return nil
}
