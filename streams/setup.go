package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrMirror is wrapped by the error of an operation that would write to,
// or reconfigure as a log, a stream that is a mirror: only promote converts
// a mirror.
var ErrMirror = errors.New("log stream is a mirror")

// EnsureLogStream creates the log stream described by cfg, or updates an
// existing one to it (what `etcdsync streams init` does, with an
// identity allowed to). It refuses a stream that is a mirror. It returns
// the stream handle.
func EnsureLogStream(ctx context.Context, js jetstream.JetStream, cfg LogConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		// Created with the create permission alone (the publisher's).
		if s, err = js.CreateStream(ctx, cfg.StreamConfig()); err != nil {
			return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("look up stream %s: %w", cfg.Name, err)
	}
	if err := refuseMirror(s); err != nil {
		return nil, err
	}
	if s, err = js.UpdateStream(ctx, cfg.StreamConfig()); err != nil {
		return nil, fmt.Errorf("update stream %s (an identity allowed to update streams, such as the admin, changes an existing one): %w", cfg.Name, err)
	}
	return s, nil
}

// OpenLogStream is how a publisher gets its log stream: it creates the
// stream described by cfg if it is missing, and otherwise changes nothing.
// An existing stream belongs to the operator (`etcdsync streams init`, or
// NATS tooling): a stream that is a mirror is refused (ErrMirror), so is
// one that does not take the log's subjects or messages of maxMsg bytes;
// each limit that differs from cfg is returned in differs ("max age 168h0m0s
// (publish flags: 0s)") for the caller to warn about. A publisher needs no
// right to update streams.
func OpenLogStream(ctx context.Context, js jetstream.JetStream, cfg LogConfig, maxMsg int) (s jetstream.Stream, differs []string, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	want := cfg.StreamConfig()
	s, err = js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, cfg.Name) // created by another publisher meanwhile
		} else if err != nil {
			return nil, nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("look up stream %s: %w", cfg.Name, err)
	}
	if err := refuseMirror(s); err != nil {
		return nil, nil, err
	}
	have := s.CachedInfo().Config
	if !slices.Contains(have.Subjects, want.Subjects[0]) {
		return nil, nil, fmt.Errorf("stream %s takes subjects %q, not the log's %s: is --site right? (etcdsync streams init sets them)", cfg.Name, have.Subjects, want.Subjects[0])
	}
	if have.MaxMsgSize > 0 && int64(have.MaxMsgSize) < int64(maxMsg) {
		return nil, nil, fmt.Errorf("stream %s takes messages of at most %d bytes, below the %d bytes the publisher writes: lower --max-message-bytes or raise the stream's max message size", cfg.Name, have.MaxMsgSize, maxMsg)
	}
	note := func(what string, have, want any) {
		if have != want {
			differs = append(differs, fmt.Sprintf("%s %v (publish flags: %v)", what, have, want))
		}
	}
	note("replicas", have.Replicas, want.Replicas)
	note("max age", have.MaxAge, want.MaxAge)
	note("max bytes", have.MaxBytes, want.MaxBytes)
	note("max messages", have.MaxMsgs, want.MaxMsgs)
	note("max message size", have.MaxMsgSize, want.MaxMsgSize)
	note("duplicate window", have.Duplicates, want.Duplicates)
	return s, differs, nil
}

// refuseMirror returns an error wrapping ErrMirror, naming the stream and
// its origin, when s is a mirror.
func refuseMirror(s jetstream.Stream) error {
	c := s.CachedInfo().Config
	m := c.Mirror
	if m == nil {
		return nil
	}
	origin := m.Name
	if m.Domain != "" {
		origin += " in domain " + m.Domain
	} else if m.External != nil && m.External.APIPrefix != "" {
		origin += " via " + m.External.APIPrefix
	}
	return fmt.Errorf("stream %s is a mirror of %s, not a log to write or reconfigure (is --nats-url the standby site's? only promote converts a mirror): %w",
		c.Name, origin, ErrMirror)
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
