package deploy

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
)

// TestChartLint runs `helm lint` (Helm's lint package, schema included) on
// the chart for each ci/ values file.
func TestChartLint(t *testing.T) {
	kube := renderKubeVersion(t)
	for _, f := range []string{"ci/primary-values.yaml", "ci/standby-values.yaml", kustomizeValues["primary"], kustomizeValues["standby"]} {
		t.Run(f, func(t *testing.T) {
			l := lint.AllWithKubeVersionAndSchemaValidation(chartDir, chartValues(t, f), chartNamespace, kube, false)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m.Error())
				} else {
					t.Logf("helm lint: %s", m.Error())
				}
			}
		})
	}
}

// TestChartRenders renders every case, decodes each object strictly, and
// checks the release against its role and the real binary. It logs the
// size and the objects of each, as `helm template` would print them.
func TestChartRenders(t *testing.T) {
	cases := chartCases(t)
	names := keys(cases)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			r := renderDecoded(t, cases[name])
			t.Logf("%d bytes, %d objects: %s", r.size, len(r.objects), strings.Join(r.objects, " "))
			checkRelease(t, r)
		})
	}
}

// TestChartPodNamespace: every etcdsync container learns its namespace
// from the downward API, so the applier and the auditor never replicate
// the namespace they run in.
func TestChartPodNamespace(t *testing.T) {
	for _, name := range []string{"ci/primary-values.yaml", "ci/standby-values.yaml"} {
		r := renderDecoded(t, chartValues(t, name))
		if len(r.deployments) == 0 {
			t.Fatalf("%s: no Deployment", name)
		}
		for _, d := range r.deployments {
			for _, c := range d.Spec.Template.Spec.Containers {
				i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAMESPACE" })
				if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
					t.Errorf("%s: %s/%s: want env POD_NAMESPACE from fieldRef metadata.namespace", name, d.Name, c.Name)
				}
			}
		}
	}
}

// TestChartStandbyExcludesNATSNamespace: on the standby the NATS
// namespace is excluded besides the platform's, as the applier itself
// prints its rules, and the auditor compares the same scope.
func TestChartStandbyExcludesNATSNamespace(t *testing.T) {
	for _, tc := range []struct {
		values    string
		natsNS    string
		platforms []string
	}{
		{"ci/standby-values.yaml", "nats-standby", []string{"cpaas-system", "cert-manager"}},
		{"", "nats", nil}, // values.yaml's nats.namespace, no platform list
	} {
		vals := chartValues(t, tc.values)
		vals["role"] = "standby"
		vals["primaryEtcd"] = map[string]any{"endpoints": []any{"https://etcd.primary.example:2379"}}
		vals["standbyEtcd"] = map[string]any{"endpoints": []any{"https://etcd.standby.example:2379"}}
		vals["logKey"] = logKeyValues
		r := renderDecoded(t, vals)
		for _, name := range []string{"etcdsync-applier", "etcdsync-auditor"} {
			d := r.deployments[name]
			if d == nil {
				t.Fatalf("%s: no %s", tc.values, name)
			}
			env := map[string]string{}
			for _, e := range d.Spec.Template.Spec.Containers[0].Env {
				env[e.Name] = e.Value
			}
			got := strings.Split(env["ETCDSYNC_EXCLUDE_NAMESPACE"], ",")
			for _, ns := range append(tc.platforms, tc.natsNS) {
				if !slices.Contains(got, ns) {
					t.Errorf("%s: %s ETCDSYNC_EXCLUDE_NAMESPACE=%q lacks %q", tc.values, name, env["ETCDSYNC_EXCLUDE_NAMESPACE"], ns)
				}
			}
		}
		// The binary agrees: apply --print-rules with the applier's environment.
		env := map[string]string{}
		for _, e := range r.deployments["etcdsync-applier"].Spec.Template.Spec.Containers[0].Env {
			if strings.HasPrefix(e.Name, "ETCDSYNC_") && e.ValueFrom == nil {
				env[e.Name] = e.Value
			}
		}
		// The pod's namespace arrives as POD_NAMESPACE, as the downward API
		// gives it: both its own and NATS's are excluded.
		env["POD_NAMESPACE"] = chartNamespace
		out, errOut, code := runEtcdsync(t, env, "apply", "--print-rules")
		if code != 0 {
			t.Fatalf("etcdsync apply --print-rules: exit %d: %s", code, errOut)
		}
		for _, ns := range []string{tc.natsNS, chartNamespace} {
			if !strings.Contains(out, fmt.Sprintf("exclude namespace %q", ns)) {
				t.Errorf("%s: --print-rules does not exclude namespace %q:\n%s", tc.values, ns, out)
			}
		}
	}
	// Without an in-cluster NATS on either site there is no namespace to
	// exclude.
	r := renderDecoded(t, map[string]any{"role": "standby", "logKey": logKeyValues,
		"primaryEtcd": map[string]any{"endpoints": []any{"https://etcd.primary.example:2379"}},
		"standbyEtcd": map[string]any{"endpoints": []any{"https://etcd.standby.example:2379"}},
		"nats":        map[string]any{"namespace": "", "remoteNamespace": "", "url": "tls://nats.example:4222"}})
	for _, e := range r.deployments["etcdsync-applier"].Spec.Template.Spec.Containers[0].Env {
		if e.Name == "ETCDSYNC_EXCLUDE_NAMESPACE" {
			t.Errorf("nats.namespace empty: ETCDSYNC_EXCLUDE_NAMESPACE=%q", e.Value)
		}
	}
}

