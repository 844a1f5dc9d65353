package auditor

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// Errors callers branch on.
var (
	// ErrNotBootstrapped means the standby holds no usable checkpoint: it was
	// never bootstrapped, or a snapshot is being applied. There is no
	// consistent point to compare at; retry later.
	ErrNotBootstrapped = errors.New("standby not bootstrapped / snapshot in progress")
	// ErrCompacted means the primary has compacted its history past the
	// source revision the standby holds, so the primary cannot be read at
	// that revision. Retry once the applier has caught up, or re-seed the
	// standby if it is stuck.
	ErrCompacted = errors.New("primary compacted past the standby's source revision")
	// ErrReseeding means a snapshot is being applied to the standby (a
	// re-seed, or its first bootstrap): a state, not a failure. It is not
	// counted in etcdsync_auditor_errors_total, sets
	// etcdsync_auditor_reseeding, and /check answers 200. errors.Is(err,
	// ErrNotBootstrapped) holds too.
	ErrReseeding error = reseeding{}
)

// reseeding is ErrReseeding.
type reseeding struct{}

func (reseeding) Error() string { return "standby re-seeding from a snapshot" }

// Is makes errors.Is(ErrReseeding, ErrNotBootstrapped) true.
func (reseeding) Is(target error) bool { return target == ErrNotBootstrapped }

// Defaults.
const (
	// DefaultPageSize is the number of keys per paginated Get on each side.
	DefaultPageSize = 1000
	// DefaultPageBytes bounds the size of one page (one etcd response).
	DefaultPageBytes = 4 << 20
	// minPageBytes is the smallest PageBytes accepted.
	minPageBytes = 64 << 10
	// DefaultMaxKeys is the number of keys of each kind listed in a Report.
	DefaultMaxKeys = 20
	// DefaultMaxEvents is the number of per-key drift events published per run.
	DefaultMaxEvents = 1000
	// DefaultMaxTrackedKeys bounds the drifted keys an audit remembers for
	// drift events and repair.
	DefaultMaxTrackedKeys = 100_000
	// DefaultInterval is the "Data Check Interval" of Run.
	DefaultInterval = 5 * time.Minute
	// DefaultDriftMaxAge is how long the drift stream keeps events.
	DefaultDriftMaxAge = 7 * 24 * time.Hour
	// DefaultRepairRetries bounds the attempts to repair one key while the
	// applier keeps moving the checkpoint.
	DefaultRepairRetries = 50
)

