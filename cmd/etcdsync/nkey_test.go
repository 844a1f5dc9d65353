package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// TestNatsNkeyAuth connects with --nats-nkey to a server that requires
// nkey authentication; without it, or with another seed, the command fails
// with one clear line.
func TestNatsNkeyAuth(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "user.nk"), filepath.Join(dir, "other.nk")
	if err := os.WriteFile(good, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10e9) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })

	if code, out, stderr := runCmd(t, "streams", "init", "--role", "primary", "--nats-url", s.ClientURL(), "--nats-nkey", good); code != exitOK {
		t.Fatalf("with the nkey: exit %d\n%s%s", code, out, stderr)
	}
	for _, args := range [][]string{{}, {"--nats-nkey", bad}} {
		code, _, stderr := runCmd(t, append([]string{"streams", "init", "--role", "primary", "--nats-url", s.ClientURL(), "--log-level", "error"}, args...)...)
		if code != exitFailure || strings.Count(stderr, "\n") != 1 || !strings.Contains(strings.ToLower(stderr), "authorization") {
			t.Fatalf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
	if code, _, _ := runCmd(t, "streams", "init", "--role", "primary", "--nats-url", s.ClientURL(), "--nats-nkey", good, "--nats-creds", good); code != exitUsage {
		t.Fatalf("--nats-nkey with --nats-creds: exit %d, want %d", code, exitUsage)
	}
}
