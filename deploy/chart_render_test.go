package deploy

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	chartDir = "chart/etcdsync"
	// chartNamespace is the namespace the tests install the chart into.
	chartNamespace = "etcdsync"
)

// chartFiles is the chart as the tests render it. It is embedded rather
// than read from disk so that a `go test -overlay` edit of a template or
// of the schema reaches the test (the mutants in internal/mutants).
//
//go:embed all:chart/etcdsync
var chartFiles embed.FS

// loadChart loads the embedded chart with Helm's loader.
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	var files []*loader.BufferedFile
	err := fs.WalkDir(chartFiles, chartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := chartFiles.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: strings.TrimPrefix(p, chartDir+"/"), Data: b})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return ch
}

// chartValues reads a values file of the chart (ci/..., or "" for none).
func chartValues(t testing.TB, name string) map[string]any {
	t.Helper()
	if name == "" {
		return map[string]any{}
	}
	b, err := chartFiles.ReadFile(path.Join(chartDir, name))
	if err != nil {
		t.Fatal(err)
	}
	v, err := chartutil.ReadValues(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// renderChart renders the chart as `helm template --namespace etcdsync`
// does: the values are coalesced with values.yaml and checked against
// values.schema.json (the error names the failing field), then every
// template is rendered. It returns the manifests, in template order, and
// NOTES.txt.
func renderChart(t testing.TB, vals map[string]any) (manifest []byte, notes string, err error) {
	t.Helper()
	ch := loadChart(t)
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *renderKubeVersion(t)
	opts := chartutil.ReleaseOptions{Name: "etcdsync", Namespace: chartNamespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(ch, vals, opts, caps)
	if err != nil {
		return nil, "", err
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		return nil, "", err
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	for _, name := range names {
		switch {
		case strings.HasSuffix(name, "NOTES.txt"):
			notes = out[name]
		case strings.TrimSpace(out[name]) != "":
			fmt.Fprintf(&buf, "---\n# Source: %s\n%s\n", name, out[name])
		}
	}
	return buf.Bytes(), notes, nil
}

// renderKubeVersion is the Kubernetes version the chart is rendered and
// linted for: that of the k8s.io/api module the objects are decoded with,
// not Helm's client-only default (v1.20).
func renderKubeVersion(t testing.TB) *chartutil.KubeVersion {
	t.Helper()
	kv, err := chartutil.ParseKubeVersion("v1.37.0")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// chartObject returns the Go type of a kind the chart renders: the
// deployment's kinds, NetworkPolicies, and the Prometheus Operator's.
func chartObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	case "monitoring.coreos.com/v1 PrometheusRule":
		return &monitoringv1.PrometheusRule{}, nil
	}
	return newObject(apiVersion, kind)
}

// rendered is one release of the chart, decoded.
type rendered struct {
	*built
	vals            map[string]any
	serviceMonitors []*monitoringv1.ServiceMonitor
	prometheusRules []*monitoringv1.PrometheusRule
	objects         []string // kind/name, in order
	size            int      // bytes of manifest
}

// renderDecoded renders vals and decodes every object strictly into its
// API type.
func renderDecoded(t *testing.T, vals map[string]any) *rendered {
	t.Helper()
	out, notes, err := renderChart(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	if strings.TrimSpace(notes) == "" {
		t.Error("NOTES.txt renders empty")
	}
	objs, err := decodeObjectsWith(out, chartObject)
	if err != nil {
		t.Fatalf("rendered manifest: %v\n%s", err, out)
	}
	r := &rendered{built: collect(objs), vals: vals, size: len(out)}
	for _, o := range objs {
		switch o := o.(type) {
		case *monitoringv1.ServiceMonitor:
			r.serviceMonitors = append(r.serviceMonitors, o)
		case *monitoringv1.PrometheusRule:
			r.prometheusRules = append(r.prometheusRules, o)
		case *corev1.Namespace, *corev1.Secret:
			t.Errorf("the chart renders a %T: namespaces come from helm --create-namespace, Secrets exist beforehand", o)
		}
		m, ok := o.(interface {
			GetName() string
			GetLabels() map[string]string
			GetNamespace() string
		})
		if !ok {
			t.Fatalf("%T has no object metadata", o)
		}
		kind := reflect.Indirect(reflect.ValueOf(o)).Type().Name()
		r.objects = append(r.objects, kind+"/"+m.GetName())
		if m.GetLabels()["app.kubernetes.io/part-of"] != "etcdsync" {
			t.Errorf("%s %s has no label app.kubernetes.io/part-of=etcdsync", kind, m.GetName())
		}
		if m.GetNamespace() != "" {
			t.Errorf("%s %s sets namespace %q: the release's namespace applies", kind, m.GetName(), m.GetNamespace())
		}
	}
	return r
}

// valuesOf returns the coalesced values (values.yaml under vals).
func valuesOf(t *testing.T, vals map[string]any) chartutil.Values {
	t.Helper()
	v, err := chartutil.CoalesceValues(loadChart(t), vals)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func pathValue(t *testing.T, v chartutil.Values, p string) any {
	t.Helper()
	x, err := v.PathValue(p)
	if err != nil {
		t.Fatalf("value %s: %v", p, err)
	}
	return x
}

func stringsOf(x any) []string {
	var out []string
	l, _ := x.([]any)
	for _, e := range l {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// chartImage is the image the chart's values name.
func chartImage(t *testing.T, v chartutil.Values) string {
	t.Helper()
	img := v["image"].(map[string]any)
	if d, _ := img["digest"].(string); d != "" {
		return fmt.Sprintf("%s@%s", img["repository"], d)
	}
	tag, _ := img["tag"].(string)
	if tag == "" {
		tag = loadChart(t).Metadata.AppVersion
	}
	return fmt.Sprintf("%s:%s", img["repository"], tag)
}

// checkRelease checks one rendered release for its role: the objects, every
// container's flags and environment against the binary, and the
// NetworkPolicies.
func checkRelease(t *testing.T, r *rendered) {
	t.Helper()
	v := valuesOf(t, r.vals)
	role := v["role"].(string)
	image := chartImage(t, v)
	if r.accounts["etcdsync"] == nil || len(r.accounts) != 1 {
		t.Errorf("ServiceAccounts %v, want etcdsync", keys(r.accounts))
	}
	var deployments []*appsv1.Deployment
	switch role {
	case "primary":
		d := r.deployments["etcdsync-publisher"]
		if d == nil || len(r.deployments) != 1 {
			t.Fatalf("role primary deploys %v, want etcdsync-publisher only", keys(r.deployments))
		}
		deployments = append(deployments, d)
		env := containerEnv(t, r.built, d, "publish")
		if got, want := env["ETCDSYNC_ETCD_ENDPOINTS"], strings.Join(stringsOf(etcdValue(t, v, "primary", "endpoints")), ","); got != want {
			t.Errorf("publisher ETCDSYNC_ETCD_ENDPOINTS=%q, want the primary etcd's endpoints %q", got, want)
		}
		checkReplicas(t, r, d, env, v, "publisher")
		wantResources(t, d, "", "", "")
		checkWorkload(t, r.built, d, image)
	case "standby":
		ap := r.deployments["etcdsync-applier"]
		if pathValue(t, v, "auditor.enabled") != true {
			if ap == nil || len(r.deployments) != 1 {
				t.Fatalf("role standby without auditor deploys %v, want etcdsync-applier only", keys(r.deployments))
			}
			deployments = append(deployments, ap)
			apEnv := containerEnv(t, r.built, ap, "apply")
			checkReplicas(t, r, ap, apEnv, v, "applier")
			checkWorkload(t, r.built, ap, image)
			break
		}
		au := r.deployments["etcdsync-auditor"]
		if ap == nil || au == nil || len(r.deployments) != 2 {
			t.Fatalf("role standby deploys %v, want etcdsync-applier and etcdsync-auditor", keys(r.deployments))
		}
		deployments = append(deployments, ap, au)
		apEnv := containerEnv(t, r.built, ap, "apply")
		auEnv := containerEnv(t, r.built, au, "audit")
		standby := strings.Join(stringsOf(etcdValue(t, v, "standby", "endpoints")), ",")
		primary := strings.Join(stringsOf(etcdValue(t, v, "primary", "endpoints")), ",")
		if apEnv["ETCDSYNC_ETCD_ENDPOINTS"] != standby || auEnv["ETCDSYNC_STANDBY_ENDPOINTS"] != standby || auEnv["ETCDSYNC_PRIMARY_ENDPOINTS"] != primary {
			t.Errorf("endpoints: applier %q, auditor standby %q primary %q; want standby %q, primary %q",
				apEnv["ETCDSYNC_ETCD_ENDPOINTS"], auEnv["ETCDSYNC_STANDBY_ENDPOINTS"], auEnv["ETCDSYNC_PRIMARY_ENDPOINTS"], standby, primary)
		}
		// The auditor must compare exactly what the applier replicates.
		for _, scope := range []string{"ETCDSYNC_KEYSPACE", "ETCDSYNC_ETCD_PREFIX", "ETCDSYNC_EXCLUDE_NAMESPACE",
			"ETCDSYNC_EXCLUDE_PREFIX", "ETCDSYNC_INCLUDE_PREFIX", "ETCDSYNC_EXCLUDE_RESOURCE", "ETCDSYNC_SITE", "ETCDSYNC_STREAM", "ETCDSYNC_CHECKPOINT_KEY"} {
			if apEnv[scope] != auEnv[scope] {
				t.Errorf("%s: applier %q, auditor %q", scope, apEnv[scope], auEnv[scope])
			}
		}
		if got, want := auEnv["ETCDSYNC_INTERVAL"], v["checkInterval"]; got != want {
			t.Errorf("auditor ETCDSYNC_INTERVAL=%q, want checkInterval %q", got, want)
		}
		wantLevel := map[bool]string{true: "debug", false: "info"}[v["detailLogs"] == true]
		for name, env := range map[string]map[string]string{"applier": apEnv, "auditor": auEnv} {
			if env["ETCDSYNC_LOG_LEVEL"] != wantLevel {
				t.Errorf("%s ETCDSYNC_LOG_LEVEL=%q, want %q for detailLogs=%v", name, env["ETCDSYNC_LOG_LEVEL"], wantLevel, v["detailLogs"])
			}
		}
		// The runbook runs status, promote and demote in the auditor's pod.
		for _, cmd := range []string{"status", "promote", "demote"} {
			if _, errOut, code := runEtcdsync(t, auEnv, cmd, "-h"); code != 0 {
				t.Errorf("etcdsync %s -h with the auditor's environment: exit %d: %s", cmd, code, errOut)
			}
		}
		checkReplicas(t, r, ap, apEnv, v, "applier")
		if hasPDB(r, au) {
			t.Errorf("a PodDisruptionBudget selects the auditor: a single auditor must not block drains")
		}
		wantResources(t, ap, "", "", "")
		wantResources(t, au, "", "", "")
		checkWorkload(t, r.built, ap, image)
		checkWorkload(t, r.built, au, image)
	default:
		t.Fatalf("role %q", role)
	}
	checkNetworkPolicies(t, r, v, deployments)
	checkMonitoring(t, r, v)
}

// checkReplicas: more than one replica needs leader election and a
// PodDisruptionBudget.
func checkReplicas(t *testing.T, r *rendered, d *appsv1.Deployment, env map[string]string, v chartutil.Values, component string) {
	t.Helper()
	want := pathValue(t, v, component+".replicas")
	if d.Spec.Replicas == nil || fmt.Sprint(*d.Spec.Replicas) != fmt.Sprint(want) {
		t.Errorf("%s replicas %v, want %s.replicas %v", d.Name, d.Spec.Replicas, component, want)
	}
	if *d.Spec.Replicas > 1 {
		if env["ETCDSYNC_LEADER_ELECT"] != "true" {
			t.Errorf("%s: %d replicas with ETCDSYNC_LEADER_ELECT=%q", d.Name, *d.Spec.Replicas, env["ETCDSYNC_LEADER_ELECT"])
		}
		if pathValue(t, v, "podDisruptionBudget.enabled") == true {
			checkPDB(t, r.built, d)
		}
	} else if hasPDB(r, d) {
		t.Errorf("%s: a PodDisruptionBudget with one replica blocks every drain", d.Name)
	}
}

func hasPDB(r *rendered, d *appsv1.Deployment) bool {
	for _, p := range r.pdbs {
		if p.Spec.Selector != nil && selects(p.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			return true
		}
	}
	return false
}

// checkNetworkPolicies: every pod is isolated both ways; it accepts its
// metrics port only, and reaches DNS, the NATS port and the etcd ports of
// its endpoints only.
func checkNetworkPolicies(t *testing.T, r *rendered, v chartutil.Values, deployments []*appsv1.Deployment) {
	t.Helper()
	if pathValue(t, v, "networkPolicy.enabled") != true {
		if len(r.networkPolicies) != 0 {
			t.Errorf("networkPolicy.enabled=false renders %v", keys(r.networkPolicies))
		}
		return
	}
	natsURL := natsURLOf(t, r)
	for _, d := range deployments {
		var np *networkingv1.NetworkPolicy
		for _, p := range r.networkPolicies {
			if selects(p.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels) {
				if np != nil {
					t.Errorf("%s: selected by NetworkPolicies %s and %s", d.Name, np.Name, p.Name)
				}
				np = p
			}
		}
		if np == nil {
			t.Errorf("%s: no NetworkPolicy selects its pods", d.Name)
			continue
		}
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			t.Errorf("NetworkPolicy %s: policyTypes %v, want Ingress and Egress", np.Name, np.Spec.PolicyTypes)
		}
		c := d.Spec.Template.Spec.Containers[0]
		var from []networkingv1.NetworkPolicyPeer
		if err := decodeValue(pathValue(t, v, "networkPolicy.metricsFrom"), &from); err != nil {
			t.Fatal(err)
		}
		if len(from) == 0 {
			from = nil
		}
		for _, in := range np.Spec.Ingress {
			if len(in.Ports) == 0 {
				t.Errorf("NetworkPolicy %s: an ingress rule allows every port", np.Name)
			}
			if !reflect.DeepEqual(in.From, from) {
				t.Errorf("NetworkPolicy %s: ingress from %v, want networkPolicy.metricsFrom %v", np.Name, in.From, from)
			}
			for _, p := range in.Ports {
				if p.Port == nil || *p.Port != intstr.FromString("metrics") {
					t.Errorf("NetworkPolicy %s: ingress port %v, want metrics only", np.Name, p.Port)
				}
			}
		}
		// Each etcd's ports are open towards the peers its values name.
		for _, e := range c.Env {
			site := map[string]string{"ETCDSYNC_PRIMARY_ENDPOINTS": "primary", "ETCDSYNC_STANDBY_ENDPOINTS": "standby",
				"ETCDSYNC_ETCD_ENDPOINTS": map[string]string{"publish": "primary", "apply": "standby"}[c.Args[0]]}[e.Name]
			if site == "" {
				continue
			}
			var peers []networkingv1.NetworkPolicyPeer
			if err := decodeValue(etcdValue(t, v, site, "to"), &peers); err != nil {
				t.Fatal(err)
			}
			if len(peers) == 0 {
				// The endpoints' addresses, or no "to" (any destination,
				// on these ports only) for a host name.
				peers = ipPeers(t, strings.Split(e.Value, ","))
			}
			for _, ep := range strings.Split(e.Value, ",") {
				port := intstr.Parse(urlPort(t, ep, "2379"))
				if !slices.ContainsFunc(np.Spec.Egress, func(r networkingv1.NetworkPolicyEgressRule) bool {
					return slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && *p.Port == port }) &&
						reflect.DeepEqual(r.To, peers)
				}) {
					t.Errorf("NetworkPolicy %s: no egress rule to port %s towards the %s etcd's peers %v (%s)", np.Name, port.String(), site, peers, e.Name)
				}
			}
		}
		// DNS: the cluster DNS pods, never an address block.
		for _, eg := range np.Spec.Egress {
			if !slices.ContainsFunc(eg.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.IntVal == 53 }) {
				continue
			}
			dns, err := v.Table("networkPolicy.dns")
			if err != nil {
				t.Fatal(err)
			}
			var to []networkingv1.NetworkPolicyPeer
			if err := decodeValue(dns["to"], &to); err != nil {
				t.Fatal(err)
			}
			if len(to) > 0 {
				if !reflect.DeepEqual(eg.To, to) {
					t.Errorf("NetworkPolicy %s: DNS egress to %v, want networkPolicy.dns.to %v", np.Name, eg.To, to)
				}
				continue
			}
			ns, labels := dns["namespace"], dns["podLabels"]
			if len(eg.To) != 1 || eg.To[0].IPBlock != nil || eg.To[0].NamespaceSelector == nil ||
				eg.To[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != ns ||
				eg.To[0].PodSelector == nil || fmt.Sprint(eg.To[0].PodSelector.MatchLabels) != fmt.Sprint(labels) {
				t.Errorf("NetworkPolicy %s: DNS egress to %v, want the pods %v of namespace %v only", np.Name, eg.To, labels, ns)
			}
		}
		allowed := map[string]bool{}
		for _, eg := range np.Spec.Egress {
			if len(eg.Ports) == 0 {
				t.Errorf("NetworkPolicy %s: an egress rule allows every port", np.Name)
			}
			for _, p := range eg.Ports {
				if p.Port == nil || p.Port.Type != intstr.Int {
					t.Errorf("NetworkPolicy %s: egress port %v: want a number", np.Name, p.Port)
					continue
				}
				proto := corev1.ProtocolTCP
				if p.Protocol != nil {
					proto = *p.Protocol
				}
				allowed[fmt.Sprintf("%d/%s", p.Port.IntVal, proto)] = true
			}
		}
		// What the container connects to, read back from its environment.
		want := []string{"53/UDP", "53/TCP", urlPort(t, natsURL, "4222") + "/TCP"}
		for _, e := range c.Env {
			if strings.HasSuffix(e.Name, "_ENDPOINTS") {
				for _, ep := range strings.Split(e.Value, ",") {
					want = append(want, urlPort(t, ep, "2379")+"/TCP")
				}
			}
		}
		slices.Sort(want)
		for _, w := range slices.Compact(want) {
			if !allowed[w] {
				t.Errorf("NetworkPolicy %s: egress to %s is not allowed; %s needs it", np.Name, w, d.Name)
			}
			delete(allowed, w)
		}
		if len(allowed) != 0 {
			t.Errorf("NetworkPolicy %s allows egress to %v, which %s does not use", np.Name, keys(allowed), d.Name)
		}
	}
}

// etcdValue returns a value of the primary or standby etcd ("endpoints",
// "tlsSecret", or "to": its NetworkPolicy peers): from localEtcd or
// remoteEtcd, as role makes them the primary or the standby, when localEtcd
// is given; else from primaryEtcd or standbyEtcd.
func etcdValue(t *testing.T, v chartutil.Values, which, field string) any {
	t.Helper()
	name := which
	if len(stringsOf(pathValue(t, v, "localEtcd.endpoints"))) > 0 {
		name = map[bool]string{true: "local", false: "remote"}[(which == "primary") == (v["role"] == "primary")]
	}
	if field == "to" {
		return pathValue(t, v, "networkPolicy."+name+"EtcdTo")
	}
	return pathValue(t, v, name+"Etcd."+field)
}

// ipPeers returns the address blocks of URLs that all name IP addresses,
// or nil when one names a host.
func ipPeers(t *testing.T, urls []string) []networkingv1.NetworkPolicyPeer {
	t.Helper()
	var peers []networkingv1.NetworkPolicyPeer
	for _, raw := range urls {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			t.Fatalf("URL %q: %v", raw, err)
		}
		ip, err := netip.ParseAddr(u.Hostname())
		if err != nil {
			return nil
		}
		cidr := netip.PrefixFrom(ip, ip.BitLen()).String()
		if !slices.ContainsFunc(peers, func(p networkingv1.NetworkPolicyPeer) bool { return p.IPBlock.CIDR == cidr }) {
			peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr}})
		}
	}
	return peers
}

