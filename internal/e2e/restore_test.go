package e2e

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/publisher"
)

// restoreScenario runs a publisher and an applier, writes keys, backs the
// primary's data directory up, writes keys the restore will lose, and
// waits until the standby holds them. It returns the backup's path, the
// publisher and the position published before the restore.
func restoreScenario(t *testing.T, p *pipeline, pcfg publisher.Config) (string, *publisher.Publisher, *running) {
	t.Helper()
	acfg := rawApplierConfig(p)
	// The standby holds keys the restored primary lost: the re-seed deletes
	// them, which the mass-delete guard would otherwise stop.
	acfg.AllowMassDelete = true
	pub, pr := p.startPublisher(pcfg)
	p.startApplier(acfg)
	rules := rawRules(t)
	for i := 0; i < 10; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/rs/base-%02d", i), "written before the backup")
	}
	p.waitConverged(rules, 20*time.Second)
	backup := p.primary.Backup()
	var last int64
	for i := 0; i < 10; i++ {
		last = put(t, p.primary.Client, fmt.Sprintf("/rs/lost-%02d", i), "written after the backup")
	}
	p.waitConverged(rules, 20*time.Second)
	testenvEventually(t, func() bool { return pub.Published().Revision >= last }, "publisher reaches the last write")
	return backup, pub, pr
}

// passRevision writes keys on cli until its revision is past rev, as a
// restore with --bump-revision would: the restored primary's revision is
// then ahead of everything the log holds.
func passRevision(t *testing.T, cli *clientv3.Client, prefix string, rev int64) {
	t.Helper()
	for i := 0; ; i++ {
		if put(t, cli, fmt.Sprintf("%s%03d", prefix, i), "written after the restore") > rev+2 {
			return
		}
	}
}

// The primary is restored from a file-level backup while the publisher is
// down (same cluster ID, member ID and raft term), and its revision passes
// the stream's tail before the publisher starts again: the publisher must
// find that the primary no longer holds the history the log describes,
// start a new generation, and the standby must end equal to the restored
// primary (the keys written after the backup gone).
func TestRestoredPrimaryPastTailWhilePublisherDown(t *testing.T) {
	p := newPipeline(t)
	backup, pub, pr := restoreScenario(t, p, p.publisherConfig())
	before := pub.Published()
	if err := pr.stop(); err != nil {
		t.Fatal(err)
	}
	p.primary.RestoreBackup(backup)
	passRevision(t, p.primary.Client, "/rs/after-", before.Revision)
	pub2, _ := p.startPublisher(p.publisherConfig())
	p.waitConverged(rawRules(t), 30*time.Second)
	if got := pub2.Published(); got.Generation == before.Generation {
		t.Fatalf("still generation %d after a restore (published %s, before the restore %s)", got.Generation, got, before)
	}
}

// The primary is restored from a file-level backup while the publisher keeps
// running: the etcd client reconnects and resumes the watch by itself, no
// session ends. The publisher must notice that the history changed under it,
// whether the restored revision stays behind the log or passes it, and the
// standby must end equal to the restored primary in a new generation. The
// periodic probe is off: the reconnect alone must make the publisher prove
// what it published before it publishes anything the restored server sends.
func TestRestoredPrimaryWhilePublisherRuns(t *testing.T) {
	for _, tc := range []struct {
		name     string
		passTail bool
	}{
		{"revision passes the tail", true},
		{"revision stays behind the tail", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeline(t)
			pcfg := p.publisherConfig()
			pcfg.ProbeInterval = time.Hour
			backup, pub, _ := restoreScenario(t, p, pcfg)
			before := pub.Published()
			p.primary.RestoreBackup(backup)
			if tc.passTail {
				passRevision(t, p.primary.Client, "/rs/after-", before.Revision)
			} else {
				put(t, p.primary.Client, "/rs/after-restore", "written after the restore")
			}
			p.waitConverged(rawRules(t), 30*time.Second)
			testenvEventually(t, func() bool { return pub.Published().Generation != before.Generation },
				"a new generation after the restore")
		})
	}
}
