package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// runCmd runs the command line and returns the exit status and outputs.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// testFlags is a flag set with every kind of flag, reading env from a map.
type testFlags struct {
	s    string
	l    []string
	d    time.Duration
	i    int
	b    int64
	f    float64
	bo   bool
	flag *flagSet
}

func newTestFlags(env map[string]string) *testFlags {
	tf := &testFlags{}
	f := newFlagSet("test", "[flags]", "")
	f.lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	f.String(&tf.s, "nats-url", "def", "")
	f.List(&tf.l, "exclude-namespace", []string{"a"}, "")
	f.Duration(&tf.d, "max-age", time.Hour, "")
	f.Int(&tf.i, "max-txn-ops", 128, "")
	f.Bytes(&tf.b, "max-bytes", 0, "")
	f.Float(&tf.f, "max-delete-ratio", 0.5, "")
	f.Bool(&tf.bo, "allow-mass-delete", false, "")
	tf.flag = f
	return tf
}

func TestEnvName(t *testing.T) {
	if got := envName("etcd-endpoints"); got != "ETCDSYNC_ETCD_ENDPOINTS" {
		t.Fatalf("envName = %q", got)
	}
}

func TestFlagsFromEnv(t *testing.T) {
	env := map[string]string{
		"ETCDSYNC_NATS_URL":          "nats://env:4222",
		"ETCDSYNC_EXCLUDE_NAMESPACE": "x, y",
		"ETCDSYNC_MAX_AGE":           "24h",
		"ETCDSYNC_MAX_TXN_OPS":       "64",
		"ETCDSYNC_MAX_BYTES":         "2GiB",
		"ETCDSYNC_MAX_DELETE_RATIO":  "0.1",
		"ETCDSYNC_ALLOW_MASS_DELETE": "true",
	}
	tf := newTestFlags(env)
	if err := tf.flag.parse(nil, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if tf.s != "nats://env:4222" || strings.Join(tf.l, ",") != "x,y" || tf.d != 24*time.Hour || tf.i != 64 ||
		tf.b != 2<<30 || tf.f != 0.1 || !tf.bo {
		t.Fatalf("env not applied: %+v", tf)
	}
}

func TestFlagsCommandLineBeatsEnv(t *testing.T) {
	env := map[string]string{
		"ETCDSYNC_NATS_URL":          "nats://env:4222",
		"ETCDSYNC_EXCLUDE_NAMESPACE": "x,y",
		"ETCDSYNC_MAX_AGE":           "24h",
	}
	tf := newTestFlags(env)
	args := []string{"--nats-url", "nats://cli:4222", "--exclude-namespace", "p", "--exclude-namespace", "q,r", "--max-age=5m"}
	if err := tf.flag.parse(args, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if tf.s != "nats://cli:4222" || strings.Join(tf.l, ",") != "p,q,r" || tf.d != 5*time.Minute {
		t.Fatalf("command line did not win: %+v", tf)
	}
}

func TestFlagsDefaults(t *testing.T) {
	tf := newTestFlags(nil)
	if err := tf.flag.parse(nil, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if tf.s != "def" || strings.Join(tf.l, ",") != "a" || tf.d != time.Hour || tf.i != 128 || tf.f != 0.5 || tf.bo {
		t.Fatalf("defaults: %+v", tf)
	}
}

func TestFlagsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad duration in env", map[string]string{"ETCDSYNC_MAX_AGE": "5"}, nil, "ETCDSYNC_MAX_AGE"},
		{"bad int in env", map[string]string{"ETCDSYNC_MAX_TXN_OPS": "many"}, nil, "ETCDSYNC_MAX_TXN_OPS"},
		{"bad bool in env", map[string]string{"ETCDSYNC_ALLOW_MASS_DELETE": "yes please"}, nil, "ETCDSYNC_ALLOW_MASS_DELETE"},
		{"bad size", nil, []string{"--max-bytes", "lots"}, "max-bytes"},
		{"negative duration", nil, []string{"--max-age", "-1s"}, "max-age"},
		{"unknown flag", nil, []string{"--frobnicate"}, "frobnicate"},
		{"positional argument", nil, []string{"extra"}, "extra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newTestFlags(tc.env).flag.parse(tc.args, &bytes.Buffer{})
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestBytesValue(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "512MiB": 512 << 20, "10 GiB": 10 << 30, "1KB": 1000, "7B": 7} {
		var b bytesValue
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
}

// TestSizeUnits: sizes take IEC and Kubernetes quantity units (issue 16.7).
func TestSizeUnits(t *testing.T) {
	for in, want := range map[string]int64{"20Gi": 20 << 30, "20GiB": 20 << 30, "512Mi": 512 << 20, "64Ki": 64 << 10, "1Ti": 1 << 40,
		"2G": 2e9, "3M": 3e6, "5k": 5000, "1GB": 1e9} {
		var b bytesValue
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"20Gx", "Gi", "-1Gi", "1.5Gi"} {
		var b bytesValue
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, b)
		}
	}
}

// TestDurationDaysWeeks: durations take days and weeks (issue 16.7).
func TestDurationDaysWeeks(t *testing.T) {
	const day = 24 * time.Hour
	for in, want := range map[string]time.Duration{"7d": 7 * day, "2w": 14 * day, "1d12h": 36 * time.Hour, "1w2d3h30m": 9*day + 3*time.Hour + 30*time.Minute,
		"90m": 90 * time.Minute, "0": 0} {
		var d durationValue
		if err := d.Set(in); err != nil || time.Duration(d) != want {
			t.Errorf("Set(%q) = %s, %v; want %s", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{"7", "d", "1d2", "2x", "-1d", "1d-1h"} {
		var d durationValue
		if err := d.Set(in); err == nil {
			t.Errorf("Set(%q) = %s, want an error", in, time.Duration(d))
		}
	}
}

// TestUnknownEnvVariable: a misspelt ETCDSYNC_ variable is a usage error
// naming the closest known one, on every command (issue 16.7); a variable
// of another command's flag is accepted.
func TestUnknownEnvVariable(t *testing.T) {
	t.Setenv("ETCDSYNC_EXCLUDE_NAMESPACES", "kube-system")
	for _, cmd := range []string{"apply", "status", "promote", "demote", "version"} {
		code, _, stderr := runCmd(t, cmd)
		if code != exitUsage || !strings.Contains(stderr, "$ETCDSYNC_EXCLUDE_NAMESPACES") || !strings.Contains(stderr, "did you mean $ETCDSYNC_EXCLUDE_NAMESPACE?") {
			t.Errorf("%s: exit %d, stderr %q", cmd, code, stderr)
		}
	}
	os.Unsetenv("ETCDSYNC_EXCLUDE_NAMESPACES")
	t.Setenv("ETCDSYNC_PRIMARY_ENDPOINTS", "http://127.0.0.1:1") // audit's, set in the auditor pod that also runs status
	if code, out, stderr := runCmd(t, "apply", "--print-rules"); code != exitOK {
		t.Errorf("apply --print-rules with another command's variable set: exit %d\n%s%s", code, out, stderr)
	}
}

func TestEnvThroughRun(t *testing.T) {
	t.Setenv("ETCDSYNC_MAX_AGE", "soon")
	code, _, stderr := runCmd(t, "publish", "--etcd-endpoints", "http://127.0.0.1:1")
	if code != exitUsage || !strings.Contains(stderr, "ETCDSYNC_MAX_AGE") || !strings.Contains(stderr, "publish -h") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"apply without nats url", []string{"apply", "--etcd-endpoints", "http://127.0.0.1:1"}, "--nats-url is required"},
		{"apply without endpoints", []string{"apply", "--nats-url", "nats://127.0.0.1:1"}, "--etcd-endpoints is required"},
		{"publish without endpoints", []string{"publish"}, "--etcd-endpoints is required"},
		{"bad site", []string{"publish", "--etcd-endpoints", "http://127.0.0.1:1", "--site", "a.b"}, "site"},
		{"bad log level", []string{"publish", "--etcd-endpoints", "http://127.0.0.1:1", "--log-level", "loud"}, "--log-level"},
		{"cert without key", []string{"apply", "--etcd-endpoints", "https://127.0.0.1:1", "--nats-url", "nats://x", "--etcd-cert", "c.pem"}, "--etcd-key"},
		{"bad ratio", []string{"apply", "--etcd-endpoints", "http://127.0.0.1:1", "--nats-url", "nats://x", "--max-delete-ratio", "2"}, "ratio"},
		{"bad namespace", []string{"apply", "--print-rules", "--exclude-namespace", "Not_A_Label"}, "Not_A_Label"},
		{"sandbox rate", []string{"sandbox", "--rate", "0"}, "--rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, tc.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr %q, want it to mention %q", stderr, tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"publish", "apply", "sandbox"} {
		code, stdout, _ := runCmd(t, cmd, "-h")
		if code != exitOK {
			t.Fatalf("%s -h: exit %d", cmd, code)
		}
		for _, want := range []string{"Usage: etcdsync " + cmd, "--log-level", "$ETCDSYNC_LOG_LEVEL", "default"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s -h: output lacks %q:\n%s", cmd, want, stdout)
			}
		}
	}
	code, stdout, _ := runCmd(t, "apply", "-h")
	for _, want := range []string{"--etcd-endpoints URLS", "$ETCDSYNC_ETCD_ENDPOINTS", "--max-txn-ops N", "default 128", "--exclude-namespace"} {
		if code != exitOK || !strings.Contains(stdout, want) {
			t.Errorf("apply -h lacks %q", want)
		}
	}
	if code, stdout, _ := runCmd(t, "help", "publish"); code != exitOK || !strings.Contains(stdout, "--nats-listen") {
		t.Errorf("help publish: exit %d\n%s", code, stdout)
	}
	if code, stdout, _ := runCmd(t, "--help"); code != exitOK || !strings.Contains(stdout, "sandbox") {
		t.Errorf("--help: exit %d\n%s", code, stdout)
	}
}

func TestPrintRules(t *testing.T) {
	code, stdout, stderr := runCmd(t, "apply", "--print-rules", "--exclude-namespace", "foo")
	if code != exitOK {
		t.Fatalf("exit %d; stderr %q", code, stderr)
	}
	for _, want := range []string{`"foo"`, `"kube-system"`, "/registry/", "# scope in force: these options, defaults otherwise: --exclude-namespace (command line)",
		"records this scope at /etcdsync/checkpoint/ETCDSYNC/scope", "do not parse as Kubernetes keys are counted in etcdsync_applier_unparsed_keys_total",
		`exclude key "/registry/servicecidrs/kubernetes"`, `"/registry/resourceslices"`, `"/registry/certificatesigningrequests"`,
		`"/registry/podcertificaterequests"`, `"/registry/clustertrustbundles/kubernetes.io:kube-apiserver-serving:"`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("rules lack %s:\n%s", want, stdout)
		}
	}
}

// TestPrintRulesOwnNamespace: apply and audit exclude the namespace they
// run in (POD_NAMESPACE), and --print-rules says why.
func TestPrintRulesOwnNamespace(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "etcdsync")
	code, stdout, stderr := runCmd(t, "apply", "--print-rules")
	if code != exitOK {
		t.Fatalf("exit %d; stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, `exclude namespace "etcdsync"`) || !strings.Contains(stdout, "POD_NAMESPACE") {
		t.Errorf("rules do not exclude the own namespace and say why:\n%s", stdout)
	}
	t.Setenv("POD_NAMESPACE", "Not_A_Label")
	if code, _, stderr := runCmd(t, "apply", "--print-rules"); code != exitUsage || !strings.Contains(stderr, "POD_NAMESPACE") {
		t.Errorf("bad POD_NAMESPACE: exit %d, stderr %q", code, stderr)
	}
}

func TestPrintRulesFromEnvRaw(t *testing.T) {
	t.Setenv("ETCDSYNC_KEYSPACE", "raw")
	t.Setenv("ETCDSYNC_EXCLUDE_PREFIX", "/app/secret/")
	code, stdout, stderr := runCmd(t, "apply", "--print-rules")
	if code != exitOK || !strings.Contains(stdout, "mode raw") || !strings.Contains(stdout, "/app/secret/") || strings.Contains(stdout, "kube-system") ||
		strings.Contains(stdout, "unparsed") {
		t.Fatalf("exit %d, stderr %q, rules:\n%s", code, stderr, stdout)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runCmd(t, "version")
	if code != exitOK || !strings.HasPrefix(stdout, "etcdsync ") {
		t.Fatalf("exit %d: %q", code, stdout)
	}
}

func TestUnreachableEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the connect timeout")
	}
	code, _, stderr := runCmd(t, "apply", "--etcd-endpoints", "http://127.0.0.1:1", "--nats-url", "nats://127.0.0.1:1")
	if code != exitUnavailable || !strings.Contains(stderr, "etcdsync apply: etcd http://127.0.0.1:1: ") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
		t.Fatalf("want one line, got %q", stderr)
	}
}

// TestExitStatusEveryCommand: on every command a bad flag exits 2 and a
// server that cannot be reached exits 3 (issue 16.7).
func TestExitStatusEveryCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the connect timeout")
	}
	const etcd, nats = "http://127.0.0.1:1", "nats://127.0.0.1:1"
	for _, args := range [][]string{
		{"publish", "--etcd-endpoints", etcd, "--nats-url", nats},
		{"apply", "--etcd-endpoints", etcd, "--nats-url", nats},
		{"audit", "--once", "--primary-endpoints", etcd, "--standby-endpoints", etcd},
		{"status", "--standby-endpoints", etcd},
		{"promote", "--standby-endpoints", etcd},
		{"demote", "--standby-endpoints", etcd},
		{"verify", "--standby-endpoints", etcd},
		{"streams", "init", "--role", "primary", "--nats-url", nats},
	} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			if code, _, stderr := runCmd(t, append(args, "--no-such-flag")...); code != exitUsage {
				t.Errorf("bad flag: exit %d, want %d: %s", code, exitUsage, stderr)
			}
			if code, _, stderr := runCmd(t, args...); code != exitUnavailable {
				t.Errorf("unreachable server: exit %d, want %d: %s", code, exitUnavailable, stderr)
			}
		})
	}
}
