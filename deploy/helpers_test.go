package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// commands are the etcdsync commands whose flags the deployment material
// may use.
var commands = []string{"publish", "apply", "audit", "status", "promote", "demote", "verify", "streams", "sandbox"}

// flagInfo is one flag of one command, as `etcdsync <cmd> -h` prints it.
type flagInfo struct {
	Name string // without dashes
	Arg  string // the placeholder (DURATION, URLS, ...); empty for booleans
	Env  string // ETCDSYNC_...
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string

	helpOnce  sync.Once
	helpFlags map[string]map[string]flagInfo // command -> flag name -> info
	helpErr   error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// repoRoot is the parent module's directory (deploy/..).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "etcdsync")); err != nil {
		t.Fatalf("parent module not found: %v", err)
	}
	return root
}

// etcdsyncBinary builds the real binary from the parent module once.
func etcdsyncBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "etcdsync-deploy-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "etcdsync")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/etcdsync")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/etcdsync: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// cleanEnv is the test process's environment without ETCDSYNC_ variables,
// plus extra.
func cleanEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCDSYNC_") {
			env = append(env, kv)
		}
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+extra[k])
	}
	return env
}

// runEtcdsync runs the binary with args and exactly the ETCDSYNC_ variables
// in env; it returns stdout, stderr and the exit code.
func runEtcdsync(t testing.TB, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(etcdsyncBinary(t), args...)
	cmd.Env = cleanEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run etcdsync %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

var (
	helpFlagLine = regexp.MustCompile(`^  --([a-z0-9][a-z0-9-]*)(?: (\S+))?$`)
	helpEnvRef   = regexp.MustCompile(`\[\$(ETCDSYNC_[A-Z0-9_]+)`)
)

// parseHelp reads the flags out of `etcdsync <cmd> -h`.
func parseHelp(out string) map[string]flagInfo {
	flags := map[string]flagInfo{}
	var last string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := helpFlagLine.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = flagInfo{Name: m[1], Arg: m[2]}
			continue
		}
		if m := helpEnvRef.FindStringSubmatch(line); m != nil && last != "" {
			fi := flags[last]
			fi.Env = m[1]
			flags[last] = fi
		}
	}
	return flags
}

// flagsOf returns the flags of every command, read from the real binary's
// help output.
func flagsOf(t testing.TB) map[string]map[string]flagInfo {
	t.Helper()
	bin := etcdsyncBinary(t)
	helpOnce.Do(func() {
		helpFlags = map[string]map[string]flagInfo{}
		for _, c := range commands {
			cmd := exec.Command(bin, c, "-h")
			cmd.Env = cleanEnv(nil)
			out, err := cmd.Output()
			if err != nil {
				helpErr = fmt.Errorf("etcdsync %s -h: %v", c, err)
				return
			}
			f := parseHelp(string(out))
			if len(f) < 5 {
				helpErr = fmt.Errorf("etcdsync %s -h: only %d flags parsed from:\n%s", c, len(f), out)
				return
			}
			for name, fi := range f {
				if fi.Env != "ETCDSYNC_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")) {
					helpErr = fmt.Errorf("etcdsync %s: flag --%s shows environment variable %q", c, name, fi.Env)
					return
				}
			}
			helpFlags[c] = f
		}
	})
	if helpErr != nil {
		t.Fatal(helpErr)
	}
	return helpFlags
}

// envToFlag maps ETCDSYNC_X of cmd to its flag name.
func envToFlag(t testing.TB, cmd string) map[string]string {
	m := map[string]string{}
	for name, fi := range flagsOf(t)[cmd] {
		m[fi.Env] = name
	}
	return m
}

// allEnvNames is every ETCDSYNC_ variable of every command.
func allEnvNames(t testing.TB) map[string]bool {
	m := map[string]bool{}
	for _, c := range commands {
		for _, fi := range flagsOf(t)[c] {
			m[fi.Env] = true
		}
	}
	return m
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs splits a multi-document YAML file; empty documents (comments
// only) are dropped.
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(b), -1) {
		var probe any
		if err := yaml.Unmarshal([]byte(d), &probe); err == nil && probe == nil {
			continue
		}
		docs = append(docs, []byte(d))
	}
	return docs
}

// decodeStrict decodes one YAML document into out, failing on duplicate
// keys and on fields out does not have, names compared case-sensitively as
// the API server compares them (encoding/json would take Replicas for
// replicas).
func decodeStrict(doc []byte, out any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	return unmarshalStrict(j, out)
}

// unmarshalStrict decodes JSON as the API server does (sigs.k8s.io/json):
// field names case-sensitive, no unknown or duplicate field.
func unmarshalStrict(j []byte, out any) error {
	strict, err := kjson.UnmarshalStrict(j, out)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// typeMeta is enough of a document to pick its Go type.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// newObject returns the Kubernetes API type of apiVersion/kind, or an
// error for kinds the deployment does not use (RBAC included: etcdsync needs
// none).
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	}
	return nil, fmt.Errorf("unexpected kind %q %q", apiVersion, kind)
}

// decodeObjects decodes every document of a manifest strictly into its
// Kubernetes API type.
func decodeObjects(b []byte) ([]any, error) {
	return decodeObjectsWith(b, newObject)
}

// decodeObjectsWith is decodeObjects with the types newObj knows.
func decodeObjectsWith(b []byte, newObj func(apiVersion, kind string) (any, error)) ([]any, error) {
	var objs []any
	for i, doc := range splitDocs(b) {
		var tm typeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		obj, err := newObj(tm.APIVersion, tm.Kind)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if err := decodeStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i+1, tm.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

var (
	metricName     = regexp.MustCompile(`Name:\s*"(etcdsync_[a-z0-9_]+)"`)
	headingPattern = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*$`)
)

// exportedMetrics reads the metric names the components register from
// their source; histograms also export _bucket, _sum and _count.
func exportedMetrics(t testing.TB) map[string]bool {
	t.Helper()
	root := repoRoot(t)
	names := map[string]bool{}
	for _, dir := range []string{"publisher", "applier", "auditor"} {
		b, err := os.ReadFile(filepath.Join(root, dir, "metrics.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, m := range metricName.FindAllStringSubmatch(line, -1) {
				names[m[1]] = true
				if strings.Contains(line, "NewHistogram") {
					for _, s := range []string{"_bucket", "_sum", "_count"} {
						names[m[1]+s] = true
					}
				}
			}
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metric names in the components' metrics.go", len(names))
	}
	return names
}

// externalMetrics are metrics the rules and dashboard may use that etcdsync
// does not export.
var externalMetrics = map[string]bool{
	"up": true, // Prometheus
	"kube_pod_container_status_restarts_total": true, // kube-state-metrics
}

// runbookAnchors returns the GitHub anchors of RUNBOOK.md's headings.
func runbookAnchors(t testing.TB) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range headingPattern.FindAllStringSubmatch(string(b), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	return anchors
}

// githubAnchor is the fragment GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			sb.WriteRune(r)
		case r == ' ':
			sb.WriteRune('-')
		}
	}
	return sb.String()
}