// TestChartFilesAreTheSources: the chart's copies of the alerting rules
// and the dashboard are byte for byte the files in deploy/prometheus and
// deploy/grafana, and render as they are: each role its own rules.
func TestChartFilesAreTheSources(t *testing.T) {
	sources := map[string]string{dashboardFile: chartDir + "/files/etcdsync.json"}
	for _, f := range rulesFiles {
		sources[f] = chartDir + "/files/" + path.Base(f)
	}
	for src, cp := range sources {
		a, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b, err := chartFiles.ReadFile(cp)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s: the chart packages a copy; run cp %s deploy/%s", cp, src, "deploy/"+src, cp)
		}
	}
	for _, f := range []string{"ci/primary-values.yaml", "ci/standby-values.yaml"} {
		vals := chartValues(t, f)
		r := renderDecoded(t, vals)
		if len(r.prometheusRules) != 1 {
			t.Fatalf("%s renders %d PrometheusRules, want 1", f, len(r.prometheusRules))
		}
		checkMonitoring(t, r, valuesOf(t, vals))
	}
}

// TestChartLogKey: the log's MAC key ring comes from an existing Secret,
// mounted read-only, into exactly the containers whose command takes
// --log-key-file (the publisher signs, the applier verifies, the auditor
// keys its value hashes), and their
// whole environment still parses for the binary.
func TestChartLogKey(t *testing.T) {
	for _, f := range []string{"ci/primary-values.yaml", "ci/standby-values.yaml"} {
		vals := chartValues(t, f)
		vals["logKey"] = map[string]any{"existingSecret": "etcdsync-log-key"}
		r := renderDecoded(t, vals)
		for _, name := range keys(r.deployments) {
			d := r.deployments[name]
			c := d.Spec.Template.Spec.Containers[0]
			cmd := c.Args[0]
			_, takesKey := flagsOf(t)[cmd]["log-key-file"]
			if cmd == "publish" || cmd == "apply" {
				if !takesKey {
					t.Fatalf("etcdsync %s has no --log-key-file", cmd)
				}
			}
			i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "ETCDSYNC_LOG_KEY_FILE" })
			switch {
			case takesKey && i < 0:
				t.Errorf("%s: %s has no ETCDSYNC_LOG_KEY_FILE: etcdsync %s would run with an unauthenticated log", f, d.Name, cmd)
			case !takesKey && i >= 0:
				t.Errorf("%s: %s sets ETCDSYNC_LOG_KEY_FILE, which etcdsync %s does not take", f, d.Name, cmd)
			case i >= 0 && !onSecretMount(d, c, c.Env[i].Value):
				t.Errorf("%s: %s ETCDSYNC_LOG_KEY_FILE=%s is not on a read-only Secret volume", f, d.Name, c.Env[i].Value)
			}
			containerEnv(t, r.built, d, cmd)
		}
	}
}

