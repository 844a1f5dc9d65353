package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/internal/digestscan"
	"github.com/etcdsync/etcdsync/streams"
)

// logRecords reads and assembles every record of the log stream, in order.
func logRecords(t *testing.T, p *pipeline) []streams.Record {
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
	var (
		out []streams.Record
		asm streams.Assembler
	)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		f, err := streams.DecodeFrame(m.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		r, done, err := asm.Add(f)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		if done {
			out = append(out, r)
		}
	}
	return out
}

// digestWorkload writes what moves a digest in every way: new keys,
// updates, deletes, a transaction of several keys, keys attached to a
// lease, a key moved onto a lease and off it again, a lease revoked, and a
// prefix delete.
func digestWorkload(t *testing.T, cli *clientv3.Client, prefix string) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		put(t, cli, fmt.Sprintf("%sk%02d", prefix, i), fmt.Sprintf("v%d", i))
	}
	for i := 0; i < 20; i += 3 {
		put(t, cli, fmt.Sprintf("%sk%02d", prefix, i), "updated")
	}
	for i := 1; i < 20; i += 4 {
		if _, err := cli.Delete(ctx, fmt.Sprintf("%sk%02d", prefix, i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Txn(ctx).Then(
		clientv3.OpPut(prefix+"txn-a", "a"), clientv3.OpPut(prefix+"k00", "in a txn"), clientv3.OpDelete(prefix+"k02"),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("%sleased-%d", prefix, i), "x", clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, prefix+"k03", "moved onto a lease", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	put(t, cli, prefix+"leased-0", "moved off the lease")
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		put(t, cli, fmt.Sprintf("%sgone/%d", prefix, i), "soon deleted")
	}
	if _, err := cli.Delete(ctx, prefix+"gone/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	put(t, cli, prefix+"last", "end")
}

// Every revision record carries the digest of the primary's keyspace after
// that revision: replaying the log's events from the snapshot's digest
// gives, at every revision, what a scan of the primary pinned there gives.
func TestLogDigestsMatchPrimary(t *testing.T) {
	p := newPipeline(t)
	put(t, p.primary.Client, "/d/before-snapshot", "in the first snapshot")
	pub, _ := p.startPublisher(p.publisherConfig())
	digestWorkload(t, p.primary.Client, "/d/")
	head := put(t, p.primary.Client, "/d/head", "x")
	testenvEventually(t, func() bool { return pub.Published().Revision >= head }, "publisher reaches the head")

	ctx := context.Background()
	var (
		replay  streams.Digest
		started bool
		checked int
	)
	for _, r := range logRecords(t, p) {
		switch r.Kind {
		case streams.KindSnapshotEnd:
			if !r.Digested {
				t.Fatalf("snapshot-end at revision %d carries no digest", r.Revision)
			}
			replay, started = r.Digest, true
		case streams.KindRevision:
			if !started {
				continue
			}
			if !r.Digested {
				t.Fatalf("revision record %d carries no digest", r.Revision)
			}
			for _, e := range r.Events {
				if e.PrevHash != ([32]byte{}) {
					replay.Remove(e.PrevHash)
				}
				if e.Type == streams.EventPut && e.Lease == 0 {
					replay.AddPair(e.Key, e.Value)
				}
			}
			if replay != r.Digest {
				t.Fatalf("revision %d: the events replayed give %s, the record says %s", r.Revision, replay.Short(), r.Digest.Short())
			}
		default:
			continue
		}
		scan, err := digestscan.Scan(ctx, p.primary.Client, digestscan.Options{Revision: r.Revision})
		if err != nil {
			t.Fatal(err)
		}
		if scan.Digest != r.Digest {
			t.Fatalf("%s record at revision %d: digest %s, the primary scanned there %s (%d keys)", r.Kind, r.Revision, r.Digest.Short(), scan.Digest.Short(), scan.Keys)
		}
		checked++
	}
	if checked < 30 {
		t.Fatalf("only %d records checked", checked)
	}
}

// A primary restored in place from an older copy of its data directory,
// then written to with the same keys in the same order as the lost history
// (so the newest record's keys read the same at the tail's revision) but
// one value different: only the keyspace digest tells it from the history
// the log describes. Restored while the publisher is down, the check at
// session start must catch it; restored under a running publisher (whose
// watch resumes past the rewritten revisions and never sees them), the
// periodic rescan must. Either way: a new generation, and the standby ends
// equal to the restored primary.
func TestRestoredPrimaryCaughtByDigest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running bool
	}{
		{"publisher down", false},
		{"publisher running", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline(t)
			pcfg := p.publisherConfig()
			pcfg.VerifyInterval = 0
			if tc.running {
				pcfg.VerifyInterval = 300 * time.Millisecond
			}
			acfg := rawApplierConfig(p)
			acfg.AllowMassDelete = true
			pub, pr := p.startPublisher(pcfg)
			p.startApplier(acfg)
			rules := rawRules(t)
			for i := 0; i < 10; i++ {
				put(t, p.primary.Client, fmt.Sprintf("/rd/base-%02d", i), "written before the backup")
			}
			p.waitConverged(rules, 20*time.Second)
			backup := p.primary.Backup()
			write := func(differ bool) int64 {
				var last int64
				for i := 0; i < 10; i++ {
					v := "written after the backup"
					if differ && i == 4 {
						v = "written differently after the restore"
					}
					last = put(t, p.primary.Client, fmt.Sprintf("/rd/lost-%02d", i), v)
				}
				return last
			}
			last := write(false)
			p.waitConverged(rules, 20*time.Second)
			before := p.lastPublished(t, last)
			if !tc.running {
				if err := pr.stop(); err != nil {
					t.Fatal(err)
				}
			}
			p.primary.RestoreBackup(backup)
			if got := write(true); got != last {
				t.Fatalf("the restored primary reached revision %d, not %d: the scenario needs the same revisions", got, last)
			}
			if !tc.running {
				pub, _ = p.startPublisher(pcfg)
			}
			p.waitConverged(rules, 30*time.Second)
			if got := pub.Published(); got.Generation == before.Generation {
				t.Fatalf("still generation %d after a restore with different values (published %s)", got.Generation, got)
			}
		})
	}
}

