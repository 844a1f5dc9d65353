package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/leader"
	"github.com/etcdsync/etcdsync/keyspace"
)

// electFlags are the leader-election flags of publish and apply.
type electFlags struct {
	enabled bool
	ttl     time.Duration
	key     string
}

func (e *electFlags) register(f *flagSet, where string) {
	f.Bool(&e.enabled, "leader-elect", true, "run as one of several replicas: only the leader elected through the "+where+" etcd works (false: always work)")
	f.Duration(&e.ttl, "leader-ttl", 10*time.Second, "how long a dead leader holds leadership (`DURATION`, whole seconds)")
	f.String(&e.key, "leader-election-key", "", "election `KEY` prefix (default "+keyspace.OwnPrefix+"election/<stream>/<command>)")
}

func (e *electFlags) validate(cmd string) error {
	if e.enabled && e.ttl < time.Second {
		return usageErrorf(cmd, "--leader-ttl %s: must be at least 1s", e.ttl)
	}
	return nil
}

// wrap returns fn run under leader election when enabled; retry says which
// errors of fn make this replica resign and campaign again.
func (e *electFlags) wrap(cmd, stream string, cli *clientv3.Client, log *slog.Logger, retry func(error) bool, fn func(context.Context) error) func(context.Context) error {
	if !e.enabled {
		return fn
	}
	key := e.key
	if key == "" {
		key = keyspace.OwnPrefix + "election/" + stream + "/" + cmd
	}
	host, _ := os.Hostname()
	cfg := leader.Config{Key: key, ID: fmt.Sprintf("%s-%d", host, os.Getpid()), TTL: int(e.ttl / time.Second), Logger: log, Retry: retry}
	return func(ctx context.Context) error { return leader.Run(ctx, cli, cfg, fn) }
}
