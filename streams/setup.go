package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureLogStream creates the log stream described by cfg, or updates an
// existing one to it. It returns the stream handle.
func EnsureLogStream(ctx context.Context, js jetstream.JetStream, cfg LogConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := js.CreateOrUpdateStream(ctx, cfg.StreamConfig())
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// JetStream error codes that mean an expected-sequence check failed: the
// single-replica code, the msg-id code and the clustered CAS code.
const (
	errCodeWrongLastSequence = 10071
	errCodeWrongLastMsgID    = 10070
	errCodeClusteredCAS      = 10164
)

// IsWrongLastSequence reports whether err is JetStream's rejection of a
// publish whose expected last sequence did not match (fencing).
func IsWrongLastSequence(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode {
	case errCodeWrongLastSequence, errCodeWrongLastMsgID, errCodeClusteredCAS:
		return true
	}
	return false
}

// MirrorConfig describes the standby site's copy of the log: a mirror of
// the primary site's stream in another JetStream domain. A mirror keeps the
// origin's sequence numbers, so the applier's sequence check works on it,
// and it keeps serving what already crossed while the link is down.
type MirrorConfig struct {
	// Name of the local (mirror) stream and of the origin stream. Default DefaultStream.
	Name, Origin string
	// OriginDomain is the primary site's JetStream domain, e.g. "primary".
	OriginDomain string
	// Replicas, MaxAge, MaxBytes as for the log stream.
	Replicas int
	MaxAge   time.Duration
	MaxBytes int64
}

// StreamConfig returns the JetStream configuration of the mirror.
func (c MirrorConfig) StreamConfig() jetstream.StreamConfig {
	origin := c.Origin
	if origin == "" {
		origin = c.Name
	}
	maxBytes := c.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "etcdsync log mirrored from " + origin + " in domain " + c.OriginDomain,
		Mirror:      &jetstream.StreamSource{Name: origin, Domain: c.OriginDomain},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(c.Replicas, 1),
		MaxAge:      c.MaxAge,
		MaxBytes:    maxBytes,
		MaxMsgs:     -1,
		// Unlimited: a mirror takes every message its origin took,
		// whatever the origin's max_msg_size (a fixed size below the
		// origin's would stall the mirror on the first larger message).
		MaxMsgSize: -1,
		Discard:    jetstream.DiscardOld,
	}
}

// EnsureMirror creates the mirror stream, or checks that an existing stream
// of that name is already a mirror of the same origin (a stream cannot be
// turned into a mirror: delete it first, after checking it holds nothing
// needed).
func EnsureMirror(ctx context.Context, js jetstream.JetStream, cfg MirrorConfig) (jetstream.Stream, error) {
	if err := ValidateStreamName(cfg.Name); err != nil {
		return nil, err
	}
	sc := cfg.StreamConfig()
	s, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if s, err = js.CreateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("create mirror %s of %s in domain %s: %w", cfg.Name, sc.Mirror.Name, cfg.OriginDomain, err)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", cfg.Name, err)
	}
	c := s.CachedInfo().Config
	if c.Mirror == nil || c.Mirror.Name != sc.Mirror.Name {
		return nil, fmt.Errorf("stream %s exists and is not a mirror of %s: delete it (it cannot be turned into a mirror) or pick another name", cfg.Name, sc.Mirror.Name)
	}
	if c.MaxMsgSize != sc.MaxMsgSize {
		// A mirror created with a fixed message size: lift it.
		c.MaxMsgSize = sc.MaxMsgSize
		if s, err = js.UpdateStream(ctx, c); err != nil {
			return nil, fmt.Errorf("update mirror %s: lift its max message size: %w", cfg.Name, err)
		}
	}
	return s, nil
}

// PromoteMirror turns the mirror stream name into a writable log stream for
// site (subjects "etcdsync.<site>.log.>"), keeping every message it holds,
// so the new primary's publisher can append a new generation to it.
// It needs nats-server 2.12 or later. A stream that is not a mirror is
// left as it is, with its subjects set for site.
func PromoteMirror(ctx context.Context, js jetstream.JetStream, name, site string) (jetstream.Stream, error) {
	if err := ValidateSite(site); err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("promote stream %s: %w", name, err)
	}
	sc := s.CachedInfo().Config
	sc.Mirror = nil
	sc.Subjects = []string{Subjects{Site: site}.LogWildcard()}
	if sc.Duplicates == 0 {
		sc.Duplicates = 2 * time.Minute
	}
	s, err = js.UpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("promote stream %s to a writable log for site %s: %w", name, site, err)
	}
	return s, nil
}
