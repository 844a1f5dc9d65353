package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// Excluded namespaces (and the preset's exclusions) are never written or
// deleted on the standby, including keys the standby had there before the
// snapshot that bootstrapped it.
func TestExcludedKeysUntouched(t *testing.T) {
	p := newPipeline(t)
	standbyOwn := map[string]string{
		"/registry/configmaps/kube-system/standby-only":                          "standby",
		"/registry/secrets/cpaas-system/standby-only":                            "standby",
		"/registry/namespaces/cpaas-system":                                      "standby-ns",
		"/registry/leases/kube-node-lease/standby-node":                          "standby-lease",
		"/registry/configmaps/team-a/kube-root-ca.crt":                           "standby-ca",
		"/registry/services/endpoints/default/kubernetes":                        "standby-eps",
		"/registry/minions/standby-node":                                         "standby-node",
		"/registry/masterleases/10.0.0.2":                                        "standby-ip",
		"compact_rev_key":                                                        "standby",
		"/registry/configmaps/kube-system/both":                                  "standby-version",
		"/registry/apiextensions.k8s.io/customresourcedefinitions/x.example.com": "in-scope, absent on primary",
	}
	for k, v := range standbyOwn {
		put(t, p.standby.Client, k, v)
	}
	primary := map[string]string{
		"/registry/configmaps/team-a/app":                 "a",
		"/registry/configmaps/team-a/kube-root-ca.crt":    "primary-ca",
		"/registry/configmaps/kube-system/both":           "primary-version",
		"/registry/secrets/cpaas-system/primary-only":     "p",
		"/registry/namespaces/cpaas-system":               "primary-ns",
		"/registry/namespaces/team-a":                     "ns",
		"/registry/events/team-a/e1":                      "event",
		"/registry/services/endpoints/default/kubernetes": "primary-eps",
		"/registry/minions/primary-node":                  "node",
		"/registry/example.com/widgets/team-a/w1":         "widget",
	}
	for k, v := range primary {
		put(t, p.primary.Client, k, v)
	}
	acfg := p.applierConfig()
	acfg.Scope.ExcludeNamespaces = []string{"cpaas-system"}
	acfg.AllowMassDelete = true // the standby's one in-scope key is absent on the primary
	ap, _ := p.startApplier(acfg)
	p.startPublisher(p.publisherConfig())
	// Live writes into excluded and included places.
	put(t, p.primary.Client, "/registry/configmaps/kube-system/live", "x")
	put(t, p.primary.Client, "/registry/configmaps/cpaas-system/live", "x")
	put(t, p.primary.Client, "/registry/configmaps/team-a/live", "x")
	if _, err := p.primary.Client.Delete(context.Background(), "/registry/configmaps/kube-system/both"); err != nil {
		t.Fatal(err)
	}
	p.waitConverged(ap.Rules(), 20*time.Second)

	// Every standby-own key is where it was, unchanged; the in-scope one
	// absent on the primary was deleted by the snapshot.
	for k, v := range standbyOwn {
		resp, err := p.standby.Client.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		if k == "/registry/apiextensions.k8s.io/customresourcedefinitions/x.example.com" {
			if len(resp.Kvs) != 0 {
				t.Fatalf("%s: in-scope standby key absent from the snapshot was not deleted", k)
			}
			continue
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != v {
			t.Fatalf("%s: excluded standby key changed: %v", k, resp.Kvs)
		}
	}
	// No excluded primary key reached the standby.
	for _, k := range []string{"/registry/secrets/cpaas-system/primary-only", "/registry/events/team-a/e1",
		"/registry/minions/primary-node", "/registry/configmaps/kube-system/live", "/registry/configmaps/cpaas-system/live"} {
		resp, err := p.standby.Client.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 0 {
			t.Fatalf("excluded key %s reached the standby", k)
		}
	}
	for _, k := range []string{"/registry/configmaps/team-a/app", "/registry/configmaps/team-a/live", "/registry/example.com/widgets/team-a/w1", "/registry/namespaces/team-a"} {
		resp, _ := p.standby.Client.Get(context.Background(), k)
		if len(resp.Kvs) != 1 {
			t.Fatalf("in-scope key %s missing on the standby", k)
		}
	}
}

// A revision too large for one message (a 1.4 MiB value; a prefix delete
// of 20k keys) travels as parts, and is applied split over several standby
// transactions.
func TestLargeRevisions(t *testing.T) {
	p := newPipeline(t)
	pcfg := p.publisherConfig()
	pcfg.MaxMessageBytes = 256 << 10
	p.startPublisher(pcfg)
	p.startApplier(rawApplierConfig(p))
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1400<<10/16)
	put(t, p.primary.Client, "/big/value", string(big))
	const n = 20000
	for i := 0; i < n; i += 128 {
		var ops []clientv3.Op
		for j := i; j < i+128 && j < n; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/many/key-%05d", j), "v"))
		}
		if _, err := p.primary.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	rules := rawRules(t)
	p.waitConverged(rules, 60*time.Second)
	resp, err := p.primary.Client.Delete(ctx, "/many/", clientv3.WithPrefix())
	if err != nil || resp.Deleted != n {
		t.Fatalf("prefix delete: %v, %d deleted", err, resp.Deleted)
	}
	put(t, p.primary.Client, "/after/delete", "ok")
	p.waitConverged(rules, 60*time.Second)
	if parts := maxParts(t, p); parts < 6 {
		t.Fatalf("the largest record travelled in %d parts, want at least 6 for 1.4 MiB in 256 KiB messages", parts)
	}
	got, err := p.standby.Client.Get(ctx, "/big/value")
	if err != nil || len(got.Kvs) != 1 || !bytes.Equal(got.Kvs[0].Value, big) {
		t.Fatal("1.4 MiB value not replicated intact")
	}
}

