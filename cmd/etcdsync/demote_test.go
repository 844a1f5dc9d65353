package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// TestDemote clears a promoted etcd's checkpoint and prints what it held,
// refuses while a component of that etcd is running (a leader-election
// candidate here) and refuses a standby that was never promoted.
func TestDemote(t *testing.T) {
	e, cli := startEtcd(t)
	ctx := context.Background()
	const key = "/etcdsync/checkpoint/ETCDSYNC"
	putCk := func(promoted bool) {
		t.Helper()
		ck := applier.Checkpoint{Position: streams.Position{ClusterID: 0xabc123, Generation: 7, Revision: 42, Seq: 99}, Promoted: promoted}
		b, _ := json.Marshal(ck)
		if _, err := cli.Put(ctx, key, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	putCk(true)
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, applier.ElectionPrefix("ETCDSYNC", "publish")+"/694d", "host-1", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCmd(t, "demote", "--standby-endpoints", e.Endpoint)
	if code != exitFailure || !strings.Contains(stderr, "running") || !strings.Contains(stderr, "host-1") {
		t.Fatalf("demote with a publisher running: exit %d\n%s%s", code, out, stderr)
	}
	if resp, _ := cli.Get(ctx, key); len(resp.Kvs) != 1 {
		t.Fatal("a refused demote removed the checkpoint")
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCmd(t, "demote", "--standby-endpoints", e.Endpoint)
	if code != exitOK || !strings.Contains(out, "cluster abc123") || !strings.Contains(out, "abc123:7:42:0@99") {
		t.Fatalf("demote: exit %d\n%s%s", code, out, stderr)
	}
	if resp, _ := cli.Get(ctx, key); len(resp.Kvs) != 0 {
		t.Fatal("demote left the checkpoint")
	}
	if resp, _ := cli.Get(ctx, applier.DemotedKey("ETCDSYNC")); len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"promoted":true`) {
		t.Fatal("demote did not save the checkpoint it removed")
	}
	code, out, _ = runCmd(t, "demote", "--standby-endpoints", e.Endpoint)
	if code != exitOK || !strings.Contains(out, "nothing to demote") {
		t.Fatalf("demote of an etcd without checkpoint: exit %d\n%s", code, out)
	}
	putCk(false)
	code, _, stderr = runCmd(t, "demote", "--standby-endpoints", e.Endpoint)
	if code != exitFailure || !strings.Contains(stderr, "not promoted") {
		t.Fatalf("demote of a following standby: exit %d\n%s", code, stderr)
	}
}
