package deploy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var (
	// An etcdsync command line in the runbook: "etcdsync <cmd> ..." or the
	// runbook's alias "es <cmd> ...", up to the end of the line or of the
	// code span.
	commandLine = regexp.MustCompile("(?:\\betcdsync|(?:^|[\\s`'(])es)\\s+(publish|apply|audit|status|promote|demote|verify|sandbox)\\b([^\\n`|;&]*)")
	flagToken   = regexp.MustCompile(`(?:^|[\s` + "`" + `(=,])--([a-z][a-z0-9-]*)`)
	envToken    = regexp.MustCompile(`\bETCDSYNC_[A-Z0-9_]+\*?`)
)

// otherToolFlags are flags of other tools (kubectl, helm, nats, etcd, etcdutl,
// kube-apiserver, kube-controller-manager, go) the runbook names.
var otherToolFlags = map[string]bool{
	"controllers": true, "encryption-provider-config": true, "service-account-key-file": true,
	"service-account-signing-key-file": true, "service-account-private-key-file": true, "max-request-bytes": true, "help": true,
	"create-namespace": true, "from-file": true, "raw": true, "replicas": true, "config": true,
	"etcd-prefix": true, "install": true, "reuse-values": true, "set": true, "mark-compacted": true,
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

// helmSwapSite is one site's state as the runbook's Helm role swaps leave
// it.
type helmSwapSite struct {
	role     string
	applier  int    // applier replicas (values.yaml: 2)
	stream   string // "log" (writable), "mirror", or "" (removed)
	promoted bool   // its etcd holds the promoted marker until demoted
}

var (
	helmSwapSiteComment = regexp.MustCompile(`^#\s*([AB]):`)
	helmSwapSet         = regexp.MustCompile(`--set\s+(\S+)`)
	helmSwapScale       = regexp.MustCompile(`scale\s+deploy/etcdsync-(applier|publisher)\s+--replicas[ =](\d+)`)
	shellBlock          = regexp.MustCompile("(?s)```sh\n(.*?)```")
)

// TestRunbookHelmRoleSwapOrder replays the commands of "Failover and
// failback with Helm" on two sites and checks their order: the publisher
// starts on a site (role primary) only once its log is writable (promote
// made its mirror the log); an applier starts only on a mirror of the other
// site's log and an etcd that is not promoted, so a role change to standby
// holds it at 0 replicas while the site's old log is replaced and its etcd
// demoted; those steps and `es` (the auditor's pod) run on a standby; and
// every swap ends with the standby's applier running.
func TestRunbookHelmRoleSwapOrder(t *testing.T) {
	b, err := os.ReadFile("RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Failover and failback with Helm\n")
	if start < 0 {
		t.Fatal(`RUNBOOK.md has no section "Failover and failback with Helm"`)
	}
	section := text[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	sites := map[string]*helmSwapSite{
		"A": {role: "primary", applier: 2, stream: "log"},
		"B": {role: "standby", applier: 2, stream: "mirror"},
	}
	blocks := shellBlock.FindAllStringSubmatch(strings.ReplaceAll(section, "\\\n", " "), -1)
	if len(blocks) < 3 {
		t.Fatalf("%d shell blocks in \"Failover and failback with Helm\", want the failover, the old primary's return and the failback", len(blocks))
	}
	var helmUpgrades int
	for i, blk := range blocks {
		site := ""
		for _, line := range strings.Split(blk[1], "\n") {
			line = strings.TrimSpace(line)
			if m := helmSwapSiteComment.FindStringSubmatch(line); m != nil {
				site = m[1]
				continue
			}
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if site == "" {
				t.Fatalf("block %d: %q: no \"# A:\" or \"# B:\" comment names its site", i+1, line)
			}
			s, where := sites[site], fmt.Sprintf("block %d, site %s: %s", i+1, site, line)
			applierWasRunning := s.role == "standby" && s.applier > 0
			needStandby := func() {
				if s.role != "standby" {
					t.Errorf("%s: runs while the site is the %s (its publisher runs, and es needs the standby's auditor pod)", where, s.role)
				}
			}
			needApplierStopped := func() {
				if s.role == "standby" && s.applier > 0 {
					t.Errorf("%s: runs while the applier runs (%d replicas): hold it at 0 first", where, s.applier)
				}
			}
			switch {
			case strings.HasPrefix(line, "helm upgrade"):
				helmUpgrades++
				for _, m := range helmSwapSet.FindAllStringSubmatch(line, -1) {
					for _, kv := range strings.Split(m[1], ",") {
						k, v, _ := strings.Cut(kv, "=")
						switch k {
						case "role":
							s.role = v
						case "applier.replicas":
							if s.applier, err = strconv.Atoi(v); err != nil {
								t.Fatalf("%s: %v", where, err)
							}
						}
					}
				}
				if s.role == "primary" && s.stream != "log" {
					t.Errorf("%s: the publisher starts while this site's stream is %q, not its writable log: promote first", where, s.stream)
				}
				// The chart takes the values as the upgrade leaves them
				// (the site's, as chart_failover_test.go installs them).
				var vals map[string]any
				if err := yaml.Unmarshal([]byte(siteValues[site]), &vals); err != nil {
					t.Fatal(err)
				}
				vals["role"] = s.role
				vals["applier"] = map[string]any{"replicas": s.applier}
				r := renderDecoded(t, vals)
				if d := r.deployments["etcdsync-applier"]; s.role == "standby" && (d == nil || d.Spec.Replicas == nil || int(*d.Spec.Replicas) != s.applier) {
					t.Errorf("%s: the chart renders applier %v, want %d replicas", where, d, s.applier)
				}
			case helmSwapScale.MatchString(line):
				m := helmSwapScale.FindStringSubmatch(line)
				if m[1] == "applier" {
					s.applier, _ = strconv.Atoi(m[2])
				}
			case strings.HasPrefix(line, "natsbox stream rm"):
				needStandby()
				needApplierStopped()
				s.stream = ""
			case strings.HasPrefix(line, "es streams init"):
				needStandby()
				needApplierStopped()
				if s.stream != "" {
					t.Errorf("%s: the site's stream (%s) is still there: remove it first", where, s.stream)
				}
				s.stream = "mirror"
			case strings.HasPrefix(line, "es demote"):
				needStandby()
				needApplierStopped()
				s.promoted = false
			case strings.HasPrefix(line, "es promote"):
				needStandby()
				if s.stream != "mirror" {
					t.Errorf("%s: the site's stream is %q, not a mirror", where, s.stream)
				}
				s.stream, s.promoted = "log", true
			case strings.HasPrefix(line, "es "):
				needStandby()
			}
			if !applierWasRunning && s.role == "standby" && s.applier > 0 && (s.stream != "mirror" || s.promoted) {
				t.Errorf("%s: the applier starts while this site's stream is %q (want the mirror of the other site's log) and its etcd promoted=%v", where, s.stream, s.promoted)
			}
		}
		// Each swap ends with one site publishing and the other applying.
		var roles []string
		for _, name := range []string{"A", "B"} {
			s := sites[name]
			roles = append(roles, s.role)
			if s.role == "standby" && (s.applier == 0 || s.stream != "mirror" || s.promoted) && i > 0 {
				t.Errorf("after block %d: site %s is the standby with %d applier replicas, stream %q, promoted=%v: its applier is not replicating", i+1, name, s.applier, s.stream, s.promoted)
			}
		}
		if i > 0 && (roles[0] == roles[1]) {
			t.Errorf("after block %d: both sites are %s", i+1, roles[0])
		}
	}
	if helmUpgrades < 4 {
		t.Errorf("only %d helm upgrade commands in \"Failover and failback with Helm\"", helmUpgrades)
	}
}

var createSecret = regexp.MustCompile(`create secret generic (etcdsync-[a-z-]+)((?:\s+--from-file=[^\s]+)+)`)

// TestRunbookSecretsServeEitherRole: each site's install creates the NATS
// Secrets either role needs (a failover runs the publisher on the
// standby's site, the old primary's return runs the applier and the
// auditor, and `es streams init` with the admin identity, on the primary's
// site): every etcdsync-nats-credentials holds the three components'
// passwords, and both sites create etcdsync-nats-admin.
func TestRunbookSecretsServeEitherRole(t *testing.T) {
	b, err := os.ReadFile("RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, site := range []string{"Primary site", "Standby site"} {
		start := strings.Index(text, "\n### "+site+"\n")
		if start < 0 {
			t.Fatalf("RUNBOOK.md has no section %q", site)
		}
		section := text[start+1:]
		if end := strings.Index(section[4:], "\n#"); end >= 0 {
			section = section[:end+4]
		}
		created := map[string][]string{}
		for _, m := range createSecret.FindAllStringSubmatch(section, -1) {
			for _, f := range strings.Fields(m[2]) {
				key, _, _ := strings.Cut(strings.TrimPrefix(f, "--from-file="), "=")
				created[m[1]] = append(created[m[1]], key)
			}
		}
		for secret, want := range map[string][]string{
			"etcdsync-nats-credentials": {"publisher-password", "applier-password", "auditor-password"},
			"etcdsync-nats-admin":       {"admin-password"},
			"etcdsync-log-key":          {"log.key"},
		} {
			for _, k := range want {
				if !slices.Contains(created[secret], k) {
					t.Errorf("%s: the install creates %s with keys %v, without %s", site, secret, created[secret], k)
				}
			}
		}
	}
}
