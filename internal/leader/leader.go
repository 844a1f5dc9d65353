// Package leader runs a function only while this process is the elected
// leader among its replicas, using an etcd election (concurrency.Election).
//
// Leadership is a lease-backed key: when the leader dies, its lease expires
// after TTL seconds and a follower takes over; when it shuts down cleanly it
// resigns and a follower takes over at once. Leadership alone never
// guarantees exclusivity (a paused leader may not yet know it lost): the
// components fence each other (epoch markers, checkpoint compares), and
// the election only keeps the replicas from fighting.
package leader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Config configures an election.
type Config struct {
	// Key is the election prefix, e.g. "/etcdsync/election/ETCDSYNC/publisher".
	Key string
	// ID names this replica (hostname-pid); it is the leader key's value.
	ID string
	// TTL is the lease TTL in seconds: how long a dead leader holds on. Default 10.
	TTL int
	// Logger receives events; nil discards them.
	Logger *slog.Logger
	// Retry, if set, decides whether an error returned by the led function
	// should make this replica resign and campaign again (true) rather
	// than end Run (false). Losing the session always campaigns again.
	Retry func(error) bool
}

// Run campaigns on cli and calls fn while this replica leads, with a
// context cancelled when leadership is lost. It returns nil when ctx is
// cancelled, or fn's error unless leadership was lost meanwhile or Retry
// says to campaign again.
func Run(ctx context.Context, cli *clientv3.Client, cfg Config, fn func(context.Context) error) error {
	if cfg.Key == "" || cfg.ID == "" {
		return fmt.Errorf("leader election: key and id are required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for {
		err := lead(ctx, cli, cfg, log, fn)
		if ctx.Err() != nil {
			return nil
		}
		var lost *lostError
		switch {
		case errors.As(err, &lost):
			log.Warn("leadership lost, campaigning again", "election", cfg.Key, "err", lost.err)
		case err != nil && cfg.Retry != nil && cfg.Retry(err):
			log.Warn("resigned after an error, campaigning again", "election", cfg.Key, "err", err)
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// lostError wraps why a session ended under a leader.
type lostError struct{ err error }

func (e *lostError) Error() string { return "leadership lost: " + e.err.Error() }

// lead runs one term: campaign, run fn, resign.
func lead(ctx context.Context, cli *clientv3.Client, cfg Config, log *slog.Logger, fn func(context.Context) error) error {
	session, err := concurrency.NewSession(cli, concurrency.WithTTL(cfg.TTL), concurrency.WithContext(ctx))
	if err != nil {
		return &lostError{fmt.Errorf("open election session: %w", err)}
	}
	defer session.Close()
	e := concurrency.NewElection(session, cfg.Key)
	log.Info("campaigning for leadership", "election", cfg.Key, "id", cfg.ID)
	if err := e.Campaign(ctx, cfg.ID); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return &lostError{fmt.Errorf("campaign: %w", err)}
	}
	log.Info("leading", "election", cfg.Key, "id", cfg.ID)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-session.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	err = fn(lctx)
	select {
	case <-session.Done():
		return &lostError{errors.New("election session expired")}
	default:
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer rcancel()
	if rerr := e.Resign(rctx); rerr != nil {
		log.Warn("resign leadership", "election", cfg.Key, "err", rerr)
	}
	return err
}
