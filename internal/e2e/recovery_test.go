package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

func logStream(t *testing.T, p *pipeline) jetstream.Stream {
	t.Helper()
	s, err := p.js.JS.Stream(context.Background(), streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func lastSeq(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// The applier is down while retention drops messages it needs, including
// every snapshot: it detects the gap, asks the publisher for a snapshot,
// re-seeds, and the standby is exact again (deletes made meanwhile included).
func TestGapReseedsFromRequestedSnapshot(t *testing.T) {
	p := newPipeline(t)
	pcfg := p.publisherConfig()
	pcfg.SnapshotInterval = 0
	p.startPublisher(pcfg)
	_, ar := p.startApplier(rawApplierConfig(p))
	for i := 0; i < 20; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/g/k%02d", i), "v1")
	}
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	// While the standby is away: updates and deletes.
	for i := 0; i < 10; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/g/k%02d", i), "v2")
	}
	if _, err := p.primary.Client.Delete(context.Background(), "/g/k1", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	put(t, p.primary.Client, "/g/new", "x")
	s := logStream(t, p)
	wantLast := uint64(0)
	deadline := time.Now().Add(10 * time.Second)
	for wantLast = lastSeq(t, s); time.Now().Before(deadline); wantLast = lastSeq(t, s) {
		if resp, _ := s.GetLastMsgForSubject(context.Background(), streams.Subjects{Site: streams.DefaultSite}.Revision()); resp != nil && resp.Header.Get(streams.HeaderRevision) != "" {
			if m, err := s.GetMsg(context.Background(), wantLast); err == nil && m.Header.Get(streams.HeaderKind) == "revision" {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Retention removes everything but the last two messages.
	if err := s.Purge(context.Background(), jetstream.WithPurgeKeep(2)); err != nil {
		t.Fatal(err)
	}
	ap, _ := p.startApplier(rawApplierConfig(p))
	p.waitConverged(rules, 30*time.Second)
	// The keys can match before the snapshot's end record is applied; the
	// snapshot must then finish, with no further help.
	testenvEventually(t, func() bool { return ap.Applied().Snapshot == nil && ap.Applied().Position.Seq > 0 }, "the re-seeding snapshot ends")
	p.waitConverged(rules, 30*time.Second)
}

// Periodic snapshots keep a complete base in the stream: after retention
// dropped the messages before the newest one, a returning applier re-seeds
// from it without asking.
func TestGapReseedsFromPeriodicSnapshot(t *testing.T) {
	p := newPipeline(t)
	pcfg := p.publisherConfig()
	pcfg.SnapshotInterval = 200 * time.Millisecond
	p.startPublisher(pcfg)
	_, ar := p.startApplier(rawApplierConfig(p))
	put(t, p.primary.Client, "/pg/a", "1")
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	put(t, p.primary.Client, "/pg/b", "2")
	del, err := p.primary.Client.Delete(context.Background(), "/pg/a")
	if err != nil {
		t.Fatal(err)
	}
	// A periodic snapshot (nothing asks for one: the applier is stopped)
	// at or after the delete, complete in the stream.
	s := logStream(t, p)
	subjects := streams.Subjects{Site: streams.DefaultSite}
	var begin *jetstream.RawStreamMsg
	testenvEventually(t, func() bool {
		b, err := s.GetLastMsgForSubject(context.Background(), subjects.SnapshotBegin())
		if err != nil {
			return false
		}
		if rev, _ := strconv.ParseInt(b.Header.Get(streams.HeaderRevision), 10, 64); rev < del.Header.Revision {
			return false
		}
		end, err := s.GetLastMsgForSubject(context.Background(), subjects.SnapshotEnd())
		begin = b
		return err == nil && end.Sequence > b.Sequence
	}, "a periodic snapshot after the writes")
	if err := s.Purge(context.Background(), jetstream.WithPurgeSequence(begin.Sequence)); err != nil {
		t.Fatal(err)
	}
	p.startApplier(rawApplierConfig(p))
	p.waitConverged(rules, 30*time.Second)
	// The purge also removed the publisher's epoch marker: that is not
	// fencing, and the publisher carries on with a new marker.
	put(t, p.primary.Client, "/pg/c", "3")
	p.waitConverged(rules, 10*time.Second)
	select {
	case <-p.runs[0].done:
		t.Fatalf("publisher stopped after its epoch marker aged out: %v", p.runs[0].err)
	default:
	}
}

// The publisher is down while the primary writes, deletes and compacts past
// the publisher's position: it starts a new generation with a snapshot and
// the standby becomes exact (deleted keys gone).
func TestCompactionStartsNewGeneration(t *testing.T) {
	p := newPipeline(t)
	pub, pr := p.startPublisher(p.publisherConfig())
	p.startApplier(rawApplierConfig(p))
	for i := 0; i < 10; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/cg/k%d", i), "v")
	}
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	gen := pub.Published().Generation
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.primary.Client.Delete(context.Background(), "/cg/k1"); err != nil {
		t.Fatal(err)
	}
	put(t, p.primary.Client, "/cg/k2", "changed")
	rev := put(t, p.primary.Client, "/cg/new", "x")
	if _, err := p.primary.Client.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	pub2, _ := p.startPublisher(p.publisherConfig())
	p.waitConverged(rules, 30*time.Second)
	if got := pub2.Published().Generation; got != gen+1 {
		t.Fatalf("generation after compaction: got %d, want %d", got, gen+1)
	}
}

// The primary etcd is replaced by a restored older copy of itself (same
// cluster, revision goes backwards): a new generation makes the standby
// equal to the restored primary.
func TestRestoredPrimaryStartsNewGeneration(t *testing.T) {
	p := newPipeline(t)
	_, pr := p.startPublisher(p.publisherConfig())
	p.startApplier(rawApplierConfig(p))
	put(t, p.primary.Client, "/rp/old", "1")
	rules := rawRules(t)
	p.waitConverged(rules, 20*time.Second)
	// Back up the primary's data directory.
	p.primary.Stop()
	backup := filepath.Join(t.TempDir(), "backup")
	if out, err := exec.Command("cp", "-a", p.primary.Dir(), backup).CombinedOutput(); err != nil {
		t.Fatalf("back up: %v: %s", err, out)
	}
	p.primary.Restart()
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	_, pr2 := p.startPublisher(p.publisherConfig())
	for i := 0; i < 20; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/rp/lost-%02d", i), "written after the backup")
	}
	p.waitConverged(rules, 20*time.Second)
	if err := pr2.stop(); err != nil {
		t.Fatal(err)
	}
	// Restore the backup: the primary's revision goes backwards.
	p.primary.Stop()
	if err := os.RemoveAll(p.primary.Dir()); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", backup, p.primary.Dir()).CombinedOutput(); err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	p.primary.Restart()
	put(t, p.primary.Client, "/rp/after-restore", "x")
	// The standby holds 20 keys the restored primary lost: deleting them
	// trips the mass-delete guard, which the operator lifts after checking.
	acfg := rawApplierConfig(p)
	acfg.AllowMassDelete = true
	p.runs[1].stop()
	p.startApplier(acfg)
	pub3, _ := p.startPublisher(p.publisherConfig())
	p.waitConverged(rules, 30*time.Second)
	if pub3.Published().Generation < 2 {
		t.Fatalf("no new generation after a restore: %s", pub3.Published())
	}
}

// Snapshot puts reach the standby CRDs first, then Namespaces, then in
// ascending CreateRevision, although etcd's key order puts pods before
// replicasets: the standby's garbage collector never sees a child first.
func TestSnapshotOrderIsOwnerFirst(t *testing.T) {
	p := newPipeline(t)
	order := []string{
		"/registry/replicasets/team-a/web-1",                                           // owner, created first
		"/registry/pods/team-a/web-1-abc",                                              // child, lexically before its owner
		"/registry/namespaces/team-a",                                                  // namespace created late
		"/registry/example.com/widgets/team-a/w",                                       // custom resource
		"/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com", // its CRD, created last
	}
	for _, k := range order {
		put(t, p.primary.Client, k, "v")
	}
	p.startPublisher(p.publisherConfig())
	acfg := p.applierConfig()
	acfg.MaxTxnOps = 2 // one key per standby transaction: the write order is visible in revisions
	ap, _ := p.startApplier(acfg)
	p.waitConverged(ap.Rules(), 20*time.Second)
	modRev := func(k string) int64 {
		resp, err := p.standby.Client.Get(context.Background(), k)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s: %v %v", k, err, resp)
		}
		return resp.Kvs[0].ModRevision
	}
	want := []string{order[4], order[2], order[0], order[1], order[3]}
	for i := 1; i < len(want); i++ {
		if modRev(want[i-1]) >= modRev(want[i]) {
			t.Fatalf("%s (standby rev %d) was written after %s (rev %d)", want[i-1], modRev(want[i-1]), want[i], modRev(want[i]))
		}
	}
}

// A key attached to a lease on the primary is attached to a standby lease
// with the remaining TTL, so it expires on the standby by itself (here with
// the publisher stopped, so no delete arrives from the primary).
func TestLeasedKeysExpireOnStandby(t *testing.T) {
	p := newPipeline(t)
	_, pr := p.startPublisher(p.publisherConfig())
	p.startApplier(rawApplierConfig(p))
	ctx := context.Background()
	lease, err := p.primary.Client.Grant(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/l/a", "/l/b"} {
		if _, err := p.primary.Client.Put(ctx, k, "leased", clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}
	put(t, p.primary.Client, "/l/plain", "no lease")
	p.waitConverged(rawRules(t), 10*time.Second)
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	a, _ := p.standby.Client.Get(ctx, "/l/a")
	b, _ := p.standby.Client.Get(ctx, "/l/b")
	if a.Kvs[0].Lease == 0 || a.Kvs[0].Lease != b.Kvs[0].Lease {
		t.Fatalf("standby leases: /l/a %x, /l/b %x: want one shared standby lease", a.Kvs[0].Lease, b.Kvs[0].Lease)
	}
	ttl, err := p.standby.Client.TimeToLive(ctx, clientv3.LeaseID(a.Kvs[0].Lease))
	if err != nil || ttl.TTL <= 0 || ttl.TTL > 4 {
		t.Fatalf("standby lease ttl %v, %v: want within (0, 4]", ttl, err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		resp, err := p.standby.Client.Get(ctx, "/l/", clientv3.WithPrefix())
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Key) == "/l/plain"
	}, "leased keys expire on the standby")
}

// A standby whose checkpoint belongs to another history (another stream's
// sequence space, another cluster: a former standby re-joining after a
// failover) re-seeds instead of applying revisions it has no base for.
func TestForeignCheckpointReseeds(t *testing.T) {
	p := newPipeline(t)
	put(t, p.standby.Client, "/etcdsync/checkpoint/"+streams.DefaultStream,
		`{"position":{"ClusterID":1234,"Generation":7,"Revision":99,"Part":0,"Seq":2}}`)
	put(t, p.primary.Client, "/f/a", "1")
	p.startPublisher(p.publisherConfig())
	rules := rawRules(t)
	// Let the stream run past the foreign checkpoint's sequence.
	for i := 0; i < 5; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/f/k%d", i), "v")
	}
	p.startApplier(rawApplierConfig(p))
	p.waitConverged(rules, 30*time.Second)
}