// lastPublished waits until the log holds revision rev and returns the
// position of its record.
func (p *pipeline) lastPublished(t *testing.T, rev int64) streams.Position {
	t.Helper()
	var pos streams.Position
	testenvEventually(t, func() bool {
		for _, r := range logRecords(t, p) {
			if r.Kind == streams.KindRevision && r.Revision >= rev {
				pos = streams.Position{ClusterID: r.ClusterID, Generation: r.Generation, Revision: r.Revision}
				return true
			}
		}
		return false
	}, "the log reaches the last write")
	return pos
}

// kubeWrites writes n rounds of Kubernetes-shaped keys on cli: configmaps
// and secrets created, updated and deleted, some events under a lease, and
// keys the kubernetes preset excludes (kube-system), so that the digest
// follows only the in-scope ones.
func kubeWrites(t *testing.T, cli *clientv3.Client, round int) {
	t.Helper()
	ctx := context.Background()
	cm := fmt.Sprintf("/registry/configmaps/app/cm-%03d", round%40)
	put(t, cli, cm, fmt.Sprintf("configmap round %d", round))
	put(t, cli, fmt.Sprintf("/registry/secrets/app/s-%03d", round%25), fmt.Sprintf("secret round %d", round))
	put(t, cli, fmt.Sprintf("/registry/configmaps/kube-system/cm-%03d", round%10), "excluded")
	if round%7 == 3 {
		if _, err := cli.Delete(ctx, fmt.Sprintf("/registry/secrets/app/s-%03d", (round+5)%25)); err != nil {
			t.Fatal(err)
		}
	}
	if round%11 == 5 {
		l, err := cli.Grant(ctx, 600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/events/app/e-%03d", round), "leased", clientv3.WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, cm, "now leased", clientv3.WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
	}
}

// The standby proves it equals the log in scope while writes go on: every
// check of an untouched pipeline under live writes is VERIFIED (or, in the
// middle of a snapshot, says it cannot tell), none is a MISMATCH.
func TestStandbyVerifiedUnderLiveWrites(t *testing.T) {
	p := newPipeline(t)
	for i := 0; i < 30; i++ {
		kubeWrites(t, p.primary.Client, i)
	}
	p.startPublisher(p.publisherConfig())
	acfg := p.applierConfig()
	acfg.VerifyInterval = 100 * time.Millisecond
	ap, _ := p.startApplier(acfg)
	ctx := context.Background()
	stop := make(chan struct{})
	wrote := make(chan int)
	go func() {
		n := 30
		defer func() { wrote <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			kubeWrites(t, p.primary.Client, n)
			n++
		}
	}()
	verified := map[int64]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for len(verified) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d verified positions in a minute", len(verified))
		}
		v, err := applier.Verify(ctx, p.standby.Client, acfg.EffectiveCheckpointKey(), ap.Rules())
		if err != nil {
			t.Fatal(err)
		}
		switch v.Result {
		case applier.Mismatch:
			t.Fatalf("MISMATCH on an untouched pipeline at %s: %+v", v.Position, v)
		case applier.Verified:
			if v.Keys == 0 {
				t.Fatalf("verified an empty scope at %s", v.Position)
			}
			verified[v.Position.Revision] = true
		}
	}
	close(stop)
	rounds := <-wrote
	p.waitConverged(ap.Rules(), 30*time.Second)
	if n := ap.LogChainBreaks(); n != 0 || ap.Applied().LogDigest == nil {
		t.Fatalf("log chain: %v breaks, digest known: %v", n, ap.Applied().LogDigest != nil)
	}
	testenvEventually(t, func() bool {
		v, ok, err := applier.ReadVerification(ctx, p.standby.Client, acfg.Stream)
		return err == nil && ok && v.Result == applier.Verified && v.Position.Revision >= p.lastRevision(t)
	}, "the applier's own periodic check verifies the final position")
	t.Logf("%d write rounds, %d positions verified", rounds, len(verified))
}