// TestChartNATSPasswords: with nats.passwords each component logs in as
// its own NATS identity (etcdsync-<component>, the least-privilege users of
// deploy/nats/*-values.yaml), its password read from its own key of the
// Secret on a read-only mount; both ways to log in at once is refused.
func TestChartNATSPasswords(t *testing.T) {
	for _, f := range []string{"ci/primary-values.yaml", "ci/standby-values.yaml"} {
		vals := chartValues(t, f)
		nats := maps.Clone(vals["nats"].(map[string]any))
		delete(nats, "credentials")
		nats["passwords"] = map[string]any{"existingSecret": "etcdsync-nats-credentials"}
		vals["nats"] = nats
		r := renderDecoded(t, vals)
		if len(r.deployments) == 0 {
			t.Fatalf("%s renders no Deployment", f)
		}
		for _, name := range keys(r.deployments) {
			d := r.deployments[name]
			c := d.Spec.Template.Spec.Containers[0]
			component := strings.TrimPrefix(d.Name, "etcdsync-")
			env := containerEnv(t, r.built, d, c.Args[0])
			wantNATSLogin(t, d, env)
			if got := env["ETCDSYNC_NATS_USER"]; got != "etcdsync-"+component {
				t.Errorf("%s: %s logs in to NATS as %q, want etcdsync-%s", f, d.Name, got, component)
			}
			i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "ETCDSYNC_NATS_PASSWORD_FILE" })
			if i < 0 || !onSecretMount(d, c, c.Env[i].Value) {
				t.Errorf("%s: %s has no password file on a read-only Secret mount", f, d.Name)
				continue
			}
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name == "nats-password" && (v.Secret == nil || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != component+"-password") {
					t.Errorf("%s: %s mounts %+v, want only the key %s-password", f, d.Name, v.Secret, component)
				}
			}
		}
		nats["credentials"] = map[string]any{"existingSecret": "etcdsync-nats-creds"}
		if _, _, err := renderChart(t, vals); err == nil || !strings.Contains(err.Error(), "one way to log in") {
			t.Errorf("%s: passwords and a creds file together: err = %v", f, err)
		}
	}
}

// TestChartNATSURLMatchesNamespace: the NATS URL and nats.namespace agree,
// so that the NetworkPolicy lets etcdsync reach NATS and the standby
// excludes the namespace NATS really runs in.
func TestChartNATSURLMatchesNamespace(t *testing.T) {
	for _, tc := range []struct {
		namespace, url, wantErr string
	}{
		{"nats", "nats://nats.nats.svc.cluster.local:4222", ""},
		{"msg", "tls://nats.msg.svc:4222", ""},
		{"", "tls://nats.dr.example:4222", ""},
		{"nats", "tls://nats.dr.example:4222", "is not in nats.namespace"},
		{"", "nats://nats.msg.svc.cluster.local:4222", "nats.namespace is empty"},
	} {
		vals := chartValues(t, "ci/standby-values.yaml")
		nats := maps.Clone(vals["nats"].(map[string]any))
		nats["namespace"], nats["url"] = tc.namespace, tc.url
		vals["nats"] = nats
		_, _, err := renderChart(t, vals)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("namespace %q, url %s: %v", tc.namespace, tc.url, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("namespace %q, url %s: err = %v, want %q", tc.namespace, tc.url, err, tc.wantErr)
		}
	}
}

