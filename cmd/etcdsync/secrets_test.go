package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/streams"
)

// buildBinary builds this command into a temporary directory, so that a
// test sees everything the process writes (libraries that print to the
// process's stderr included), not only what reaches run's writers.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "etcdsync")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is the built binary running in the background, both outputs kept.
type process struct {
	args           []string
	cmd            *exec.Cmd
	done           chan struct{}
	stdout, stderr *syncBuffer
}

// start runs the binary with env (and no other ETCDSYNC_ variable) until
// stop or the end of the test.
func start(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{args: args, cmd: exec.Command(bin, args...), done: make(chan struct{}), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = env, p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%q stderr:\n%s", args, p.stderr)
		}
	})
	return p
}

// stop sends SIGTERM (a clean shutdown) and waits for the exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("%q did not stop on SIGTERM; stderr:\n%s", p.args, p.stderr)
		<-p.done
	}
}

// exitCode runs the binary to its end (at most a minute) and returns its
// exit status and outputs.
func exitCode(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, bin, args...)
	c.Env, c.Stdout, c.Stderr = env, &stdout, &stderr
	err := c.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%q: %v", args, err)
	}
	return c.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// authEtcd starts an etcd that requires user root with password pw, and
// returns it with a client logged in as root.
func authEtcd(t *testing.T, pw string) (*embedded.Etcd, *clientv3.Client) {
	t.Helper()
	e, open := startEtcd(t)
	ctx := context.Background()
	if _, err := open.UserAdd(ctx, "root", pw); err != nil {
		t.Fatal(err)
	}
	if _, err := open.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := open.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, Username: "root", Password: pw,
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return e, cli
}

