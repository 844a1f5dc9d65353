package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/etcdsync/etcdsync/applier"
)

// verify proves the standby equals the log in scope with no access to the
// primary: VERIFIED (exit 0) on an untouched pipeline, MISMATCH (exit 1)
// naming the resource type once a key is written into the standby's scope
// behind the applier's back; the applier's own periodic check reports it
// too, and status shows it.
func TestVerifyCommand(t *testing.T) {
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	natsAddr := freeAddr(t)
	ctx := context.Background()
	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(), "--nats-listen", natsAddr)
	eventually(t, 20*time.Second, "the publisher to start", func() bool {
		return strings.Contains(pub.stderr.String(), "publisher starting")
	})
	ap := runBackground(t, "apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr, "--verify-interval", "200ms")
	for _, k := range []string{"a", "b", "c"} {
		if _, err := pcli.Put(ctx, "/registry/configmaps/app/"+k, k); err != nil {
			t.Fatal(err)
		}
		if _, err := pcli.Put(ctx, "/registry/secrets/app/"+k, k); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the last key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/secrets/app/c")
		return err == nil && len(resp.Kvs) == 1
	})
	code, out, stderr := runCmd(t, "verify", "--standby-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr)
	if code != exitOK || !strings.Contains(out, "VERIFIED") || !strings.Contains(out, "(6 keys)") {
		t.Fatalf("verify of an untouched standby: exit %d\n%s%s", code, out, stderr)
	}

	if _, err := scli.Put(ctx, "/registry/secrets/app/intruder", "behind the applier's back"); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runCmd(t, "verify", "--standby-endpoints", standby.Endpoint)
	if code != exitFailure || !strings.Contains(out, "MISMATCH") || !strings.Contains(out, "differs in       secrets (3 keys expected, 4 found)") {
		t.Fatalf("verify after a write behind the applier: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = runCmd(t, "verify", "--standby-endpoints", standby.Endpoint, "--json")
	var v applier.Verification
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != exitFailure || v.Result != applier.Mismatch ||
		len(v.Resources) != 1 || v.Resources[0].Resource != "secrets" {
		t.Fatalf("verify --json: exit %d, %v\n%s", code, err, out)
	}
	eventually(t, 20*time.Second, "the applier's periodic check to report it", func() bool {
		return strings.Contains(ap.stderr.String(), "standby MISMATCH")
	})
	if code, out, _ := runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--nats-url", "nats://"+natsAddr); !strings.Contains(out, "MISMATCH") {
		t.Fatalf("status after a mismatch: exit %d\n%s", code, out)
	}
	if code, out, stderr := runCmd(t, "verify", "--standby-endpoints", primary.Endpoint); code != exitUnavailable || !strings.Contains(out, "UNVERIFIED") {
		t.Fatalf("verify of an etcd no applier ran against: exit %d\n%s%s", code, out, stderr)
	}
}
