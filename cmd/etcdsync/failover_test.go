package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/streams"
)

// startNATS starts a NATS server of its own JetStream domain (a site).
func startNATS(t *testing.T, domain, leafListen string, leafRemotes ...string) *server.Server {
	t.Helper()
	cfg := streams.DefaultServerConfig()
	cfg.StoreDir, cfg.Listen, cfg.Domain, cfg.Name = t.TempDir(), "127.0.0.1:-1", domain, domain
	cfg.LeafListen, cfg.LeafRemotes = leafListen, leafRemotes
	s, err := streams.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// TestFailoverWithPrimarySiteGone runs the runbook's failover with the
// primary site lost: its etcd and NATS are stopped, the standby's applier
// and auditor restart (as pods do), the auditor keeps running and reports
// the primary unreachable (not ready, etcdsync_auditor_primary_up 0), and
// `status` and `promote` succeed with the applier pod's environment.
func TestFailoverWithPrimarySiteGone(t *testing.T) {
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	ctx := context.Background()
	leaf := freeAddr(t)
	natsP := startNATS(t, "primary", leaf)
	natsS := startNATS(t, "standby", "", "nats-leaf://"+leaf)
	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--nats-url", natsP.ClientURL())
	nc, err := nats.Connect(natsS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the standby's mirror", func() bool {
		_, err := streams.EnsureMirror(ctx, js, streams.MirrorConfig{Name: streams.DefaultStream, OriginDomain: "primary"})
		return err == nil
	})
	applyArgs := []string{"apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", natsS.ClientURL()}
	metrics := freeAddr(t)
	auditArgs := []string{"audit", "--primary-endpoints", primary.Endpoint, "--standby-endpoints", standby.Endpoint,
		"--nats-url", natsS.ClientURL(), "--interval", "1s", "--metrics-addr", metrics}
	ap, au := runBackground(t, applyArgs...), runBackground(t, auditArgs...)
	for _, k := range []string{"a", "b", "c"} {
		if _, err := pcli.Put(ctx, "/registry/configmaps/app/"+k, k); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the last key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/c")
		return err == nil && len(resp.Kvs) == 1
	})

	primaryUp := func(v string) bool {
		_, m := httpGet("http://" + metrics + "/metrics")
		return strings.Contains(m, `etcdsync_auditor_primary_up{site="primary",stream="ETCDSYNC"} `+v)
	}
	eventually(t, 30*time.Second, "the auditor to see the primary", func() bool { return primaryUp("1") })

	// The primary site is lost: the running auditor notices; then the
	// standby's pods restart.
	pub.stop(t)
	primary.Close()
	natsP.Shutdown()
	eventually(t, 30*time.Second, "the running auditor to see the primary gone", func() bool { return primaryUp("0") })
	ap.stop(t)
	au.stop(t)
	runBackground(t, applyArgs...)
	au = runBackground(t, auditArgs...)
	eventually(t, 30*time.Second, "the auditor to report the primary unreachable", func() bool {
		code, body := httpGet("http://" + metrics + "/readyz")
		_, m := httpGet("http://" + metrics + "/metrics")
		return code == 503 && strings.Contains(body, "primary unreachable") && strings.Contains(m, `etcdsync_auditor_primary_up{site="primary",stream="ETCDSYNC"} 0`)
	})
	select {
	case code := <-au.done:
		au.done <- code
		t.Fatalf("the auditor exited (%d) with the primary unreachable:\n%s", code, au.stderr)
	default:
	}

	// The runbook's failover commands, with the environment the
	// applier's pod already has (its etcd is the standby).
	t.Setenv("ETCDSYNC_ETCD_ENDPOINTS", standby.Endpoint)
	t.Setenv("ETCDSYNC_NATS_URL", natsS.ClientURL())
	// status is honest about the lost link: once the mirror has been
	// silent longer than --max-lag it says STALLED and exits 1.
	if code, out, stderr := runCmd(t, "status"); !strings.Contains(out, "following") ||
		(code != exitOK && (code != exitFailure || !strings.Contains(out, "STALLED"))) {
		t.Fatalf("status: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr := runCmd(t, "promote", "--bump-revision", "--json")
	var rep promoteOutput
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK || !rep.Drained || rep.WritableStream == nil {
		t.Fatalf("promote: exit %d, %v\n%s%s", code, err, out, stderr)
	}
}