// TestChartRejectsBadValues: values.schema.json refuses what would install
// a broken site, and the message names the field.
func TestChartRejectsBadValues(t *testing.T) {
	ok := `
role: standby
primaryEtcd: {endpoints: ["https://etcd.primary.example:2379"]}
standbyEtcd: {endpoints: ["https://etcd.standby.example:2379"]}
logKey: {existingSecret: etcdsync-log-key}
`
	for _, tc := range []struct {
		name, values, want string
	}{
		{"role typo", "role: stanby", "/role"},
		{"interval without unit", "checkInterval: 5", "/checkInterval"},
		{"interval not a duration", "checkInterval: five minutes", "/checkInterval"},
		{"zero interval", "checkInterval: 0s", "/checkInterval"},
		{"no primary endpoints", "primaryEtcd: {endpoints: []}", "/primaryEtcd/endpoints"},
		{"no standby endpoints", "standbyEtcd: {endpoints: []}", "/standbyEtcd/endpoints"},
		{"endpoint without scheme", `primaryEtcd: {endpoints: ["etcd.primary.example:2379"]}`, "/primaryEtcd/endpoints/0"},
		{"endpoints in one string", `standbyEtcd: {endpoints: ["https://a:2379,https://b:2379"]}`, "/standbyEtcd/endpoints/0"},
		{"primary endpoint without a port", `primaryEtcd: {endpoints: ["https://etcd-0.example"]}`, "/primaryEtcd/endpoints/0"},
		{"standby endpoint without a port", `standbyEtcd: {endpoints: ["https://etcd-0.standby.example:2379", "https://etcd-1.standby.example/"]}`, "/standbyEtcd/endpoints/1"},
		{"IPv6 endpoint without a port", `standbyEtcd: {endpoints: ["https://[fd00::10]"]}`, "/standbyEtcd/endpoints/0"},
		{"local endpoint without a port", `localEtcd: {endpoints: ["http://10.0.0.10"]}`, "/localEtcd/endpoints/0"},
		{"remote endpoint with an empty port", `remoteEtcd: {endpoints: ["https://etcd.b.example:"]}`, "/remoteEtcd/endpoints/0"},
		{"unknown key", "chekInterval: 5m", "chekInterval"},
		{"inline credentials", "nats: {credentials: \"-----BEGIN NATS USER JWT-----\"}", "/nats/credentials"},
		{"inline log key", "logKey: {value: secret}", "/logKey"},
		{"namespace list in one string", "excludedNamespaces: [\"cpaas-system,cert-manager\"]", "/excludedNamespaces/0"},
		{"two appliers without leader election", "applier: {replicas: 2, leaderElect: false}", "/applier/leaderElect"},
		{"no publisher", "publisher: {replicas: 0}", "/publisher/replicas"},
		{"detail logs not a boolean", "detailLogs: yes please", "/detailLogs"},
		{"site with a dot", "site: primary.eu", "/site"},
		{"size without a number", "publisher: {maxBytes: lots}", "/publisher/maxBytes"},
		{"size as a bare number (renders as 1.048576e+06)", "applier: {maxTxnBytes: 1048576}", "/applier/maxTxnBytes"},
		{"NATS URL list", `nats: {url: "nats://a:4222,nats://b:4222"}`, "/nats/url"},
		{"NATS password in the URL", `nats: {url: "nats://etcdsync:hunter2@nats.example:4222"}`, "/nats/url"},
		{"NATS namespace with a capital", "nats: {namespace: NATS}", "/nats/namespace"},
		{"leader TTL below a second", "applier: {leaderTTL: 500ms}", "/applier/leaderTTL"},
		{"leader TTL of zero", "publisher: {leaderTTL: 0s}", "/publisher/leaderTTL"},
		{"leader TTL a fraction of a second", "publisher: {leaderTTL: 0.5s}", "/publisher/leaderTTL"},
		{"snapshot interval not a duration", "publisher: {snapshotInterval: 4 hours}", "/publisher/snapshotInterval"},
		{"snapshot interval without unit", "publisher: {snapshotInterval: 4}", "/publisher/snapshotInterval"},
		{"request bytes not a size", "applier: {maxRequestBytes: 1.5MiB}", "/applier/maxRequestBytes"},
		{"peer field in the wrong case", "networkPolicy: {metricsFrom: [{namespaceselector: {matchLabels: {team: monitoring}}}]}", "/networkPolicy/metricsFrom/0"},
		{"ipBlock field in the wrong case", "networkPolicy: {standbyEtcdTo: [{ipBlock: {CIDR: 10.0.1.0/24}}]}", "/networkPolicy/standbyEtcdTo/0/ipBlock"},
		{"selector field in the wrong case", "networkPolicy: {primaryEtcdTo: [{podSelector: {matchlabels: {app: etcd}}}]}", "/networkPolicy/primaryEtcdTo/0/podSelector"},
		{"empty peer", "networkPolicy: {natsTo: [{}]}", "/networkPolicy/natsTo/0"},
		{"ipBlock with a selector", "networkPolicy: {primaryEtcdTo: [{ipBlock: {cidr: 10.0.0.0/24}, podSelector: {}}]}", "/networkPolicy/primaryEtcdTo/0"},
		{"toleration field in the wrong case", "tolerations: [{Key: dedicated, operator: Exists}]", "/tolerations/0"},
		{"pull secret field in the wrong case", "imagePullSecrets: [{Name: registry}]", "/imagePullSecrets/0"},
		{"NATS client certificate without its Secret", "nats: {tls: {clientCertificate: true}}", "/nats/tls/existingSecret"},
		{"resource name typo", "publisher: {resources: {requests: {memroy: 128Mi}}}", "/publisher/resources/requests"},
		{"resource name in the wrong case", "applier: {resources: {limits: {Memory: 512Mi}}}", "/applier/resources/limits"},
		{"resource quantity not a quantity", "auditor: {resources: {requests: {cpu: lots}}}", "/auditor/resources/requests/cpu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, err := chartutil.ReadValues([]byte(ok))
			if err != nil {
				t.Fatal(err)
			}
			bad, err := chartutil.ReadValues([]byte(tc.values))
			if err != nil {
				t.Fatalf("values %q: %v", tc.values, err)
			}
			vals := chartutil.CoalesceTables(bad, base)
			_, _, err = renderChart(t, vals)
			if err == nil {
				t.Fatalf("values %q rendered; want the schema to refuse them", tc.values)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("values %q: error does not name %q:\n%v", tc.values, tc.want, err)
			}
		})
	}
	// The good values render, so each refusal above is the bad value's.
	base, _ := chartutil.ReadValues([]byte(ok))
	if _, _, err := renderChart(t, base); err != nil {
		t.Fatalf("the base values of this test do not render: %v", err)
	}
	// The chart README's sample message is the schema's actual one.
	readme, err := chartFiles.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := readmeText.FindSubmatch(readme)
	if m == nil {
		t.Fatal("chart README shows no schema error")
	}
	_, _, err = renderChart(t, chartutil.CoalesceTables(map[string]any{"role": "stanby"}, base))
	for _, line := range strings.Split(strings.TrimSpace(string(m[1])), "\n")[1:] {
		line = strings.TrimPrefix(strings.TrimSpace(line), "Error: ") // helm's CLI prefix
		if err == nil || !strings.Contains(err.Error(), line) {
			t.Errorf("chart README shows %q; the schema says:\n%v", line, err)
		}
	}
}

