package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// TestStatusAndPromote runs publish and apply, reads `status`, fails over
// with `promote` and checks that the applier is fenced.
func TestStatusAndPromote(t *testing.T) {
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	natsAddr := freeAddr(t)
	ctx := context.Background()
	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(), "--nats-listen", natsAddr)
	eventually(t, 20*time.Second, "the publisher to start", func() bool {
		return strings.Contains(pub.stderr.String(), "publisher starting")
	})
	ap := runBackground(t, "apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr)
	var last int64
	for _, k := range []string{"a", "b", "c"} {
		resp, err := pcli.Put(ctx, "/registry/configmaps/app/"+k, k)
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	eventually(t, 20*time.Second, "the last key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/c")
		return err == nil && len(resp.Kvs) == 1
	})

	code, out, stderr := runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr, "--json")
	var st applier.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != exitOK {
		t.Fatalf("status: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	if st.State != "following" || st.Checkpoint == nil || st.Checkpoint.Position.Revision != last || st.LagMessages != 0 || st.Stream.Revision != last {
		t.Fatalf("status %+v: want following at revision %d with no lag", st, last)
	}
	if code, out, _ := runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr); code != exitOK || !strings.Contains(out, "following") || !strings.Contains(out, "last audit       none") {
		t.Fatalf("status table: exit %d\n%s", code, out)
	}
	// Without --nats-url the stream is not checked: no invented empty
	// stream with lag 0, and no exit 0.
	code, out, stderr = runCmd(t, "status", "--standby-endpoints", standby.Endpoint)
	if code != exitUnavailable || !strings.Contains(out, "NOT CHECKED") || !strings.Contains(out, "lag              unknown") || !strings.Contains(stderr, "stream not checked") {
		t.Fatalf("status without --nats-url: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--json")
	var unchecked map[string]any
	if err := json.Unmarshal([]byte(out), &unchecked); err != nil || code != exitUnavailable || unchecked["stream_checked"] != false || unchecked["stream"] != nil {
		t.Fatalf("status --json without --nats-url: exit %d, %v\n%s", code, err, out)
	}
	// An audit publishes its summary; status shows it.
	if code, out, stderr := runCmd(t, "audit", "--once", "--primary-endpoints", primary.Endpoint, "--standby-endpoints", standby.Endpoint,
		"--nats-url", "nats://"+natsAddr); code != exitOK {
		t.Fatalf("audit: exit %d\n%s%s", code, out, stderr)
	}
	if code, out, _ := runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr); code != exitOK ||
		!strings.Contains(out, "last audit") || !strings.Contains(out, ": consistent (") {
		t.Fatalf("status after an audit: exit %d\n%s", code, out)
	}

	code, out, stderr = runCmd(t, "promote", "--standby-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr, "--bump-revision", "--drain-timeout", "10s")
	if code != exitOK || !strings.Contains(out, "standby promoted") || !strings.Contains(out, "verification     VERIFIED: the in-scope keys are exactly what the log applied up to source revision") {
		t.Fatalf("promote: exit %d\n%s%s", code, out, stderr)
	}
	select {
	case code := <-ap.done:
		ap.done <- code
		if code != exitFailure || !strings.Contains(ap.stderr.String(), "promoted") {
			t.Fatalf("fenced apply: exit %d; stderr:\n%s", code, ap.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("apply still running after promote")
	}
	// The promoted standby takes writes of its own: verify says it proves
	// nothing any more, never "MISMATCH: written behind the applier's back".
	if _, err := scli.Put(ctx, "/registry/configmaps/app/after-failover", "new primary's"); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runCmd(t, "verify", "--standby-endpoints", standby.Endpoint); code != exitUnavailable || !strings.Contains(out, "the standby was promoted") {
		t.Fatalf("verify of a promoted standby: exit %d\n%s", code, out)
	}
	resp, err := scli.Get(ctx, "x")
	if err != nil || resp.Header.Revision <= last {
		t.Fatalf("standby revision %d not above the source's %d (%v)", resp.Header.Revision, last, err)
	}
	if code, _, _ := runCmd(t, "status", "--standby-endpoints", standby.Endpoint); code != exitFailure {
		t.Fatalf("status of a promoted standby: exit %d, want %d", code, exitFailure)
	}
	if code, _, stderr := runCmd(t, "status", "--standby-endpoints", "http://127.0.0.1:1"); code != exitUnavailable || !strings.Contains(stderr, "could not read status") {
		t.Fatalf("status of an unreachable standby: exit %d, %q", code, stderr)
	}
}

// TestPromoteCannotMislead checks that promote refuses an etcd that holds
// no checkpoint (the primary, given by mistake) unless --force, that
// --dry-run changes nothing and names the cluster it would promote, and
// that --json writes nothing but the JSON report to stdout, also when the
// standby's stream is a mirror that promote makes writable.
func TestPromoteCannotMislead(t *testing.T) {
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	natsAddr := freeAddr(t)
	natsURL := "nats://" + natsAddr
	ctx := context.Background()
	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(), "--nats-listen", natsAddr)
	eventually(t, 20*time.Second, "the publisher to start", func() bool {
		return strings.Contains(pub.stderr.String(), "publisher starting")
	})
	// The standby applies from a mirror of the log, as on a standby site.
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the mirror", func() bool {
		_, err := streams.EnsureMirror(ctx, js, streams.MirrorConfig{Name: "MIRROR", Origin: streams.DefaultStream})
		return err == nil
	})
	runBackground(t, "apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", natsURL, "--stream", "MIRROR")
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/a", "a"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/a")
		return err == nil && len(resp.Kvs) == 1
	})
	members, err := pcli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cluster := fmt.Sprintf("%x", members.Header.ClusterId)

	// The primary, given by mistake: refused, and nothing written there.
	code, out, stderr := runCmd(t, "promote", "--standby-endpoints", primary.Endpoint, "--nats-url", natsURL, "--json")
	if code != exitFailure || !strings.Contains(stderr, "no checkpoint") || !strings.Contains(stderr, "--force") || out != "" {
		t.Fatalf("promote of an etcd without checkpoint: exit %d\n%s%s", code, out, stderr)
	}
	if resp, err := pcli.Get(ctx, "/etcdsync/checkpoint/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("promote refused but wrote a checkpoint on the primary (%v)", err)
	}

	// A dry run names the cluster and changes nothing.
	code, out, stderr = runCmd(t, "promote", "--standby-endpoints", standby.Endpoint, "--nats-url", natsURL, "--stream", "MIRROR", "--dry-run", "--bump-revision")
	if code != exitOK || !strings.Contains(out, "dry run") || !strings.Contains(out, "cluster "+cluster) || !strings.Contains(out, "would make") {
		t.Fatalf("promote --dry-run: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = runCmd(t, "promote", "--standby-endpoints", standby.Endpoint, "--nats-url", natsURL, "--stream", "MIRROR", "--dry-run", "--json")
	var dry promoteOutput
	if err := json.Unmarshal([]byte(out), &dry); err != nil || code != exitOK || !dry.DryRun || dry.ClusterID != cluster || dry.WritableStream == nil {
		t.Fatalf("promote --dry-run --json: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	ck, _, err := applier.ReadCheckpoint(ctx, scli, "/etcdsync/checkpoint/MIRROR")
	if err != nil || ck.Promoted {
		t.Fatalf("after a dry run the checkpoint is promoted=%v (%v)", ck.Promoted, err)
	}
	if s, err := js.Stream(ctx, "MIRROR"); err != nil || s.CachedInfo().Config.Mirror == nil {
		t.Fatalf("after a dry run the mirror is no longer a mirror (%v)", err)
	}

	// The real thing, as JSON: stdout is one JSON document.
	code, out, stderr = runCmd(t, "promote", "--standby-endpoints", standby.Endpoint, "--nats-url", natsURL, "--stream", "MIRROR", "--json")
	var rep promoteOutput
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK {
		t.Fatalf("promote --json: exit %d, stdout is not JSON (%v)\n%s%s", code, err, out, stderr)
	}
	if rep.DryRun || !rep.Checkpoint.Promoted || rep.ClusterID != cluster || rep.WritableStream == nil || rep.WritableStream.Subjects != "etcdsync.standby.log.>" {
		t.Fatalf("promote --json report: %+v", rep)
	}
}

// TestPromoteRerunCompletesStreamStep: a promotion that fences the
// standby and then fails to make its mirror stream writable (here: an
// identity NATS does not let update streams) still prints the data-loss
// report, says to re-run, and a re-run skips the fence (the checkpoint is
// promoted already) and completes the stream step instead of refusing
// with "already promoted". A third run has nothing left to do.
func TestPromoteRerunCompletesStreamStep(t *testing.T) {
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Users: []*server.User{
			{Username: "admin", Password: "admin-pw"},
			{Username: "ops", Password: "ops-pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.STREAM.UPDATE.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{">"}}}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	host := strings.TrimPrefix(ns.ClientURL(), "nats://")
	admin, ops := "nats://admin:admin-pw@"+host, "nats://ops:ops-pw@"+host
	ctx := context.Background()
	nc, err := nats.Connect(admin)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--nats-url", admin)
	eventually(t, 20*time.Second, "the mirror", func() bool {
		_, err := streams.EnsureMirror(ctx, js, streams.MirrorConfig{Name: "MIRROR", Origin: streams.DefaultStream})
		return err == nil
	})
	runBackground(t, "apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", admin, "--stream", "MIRROR")
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/a", "a"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/a")
		return err == nil && len(resp.Kvs) == 1
	})
	promote := []string{"promote", "--standby-endpoints", standby.Endpoint, "--stream", "MIRROR", "--drain-timeout", "5s", "--nats-url"}
	isMirror := func() bool {
		s, err := js.Stream(ctx, "MIRROR")
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.Mirror != nil
	}

	// The stream step fails after the fence: the report is printed anyway.
	code, out, stderr := runCmd(t, append(promote, ops)...)
	if code == exitOK || !strings.Contains(out, "standby promoted") || !strings.Contains(out, "final position") ||
		!strings.Contains(out, "source time") || !strings.Contains(stderr, "re-run promote") {
		t.Fatalf("promote whose stream step fails: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	ck, _, err := applier.ReadCheckpoint(ctx, scli, "/etcdsync/checkpoint/MIRROR")
	if err != nil || !ck.Promoted || !isMirror() {
		t.Fatalf("after the failed stream step: checkpoint promoted=%v (%v), stream still a mirror=%v", ck.Promoted, err, isMirror())
	}

	// The re-run completes the stream step at the same position.
	code, out, stderr = runCmd(t, append(promote, admin)...)
	if code != exitOK || !strings.Contains(out, "already promoted by an earlier run") || !strings.Contains(out, "is now writable") ||
		!strings.Contains(out, ck.Position.String()) {
		t.Fatalf("re-run of promote: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if isMirror() {
		t.Fatal("after the re-run the stream is still a mirror")
	}

	// A third run, as JSON: nothing left, the same position reported.
	code, out, stderr = runCmd(t, append(promote, admin, "--json")...)
	var rep promoteOutput
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK || !rep.AlreadyPromoted ||
		rep.Checkpoint.Position != ck.Position || rep.WritableStream != nil || rep.StreamError != "" {
		t.Fatalf("third promote --json: exit %d (%v)\n%s%s", code, err, out, stderr)
	}
}

// TestPromoteBumpRevisionCompacts: after promote --bump-revision no watch
// can resume inside the standby's replica history. The standby is compacted
// at the bumped revision, so a client resuming from an older revision gets
// ErrCompacted (a kube-apiserver answers 410 Gone and clients re-list)
// instead of a watch that silently skips what changed; the report, as text
// and as JSON, and the dry run say so. A re-run after a promotion that
// stopped before the compaction compacts; one after a complete promotion
// leaves the compaction (and the history written since) alone.
func TestPromoteBumpRevisionCompacts(t *testing.T) {
	standby, scli := startEtcd(t)
	ctx := context.Background()
	put := func(k string) int64 {
		t.Helper()
		resp, err := scli.Put(ctx, k, "v")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	writeCheckpoint := func(ck applier.Checkpoint) int64 {
		t.Helper()
		b, err := json.Marshal(ck)
		if err != nil {
			t.Fatal(err)
		}
		return put2(t, scli, "/etcdsync/checkpoint/"+streams.DefaultStream, string(b))
	}
	put("/registry/configmaps/app/a")
	x := put("/registry/configmaps/app/b") // a client's last resourceVersion
	put("/registry/configmaps/app/c")
	// The primary ran ahead of the standby's own revisions.
	target := put("/registry/configmaps/app/d") + 300
	writeCheckpoint(applier.Checkpoint{Position: streams.Position{ClusterID: 0xc1, Generation: 1, Revision: target, Seq: 9}})
	promote := []string{"promote", "--standby-endpoints", standby.Endpoint, "--bump-revision"}

	code, out, stderr := runCmd(t, append(promote, "--dry-run")...)
	if code != exitOK || !strings.Contains(out, "would compact") || !strings.Contains(out, "410 Gone") {
		t.Fatalf("promote --dry-run --bump-revision: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = runCmd(t, append(promote, "--json")...)
	var rep promoteOutput
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK {
		t.Fatalf("promote --bump-revision --json: exit %d (%v)\n%s%s", code, err, out, stderr)
	}
	if rep.StandbyRevision <= target || rep.CompactedRevision != rep.StandbyRevision || !strings.Contains(out, `"compacted_revision"`) {
		t.Fatalf("promote report: standby revision %d, compacted at %d; want above %d and compacted there\n%s", rep.StandbyRevision, rep.CompactedRevision, target, out)
	}
	// A watch resumed from the client's revision is refused as compacted.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	wr := <-scli.Watch(wctx, "/registry/", clientv3.WithPrefix(), clientv3.WithRev(x+1))
	if !errors.Is(wr.Err(), rpctypes.ErrCompacted) || wr.CompactRevision != rep.CompactedRevision {
		t.Fatalf("watch from revision %d after promote: err %v, compact revision %d; want ErrCompacted at %d", x+1, wr.Err(), wr.CompactRevision, rep.CompactedRevision)
	}
	// The bumped revision itself stays readable: nothing after it is lost.
	if _, err := scli.Get(ctx, "/registry/configmaps/app/a", clientv3.WithRev(rep.CompactedRevision)); err != nil {
		t.Fatalf("read at the compacted revision %d: %v", rep.CompactedRevision, err)
	}

	// A re-run after the complete promotion keeps the compaction, and
	// what the new primary wrote since stays watchable.
	after := put("/registry/configmaps/app/new")
	code, out, stderr = runCmd(t, append(promote, "--json")...)
	var again promoteOutput
	if err := json.Unmarshal([]byte(out), &again); err != nil || code != exitOK || !again.AlreadyPromoted || again.CompactedRevision != rep.CompactedRevision {
		t.Fatalf("re-run of promote --bump-revision: exit %d (%v), compacted at %d, want %d\n%s%s", code, err, again.CompactedRevision, rep.CompactedRevision, out, stderr)
	}
	if _, err := scli.Get(ctx, "/registry/configmaps/app/new", clientv3.WithRev(after)); err != nil {
		t.Fatalf("a re-run compacted history written after the promotion: %v", err)
	}

	// An earlier run that fenced and bumped but stopped before compacting:
	// the re-run compacts.
	ck, _, err := applier.ReadCheckpoint(ctx, scli, "/etcdsync/checkpoint/"+streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	standby2, scli2 := startEtcd(t)
	y := put2(t, scli2, "/registry/configmaps/app/a", "v")
	for i := 0; i < 20; i++ {
		put2(t, scli2, "/registry/configmaps/app/b", "v")
	}
	ck.Position.Revision = y + 5
	b, _ := json.Marshal(ck)
	put2(t, scli2, "/etcdsync/checkpoint/"+streams.DefaultStream, string(b))
	code, out, stderr = runCmd(t, "promote", "--standby-endpoints", standby2.Endpoint, "--bump-revision")
	if code != exitOK || !strings.Contains(out, "compacted at revision") {
		t.Fatalf("re-run after a promotion that did not compact: exit %d\n%s%s", code, out, stderr)
	}
	if _, err := scli2.Get(ctx, "/registry/configmaps/app/a", clientv3.WithRev(y)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("re-run after a promotion that did not compact: read at revision %d: %v, want ErrCompacted", y, err)
	}
}

// put2 writes key on cli and returns the revision.
func put2(t *testing.T, cli *clientv3.Client, key, val string) int64 {
	t.Helper()
	resp, err := cli.Put(context.Background(), key, val)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}
