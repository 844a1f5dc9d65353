package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// An etcdsync command line in the runbook: "etcdsync <cmd> ..." or the
	// runbook's alias "es <cmd> ...", up to the end of the line or of the
	// code span.
	commandLine = regexp.MustCompile("(?:\\betcdsync|(?:^|[\\s`'(])es)\\s+(publish|apply|audit|status|promote|demote|sandbox)\\b([^\\n`|;&]*)")
	flagToken   = regexp.MustCompile(`(?:^|[\s` + "`" + `(=,])--([a-z][a-z0-9-]*)`)
	envToken    = regexp.MustCompile(`\bETCDSYNC_[A-Z0-9_]+\*?`)
)

// otherToolFlags are flags of other tools (kubectl, helm, nats, etcd,
// kube-apiserver, kube-controller-manager, go) the runbook names.
var otherToolFlags = map[string]bool{
	"controllers": true, "encryption-provider-config": true, "service-account-key-file": true,
	"service-account-signing-key-file": true, "service-account-private-key-file": true, "max-request-bytes": true, "help": true,
	"create-namespace": true, "from-file": true, "raw": true, "replicas": true, "config": true,
	"etcd-prefix": true, "install": true, "reuse-values": true, "set": true,
}

// TestRunbookCommandsUseRealFlags checks every etcdsync command line in the
// runbook against the real binary's flags, and every --flag it names
// against etcdsync's flags or the short list of other tools' flags.
func TestRunbookCommandsUseRealFlags(t *testing.T) {
	b, err := os.ReadFile("RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ") // shell line continuations
	flags := flagsOf(t)
	any := map[string]bool{}
	for _, c := range commands {
		for name := range flags[c] {
			any[name] = true
		}
	}
	n := 0
	for _, m := range commandLine.FindAllStringSubmatch(text, -1) {
		n++
		cmd, rest := m[1], m[2]
		for _, f := range flagToken.FindAllStringSubmatch(rest, -1) {
			if _, ok := flags[cmd][f[1]]; !ok {
				t.Errorf("RUNBOOK.md: `etcdsync %s%s`: etcdsync %s has no flag --%s", cmd, rest, cmd, f[1])
			}
		}
	}
	if n < 10 {
		t.Errorf("found only %d etcdsync command lines in RUNBOOK.md", n)
	}
	for _, f := range flagToken.FindAllStringSubmatch(text, -1) {
		if !any[f[1]] && !otherToolFlags[f[1]] {
			t.Errorf("RUNBOOK.md names --%s, which no etcdsync command has", f[1])
		}
	}
}

// TestEnvironmentVariableNames checks every ETCDSYNC_ variable named
// anywhere under deploy/ against the real binary's flags.
func TestEnvironmentVariableNames(t *testing.T) {
	known := allEnvNames(t)
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(path) {
		case ".md", ".yaml", ".yml", ".json":
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, v := range envToken.FindAllString(string(b), -1) {
			if strings.HasSuffix(v, "*") {
				continue // a family, e.g. ETCDSYNC_STANDBY_*
			}
			if !known[v] && v != "ETCDSYNC_DRIFT" { // the drift stream's default name
				t.Errorf("%s: %s is not the environment variable of any etcdsync flag", path, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