// TestChartCheckIntervalFloor: an audit reads both etcds in full (the
// primary across sites), so checkInterval is at least 10s; below it the
// chart refuses, naming the value, in both roles (a change of role never
// meets a refusal).
func TestChartCheckIntervalFloor(t *testing.T) {
	for _, tc := range []struct {
		interval string
		ok       bool
	}{
		{"10s", true}, {"0.5m", true}, {"9s1000ms", true}, {"1h30m", true},
		{"9s", false}, {"9.9s", false}, {"9s999ms", false}, {"500ms", false}, {"0.1m", false},
	} {
		for _, role := range []string{"primary", "standby"} {
			vals := chartValues(t, "ci/"+role+"-values.yaml")
			vals["checkInterval"] = tc.interval
			_, _, err := renderChart(t, vals)
			switch {
			case tc.ok && err != nil:
				t.Errorf("role %s, checkInterval %s: %v", role, tc.interval, err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "checkInterval "+tc.interval) || !strings.Contains(err.Error(), "10s")):
				t.Errorf("role %s, checkInterval %s: err = %v, want a refusal naming checkInterval %s and the 10s floor", role, tc.interval, err, tc.interval)
			}
		}
	}
}

// TestChartPorts: the metrics port values reach the container, the
// Service, the probes and --metrics-addr together.
func TestChartPorts(t *testing.T) {
	vals := chartValues(t, "ci/standby-values.yaml")
	vals["applier"] = map[string]any{"metricsPort": 19191}
	r := renderDecoded(t, vals)
	s := r.services["etcdsync-applier"]
	if s == nil || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 19191 {
		t.Fatalf("Service etcdsync-applier ports %v, want 19191", s)
	}
	env := containerEnv(t, r.built, r.deployments["etcdsync-applier"], "apply")
	if env["ETCDSYNC_METRICS_ADDR"] != ":"+strconv.Itoa(19191) {
		t.Errorf("ETCDSYNC_METRICS_ADDR=%q", env["ETCDSYNC_METRICS_ADDR"])
	}
}

