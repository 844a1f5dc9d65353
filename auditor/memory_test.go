package auditor_test

import (
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/testenv"
)

// maxAuditRSS is the peak resident memory an audit may reach: half the
// deployed auditor's memory limit (deploy/kustomize/standby/auditor.yaml).
const maxAuditRSS = 128 << 20

// TestAuditMemoryLargeValues audits 150 values of 683 KiB on each side in
// a child process (only the auditor in it, the etcd servers stay here) and
// checks that its peak RSS stays under maxAuditRSS: pages are bounded by
// bytes, not only by keys. 2008 small values come first: pages of 16, 32,
// ..., 512 keys, then of 1000, so that a page asking for 1000 keys starts
// at the first large value and only the byte bound keeps it small.
func TestAuditMemoryLargeValues(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 200 MB into two etcd servers")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies the memory measured")
	}
	e := newEnv(t, false)
	value := strings.Repeat("v", 683<<10)
	for _, cli := range []*clientv3.Client{e.primary.Client, e.standby.Client} {
		loadAt(t, cli, "/registry/configmaps/a-small/", 2008, "small")
	}
	rev := load(t, e.primary.Client, 150, value)
	load(t, e.standby.Client, 150, value)
	e.writeCheckpoint(rev, nil)
	rss := childAudit(t, e, 2158)
	t.Logf("audit of 150 x 683 KiB: child peak RSS %.1f MiB (bound %d MiB)", float64(rss)/(1<<20), maxAuditRSS>>20)
	if rss > maxAuditRSS {
		t.Errorf("audit of 150 x 683 KiB peaked at %.1f MiB resident, more than %d MiB", float64(rss)/(1<<20), maxAuditRSS>>20)
	}
}

// TestAuditPagesBoundedByBytes audits values of mixed sizes, one larger
// than a page, with pages of 64 KiB: every page that would be larger is
// asked for again with fewer keys, and the report is still exact.
func TestAuditPagesBoundedByBytes(t *testing.T) {
	e := newEnv(t, false)
	e.scope.Mode = "raw"
	ctx := testenv.Context(t)
	kv := map[string]string{}
	for i := range 40 {
		kv["/app/"+itoa(i)+"-big"] = strings.Repeat(itoa(i), 50<<10/4)
		kv["/app/"+itoa(i)+"-small"] = itoa(i)
	}
	kv["/app/huge"] = strings.Repeat("h", 200<<10)
	e.copyKeys(kv)
	s := e.standby.Client
	del(t, s, "/app/"+itoa(7)+"-big")
	put(t, s, "/app/"+itoa(30)+"-big", strings.Repeat("x", 50<<10))
	put(t, s, "/app/huge", strings.Repeat("H", 200<<10))
	put(t, s, "/app/"+itoa(12)+"-surplus", "s")
	cfg := e.config()
	cfg.PageBytes = 64 << 10
	rep, err := e.auditor(cfg, nil).Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := `missed ["/app/0007-big"] surplus ["/app/0012-surplus"] mismatched ["/app/0030-big" "/app/huge"]`
	if got := fmtKeys(rep); got != want || rep.Compared != 82 {
		t.Fatalf("report (%d compared):\n got %s\nwant %s", rep.Compared, got, want)
	}
}