// lastRevision returns the primary's current revision.
func (p *pipeline) lastRevision(t *testing.T) int64 {
	t.Helper()
	resp, err := p.primary.Client.Get(context.Background(), "\x00", clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// A key written into the standby's scope behind the applier's back is
// found by the applier's periodic check (recorded for status, counted),
// with no access to the primary, narrowed to its resource type; a write
// outside the scope is not.
func TestStandbyWrittenBehindApplierIsMismatch(t *testing.T) {
	p := newPipeline(t)
	for i := 0; i < 30; i++ {
		kubeWrites(t, p.primary.Client, i)
	}
	p.startPublisher(p.publisherConfig())
	acfg := p.applierConfig()
	acfg.VerifyInterval = 100 * time.Millisecond
	ap, _ := p.startApplier(acfg)
	p.waitConverged(ap.Rules(), 30*time.Second)
	ctx := context.Background()
	testenvEventually(t, func() bool {
		v, ok, err := applier.ReadVerification(ctx, p.standby.Client, acfg.Stream)
		return err == nil && ok && v.Result == applier.Verified
	}, "the untouched standby verified")
	// Outside the scope: still verified.
	put(t, p.standby.Client, "/registry/configmaps/kube-system/standby-own", "not replicated")
	v, err := applier.Verify(ctx, p.standby.Client, acfg.EffectiveCheckpointKey(), ap.Rules())
	if err != nil || v.Result != applier.Verified {
		t.Fatalf("a write outside the scope: %+v %v", v, err)
	}
	// Inside: a new secret and a changed configmap. The applier's check
	// also publishes the mismatch as a drift event.
	events, err := p.conn().SubscribeSync(streams.Subjects{Site: acfg.Site}.Drift() + ".verify")
	if err != nil {
		t.Fatal(err)
	}
	put(t, p.standby.Client, "/registry/secrets/app/intruder", "written behind the applier's back")
	put(t, p.standby.Client, "/registry/configmaps/app/cm-001", "changed behind the applier's back")
	// At once, before the idle primary moves the checkpoint again.
	if v, err := applier.Verify(ctx, p.standby.Client, acfg.EffectiveCheckpointKey(), ap.Rules()); err != nil || v.Result != applier.Mismatch {
		t.Fatalf("verify right after the writes behind the applier's back: %+v %v", v, err)
	}
	var got applier.Verification
	testenvEventually(t, func() bool {
		v, ok, err := applier.ReadVerification(ctx, p.standby.Client, acfg.Stream)
		got = v
		return err == nil && ok && v.Result == applier.Mismatch
	}, "the applier's periodic check reports the mismatch")
	var names []string
	for _, r := range got.Resources {
		names = append(names, r.Resource)
	}
	if fmt.Sprint(names) != "[configmaps secrets]" {
		t.Fatalf("mismatch narrowed to %v, want [configmaps secrets]: %+v", names, got)
	}
	m, err := events.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no drift event for the mismatch: %v", err)
	}
	var ev applier.Verification
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Result != applier.Mismatch || len(ev.Resources) != 2 {
		t.Fatalf("drift event %s: %v", m.Data, err)
	}
}

// A revision record without digests (written by an older publisher, or
// while the publisher could not follow the digest) leaves the applier
// nothing to follow the digest by: the standby is UNVERIFIED from there,
// never a false MISMATCH, until a snapshot gives the digest again.
func TestUndigestedRecordMakesStandbyUnverified(t *testing.T) {
	p := newPipeline(t)
	put(t, p.primary.Client, "/u/a", "1")
	_, pr := p.startPublisher(p.publisherConfig())
	acfg := rawApplierConfig(p)
	acfg.VerifyInterval = 0
	ap, _ := p.startApplier(acfg)
	last := put(t, p.primary.Client, "/u/b", "2")
	p.waitConverged(rawRules(t), 20*time.Second)
	ctx := context.Background()
	var v applier.Verification
	testenvEventually(t, func() bool {
		var err error
		v, err = applier.Verify(ctx, p.standby.Client, acfg.EffectiveCheckpointKey(), ap.Rules())
		return err == nil && v.Result == applier.Verified && v.Position.Revision >= last
	}, "the standby verified")
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	// The next revision, as a publisher without digests writes it: it
	// changes /u/a, whose previous pair only a digested record names.
	publishRecordIn(t, p, &streams.Record{Kind: streams.KindRevision, ClusterID: v.Position.ClusterID, Generation: v.Position.Generation,
		Revision: last + 1, Time: time.Now(), Events: []streams.Event{
			{Type: streams.EventPut, Key: []byte("/u/a"), Value: []byte("changed"), CreateRevision: 2, ModRevision: last + 1, Version: 2},
		}}, 1<<20)
	testenvEventually(t, func() bool { return getValue(t, p.standby.Client, "/u/a") == "changed" }, "the undigested record applied")
	v, err := applier.Verify(ctx, p.standby.Client, acfg.EffectiveCheckpointKey(), ap.Rules())
	if err != nil || v.Result != applier.Unverified {
		t.Fatalf("after an undigested record: %+v %v, want unverified", v, err)
	}
}

// A digested record whose digest the log's events before it do not give
// (a log that is not the history it claims, or a record the applier
// skipped) breaks the log chain: counted and logged, applying goes on.
func TestLogChainBreakReported(t *testing.T) {
	p := newPipeline(t)
	put(t, p.primary.Client, "/c/a", "1")
	_, pr := p.startPublisher(p.publisherConfig())
	acfg := rawApplierConfig(p)
	ap, _ := p.startApplier(acfg)
	last := put(t, p.primary.Client, "/c/b", "2")
	p.waitConverged(rawRules(t), 20*time.Second)
	testenvEventually(t, func() bool { ck := ap.Applied(); return ck.Position.Revision >= last && ck.LogDigest != nil }, "the chain followed")
	if n := ap.LogChainBreaks(); n != 0 {
		t.Fatalf("%v chain breaks on an untouched log", n)
	}
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	pos := ap.Applied().Position
	rec := &streams.Record{Kind: streams.KindRevision, ClusterID: pos.ClusterID, Generation: pos.Generation, Revision: pos.Revision + 1,
		Time: time.Now(), Digested: true, Events: []streams.Event{
			{Type: streams.EventPut, Key: []byte("/c/new"), Value: []byte("x"), CreateRevision: pos.Revision + 1, ModRevision: pos.Revision + 1, Version: 1},
		}}
	rec.Digest.AddPair([]byte("/c/other"), []byte("not what the log holds"))
	publishRecordIn(t, p, rec, 1<<20)
	testenvEventually(t, func() bool { return ap.LogChainBreaks() == 1 }, "the chain break counted")
	testenvEventually(t, func() bool { return getValue(t, p.standby.Client, "/c/new") == "x" }, "the record applied all the same")
}