// TestChartRequiresLogKey: both roles refuse to render without the log's
// key ring unless the values say explicitly that the log is
// unauthenticated; then no container is given a key file.
func TestChartRequiresLogKey(t *testing.T) {
	for _, f := range []string{"ci/primary-values.yaml", "ci/standby-values.yaml"} {
		vals := chartValues(t, f)
		delete(vals, "logKey")
		_, _, err := renderChart(t, vals)
		if err == nil || !strings.Contains(err.Error(), "logKey.existingSecret") || !strings.Contains(err.Error(), "logKey.allowUnauthenticated") {
			t.Errorf("%s without logKey: err = %v, want a refusal naming logKey.existingSecret and logKey.allowUnauthenticated", f, err)
		}
		vals["logKey"] = map[string]any{"allowUnauthenticated": true}
		r := renderDecoded(t, vals)
		if len(r.deployments) == 0 {
			t.Fatalf("%s: no Deployment", f)
		}
		for _, d := range r.deployments {
			for _, e := range d.Spec.Template.Spec.Containers[0].Env {
				if e.Name == "ETCDSYNC_LOG_KEY_FILE" {
					t.Errorf("%s: logKey.allowUnauthenticated without a Secret: %s sets %s=%s", f, d.Name, e.Name, e.Value)
				}
			}
		}
	}
}

