package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/etcdsync/etcdsync/streams"
)

// TestPublishRefusesOpenListener: an embedded server beyond loopback
// without identities never starts; the command says which flag is missing.
func TestPublishRefusesOpenListener(t *testing.T) {
	primary, _ := startEtcd(t)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	for _, listen := range []string{"0.0.0.0:" + port, ":" + port} {
		pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(), "--nats-listen", listen, "--log-level", "error")
		select {
		case code := <-pub.done:
			pub.done <- code
			if code != exitUsage || !strings.Contains(pub.stderr.String(), "--nats-listen-users-file") {
				t.Errorf("%s: exit %d, stderr %q; want a usage error naming --nats-listen-users-file", listen, code, pub.stderr)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: publish runs an embedded server reachable beyond loopback without authentication", listen)
		}
	}
	for _, args := range [][]string{
		{"--nats-listen-tls-cert", "server.crt"},
		{"--nats-listen-tls-ca", "ca.crt"},
	} {
		code, _, stderr := runCmd(t, append([]string{"publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir()}, args...)...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, stderr %q; want a usage error", args, code, stderr)
		}
	}
}

// TestReadUsersFile reads roles, passwords and NKeys, and rejects bad
// lines naming the line but never the password.
func TestReadUsersFile(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	const secret = "s3cret-never-shown"
	tests := []struct {
		name    string
		content string
		want    []streams.ServerUser
		wantErr string
	}{
		{"roles", "# etcdsync\npublisher pub " + secret + "\n\nreader " + pub + "  # the applier\nleaf standby $2a$11$abc\n",
			[]streams.ServerUser{{Role: streams.RolePublisher, Name: "pub", Password: secret}, {Role: streams.RoleReader, Name: pub}, {Role: streams.RoleLeaf, Name: "standby", Password: "$2a$11$abc"}}, ""},
		{"unknown role", "admin root " + secret + "\n", nil, "line 1: role \"admin\""},
		{"no password", "reader applier\n", nil, "line 1: user \"applier\" has no password"},
		{"extra field", "reader applier " + secret + " more\n", nil, "line 1: want ROLE NAME [PASSWORD]"},
		{"empty", "# nobody\n", nil, "no identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readUsersFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), secret) {
					t.Fatalf("error %v, want one containing %q and not the password", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("user %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestPublishApplyNATSAuth runs `publish` with its embedded server on all
// interfaces, TLS with client certificates and a users file, and `apply`
// as a reader with --nats-user and --nats-password-file: it replicates.
// `audit` as another reader publishes drift events. Without a client certificate, without a password or with the wrong one,
// or with the publisher role's password given to a reader's name, apply
// cannot connect; no password shows in any output.
func TestPublishApplyNATSAuth(t *testing.T) {
	const readerPW, publisherPW, auditorPW = "reader-Pa55-0d1e", "publisher-Pa55-77aa", "auditor-Pa55-3b9c"
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	p := newPKI(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	users := write("users", "publisher etcdsync-publisher "+publisherPW+"\nreader applier "+readerPW+"\nreader auditor "+auditorPW+"\n")
	pwFile, wrongPW, pubPW := write("applier.pw", readerPW+"\n"), write("wrong.pw", "nope\n"), write("publisher.pw", publisherPW)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	ctx := context.Background()
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/one", "1"); err != nil {
		t.Fatal(err)
	}

	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(),
		"--nats-listen", "0.0.0.0:"+port, "--nats-listen-users-file", users,
		"--nats-listen-tls-cert", p.server.cert, "--nats-listen-tls-key", p.server.key, "--nats-listen-tls-ca", p.ca.file,
		"--log-level", "debug")
	eventually(t, 20*time.Second, "the publisher to start", func() bool {
		return strings.Contains(pub.stderr.String(), "publisher starting")
	})
	url := "tls://127.0.0.1:" + port
	tlsFlags := []string{"--nats-cacert", p.ca.file, "--nats-cert", p.client.cert, "--nats-key", p.client.key}
	base := []string{"apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", url, "--log-level", "debug"}

	ap := runBackground(t, append(append(base, tlsFlags...), "--nats-user", "applier", "--nats-password-file", pwFile)...)
	eventually(t, 20*time.Second, "the key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/one")
		return err == nil && len(resp.Kvs) == 1
	})

	outputs := []string{pub.stderr.String(), ap.stderr.String()}
	for name, args := range map[string][]string{
		"no credentials":          tlsFlags,
		"wrong password":          append(tlsFlags, "--nats-user", "applier", "--nats-password-file", wrongPW),
		"another user's password": append(tlsFlags, "--nats-user", "applier", "--nats-password-file", pubPW),
		"no client certificate":   {"--nats-cacert", p.ca.file, "--nats-user", "applier", "--nats-password-file", pwFile},
	} {
		code, stderr := exitOf(t, append(append([]string{}, base...), args...)...)
		if code != exitFailure {
			t.Errorf("%s: exit %d, stderr %q", name, code, stderr)
		}
		if name != "no client certificate" && !strings.Contains(strings.ToLower(stderr), "authorization") {
			t.Errorf("%s: stderr %q does not say authorization", name, stderr)
		}
		outputs = append(outputs, stderr)
	}
	// Credentials in the URL are redacted too.
	code, stderr := exitOf(t, append([]string{"apply", "--etcd-endpoints", standby.Endpoint, "--log-level", "debug",
		"--nats-url", "tls://applier:" + publisherPW + "@127.0.0.1:" + port}, tlsFlags...)...)
	if code != exitFailure {
		t.Errorf("password in the URL: exit %d, stderr %q", code, stderr)
	}
	outputs = append(outputs, stderr)

	// The auditor, a reader too, publishes drift events into the drift
	// stream that publish created.
	code, stdout, stderr := runCmd(t, append([]string{"audit", "--once", "--primary-endpoints", primary.Endpoint, "--standby-endpoints", standby.Endpoint,
		"--nats-url", url, "--nats-user", "auditor", "--nats-password-file", write("auditor.pw", auditorPW)}, tlsFlags...)...)
	if code != exitOK || !strings.Contains(stdout, "drift events: 1 messages published") {
		t.Errorf("audit as a reader: exit %d\n%s%s", code, stdout, stderr)
	}
	outputs = append(outputs, stdout+stderr)
	if code := ap.stop(t); code != exitOK {
		t.Errorf("apply exit %d", code)
	}
	if code := pub.stop(t); code != exitOK {
		t.Errorf("publish exit %d", code)
	}
	outputs = append(outputs, pub.stderr.String(), ap.stderr.String())
	for _, out := range outputs {
		for _, pw := range []string{readerPW, publisherPW, auditorPW} {
			if strings.Contains(out, pw) {
				t.Fatalf("a password appears in the output:\n%s", out)
			}
		}
	}
}

// exitOf runs a command that is expected to exit by itself and returns its
// exit status and stderr; it fails the test when the command still runs
// after 30s (it connected where it should not have).
func exitOf(t *testing.T, args ...string) (int, string) {
	t.Helper()
	b := runBackground(t, args...)
	select {
	case code := <-b.done:
		b.done <- code
		return code, b.stderr.String()
	case <-time.After(30 * time.Second):
		t.Fatalf("%q still runs after 30s", args)
		return 0, ""
	}
}

// TestPublishStoreEncrypted: with --nats-store-key-file no value of the
// log is readable in the embedded store's files, and the store opens again
// with the key; without it (the control) the value is there in clear.
func TestPublishStoreEncrypted(t *testing.T) {
	const marker = "plaintext-marker-5f0c2a9e"
	primary, pcli := startEtcd(t)
	keyFile := filepath.Join(t.TempDir(), "store.key")
	if err := os.WriteFile(keyFile, []byte("0123456789abcdef0123456789abcdef-store\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pcli.Put(context.Background(), "/registry/secrets/app/token", marker); err != nil {
		t.Fatal(err)
	}
	// run publishes until the log holds at least min messages, stops, and
	// returns the log's message count.
	run := func(dataDir string, min uint64, extra ...string) uint64 {
		t.Helper()
		addr := freeAddr(t)
		pub := runBackground(t, append([]string{"publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", dataDir, "--nats-listen", addr}, extra...)...)
		var msgs uint64
		eventually(t, 20*time.Second, "the log to hold its messages", func() bool {
			nc, err := nats.Connect("nats://" + addr)
			if err != nil {
				return false
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			s, err := js.Stream(context.Background(), streams.DefaultStream)
			if err != nil {
				return false
			}
			info, err := s.Info(context.Background())
			if err != nil {
				return false
			}
			msgs = info.State.Msgs
			return msgs >= min
		})
		if code := pub.stop(t); code != exitOK {
			t.Fatalf("publish exit %d\n%s", code, pub.stderr)
		}
		return msgs
	}
	inClear := func(dir string) bool {
		found := false
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if bytes.Contains(b, []byte(marker)) {
				found = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	plain := t.TempDir()
	run(plain, 4) // epoch, snapshot begin, chunk, end
	if !inClear(plain) {
		t.Fatal("control: the value is not in the unencrypted store; the check cannot see anything")
	}
	enc := t.TempDir()
	first := run(enc, 4, "--nats-store-key-file", keyFile)
	if inClear(enc) {
		t.Fatal("a value of the log is readable in the encrypted store")
	}
	// Reopened with the key, the log goes on: the old messages and the
	// new publisher's epoch marker.
	run(enc, first+1, "--nats-store-key-file", keyFile)
}

// TestRedactURL hides user information in every URL of a list, with or
// without a scheme (the NATS client accepts "user:pass@host:port"), however
// odd the password.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://a:s3cret@h1:4222,tls://tok@h2:4222": "nats://redacted@h1:4222,tls://redacted@h2:4222",
		"nats://h:4222":                          "nats://h:4222",
		"h:4222,h2:4222":                         "h:4222,h2:4222",
		"nats://a:b%zz@h":                        "nats://redacted@h",
		"a:s3cret@h:4222":                        "redacted@h:4222",
		"a:s3cret@h:4222, b:s3cret@h2":           "redacted@h2", // the host before it goes too
		"nats://a:s3/c@ret@h:4222":               "nats://redacted@h:4222",
		"s3cret@h":                               "redacted@h",
		"nats://a:s3c,ret@h1,nats://b:s3cret@h2": "nats://redacted@h1,nats://redacted@h2",
		"nats://h1,a:s3cret@h2":                  "nats://redacted@h2",
	} {
		if got := redactURL(in); got != want || strings.Contains(got, "s3cret") {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNatsTokenFile connects with --nats-token-file to a server that
// requires a token; a wrong token fails on one line without showing it, and
// two ways to authenticate at once are a usage error.
func TestNatsTokenFile(t *testing.T) {
	const token = "tok-5d1e-never-shown"
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Authorization: token})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "token"), filepath.Join(dir, "wrong")
	if err := os.WriteFile(good, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("wrong-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"streams", "init", "--role", "primary", "--nats-url", s.ClientURL()}
	if code, out, stderr := runCmd(t, append(base, "--nats-token-file", good)...); code != exitOK {
		t.Fatalf("with the token: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr := runCmd(t, append(base, "--nats-token-file", bad, "--log-level", "debug")...)
	if code != exitFailure || !strings.Contains(strings.ToLower(stderr), "authorization") || strings.Contains(out+stderr, "wrong-token") {
		t.Fatalf("wrong token: exit %d, stderr %q", code, stderr)
	}
	if code, _, _ := runCmd(t, append(base, "--nats-token-file", good, "--nats-user", "u", "--nats-password-file", good)...); code != exitUsage {
		t.Fatalf("token and user: exit %d, want %d", code, exitUsage)
	}
}

// TestPublishEmbeddedRefusesLeaderElect: replicas with embedded NATS servers
// would each write a store of their own, so --leader-elect (flag or
// environment) with no --nats-url is a usage error naming --nats-url; left
// at its default, leader election is off and the log says so.
func TestPublishEmbeddedRefusesLeaderElect(t *testing.T) {
	primary, _ := startEtcd(t)
	refused := func(what string, args ...string) {
		t.Helper()
		pub := runBackground(t, append([]string{"publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(), "--nats-listen", freeAddr(t)}, args...)...)
		select {
		case code := <-pub.done:
			pub.done <- code
			if code != exitUsage || !strings.Contains(pub.stderr.String(), "--nats-url") || !strings.Contains(pub.stderr.String(), "--leader-elect") {
				t.Errorf("%s: exit %d, stderr %q; want a usage error naming --leader-elect and --nats-url", what, code, pub.stderr)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("%s: publish runs leader-elected replicas on embedded NATS servers", what)
		}
	}
	refused("--leader-elect", "--leader-elect")
	t.Setenv("ETCDSYNC_LEADER_ELECT", "true")
	refused("ETCDSYNC_LEADER_ELECT=true")
	t.Setenv("ETCDSYNC_LEADER_ELECT", "")
	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(), "--nats-listen", freeAddr(t))
	eventually(t, 20*time.Second, "the publisher to start without leader election", func() bool {
		return strings.Contains(pub.stderr.String(), "leader election off")
	})
}
