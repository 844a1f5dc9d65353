package main

import (
	"strings"
	"testing"

	"github.com/etcdsync/etcdsync/internal/testenv"
)

func TestStreamsInit(t *testing.T) {
	js := testenv.StartJetStream(t)
	code, out, stderr := runCmd(t, "streams", "init", "--role", "primary", "--nats-url", js.URL, "--site", "dc1", "--max-age", "48h")
	if code != exitOK || !strings.Contains(out, "etcdsync.dc1.log.>") || !strings.Contains(out, "48h") {
		t.Fatalf("streams init --role primary: exit %d\n%s%s", code, out, stderr)
	}
	// Idempotent.
	if code, _, stderr := runCmd(t, "streams", "init", "--role", "primary", "--nats-url", js.URL, "--site", "dc1"); code != exitOK {
		t.Fatalf("second init: exit %d %s", code, stderr)
	}
	// The log stream exists under that name and is not a mirror: refuse.
	code, _, stderr = runCmd(t, "streams", "init", "--role", "standby", "--nats-url", js.URL)
	if code != exitFailure || !strings.Contains(stderr, "not a mirror") {
		t.Fatalf("standby over a log stream: exit %d %q", code, stderr)
	}
	for _, args := range [][]string{{"streams"}, {"streams", "init", "--role", "x", "--nats-url", js.URL}, {"streams", "init", "--role", "primary"}} {
		if code, _, _ := runCmd(t, args...); code != exitUsage {
			t.Fatalf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
	// A max age at or below the snapshot interval would lose the last
	// complete snapshot, on either site: refused with the numbers.
	for _, role := range []string{"primary", "standby"} {
		code, _, stderr := runCmd(t, "streams", "init", "--role", role, "--nats-url", js.URL, "--stream", "SHORT", "--max-age", "1h")
		if code != exitUsage || !strings.Contains(stderr, "1h0m0s") || !strings.Contains(stderr, "4h0m0s") {
			t.Fatalf("--role %s --max-age 1h: exit %d %q, want a usage error naming 1h0m0s and the 4h0m0s snapshot interval", role, code, stderr)
		}
	}
	if code, _, stderr := runCmd(t, "streams", "init", "--role", "primary", "--nats-url", js.URL, "--stream", "SHORT", "--site", "dc2",
		"--max-age", "1h", "--snapshot-interval", "30m"); code != exitOK {
		t.Fatalf("--max-age 1h --snapshot-interval 30m: exit %d %s", code, stderr)
	}
}