// TestChartRefusesInconsistentValues: what the schema cannot compare (two
// values against each other) the templates refuse with a message naming
// both values, exactly when the binary would refuse them at start-up.
func TestChartRefusesInconsistentValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  map[string]any
		wantErr []string // empty: renders
		cmd     string   // the binary's command the values reach
		env     map[string]string
	}{
		{"snapshot interval below max age", map[string]any{"publisher": map[string]any{"snapshotInterval": "4h", "maxAge": "24h"}}, nil,
			"publish", map[string]string{"ETCDSYNC_SNAPSHOT_INTERVAL": "4h", "ETCDSYNC_MAX_AGE": "24h"}},
		{"snapshot interval equal to max age", map[string]any{"publisher": map[string]any{"snapshotInterval": "24h", "maxAge": "1440m"}},
			[]string{"publisher.snapshotInterval", "publisher.maxAge"},
			"publish", map[string]string{"ETCDSYNC_SNAPSHOT_INTERVAL": "24h", "ETCDSYNC_MAX_AGE": "1440m"}},
		{"snapshot interval above max age", map[string]any{"publisher": map[string]any{"snapshotInterval": "1h30m", "maxAge": "5400s"}},
			[]string{"publisher.snapshotInterval", "publisher.maxAge"},
			"publish", map[string]string{"ETCDSYNC_SNAPSHOT_INTERVAL": "1h30m", "ETCDSYNC_MAX_AGE": "5400s"}},
		{"snapshots off with a max age", map[string]any{"publisher": map[string]any{"snapshotInterval": "0s", "maxAge": "24h"}},
			[]string{"publisher.snapshotInterval", "publisher.maxAge"},
			"publish", map[string]string{"ETCDSYNC_SNAPSHOT_INTERVAL": "0s", "ETCDSYNC_MAX_AGE": "24h"}},
		{"no max age", map[string]any{"publisher": map[string]any{"snapshotInterval": "48h", "maxAge": "0s"}}, nil,
			"publish", map[string]string{"ETCDSYNC_SNAPSHOT_INTERVAL": "48h", "ETCDSYNC_MAX_AGE": "0s"}},
		{"txn bytes above etcd's default request limit", map[string]any{"applier": map[string]any{"maxTxnBytes": "2MiB"}},
			[]string{"applier.maxTxnBytes", "applier.maxRequestBytes"},
			"apply", map[string]string{"ETCDSYNC_MAX_TXN_BYTES": "2MiB"}},
		{"txn bytes at etcd's default request limit", map[string]any{"applier": map[string]any{"maxTxnBytes": "1536KiB"}}, nil,
			"apply", map[string]string{"ETCDSYNC_MAX_TXN_BYTES": "1536KiB"}},
		{"txn bytes below a raised request limit", map[string]any{"applier": map[string]any{"maxTxnBytes": "2MiB", "maxRequestBytes": "4Mi"}}, nil,
			"apply", map[string]string{"ETCDSYNC_MAX_TXN_BYTES": "2MiB", "ETCDSYNC_MAX_REQUEST_BYTES": "4Mi"}},
		{"txn bytes above a raised request limit", map[string]any{"applier": map[string]any{"maxTxnBytes": "10MB", "maxRequestBytes": "8MiB"}},
			[]string{"applier.maxTxnBytes", "applier.maxRequestBytes"},
			"apply", map[string]string{"ETCDSYNC_MAX_TXN_BYTES": "10MB", "ETCDSYNC_MAX_REQUEST_BYTES": "8MiB"}},
		{"txn bytes too small", map[string]any{"applier": map[string]any{"maxTxnBytes": "2KiB"}},
			[]string{"applier.maxTxnBytes"},
			"apply", map[string]string{"ETCDSYNC_MAX_TXN_BYTES": "2KiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, role := range []string{"primary", "standby"} {
				vals := chartValues(t, "ci/"+role+"-values.yaml")
				for k, v := range tc.values {
					vals[k] = v
				}
				_, _, err := renderChart(t, vals)
				switch {
				case len(tc.wantErr) == 0 && err != nil:
					t.Errorf("role %s: %v", role, err)
				case len(tc.wantErr) > 0 && err == nil:
					t.Errorf("role %s: rendered; want a refusal naming %v", role, tc.wantErr)
				case err != nil:
					for _, w := range tc.wantErr {
						if !strings.Contains(err.Error(), w) {
							t.Errorf("role %s: error does not name %s: %v", role, w, err)
						}
					}
				}
				if role == "standby" && tc.cmd == "apply" && err == nil {
					r := renderDecoded(t, vals)
					env := containerEnv(t, r.built, r.deployments["etcdsync-applier"], "apply")
					want := "1536KiB"
					if a, _ := tc.values["applier"].(map[string]any); a["maxRequestBytes"] != nil {
						want = a["maxRequestBytes"].(string)
					}
					if env["ETCDSYNC_MAX_REQUEST_BYTES"] != want {
						t.Errorf("applier ETCDSYNC_MAX_REQUEST_BYTES=%q, want %q", env["ETCDSYNC_MAX_REQUEST_BYTES"], want)
					}
				}
			}
			// The binary refuses the same values before connecting
			// anywhere (exit 2, bad usage).
			if len(tc.wantErr) == 0 {
				return
			}
			env := map[string]string{"ETCDSYNC_ETCD_ENDPOINTS": "http://127.0.0.1:1", "ETCDSYNC_NATS_URL": "nats://127.0.0.1:1"}
			for k, v := range tc.env {
				env[k] = v
			}
			if _, errOut, code := runEtcdsync(t, env, tc.cmd); code != 2 {
				t.Errorf("etcdsync %s with %v: exit %d, want 2 (the binary refuses what the chart refuses): %s", tc.cmd, tc.env, code, errOut)
			}
		})
	}
}