// TestPlantedSecretsNeverShown runs the built binary's every command that
// touches etcd or NATS with planted secrets (etcd passwords from a flag and from the
// environment, NATS passwords in a URL and in --nats-password-file, a NATS
// token, the log key, the embedded server's users file and store key, and
// a Secret's value replicated at debug level and drifted on the standby)
// on its success paths and on its connection-error paths (unreachable NATS
// with a password in the URL, wrong passwords and token, a denied etcd
// password), and greps stdout, stderr, /metrics, /healthz, /readyz and
// /check for each secret: any hit fails with the line.
func TestPlantedSecretsNeverShown(t *testing.T) {
	randKey := make([]byte, 32)
	_, _ = rand.Read(randKey)
	logKeyB64 := base64.StdEncoding.EncodeToString(randKey)
	secrets := map[string]string{
		"etcd password":               "etcd-root-Pw-9f2c41",
		"NATS publisher password":     "nats-pub-Pw-51ab7e",
		"NATS reader password":        "nats-reader-Pw-c03d18",
		"NATS token":                  "nats-token-Tk-e6f920",
		"wrong password":              "wrong-Pw-3e4f5a",
		"embedded server password":    "embedded-Pw-77e1b2",
		"store key":                   "store-key-Sk-0123456789abcdef0123456789ab",
		"log key":                     logKeyB64,
		"Secret value on the primary": "Secret-Value-ab12cd34ef",
		"Secret value on the standby": "Standby-Secret-Value-9988",
	}
	// A value's plain SHA-256 is a leak too: guesses can be tested against it.
	for _, what := range []string{"Secret value on the primary", "Secret value on the standby"} {
		h := sha256.Sum256([]byte(secrets[what]))
		secrets["SHA-256 of the "+what] = hex.EncodeToString(h[:])
	}
	etcdPW, pubPW, readerPW, token, wrongPW := secrets["etcd password"], secrets["NATS publisher password"],
		secrets["NATS reader password"], secrets["NATS token"], secrets["wrong password"]
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyFile := write("log.key", "k1:"+logKeyB64+"\n")
	readerPWFile, wrongPWFile := write("reader.pw", readerPW+"\n"), write("wrong.pw", wrongPW+"\n")
	tokenFile, wrongTokenFile := write("token", token+"\n"), write("wrong.token", wrongPW+"\n")
	usersFile := write("users", "publisher local-publisher "+secrets["embedded server password"]+"\n")
	storeKeyFile := write("store.key", secrets["store key"]+"\n")

	bin := buildBinary(t)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCDSYNC_") {
			env = append(env, kv)
		}
	}
	type output struct{ name, text string }
	var outputs []output
	keep := func(name, text string) { outputs = append(outputs, output{name, text}) }
	// cmd runs a command to its end and keeps its outputs; want < 0 accepts
	// any exit status but bad usage (the command must have run).
	cmd := func(name string, want int, args ...string) {
		t.Helper()
		code, stdout, stderr := exitCode(t, bin, env, args...)
		keep(name, stdout+stderr)
		if (want >= 0 && code != want) || code == exitUsage {
			t.Errorf("%s: exit %d, want %d\n%s%s", name, code, want, stdout, stderr)
		}
	}
	scrape := func(name, url string) {
		t.Helper()
		_, body := httpGet(url)
		keep(name+" "+url, body)
	}

	// Both etcds require a password; the publisher and the applier read it
	// from the environment, the auditor's primary side from a flag.
	primary, pcli := authEtcd(t, etcdPW)
	standby, scli := authEtcd(t, etcdPW)
	env = append(env, "ETCDSYNC_ETCD_PASSWORD="+etcdPW, "ETCDSYNC_STANDBY_PASSWORD="+etcdPW)

	// NATS with a publisher and a reader identity, and one with a token.
	scfg := streams.DefaultServerConfig()
	scfg.StoreDir, scfg.Listen = t.TempDir(), "127.0.0.1:-1"
	scfg.Users = []streams.ServerUser{{Role: streams.RolePublisher, Name: "etcdsync-publisher", Password: pubPW},
		{Role: streams.RoleReader, Name: "etcdsync-reader", Password: readerPW}}
	ns, err := streams.StartServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	hostPort := strings.TrimPrefix(ns.ClientURL(), "nats://")
	natsURL := "nats://" + hostPort
	ts, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Authorization: token})
	if err != nil {
		t.Fatal(err)
	}
	go ts.Start()
	if !ts.ReadyForConnections(10 * time.Second) {
		t.Fatal("token nats not ready")
	}
	t.Cleanup(func() { ts.Shutdown(); ts.WaitForShutdown() })
	closed := freeAddr(t) // nothing listens there

	// The pipeline at debug level: the publisher's password in its URL,
	// the applier's in a file.
	pubMetrics, apMetrics := freeAddr(t), freeAddr(t)
	// The streams, as a publisher identity would create them (readers may
	// not), its password in a file.
	cmd("streams init", exitOK, "streams", "init", "--role", "primary", "--nats-url", natsURL, "--nats-user", "etcdsync-publisher",
		"--nats-password-file", write("publisher.pw", pubPW+"\n"), "--log-level", "debug")
	pub := start(t, bin, env, "publish", "--etcd-endpoints", primary.Endpoint, "--etcd-username", "root",
		"--nats-url", "nats://etcdsync-publisher:"+pubPW+"@"+hostPort, "--log-key-file", keyFile,
		"--log-level", "debug", "--metrics-addr", pubMetrics)
	ap := start(t, bin, env, "apply", "--etcd-endpoints", standby.Endpoint, "--etcd-username", "root",
		"--nats-url", natsURL, "--nats-user", "etcdsync-reader", "--nats-password-file", readerPWFile,
		"--log-key-file", keyFile, "--log-level", "debug", "--metrics-addr", apMetrics)
	ctx := context.Background()
	eventually(t, 30*time.Second, "the applier's bootstrap", func() bool {
		return strings.Contains(ap.stderr.String(), "snapshot applied")
	})
	const secretKey = "/registry/secrets/app/db"
	if _, err := pcli.Put(ctx, secretKey, secrets["Secret value on the primary"]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the Secret applied, at debug level", func() bool {
		return strings.Contains(ap.stderr.String(), secretKey)
	})
	for _, addr := range []string{pubMetrics, apMetrics} {
		for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
			scrape("http", "http://"+addr+path)
		}
	}
	// The Secret drifts on the standby: reports show both values' hashes.
	if _, err := scli.Put(ctx, secretKey, secrets["Secret value on the standby"]); err != nil {
		t.Fatal(err)
	}

	standbyFlags := []string{"--standby-endpoints", standby.Endpoint, "--standby-username", "root"}
	auditArgs := append([]string{"audit", "--primary-endpoints", primary.Endpoint, "--primary-username", "root", "--primary-password", etcdPW,
		"--log-key-file", keyFile, "--log-level", "debug"}, standbyFlags...)
	readerURL := "nats://etcdsync-reader:" + readerPW + "@" + hostPort
	cmd("audit", exitFailure, append(auditArgs, "--once", "--nats-url", readerURL)...)
	cmd("audit --json", exitFailure, append(auditArgs, "--once", "--json", "--nats-url", readerURL)...)
	cmd("audit with a token", exitFailure, append(auditArgs, "--once", "--nats-url", ts.ClientURL(), "--nats-token-file", tokenFile)...)
	auMetrics := freeAddr(t)
	au := start(t, bin, env, append(auditArgs, "--interval", "1h", "--metrics-addr", auMetrics, "--nats-url", readerURL)...)
	eventually(t, 30*time.Second, "the auditor's first report", func() bool {
		code, body := httpGet("http://" + auMetrics + "/check?format=json")
		return code != 0 && strings.Contains(body, "mismatched")
	})
	for _, path := range []string{"/check", "/check?format=json", "/metrics", "/healthz", "/readyz"} {
		scrape("http", "http://"+auMetrics+path)
	}

	statusArgs := append([]string{"status", "--nats-url", natsURL, "--nats-user", "etcdsync-reader", "--nats-password-file", readerPWFile,
		"--log-key-file", keyFile, "--log-level", "debug"}, standbyFlags...)
	cmd("status", exitOK, statusArgs...)
	cmd("status --json", exitOK, append(statusArgs, "--json")...)
	promoteArgs := append([]string{"promote", "--dry-run", "--nats-url", readerURL, "--log-key-file", keyFile, "--log-level", "debug"}, standbyFlags...)
	cmd("promote --dry-run", exitOK, promoteArgs...)
	cmd("promote --dry-run --json", exitOK, append(promoteArgs, "--json")...)
	cmd("streams init with a token", exitOK, "streams", "init", "--role", "primary", "--nats-url", ts.ClientURL(),
		"--nats-token-file", tokenFile, "--log-level", "debug")
	cmd("demote (refused: not promoted)", exitFailure, append([]string{"demote", "--log-level", "debug"}, standbyFlags...)...)

	// Connection errors: NATS unreachable with a password in the URL...
	deadURL := "nats://etcdsync-reader:" + readerPW + "@" + closed
	cmd("apply, NATS unreachable", exitUnavailable, "apply", "--etcd-endpoints", standby.Endpoint, "--etcd-username", "root",
		"--nats-url", deadURL, "--log-level", "debug")
	cmd("publish, NATS unreachable", exitUnavailable, "publish", "--etcd-endpoints", primary.Endpoint, "--etcd-username", "root",
		"--nats-url", "nats://etcdsync-publisher:"+pubPW+"@"+closed, "--log-level", "debug")
	cmd("audit, NATS unreachable", exitUnavailable, append(auditArgs, "--once", "--nats-url", deadURL)...)
	cmd("status, NATS unreachable", exitUnavailable, append([]string{"status", "--nats-url", deadURL, "--log-level", "debug"}, standbyFlags...)...)
	cmd("promote, NATS unreachable", exitUnavailable, append([]string{"promote", "--dry-run", "--nats-url", deadURL, "--log-level", "debug"}, standbyFlags...)...)
	cmd("streams init, NATS unreachable", exitUnavailable, "streams", "init", "--role", "primary", "--nats-url", deadURL, "--log-level", "debug")
	// ... NATS denying a wrong password or token ...
	cmd("apply, wrong password in the URL", exitFailure, "apply", "--etcd-endpoints", standby.Endpoint, "--etcd-username", "root",
		"--nats-url", "nats://etcdsync-reader:"+wrongPW+"@"+hostPort, "--log-level", "debug")
	cmd("status, wrong password file", -1, append([]string{"status", "--nats-url", natsURL, "--nats-user", "etcdsync-reader",
		"--nats-password-file", wrongPWFile, "--log-level", "debug"}, standbyFlags...)...)
	cmd("streams init, wrong token", exitFailure, "streams", "init", "--role", "primary", "--nats-url", ts.ClientURL(),
		"--nats-token-file", wrongTokenFile, "--log-level", "debug")
	// ... and etcd denying a wrong password given on the command line.
	cmd("status, etcd password denied", exitUnavailable, "status", "--standby-endpoints", standby.Endpoint, "--standby-username", "root",
		"--standby-password", wrongPW, "--nats-url", natsURL, "--log-level", "debug")
	cmd("publish, etcd password denied", exitFailure, "publish", "--etcd-endpoints", primary.Endpoint, "--etcd-username", "root",
		"--etcd-password", wrongPW, "--nats-url", natsURL, "--log-level", "debug")
	cmd("audit, primary etcd password denied", exitUnavailable, "audit", "--once", "--primary-endpoints", primary.Endpoint,
		"--primary-username", "root", "--primary-password", wrongPW, "--standby-endpoints", standby.Endpoint, "--standby-username", "root")

	// publish with its embedded server: a users file and a store key.
	emb := start(t, bin, env, "publish", "--etcd-endpoints", primary.Endpoint, "--etcd-username", "root", "--data-dir", t.TempDir(),
		"--nats-listen", freeAddr(t), "--nats-listen-users-file", usersFile, "--nats-store-key-file", storeKeyFile,
		"--log-key-file", keyFile, "--log-level", "debug")
	eventually(t, 30*time.Second, "the publisher with an embedded server", func() bool {
		return strings.Contains(emb.stderr.String(), "snapshot published")
	})

	for _, c := range []*process{emb, au, ap, pub} {
		c.stop(t)
		keep(strings.Join(c.args[:1], " ")+" (background)", c.stdout.String()+c.stderr.String())
	}
	for _, o := range outputs {
		for what, s := range secrets {
			for _, line := range strings.Split(o.text, "\n") {
				if strings.Contains(line, s) {
					t.Errorf("%s shows the %s:\n%s", o.name, what, line)
				}
			}
		}
	}
	if len(outputs) < 30 {
		t.Fatalf("only %d outputs checked", len(outputs))
	}
}
