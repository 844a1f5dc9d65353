package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/leader"
	"github.com/etcdsync/etcdsync/publisher"
)

// Two publishers and two appliers, each pair led through an etcd election:
// the leaders are killed (their etcd connections cut, no resignation) in
// the middle of a workload; the followers take over after the lease TTL and
// the standby converges with no gap and no revision applied twice.
func TestHAFailoverOfLeaders(t *testing.T) {
	p := newPipeline(t)
	newClient := func(endpoints []string) *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	type replica struct {
		cli  *clientv3.Client
		name string
		run  *running
	}
	startPublisher := func(name string) *replica {
		cli := newClient(p.primary.Endpoints())
		pub, err := publisher.New(p.publisherConfig(), cli, p.conn(), nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := leader.Config{Key: "/etcdsync/election/test/publisher", ID: name, TTL: 2, Logger: testLogger(t),
			Retry: func(err error) bool { return errors.Is(err, publisher.ErrFenced) }}
		return &replica{cli: cli, name: name, run: start(t, func(ctx context.Context) error { return leader.Run(ctx, cli, cfg, pub.Run) })}
	}
	startApplier := func(name string) *replica {
		cli := newClient(p.standby.Endpoints())
		acfg := rawApplierConfig(p)
		acfg.MaxTxnOps = 8
		ap, err := applier.New(acfg, cli, p.conn(), nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := leader.Config{Key: "/etcdsync/election/test/applier", ID: name, TTL: 2, Logger: testLogger(t)}
		return &replica{cli: cli, name: name, run: start(t, func(ctx context.Context) error { return leader.Run(ctx, cli, cfg, ap.Run) })}
	}
	leaderOf := func(cli *clientv3.Client, key string) string {
		resp, err := cli.Get(context.Background(), key, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
		if err != nil || len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	pubs := map[string]*replica{"pub-a": startPublisher("pub-a"), "pub-b": startPublisher("pub-b")}
	aps := map[string]*replica{"ap-a": startApplier("ap-a"), "ap-b": startApplier("ap-b")}

	w := newWorkload(p.primary.Client, 11, "/ha/", 30)
	w.run(t, 300)
	rules := rawRules(t)
	p.waitConverged(rules, 30*time.Second)

	// Kill both leaders: cut their etcd connections, no resignation.
	pubLeader := leaderOf(p.primary.Client, "/etcdsync/election/test/publisher")
	apLeader := leaderOf(p.standby.Client, "/etcdsync/election/test/applier")
	if pubs[pubLeader] == nil || aps[apLeader] == nil {
		t.Fatalf("leaders: publisher %q, applier %q", pubLeader, apLeader)
	}
	pubs[pubLeader].cli.Close()
	aps[apLeader].cli.Close()
	killed := time.Now()
	w.run(t, 300)
	p.waitConverged(rules, 60*time.Second)
	t.Logf("followers took over; converged %s after the leaders were killed", time.Since(killed).Round(time.Millisecond))
	if now := leaderOf(p.primary.Client, "/etcdsync/election/test/publisher"); now == pubLeader || now == "" {
		t.Fatalf("publisher leader after the kill: %q", now)
	}
	checkExactlyOnce(t, p.primary, p.standby, rules)
	_ = fmt.Sprint
}
