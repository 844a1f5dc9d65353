package main

import (
	"strings"
	"testing"
)

// A checkpoint key the scope replicates is refused before anything connects.
func TestApplyRefusesCheckpointKeyInScope(t *testing.T) {
	code, _, stderr := runCmd(t, "apply", "--etcd-endpoints", "http://127.0.0.1:1", "--nats-url", "nats://127.0.0.1:1",
		"--checkpoint-key", "/registry/configmaps/default/etcdsync-checkpoint")
	if code != exitUsage || !strings.Contains(stderr, "inside the replicated scope") {
		t.Fatalf("exit %d, want %d; stderr %q", code, exitUsage, stderr)
	}
}
