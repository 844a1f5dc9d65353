package streams

import (
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStream is the default name of the log stream.
const DefaultStream = "ETCDSYNC"

// DefaultSite is the default site name used in subjects.
const DefaultSite = "primary"

// DefaultDriftStream is the default name of the stream holding drift events.
const DefaultDriftStream = "ETCDSYNC_DRIFT"

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidateSite reports whether site can be used as a subject token.
func ValidateSite(site string) error {
	if !tokenRE.MatchString(site) {
		return fmt.Errorf("site %q: must be non-empty and contain only letters, digits, '-' and '_'", site)
	}
	return nil
}

// ValidateStreamName reports whether name can be used as a stream name.
func ValidateStreamName(name string) error {
	if !tokenRE.MatchString(name) {
		return fmt.Errorf("stream name %q: must be non-empty and contain only letters, digits, '-' and '_'", name)
	}
	return nil
}

// Subjects names every subject of one site.
type Subjects struct {
	Site string
}

// LogWildcard is the subject filter of the whole log: "etcdsync.<site>.log.>".
func (s Subjects) LogWildcard() string { return "etcdsync." + s.Site + ".log.>" }

// Revision is the subject of revision records.
func (s Subjects) Revision() string { return "etcdsync." + s.Site + ".log.rev" }

// SnapshotBegin is the subject of snapshot-begin records; its last message is
// the newest snapshot.
func (s Subjects) SnapshotBegin() string { return "etcdsync." + s.Site + ".log.snap.begin" }

// SnapshotChunk is the subject of snapshot-chunk records.
func (s Subjects) SnapshotChunk() string { return "etcdsync." + s.Site + ".log.snap.chunk" }

// SnapshotEnd is the subject of snapshot-end records.
func (s Subjects) SnapshotEnd() string { return "etcdsync." + s.Site + ".log.snap.end" }

// Epoch is the subject of epoch (fencing) markers.
func (s Subjects) Epoch() string { return "etcdsync." + s.Site + ".log.epoch" }

// ControlSnapshot is the request subject that asks the publisher for a snapshot.
func (s Subjects) ControlSnapshot() string { return "etcdsync." + s.Site + ".control.snapshot" }

// Drift is the subject of drift events.
func (s Subjects) Drift() string { return "etcdsync." + s.Site + ".drift" }

// ForKind returns the log subject of records of kind k.
func (s Subjects) ForKind(k Kind) string {
	switch k {
	case KindSnapshotBegin:
		return s.SnapshotBegin()
	case KindSnapshotChunk:
		return s.SnapshotChunk()
	case KindSnapshotEnd:
		return s.SnapshotEnd()
	case KindEpoch:
		return s.Epoch()
	default:
		return s.Revision()
	}
}

// LogConfig describes the log stream.
type LogConfig struct {
	// Name of the stream. Default DefaultStream.
	Name string
	// Site names the subjects. Default DefaultSite.
	Site string
	// Replicas is 1 for an embedded server, 3 in a cluster. Default 1.
	Replicas int
	// MaxAge drops messages older than this (0: keep forever).
	MaxAge time.Duration
	// MaxBytes caps the stream size (0: unlimited); old messages go first.
	MaxBytes int64
	// MaxMsgs caps the number of messages (0: unlimited); old messages go first.
	MaxMsgs int64
	// MaxMsgSize is the largest message the stream accepts. Default DefaultMaxMsgSize.
	MaxMsgSize int32
	// Duplicates is the Nats-Msg-Id deduplication window. Default 2
	// minutes; never longer than MaxAge.
	Duplicates time.Duration
}

// DefaultMaxMsgSize is the largest log message accepted by the stream
// (8 MiB, the embedded server's max_payload).
const DefaultMaxMsgSize = 8 << 20

// DefaultLogConfig returns the default log stream description.
func DefaultLogConfig() LogConfig {
	return LogConfig{
		Name:       DefaultStream,
		Site:       DefaultSite,
		Replicas:   1,
		MaxMsgSize: DefaultMaxMsgSize,
		Duplicates: 2 * time.Minute,
	}
}

// Validate checks the description.
func (c LogConfig) Validate() error {
	if err := ValidateStreamName(c.Name); err != nil {
		return err
	}
	if err := ValidateSite(c.Site); err != nil {
		return err
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("stream replicas %d: must be between 1 and 5", c.Replicas)
	}
	if c.MaxAge < 0 || c.MaxBytes < 0 || c.MaxMsgs < 0 || c.Duplicates < 0 {
		return fmt.Errorf("stream limits must not be negative")
	}
	if c.MaxMsgSize < 64<<10 {
		return fmt.Errorf("stream max message size %d: must be at least 64 KiB", c.MaxMsgSize)
	}
	return nil
}

// StreamConfig returns the JetStream configuration of the log stream: file
// storage, limits retention, discard old.
func (c LogConfig) StreamConfig() jetstream.StreamConfig {
	maxBytes, maxMsgs := c.MaxBytes, c.MaxMsgs
	if maxBytes == 0 {
		maxBytes = -1
	}
	if maxMsgs == 0 {
		maxMsgs = -1
	}
	// JetStream refuses a duplicate window longer than the stream's max age.
	dup := c.Duplicates
	if c.MaxAge > 0 && dup > c.MaxAge {
		dup = c.MaxAge
	}
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "etcdsync log of site " + c.Site,
		Subjects:    []string{Subjects{Site: c.Site}.LogWildcard()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		MaxAge:      c.MaxAge,
		MaxBytes:    maxBytes,
		MaxMsgs:     maxMsgs,
		MaxMsgSize:  c.MaxMsgSize,
		Discard:     jetstream.DiscardOld,
		Duplicates:  dup,
	}
}
