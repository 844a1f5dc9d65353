package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/keyspace"
)

func TestSnapshotThenLiveRevisions(t *testing.T) {
	p := newPipeline(t)
	for i := 0; i < 50; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/app/pre/%03d", i), "v")
	}
	acfg := p.applierConfig()
	acfg.Scope.Mode = keyspace.ModeRaw
	p.startPublisher(p.publisherConfig())
	p.startApplier(acfg)
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	for i := 0; i < 50; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/app/live/%03d", i), fmt.Sprint(i))
	}
	if _, err := p.primary.Client.Delete(context.Background(), "/app/pre/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	p.waitConverged(rules, 20*time.Second)
}
