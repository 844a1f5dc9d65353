package applier

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// Errors callers branch on.
var (
	// ErrGap means the stream no longer holds the messages after the
	// checkpoint (or delivered a sequence jump). Re-seeding is required.
	ErrGap = errors.New("gap in the log")
	// ErrConflict means the checkpoint changed under the applier (another
	// applier wrote it, or the standby was promoted).
	ErrConflict = errors.New("checkpoint changed by someone else")
	// ErrMassDelete means a snapshot would delete more of the standby's
	// in-scope keys than allowed.
	ErrMassDelete = errors.New("snapshot would delete too many standby keys")
	// ErrNoBase means a revision arrived for a generation the standby holds
	// no snapshot of (Run re-seeds).
	ErrNoBase = errors.New("no snapshot applied for this generation")
)

// GapError says which sequence was expected and which arrived.
type GapError struct {
	Want, Got uint64
}

func (e *GapError) Error() string {
	return fmt.Sprintf("gap in the log: expected stream sequence %d, got %d (%d messages missing)", e.Want, e.Got, e.Got-e.Want)
}

// Unwrap makes errors.Is(err, ErrGap) true.
func (e *GapError) Unwrap() error { return ErrGap }

// MassDeleteError says how many keys a snapshot would delete.
type MassDeleteError struct {
	Delete, InScope int64
	MaxRatio        float64
}

func (e *MassDeleteError) Error() string {
	return fmt.Sprintf("snapshot would delete %d of the standby's %d in-scope keys (more than %.0f%%); re-run with --allow-mass-delete if that is intended",
		e.Delete, e.InScope, e.MaxRatio*100)
}

// Unwrap makes errors.Is(err, ErrMassDelete) true.
func (e *MassDeleteError) Unwrap() error { return ErrMassDelete }

// Config configures an Applier.
type Config struct {
	// Stream is the log stream name. Default streams.DefaultStream.
	Stream string
	// Site names the log subjects. Default streams.DefaultSite.
	Site string
	// CheckpointKey is the standby key holding the checkpoint.
	// Default "/etcdsync/checkpoint/<Stream>". It must be outside the
	// replicated scope (Validate refuses it otherwise).
	CheckpointKey string
	// Scope decides which keys are replicated.
	Scope keyspace.Config
	// MaxTxnOps is the standby's --max-txn-ops, checkpoint included. Default 128.
	MaxTxnOps int
	// MaxTxnBytes bounds the request size of one standby transaction,
	// checkpoint included. Default 1 MiB; one operation larger than this
	// goes alone. At most MaxRequestBytes.
	MaxTxnBytes int
	// MaxRequestBytes is the standby's --max-request-bytes. Default 1.5 MiB
	// (etcd's default). An operation too large to go with the checkpoint
	// under it is written alone under the checkpoint compare and the
	// checkpoint follows; one the standby refuses even so stops the applier
	// (ErrTooLarge).
	MaxRequestBytes int
	// MaxBatchMessages bounds the messages handed to ApplyBatch at once. Default 1024.
	MaxBatchMessages int
	// MaxDeleteRatio is the largest share of the standby's in-scope keys a
	// snapshot may delete without AllowMassDelete. Default 0.5.
	MaxDeleteRatio float64
	// MassDeleteMinKeys is the number of deletions a snapshot may always
	// make, whatever the ratio (so a tiny keyspace can converge). Default 10.
	MassDeleteMinKeys int64
	// AllowMassDelete lifts MaxDeleteRatio.
	AllowMassDelete bool
	// Reseed lets the applier re-seed from a snapshot older than its
	// checkpoint, rolling the standby back, where it would otherwise wait:
	// when the stream ends before the checkpoint in the checkpoint's own
	// history (a mirror refilling from seq 1 after the standby site's NATS
	// lost its store), or holds only snapshots older than the checkpoint.
	// Default false: wait, and never roll back.
	Reseed bool
	// MinBackoff and MaxBackoff bound the retry delay. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// VerifyInterval is how often the applier scans the standby's in-scope
	// keys at its checkpoint and compares them with the checkpoint's digest
	// (Verify); 0 disables it. Default 10m.
	VerifyInterval time.Duration
	// LogKeys verifies every message's MAC before anything of its batch is
	// written: a message without a valid MAC for its stream position stops
	// the applier (errors wrap streams.ErrUnauthenticated). nil accepts an
	// unauthenticated log.
	LogKeys *streams.KeyRing
	// Logger receives events; nil discards them. Debug prints each revision.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Stream:            streams.DefaultStream,
		Site:              streams.DefaultSite,
		Scope:             keyspace.DefaultConfig(),
		MaxTxnOps:         128,
		MaxTxnBytes:       1 << 20,
		MaxRequestBytes:   3 << 19,
		MaxBatchMessages:  1024,
		MaxDeleteRatio:    0.5,
		MassDeleteMinKeys: 10,
		MinBackoff:        100 * time.Millisecond,
		MaxBackoff:        10 * time.Second,
		VerifyInterval:    10 * time.Minute,
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
	rules, err := keyspace.New(c.Scope)
	if err != nil {
		return err
	}
	if k := c.checkpointKey(); rules.Allowed([]byte(k)) {
		// A snapshot would delete it (the snapshot does not hold it) and
		// the log could overwrite it: the standby would lose its position.
		return fmt.Errorf("checkpoint key %q is inside the replicated scope: choose a key the scope rules exclude, e.g. under %s", k, keyspace.OwnPrefix)
	}
	if c.MaxTxnOps < 2 {
		return fmt.Errorf("max txn ops %d: must be at least 2 (one operation and the checkpoint)", c.MaxTxnOps)
	}
	if c.MaxTxnBytes < 4<<10 {
		return fmt.Errorf("max txn bytes %d: must be at least 4096", c.MaxTxnBytes)
	}
	if c.MaxRequestBytes < c.MaxTxnBytes {
		return fmt.Errorf("max request bytes %d: must be at least max txn bytes %d", c.MaxRequestBytes, c.MaxTxnBytes)
	}
	if c.MaxBatchMessages < 1 {
		return fmt.Errorf("max batch messages %d: must be at least 1", c.MaxBatchMessages)
	}
	if c.MaxDeleteRatio < 0 || c.MaxDeleteRatio > 1 {
		return fmt.Errorf("max delete ratio %g: must be between 0 and 1", c.MaxDeleteRatio)
	}
	if c.MassDeleteMinKeys < 0 {
		return fmt.Errorf("mass delete minimum %d: must not be negative", c.MassDeleteMinKeys)
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("backoff %s..%s: must be positive and ordered", c.MinBackoff, c.MaxBackoff)
	}
	if c.VerifyInterval < 0 {
		return fmt.Errorf("verify interval %s: must not be negative", c.VerifyInterval)
	}
	return nil
}

// EffectiveCheckpointKey returns the checkpoint key: CheckpointKey, or the
// default for the stream.
func (c Config) EffectiveCheckpointKey() string { return c.checkpointKey() }

func (c Config) checkpointKey() string {
	if c.CheckpointKey != "" {
		return c.CheckpointKey
	}
	return keyspace.OwnPrefix + "checkpoint/" + c.Stream
}