// Config configures an Auditor.
type Config struct {
	// Stream is the log stream name; it names the checkpoint key.
	// Default streams.DefaultStream.
	Stream string
	// Site names the drift subjects (etcdsync.<Site>.drift.>). Default
	// streams.DefaultSite.
	Site string
	// CheckpointKey is the standby key holding the applier's checkpoint.
	// Default "/etcdsync/checkpoint/<Stream>" (the applier's default).
	CheckpointKey string
	// Scope decides which keys are compared: the applier's rules.
	Scope keyspace.Config
	// Prefix is the publisher's prefix: only keys under it are compared.
	// Default "" (every key).
	Prefix string
	// ExplicitScope says Scope was chosen by the caller (the audit's scope
	// flags), ExplicitPrefix that Prefix was: they are compared, and any
	// difference with the scope the applier recorded in the standby
	// (applier.ScopeRecord) is reported and makes Repair refuse. When false
	// (default) the audit compares the applier's recorded rules and
	// publisher prefix, and uses Scope and Prefix only when none is
	// recorded (Repair then refuses too).
	ExplicitScope, ExplicitPrefix bool
	// ScopeOrigin says, for reports, where Scope and Prefix came from (e.g.
	// "--exclude-namespace (command line)"). Optional.
	ScopeOrigin string
	// PageSize is the largest number of keys per paginated Get. Default 1000.
	PageSize int64
	// PageBytes bounds the size of one page: a response larger than this
	// is refused before it is read and asked for again with fewer keys, so
	// the memory of an audit is bounded in bytes whatever the size of the
	// values. A single key larger than PageBytes is read alone. Default
	// 4 MiB, at least 64 KiB.
	PageBytes int64
	// MaxKeys is the number of keys of each kind (missed, surplus,
	// mismatched) listed in a Report. Default 20.
	MaxKeys int
	// MaxEvents is the number of per-key drift events published per run
	// (the summary is always published). Default 1000.
	MaxEvents int
	// MaxTrackedKeys bounds the drifted keys an audit remembers for events
	// and Repair; drift beyond it is counted but needs another run to
	// repair. Default 100000.
	MaxTrackedKeys int
	// DriftStream is the stream holding drift events, created or updated
	// by New when a JetStream context is given. Default streams.DefaultDriftStream.
	DriftStream string
	// DriftMaxAge is how long drift events are kept. Default 7 days.
	DriftMaxAge time.Duration
	// DriftReplicas is the drift stream's replica count. Default 1.
	DriftReplicas int
	// Interval is the time between audits in Run (the "Data Check
	// Interval"). Default 5 minutes.
	Interval time.Duration
	// RepairSurplus lets Repair delete surplus keys (only on the standby).
	// Default false: they are reported, never deleted.
	RepairSurplus bool
	// RepairRetries bounds the transactions tried to repair one key when
	// the applier moves the checkpoint in between (each retry is immediate,
	// one round trip). Default 50.
	RepairRetries int
	// Progress, if set, is called from Audit after each compared page with
	// the number of in-scope keys compared so far and the time elapsed.
	Progress func(compared int64, elapsed time.Duration)
	// LogKeys is the log's key ring (--log-key-file): the value hashes of
	// reports and drift events are HMAC-SHA256 under its signing key, so
	// that every holder of the ring can compare them and nobody else can
	// test guesses of a value against them. nil: under a random key of this
	// Auditor (hashes compare within its reports only). The auditor reads
	// no log message, so it verifies none.
	LogKeys *streams.KeyRing
	// Logger receives events; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Stream:         streams.DefaultStream,
		Site:           streams.DefaultSite,
		Scope:          keyspace.DefaultConfig(),
		PageSize:       DefaultPageSize,
		PageBytes:      DefaultPageBytes,
		MaxKeys:        DefaultMaxKeys,
		MaxEvents:      DefaultMaxEvents,
		MaxTrackedKeys: DefaultMaxTrackedKeys,
		DriftStream:    streams.DefaultDriftStream,
		DriftMaxAge:    DefaultDriftMaxAge,
		DriftReplicas:  1,
		Interval:       DefaultInterval,
		RepairRetries:  DefaultRepairRetries,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if err := streams.ValidateStreamName(c.Stream); err != nil {
		return err
	}
	if err := streams.ValidateSite(c.Site); err != nil {
		return err
	}
	if err := streams.ValidateStreamName(c.DriftStream); err != nil {
		return fmt.Errorf("drift %w", err)
	}
	if c.DriftStream == c.Stream {
		return fmt.Errorf("drift stream %q: must differ from the log stream", c.DriftStream)
	}
	if err := c.Scope.Validate(); err != nil {
		return err
	}
	switch {
	case c.PageSize < 1:
		return fmt.Errorf("page size %d: must be at least 1", c.PageSize)
	case c.PageBytes < minPageBytes || c.PageBytes > math.MaxInt32:
		return fmt.Errorf("page bytes %d: must be between %d and %d", c.PageBytes, minPageBytes, math.MaxInt32)
	case c.MaxKeys < 0:
		return fmt.Errorf("max keys %d: must not be negative", c.MaxKeys)
	case c.MaxEvents < 0:
		return fmt.Errorf("max events %d: must not be negative", c.MaxEvents)
	case c.MaxTrackedKeys < 0:
		return fmt.Errorf("max tracked keys %d: must not be negative", c.MaxTrackedKeys)
	case c.DriftMaxAge < 0:
		return fmt.Errorf("drift max age %s: must not be negative", c.DriftMaxAge)
	case c.DriftReplicas < 1 || c.DriftReplicas > 5:
		return fmt.Errorf("drift stream replicas %d: must be between 1 and 5", c.DriftReplicas)
	case c.Interval <= 0:
		return fmt.Errorf("interval %s: must be positive", c.Interval)
	case c.RepairRetries < 1:
		return fmt.Errorf("repair retries %d: must be at least 1", c.RepairRetries)
	}
	return nil
}

// checkpointKey returns the standby key of the applier's checkpoint.
func (c Config) checkpointKey() string {
	if c.CheckpointKey != "" {
		return c.CheckpointKey
	}
	return keyspace.OwnPrefix + "checkpoint/" + c.Stream
}

// scopeKey returns the standby key of the applier's scope record.
func (c Config) scopeKey() string { return applier.ScopeKey(c.checkpointKey()) }

// tracked is the number of drifted keys an audit remembers.
func (c Config) tracked() int {
	return max(c.MaxKeys, c.MaxEvents, c.MaxTrackedKeys)
}