// TestChartStandbyExcludesRemoteNamespaces: the standby never replicates
// the other site's NATS and etcdsync namespaces over its own either (they
// hold that site's NATS servers, leafnode configuration, publisher and
// credentials). By default the other site uses the same names as this one.
func TestChartStandbyExcludesRemoteNamespaces(t *testing.T) {
	for _, tc := range []struct {
		name         string
		nats         map[string]any
		remoteNS     any
		want, absent []string
	}{
		{"defaults", nil, nil, []string{"nats", chartNamespace}, nil},
		{"other names", map[string]any{"namespace": "nats-standby", "remoteNamespace": "nats-primary"}, "etcdsync-primary",
			[]string{"nats-standby", "nats-primary", "etcdsync-primary", chartNamespace}, []string{"nats"}},
		{"the other site's NATS outside its cluster", map[string]any{"namespace": "nats-standby", "remoteNamespace": ""}, "",
			[]string{"nats-standby", chartNamespace}, []string{"nats"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := map[string]any{"role": "standby", "logKey": logKeyValues,
				"primaryEtcd": map[string]any{"endpoints": []any{"https://etcd.primary.example:2379"}},
				"standbyEtcd": map[string]any{"endpoints": []any{"https://etcd.standby.example:2379"}}}
			if tc.nats != nil {
				vals["nats"] = tc.nats
			}
			if tc.remoteNS != nil {
				vals["remoteNamespace"] = tc.remoteNS
			}
			r := renderDecoded(t, vals)
			// The applier's rules as the binary prints them (checkRelease
			// checks that the auditor's are the same).
			env := map[string]string{"POD_NAMESPACE": chartNamespace}
			for _, e := range r.deployments["etcdsync-applier"].Spec.Template.Spec.Containers[0].Env {
				if strings.HasPrefix(e.Name, "ETCDSYNC_") && e.ValueFrom == nil {
					env[e.Name] = e.Value
				}
			}
			out, errOut, code := runEtcdsync(t, env, "apply", "--print-rules")
			if code != 0 {
				t.Fatalf("etcdsync apply --print-rules: exit %d: %s", code, errOut)
			}
			for _, ns := range tc.want {
				if !strings.Contains(out, fmt.Sprintf("exclude namespace %q", ns)) {
					t.Errorf("--print-rules does not exclude namespace %q:\n%s", ns, out)
				}
			}
			for _, ns := range tc.absent {
				if strings.Contains(out, fmt.Sprintf("exclude namespace %q", ns)) {
					t.Errorf("--print-rules excludes namespace %q, which neither site uses:\n%s", ns, out)
				}
			}
			checkRelease(t, r)
		})
	}
}

// nullableValues are the values a values file may set to null (Helm then
// drops the default): maps of free-form keys, for which null is {}.
var nullableValues = map[string]bool{
	"podAnnotations": true, "nodeSelector": true, "networkPolicy.dns.podLabels": true,
	"metrics.serviceMonitor.labels": true, "metrics.prometheusRule.labels": true, "metrics.grafanaDashboard.labels": true,
	"publisher.resources.requests": true, "publisher.resources.limits": true,
	"applier.resources.requests": true, "applier.resources.limits": true,
	"auditor.resources.requests": true, "auditor.resources.limits": true,
}

// TestChartNullValues sets each value of values.yaml to null in turn, in
// both roles. Helm reads null as "drop the default", so a template would
// meet a missing section (a crash: nil pointer evaluating
// .Values.networkPolicy.enabled) or a missing list (metricsFrom: the
// metrics port open to everyone). The schema refuses it, naming the value;
// only free-form maps may be null.
func TestChartNullValues(t *testing.T) {
	var paths []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			p := prefix + k
			paths = append(paths, p)
			if sub, ok := m[k].(map[string]any); ok && !nullableValues[p] {
				walk(p+".", sub)
			}
		}
	}
	walk("", loadChart(t).Values)
	if len(paths) < 50 {
		t.Fatalf("only %d values in values.yaml", len(paths))
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			for _, role := range []string{"primary", "standby"} {
				vals := chartValues(t, "ci/"+role+"-values.yaml")
				m := vals
				keys := strings.Split(p, ".")
				for _, k := range keys[:len(keys)-1] {
					sub, ok := m[k].(map[string]any)
					if !ok {
						sub = map[string]any{}
					} else {
						sub = maps.Clone(sub)
					}
					m[k] = sub
					m = sub
				}
				m[keys[len(keys)-1]] = nil
				_, _, err := renderChart(t, vals)
				switch {
				case nullableValues[p] && err != nil:
					t.Errorf("role %s, %s: null: %v", role, p, err)
				case !nullableValues[p] && (err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), "'"+keys[len(keys)-1]+"'")):
					t.Errorf("role %s, %s: null: err = %v; want the schema to refuse it, naming %s", role, p, err, keys[len(keys)-1])
				}
			}
		})
	}
}