// decodeValue converts a chart value into a typed Go value.
func decodeValue(x any, out any) error {
	b, err := json.Marshal(x)
	if err != nil {
		return err
	}
	return unmarshalStrict(b, out)
}

func natsURLOf(t *testing.T, r *rendered) string {
	t.Helper()
	for _, d := range r.deployments {
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "ETCDSYNC_NATS_URL" {
				return e.Value
			}
		}
	}
	t.Fatal("no container sets ETCDSYNC_NATS_URL")
	return ""
}

func urlPort(t *testing.T, raw, def string) string {
	t.Helper()
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		t.Fatalf("URL %q: %v", raw, err)
	}
	if p := u.Port(); p != "" {
		return p
	}
	return def
}

// checkMonitoring: the ServiceMonitor selects every Service's metrics port;
// the PrometheusRule and the dashboard are the files in deploy/prometheus
// and deploy/grafana.
func checkMonitoring(t *testing.T, r *rendered, v chartutil.Values) {
	t.Helper()
	want := func(p string, n int) {
		t.Helper()
		on := pathValue(t, v, p) == true
		if on && n != 1 || !on && n != 0 {
			t.Errorf("%s=%v renders %d objects", p, on, n)
		}
	}
	want("metrics.serviceMonitor.enabled", len(r.serviceMonitors))
	want("metrics.prometheusRule.enabled", len(r.prometheusRules))
	var dashboards []*corev1.ConfigMap
	for _, cm := range r.configMaps {
		if _, ok := cm.Data["etcdsync.json"]; ok {
			dashboards = append(dashboards, cm)
		}
	}
	want("metrics.grafanaDashboard.enabled", len(dashboards))
	for _, sm := range r.serviceMonitors {
		if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{chartNamespace}) {
			t.Errorf("ServiceMonitor namespaces %v, want the release's %q", sm.Spec.NamespaceSelector.MatchNames, chartNamespace)
		}
		for name, s := range r.services {
			if !selects(sm.Spec.Selector.MatchLabels, s.Labels) {
				t.Errorf("ServiceMonitor does not select Service %s (labels %v)", name, s.Labels)
			}
			for _, ep := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("Service %s has no port %q", name, ep.Port)
				}
			}
		}
	}
	for _, pr := range r.prometheusRules {
		checkRulesAreTheSource(t, pr, v["role"].(string), pathValue(t, v, "auditor.enabled") == true)
	}
	for _, cm := range dashboards {
		src, err := os.ReadFile(dashboardFile)
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data["etcdsync.json"] != string(src) {
			t.Errorf("ConfigMap %s etcdsync.json differs from %s", cm.Name, dashboardFile)
		}
	}
}

