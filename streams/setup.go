package streams

import (
	"context"
	"errors"
	"fmt"

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
