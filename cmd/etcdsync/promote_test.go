package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/etcdsync/etcdsync/applier"
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
	if code != exitOK || !strings.Contains(out, "standby promoted") {
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
	resp, err := scli.Get(ctx, "x")
	if err != nil || resp.Header.Revision <= last {
		t.Fatalf("standby revision %d not above the source's %d (%v)", resp.Header.Revision, last, err)
	}
	if code, _, _ := runCmd(t, "status", "--standby-endpoints", standby.Endpoint); code != exitFailure {
		t.Fatalf("status of a promoted standby: exit %d, want %d", code, exitFailure)
	}
	if code, _, stderr := runCmd(t, "status", "--standby-endpoints", "http://127.0.0.1:1"); code != exitUsage || !strings.Contains(stderr, "could not read status") {
		t.Fatalf("status of an unreachable standby: exit %d, %q", code, stderr)
	}
}