// A snapshot that would delete most of the standby's in-scope keys stops
// the applier and says how many; with AllowMassDelete it proceeds.
func TestMassDeleteGuard(t *testing.T) {
	p := newPipeline(t)
	for i := 0; i < 40; i++ {
		put(t, p.standby.Client, fmt.Sprintf("/old/%02d", i), "standby")
	}
	put(t, p.primary.Client, "/new/1", "primary")
	p.startPublisher(p.publisherConfig())
	_, r := p.startApplier(rawApplierConfig(p))
	err := r.wait(t, 20*time.Second, "applier facing a mass delete")
	var md *applier.MassDeleteError
	if !errors.As(err, &md) || md.Delete != 40 || md.InScope != 40 {
		t.Fatalf("want MassDeleteError deleting 40 of 40, got %v", err)
	}
	t.Logf("applier stopped with: %v", err)
	if resp, _ := p.standby.Client.Get(context.Background(), "/old/", clientv3.WithPrefix(), clientv3.WithCountOnly()); resp.Count != 40 {
		t.Fatalf("standby keys deleted despite the guard: %d left", resp.Count)
	}
	cfg := rawApplierConfig(p)
	cfg.AllowMassDelete = true
	p.startApplier(cfg)
	p.waitConverged(rawRules(t), 20*time.Second)
}

func kubernetesRules(t *testing.T, extra ...string) *keyspace.Rules {
	cfg := keyspace.DefaultConfig()
	cfg.ExcludeNamespaces = extra
	r, err := keyspace.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// maxParts returns the largest part count of any record in the log.
func maxParts(t *testing.T, p *pipeline) int {
	t.Helper()
	ctx := context.Background()
	s, err := p.js.JS.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	most := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var part, parts int
		if _, err := fmt.Sscanf(m.Header.Get(streams.HeaderPart), "%d/%d", &part, &parts); err != nil {
			t.Fatal(err)
		}
		most = max(most, parts)
	}
	return most
}

// Both sites run etcdsync and NATS in their own namespaces. The applier
// excludes the namespace it runs in (Scope.OwnNamespace, from POD_NAMESPACE)
// and the shipped scope excludes the NATS namespace, so a bootstrap and
// live writes neither delete the standby's applier, nor overwrite its
// Secrets and configuration with the primary's, nor create the primary's
// publisher on the standby.
func TestOwnNamespaceNeverReplicated(t *testing.T) {
	p := newPipeline(t)
	standbyOwn := map[string]string{
		"/registry/namespaces/etcdsync":                            "standby-ns",
		"/registry/deployments/etcdsync/etcdsync-applier":          "standby applier",
		"/registry/deployments/etcdsync/etcdsync-auditor":          "standby auditor",
		"/registry/configmaps/etcdsync/etcdsync-scope":             "standby scope",
		"/registry/secrets/etcdsync/etcd-client-cert":              "standby cert",
		"/registry/leases/etcdsync/etcdsync-applier":               "standby lease",
		"/registry/configmaps/nats/nats-config":                    "standby nats config",
		"/registry/statefulsets/nats/nats":                         "standby nats",
		"/registry/serviceaccounts/etcdsync/etcdsync":              "standby sa",
		"/registry/rolebindings/etcdsync/etcdsync-applier-binding": "standby rb",
	}
	for k, v := range standbyOwn {
		put(t, p.standby.Client, k, v)
	}
	primary := map[string]string{
		"/registry/namespaces/etcdsync":                   "primary-ns",
		"/registry/deployments/etcdsync/etcdsync-publish": "primary publisher",
		"/registry/secrets/etcdsync/etcd-client-cert":     "primary cert",
		"/registry/configmaps/nats/nats-config":           "primary nats config",
		"/registry/namespaces/team-a":                     "ns",
		"/registry/configmaps/team-a/app":                 "a",
	}
	for k, v := range primary {
		put(t, p.primary.Client, k, v)
	}
	acfg := p.applierConfig()
	acfg.Scope.OwnNamespace = "etcdsync"
	acfg.Scope.ExcludeNamespaces = []string{"nats"}
	ap, _ := p.startApplier(acfg)
	p.startPublisher(p.publisherConfig())
	put(t, p.primary.Client, "/registry/deployments/etcdsync/etcdsync-publish", "primary publisher v2")
	put(t, p.primary.Client, "/registry/secrets/nats/nats-creds", "primary creds")
	put(t, p.primary.Client, "/registry/configmaps/team-a/live", "x")
	p.waitConverged(ap.Rules(), 20*time.Second)

	resp, err := p.standby.Client.Get(context.Background(), "\x00", clientv3.WithRange("\x00"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	for k, v := range standbyOwn {
		if got[k] != v {
			t.Errorf("%s: the standby's own key is %q, want %q (replicated over or deleted)", k, got[k], v)
		}
	}
	for _, k := range []string{"/registry/deployments/etcdsync/etcdsync-publish", "/registry/secrets/nats/nats-creds"} {
		if v, ok := got[k]; ok {
			t.Errorf("the primary's %s reached the standby (%q)", k, v)
		}
	}
	for _, k := range []string{"/registry/configmaps/team-a/app", "/registry/configmaps/team-a/live"} {
		if _, ok := got[k]; !ok {
			t.Errorf("in-scope key %s missing on the standby", k)
		}
	}
}
