package publisher

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/etcdsync/etcdsync/streams"
)

// ErrFenced is returned by Run when another publisher has taken over the
// stream (it wrote a newer epoch marker). It is not retried.
var ErrFenced = errors.New("publisher fenced: another publisher wrote a newer epoch marker")

// ErrMirrorStream is returned by Run when the log stream is a mirror (the
// standby site's copy of another site's log): a publisher never writes to
// it, and only promote converts a mirror into a writable stream. It is not
// retried.
var ErrMirrorStream = streams.ErrMirror

// ErrRetention is returned by Run when the log stream's retention cannot
// hold a complete snapshot: its max age is not longer than the snapshot
// interval, or its max bytes are below twice the size of a snapshot just
// published. A standby with a gap could then find no base to re-seed
// from. It is not retried.
var ErrRetention = errors.New("log stream retention cannot hold a complete snapshot")

// Config configures a Publisher.
type Config struct {
	// Stream describes the log stream. The publisher creates it if it is
	// missing; an existing stream's settings are the operator's (see
	// streams.OpenLogStream).
	Stream streams.LogConfig
	// Prefix limits what is published to keys with this prefix ("" = all).
	Prefix string
	// MaxMessageBytes is the largest message published, headers included
	// (streams.HeaderRoom of it is theirs); larger records are split into
	// parts. At most the stream's MaxMsgSize. Default 1,000 KiB (fits NATS'
	// default 1 MB max_payload).
	MaxMessageBytes int
	// Window is the number of messages published but not yet acknowledged.
	// Default 256.
	Window int
	// KubernetesPrefix is the apiserver's etcd prefix, used only to order
	// snapshots (CustomResourceDefinitions, then Namespaces, first). Default "/registry".
	KubernetesPrefix string
	// SnapshotPageSize is the number of keys per paginated snapshot Get
	// (keys only). Default 5000.
	SnapshotPageSize int64
	// SnapshotChunkBytes is the target size of one snapshot chunk. Default 512 KiB.
	SnapshotChunkBytes int
	// SnapshotInterval is how often a periodic snapshot is published in the
	// same generation, so retention can drop old messages while a complete
	// base stays in the stream. 0 disables them. Default 4h.
	SnapshotInterval time.Duration
	// ProgressInterval is how often the publisher asks etcd for watch
	// progress and, when the prefix was idle, publishes an empty revision
	// record at the source's current revision. Default 5s.
	ProgressInterval time.Duration
	// ProbeInterval is how often the publisher proves that the source
	// still holds the history the log describes: it reads the newest
	// published keys at the last published revision and compares them with
	// what was published (a restored etcd keeps its cluster ID). Default 1s.
	ProbeInterval time.Duration
	// VerifyInterval is how often the publisher rescans the source, pinned
	// at a revision it published, and compares the keyspace digest with the
	// one the log carries for that revision (it also does at every session
	// start). A mismatch means the log no longer tells the source's truth:
	// a new generation starts with a snapshot. 0 disables the periodic
	// rescan (not the one at session start). Default 10m.
	VerifyInterval time.Duration
	// AckTimeout bounds the wait for one acknowledgement. Default 10s.
	AckTimeout time.Duration
	// MinBackoff and MaxBackoff bound the retry delay after an error.
	// Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// Leader names this publisher in epoch markers. Default "<hostname>-<pid>".
	Leader string
	// LogKeys signs every message (its first key) for its stream position;
	// nil publishes an unauthenticated log.
	LogKeys *streams.KeyRing
	// Logger receives events; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Stream:             streams.DefaultLogConfig(),
		MaxMessageBytes:    1000 << 10,
		Window:             256,
		KubernetesPrefix:   "/registry",
		SnapshotPageSize:   5000,
		SnapshotChunkBytes: 512 << 10,
		SnapshotInterval:   4 * time.Hour,
		ProgressInterval:   5 * time.Second,
		ProbeInterval:      time.Second,
		VerifyInterval:     10 * time.Minute,
		AckTimeout:         10 * time.Second,
		MinBackoff:         100 * time.Millisecond,
		MaxBackoff:         10 * time.Second,
		Leader:             fmt.Sprintf("%s-%d", host, os.Getpid()),
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if err := c.Stream.Validate(); err != nil {
		return err
	}
	if c.MaxMessageBytes < 4<<10 {
		return fmt.Errorf("max message bytes %d: must be at least 4096", c.MaxMessageBytes)
	}
	if int64(c.MaxMessageBytes) > int64(c.Stream.MaxMsgSize) {
		return fmt.Errorf("max message bytes %d: exceeds the stream's max message size %d", c.MaxMessageBytes, c.Stream.MaxMsgSize)
	}
	if c.Window < 1 {
		return fmt.Errorf("publish window %d: must be at least 1", c.Window)
	}
	if c.SnapshotPageSize < 1 {
		return fmt.Errorf("snapshot page size %d: must be at least 1", c.SnapshotPageSize)
	}
	if c.SnapshotChunkBytes < 1 {
		return fmt.Errorf("snapshot chunk bytes %d: must be at least 1", c.SnapshotChunkBytes)
	}
	if c.ProgressInterval <= 0 {
		return fmt.Errorf("progress interval %s: must be positive", c.ProgressInterval)
	}
	if c.ProbeInterval <= 0 {
		return fmt.Errorf("probe interval %s: must be positive", c.ProbeInterval)
	}
	if c.VerifyInterval < 0 {
		return fmt.Errorf("verify interval %s: must not be negative", c.VerifyInterval)
	}
	if c.SnapshotInterval < 0 {
		return fmt.Errorf("snapshot interval %s: must not be negative", c.SnapshotInterval)
	}
	if c.Stream.MaxAge > 0 && (c.SnapshotInterval == 0 || c.SnapshotInterval >= c.Stream.MaxAge) {
		return fmt.Errorf("snapshot interval %s: must be set and below the stream's max age %s, or the stream loses its last complete snapshot", c.SnapshotInterval, c.Stream.MaxAge)
	}
	if c.AckTimeout <= 0 {
		return fmt.Errorf("ack timeout %s: must be positive", c.AckTimeout)
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("backoff %s..%s: must be positive and ordered", c.MinBackoff, c.MaxBackoff)
	}
	if c.Leader == "" {
		return fmt.Errorf("leader name is required")
	}
	return nil
}