// checkRulesAreTheSource compares a rendered PrometheusRule's groups with
// the role's file in deploy/prometheus, field by field: all its groups,
// but the auditor's when the auditor is off.
func checkRulesAreTheSource(t *testing.T, pr *monitoringv1.PrometheusRule, role string, auditor bool) {
	t.Helper()
	file := rulesFiles[role]
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var spec monitoringv1.PrometheusRuleSpec
	if err := decodeStrict(src, &spec); err != nil {
		t.Fatalf("%s as a PrometheusRule spec: %v", file, err)
	}
	if len(spec.Groups) == 0 {
		t.Fatalf("%s: no groups", file)
	}
	if !auditor {
		spec.Groups = slices.DeleteFunc(spec.Groups, func(g monitoringv1.RuleGroup) bool { return g.Name == "etcdsync-auditor" })
	}
	if !reflect.DeepEqual(pr.Spec, spec) {
		got, _ := json.MarshalIndent(pr.Spec, "", " ")
		want, _ := json.MarshalIndent(spec, "", " ")
		t.Errorf("PrometheusRule %s differs from %s (role %s, auditor %v):\nrendered: %s\nsource: %s", pr.Name, file, role, auditor, got, want)
	}
}

// logKeyValues name the log key ring Secret both roles require.
var logKeyValues = map[string]any{"existingSecret": "etcdsync-log-key"}

