package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// TestStatusStalledMirror: the standby applies from a mirror of the
// primary's log across a leafnode link. The link stalls (its connections
// stop carrying bytes, nothing is closed: the leafnode still looks
// connected) while the primary keeps writing. The standby has applied
// everything its mirror holds, so its local lag is 0; status must still
// report the stall (the time since the mirror last heard from its origin)
// and exit 1, and the applier's metrics must show it.
func TestStatusStalledMirror(t *testing.T) {
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	ctx := context.Background()
	leaf := freeAddr(t)
	natsP := startNATS(t, "primary", leaf)
	wan := newFreezer(t, leaf)
	natsS := startNATS(t, "standby", "", "nats-leaf://"+wan.addr())
	runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--nats-url", natsP.ClientURL())
	jsOf := func(url string) jetstream.JetStream {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	jsP, jsS := jsOf(natsP.ClientURL()), jsOf(natsS.ClientURL())
	eventually(t, 30*time.Second, "the standby's mirror", func() bool {
		_, err := streams.EnsureMirror(ctx, jsS, streams.MirrorConfig{Name: streams.DefaultStream, OriginDomain: "primary"})
		return err == nil
	})
	metrics := freeAddr(t)
	runBackground(t, "apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", natsS.ClientURL(), "--metrics-addr", metrics)
	put := func(k string) {
		t.Helper()
		if _, err := pcli.Put(ctx, "/registry/configmaps/app/"+k, k); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"a", "b", "c"} {
		put(k)
	}
	eventually(t, 30*time.Second, "the last key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/c")
		return err == nil && len(resp.Kvs) == 1
	})
	statusArgs := []string{"status", "--standby-endpoints", standby.Endpoint, "--nats-url", natsS.ClientURL(), "--max-lag", "3s"}
	var out, stderr string
	eventually(t, 30*time.Second, "status to report a healthy mirror", func() bool {
		var code int
		code, out, stderr = runCmd(t, statusArgs...)
		return code == exitOK && strings.Contains(out, "mirror of      ETCDSYNC in domain primary: last contact")
	})

	// The link stalls; the primary keeps writing. Show that it is cut:
	// the primary's log moves on, the standby's mirror does not.
	wan.freeze()
	lastSeq := func(js jetstream.JetStream) uint64 {
		s, err := js.Stream(ctx, streams.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.LastSeq
	}
	mirrorSeq := lastSeq(jsS)
	for i := range 5 {
		put(fmt.Sprintf("after-%d", i))
	}
	eventually(t, 30*time.Second, "the primary's log to move past the mirror", func() bool { return lastSeq(jsP) >= mirrorSeq+5 })

	eventually(t, 60*time.Second, "status to report the stalled mirror", func() bool {
		var code int
		code, out, stderr = runCmd(t, statusArgs...)
		return code == exitFailure && strings.Contains(out, "STALLED, last contact")
	})
	if !strings.Contains(out, "following") || strings.Contains(out, ", 0.000s") {
		t.Fatalf("status of a stalled mirror:\n%s%s", out, stderr)
	}
	if got := lastSeq(jsS); got != mirrorSeq {
		t.Fatalf("the mirror moved from seq %d to %d across a cut link", mirrorSeq, got)
	}
	code, jout, _ := runCmd(t, append(statusArgs, "--json")...)
	var st applier.Status
	if err := json.Unmarshal([]byte(jout), &st); err != nil || code != exitFailure {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, jout)
	}
	if m := st.Stream.Mirror; m == nil || m.Origin != streams.DefaultStream || m.LastContactSeconds <= 3 || st.LagSeconds < m.LastContactSeconds {
		t.Fatalf("status --json of a stalled mirror: %+v, mirror %+v", st, st.Stream.Mirror)
	}
	var raw struct {
		Stream map[string]any `json:"stream"`
	}
	if err := json.Unmarshal([]byte(jout), &raw); err != nil || raw.Stream["mirror"] == nil {
		t.Fatalf("status --json has no stream.mirror: %v\n%s", err, jout)
	}
	eventually(t, 30*time.Second, "the applier's metrics to show the stall", func() bool {
		_, m := httpGet("http://" + metrics + "/metrics")
		for _, line := range strings.Split(m, "\n") {
			var v float64
			if _, err := fmt.Sscanf(line, `etcdsync_applier_mirror_last_contact_seconds{site="primary",stream="ETCDSYNC"} %g`, &v); err == nil {
				return v > 3
			}
		}
		return false
	})
}