var (
	readmeYAML = regexp.MustCompile("(?s)```yaml\n(.*?)```")
	readmeText = regexp.MustCompile("(?s)```text\n(.*?)```")
)

// chartCases are the values the chart is rendered with: its ci/ files,
// the examples of its README, and the least a site must give.
func chartCases(t *testing.T) map[string]map[string]any {
	t.Helper()
	cases := map[string]map[string]any{
		"ci/primary-values.yaml":   chartValues(t, "ci/primary-values.yaml"),
		"ci/standby-values.yaml":   chartValues(t, "ci/standby-values.yaml"),
		kustomizeValues["primary"]: chartValues(t, kustomizeValues["primary"]),
		kustomizeValues["standby"]: chartValues(t, kustomizeValues["standby"]),
		"minimal-primary":          {"primaryEtcd": map[string]any{"endpoints": []any{"http://127.0.0.1:2379"}}, "logKey": logKeyValues},
		"minimal-standby": {"role": "standby", "logKey": logKeyValues,
			"primaryEtcd": map[string]any{"endpoints": []any{"https://etcd.primary.example:2379"}},
			"standbyEtcd": map[string]any{"endpoints": []any{"https://etcd.standby.example:12379"}}},
		// Every switch the other cases leave on, off.
		"standby-switches-off": {"role": "standby", "logKey": map[string]any{"allowUnauthenticated": true},
			"primaryEtcd":         map[string]any{"endpoints": []any{"https://etcd.primary.example:2379"}},
			"standbyEtcd":         map[string]any{"endpoints": []any{"https://etcd.standby.example:2379"}},
			"applier":             map[string]any{"replicas": 1, "leaderElect": false},
			"auditor":             map[string]any{"enabled": false},
			"networkPolicy":       map[string]any{"enabled": false},
			"podDisruptionBudget": map[string]any{"enabled": false}},
		// The applier held at 0 replicas during a role swap.
		"standby-applier-held": {"role": "standby", "logKey": logKeyValues,
			"primaryEtcd": map[string]any{"endpoints": []any{"https://etcd.primary.example:2379"}},
			"standbyEtcd": map[string]any{"endpoints": []any{"https://etcd.standby.example:2379"}},
			"applier":     map[string]any{"replicas": 0}},
		"primary-one-replica": {"logKey": logKeyValues,
			"primaryEtcd": map[string]any{"endpoints": []any{"https://etcd.primary.example:2379"}},
			"publisher":   map[string]any{"replicas": 1, "leaderElect": false}},
	}
	readme, err := chartFiles.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	examples := readmeYAML.FindAllSubmatch(readme, -1)
	if len(examples) < 3 {
		t.Fatalf("chart README: %d yaml examples, want at least 3", len(examples))
	}
	for i, m := range examples {
		v, err := chartutil.ReadValues(m[1])
		if err != nil {
			t.Fatalf("README example %d: %v", i+1, err)
		}
		cases[fmt.Sprintf("README-example-%d", i+1)] = v
	}
	return cases
}
