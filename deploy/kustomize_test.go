package deploy

import (
	"embed"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const kustomizeDir = "kustomize"

// kustomizeFiles are the overlays as build reads them: embedded, so that a
// `go test -overlay` edit of a manifest reaches the test (the mutants in
// internal/mutants).
//
//go:embed kustomize
var kustomizeFiles embed.FS

// kustomizeFS copies the embedded overlays into an in-memory file system
// for kustomize.
func kustomizeFS(t *testing.T) filesys.FileSystem {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := fs.WalkDir(kustomizeFiles, kustomizeDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := kustomizeFiles.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile("/"+p, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	return mem
}

// overlays are the deployable kustomizations, one per site.
var overlays = []string{"primary", "standby"}

// kustomizeImage is the manifests' image placeholder, set by images: in
// each overlay's kustomization.
const kustomizeImage = "etcdsync:latest"

// TestKustomizeFilesDecodeStrictly decodes every YAML document under
// kustomize/ into its Kubernetes API type (or kustomize's Kustomization),
// rejecting unknown fields and duplicate keys, and checks that every
// resource a kustomization names exists.
func TestKustomizeFilesDecodeStrictly(t *testing.T) {
	var files []string
	err := filepath.WalkDir(kustomizeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("found only %d YAML files under %s", len(files), kustomizeDir)
	}
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(path) == "kustomization.yaml" {
				var k types.Kustomization
				if err := decodeStrict(b, &k); err != nil {
					t.Fatalf("kustomization: %v", err)
				}
				if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" {
					t.Errorf("apiVersion/kind = %q/%q", k.APIVersion, k.Kind)
				}
				for _, r := range k.Resources {
					p := filepath.Join(filepath.Dir(path), r)
					st, err := os.Stat(p)
					if err != nil {
						t.Errorf("resource %q: %v", r, err)
						continue
					}
					if st.IsDir() {
						if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err != nil {
							t.Errorf("resource %q is a directory without kustomization.yaml", r)
						}
					}
				}
				return
			}
			objs, err := decodeObjects(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) == 0 {
				t.Fatal("no documents")
			}
		})
	}
}

// built is one overlay after `kustomize build`, decoded.
type built struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	pdbs        map[string]*policyv1.PodDisruptionBudget
	configMaps  map[string]*corev1.ConfigMap
	accounts    map[string]*corev1.ServiceAccount
	namespaces  map[string]*corev1.Namespace
	secrets     map[string]*corev1.Secret

	networkPolicies map[string]*networkingv1.NetworkPolicy
}

// collect indexes decoded objects by kind and name.
func collect(objs []any) *built {
	b := &built{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, configMaps: map[string]*corev1.ConfigMap{},
		accounts: map[string]*corev1.ServiceAccount{}, namespaces: map[string]*corev1.Namespace{},
		secrets: map[string]*corev1.Secret{}, networkPolicies: map[string]*networkingv1.NetworkPolicy{}}
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			b.deployments[o.Name] = o
		case *corev1.Service:
			b.services[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			b.pdbs[o.Name] = o
		case *corev1.ConfigMap:
			b.configMaps[o.Name] = o
		case *corev1.ServiceAccount:
			b.accounts[o.Name] = o
		case *corev1.Namespace:
			b.namespaces[o.Name] = o
		case *corev1.Secret:
			b.secrets[o.Name] = o
		case *networkingv1.NetworkPolicy:
			b.networkPolicies[o.Name] = o
		}
	}
	return b
}

// build runs kustomize (the library kubectl embeds) on an overlay and
// decodes its output strictly.
func build(t *testing.T, overlay string) *built {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(kustomizeFS(t), "/"+path.Join(kustomizeDir, overlay))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(out)
	if err != nil {
		t.Fatalf("kustomize build %s output: %v", overlay, err)
	}
	b := collect(objs)
	for _, o := range objs {
		if l, ok := o.(interface{ GetLabels() map[string]string }); ok && l.GetLabels()["app.kubernetes.io/part-of"] != "etcdsync" {
			t.Errorf("%T has no label app.kubernetes.io/part-of=etcdsync", o)
		}
		if d, ok := o.(*appsv1.Deployment); ok && d.Spec.Template.Labels["app.kubernetes.io/part-of"] != "etcdsync" {
			t.Errorf("Deployment %s: pod template has no label app.kubernetes.io/part-of=etcdsync", d.Name)
		}
		if ns, ok := o.(interface{ GetNamespace() string }); ok {
			if _, isNS := o.(*corev1.Namespace); !isNS && ns.GetNamespace() != "etcdsync" {
				t.Errorf("%T has namespace %q, want etcdsync", o, ns.GetNamespace())
			}
		}
	}
	if len(b.secrets) != 0 {
		t.Errorf("overlay %s ships Secrets; they must be created out of band", overlay)
	}
	return b
}

// TestOverlaysBuild builds each overlay and checks what each site needs.
func TestOverlaysBuild(t *testing.T) {
	t.Run("primary", func(t *testing.T) {
		b := build(t, "primary")
		d := b.deployments["etcdsync-publisher"]
		if d == nil {
			t.Fatalf("no etcdsync-publisher Deployment; have %v", keys(b.deployments))
		}
		if len(b.deployments) != 1 {
			t.Errorf("primary deploys %v, want the publisher only", keys(b.deployments))
		}
		wantReplicas(t, d, 2)
		env := containerEnv(t, b, d, "publish")
		wantNATSLogin(t, d, env)
		if v, ok := env["ETCDSYNC_LEADER_ELECT"]; ok && v != "true" {
			t.Errorf("publisher ETCDSYNC_LEADER_ELECT=%q: two replicas need leader election", v)
		}
		if env["ETCDSYNC_NATS_URL"] != "" && env["ETCDSYNC_STREAM_REPLICAS"] != "3" {
			t.Errorf("publisher on a NATS cluster: ETCDSYNC_STREAM_REPLICAS=%q, want 3", env["ETCDSYNC_STREAM_REPLICAS"])
		}
		wantResources(t, d, "100m", "128Mi", "256Mi")
		checkPDB(t, b, d)
		checkWorkload(t, b, d, kustomizeImage)
	})
	t.Run("standby", func(t *testing.T) {
		b := build(t, "standby")
		ap, au := b.deployments["etcdsync-applier"], b.deployments["etcdsync-auditor"]
		if ap == nil || au == nil || len(b.deployments) != 2 {
			t.Fatalf("standby deploys %v, want etcdsync-applier and etcdsync-auditor", keys(b.deployments))
		}
		wantReplicas(t, ap, 2)
		wantReplicas(t, au, 1)
		apEnv := containerEnv(t, b, ap, "apply")
		auEnv := containerEnv(t, b, au, "audit")
		wantNATSLogin(t, ap, apEnv)
		wantNATSLogin(t, au, auEnv)
		if auEnv["ETCDSYNC_INTERVAL"] != "5m" {
			t.Errorf("auditor ETCDSYNC_INTERVAL=%q, want 5m", auEnv["ETCDSYNC_INTERVAL"])
		}
		if v := apEnv["ETCDSYNC_LEADER_ELECT"]; v != "" && v != "true" {
			t.Errorf("applier ETCDSYNC_LEADER_ELECT=%q: two replicas need leader election", v)
		}
		// The auditor must compare exactly what the applier replicates.
		for _, scope := range []string{"ETCDSYNC_KEYSPACE", "ETCDSYNC_ETCD_PREFIX", "ETCDSYNC_EXCLUDE_NAMESPACE",
			"ETCDSYNC_EXCLUDE_PREFIX", "ETCDSYNC_INCLUDE_PREFIX", "ETCDSYNC_EXCLUDE_RESOURCE", "ETCDSYNC_SITE", "ETCDSYNC_STREAM", "ETCDSYNC_CHECKPOINT_KEY"} {
			if apEnv[scope] != auEnv[scope] {
				t.Errorf("%s: applier %q, auditor %q", scope, apEnv[scope], auEnv[scope])
			}
		}
		if apEnv["ETCDSYNC_EXCLUDE_NAMESPACE"] == "" {
			t.Error("no ETCDSYNC_EXCLUDE_NAMESPACE example on the standby")
		}
		// --print-rules runs apply's full configuration path without
		// connecting anywhere: the scope values must be valid. The pod's
		// namespace arrives as POD_NAMESPACE, as the downward API gives it.
		if ap.Namespace == "" {
			t.Fatal("the applier Deployment has no namespace")
		}
		withNS := maps.Clone(apEnv)
		withNS["POD_NAMESPACE"] = ap.Namespace
		out, errOut, code := runEtcdsync(t, withNS, "apply", "--print-rules")
		if code != 0 {
			t.Fatalf("etcdsync apply --print-rules with the applier's environment: exit %d: %s", code, errOut)
		}
		// Both sites run etcdsync in its namespace and NATS in "nats":
		// neither may be replicated over the standby's own.
		for _, ns := range []string{ap.Namespace, "nats"} {
			if !strings.Contains(out, fmt.Sprintf("exclude namespace %q", ns)) {
				t.Errorf("--print-rules does not exclude namespace %q, where each site runs its own etcdsync or NATS:\n%s", ns, out)
			}
		}
		for _, ns := range strings.Split(apEnv["ETCDSYNC_EXCLUDE_NAMESPACE"], ",") {
			if !strings.Contains(out, fmt.Sprintf("exclude namespace %q", ns)) {
				t.Errorf("--print-rules does not exclude namespace %q:\n%s", ns, out)
			}
		}
		// The runbook runs status and promote in the auditor's pod: its
		// environment must carry what they require and parse for them.
		for _, cmd := range []string{"status", "promote"} {
			if auEnv["ETCDSYNC_STANDBY_ENDPOINTS"] == "" || auEnv["ETCDSYNC_NATS_URL"] == "" {
				t.Errorf("auditor environment lacks ETCDSYNC_STANDBY_ENDPOINTS or ETCDSYNC_NATS_URL for %s", cmd)
			}
			if _, errOut, code := runEtcdsync(t, auEnv, cmd, "-h"); code != 0 {
				t.Errorf("etcdsync %s -h with the auditor's environment: exit %d: %s", cmd, code, errOut)
			}
		}
		wantResources(t, ap, "", "", "")
		wantResources(t, au, "", "", "")
		checkPDB(t, b, ap)
		if len(b.pdbs) != 1 {
			t.Errorf("standby PodDisruptionBudgets %v, want the applier's only (a single auditor must not block drains)", keys(b.pdbs))
		}
		checkWorkload(t, b, ap, kustomizeImage)
		checkWorkload(t, b, au, kustomizeImage)
	})
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func wantReplicas(t *testing.T, d *appsv1.Deployment, n int32) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != n {
		t.Errorf("%s replicas = %v, want %d", d.Name, d.Spec.Replicas, n)
	}
}

// wantResources checks that requests and a memory limit are set, and their
// values where given.
func wantResources(t *testing.T, d *appsv1.Deployment, cpu, mem, memLimit string) {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		r := c.Resources
		rc, rm, lm := r.Requests[corev1.ResourceCPU], r.Requests[corev1.ResourceMemory], r.Limits[corev1.ResourceMemory]
		if rc.IsZero() || rm.IsZero() || lm.IsZero() {
			t.Errorf("%s/%s: want cpu and memory requests and a memory limit, have %v", d.Name, c.Name, r)
			continue
		}
		if rm.Cmp(lm) > 0 {
			t.Errorf("%s/%s: memory request %s above limit %s", d.Name, c.Name, rm.String(), lm.String())
		}
		if cpu != "" && rc.String() != cpu || mem != "" && rm.String() != mem || memLimit != "" && lm.String() != memLimit {
			t.Errorf("%s/%s: resources %s/%s limit %s, want %s/%s limit %s", d.Name, c.Name, rc.String(), rm.String(), lm.String(), cpu, mem, memLimit)
		}
	}
}

// containerEnv checks the etcdsync container's command line and environment
// against the real binary's flags and returns its ETCDSYNC_ variables
// (envFrom ConfigMaps resolved).
// wantNATSLogin checks that a component that talks to NATS authenticates
// (the NATS values require it), with a secret from a file.
func wantNATSLogin(t *testing.T, d *appsv1.Deployment, env map[string]string) {
	t.Helper()
	if env["ETCDSYNC_NATS_URL"] != "" && env["ETCDSYNC_NATS_PASSWORD_FILE"] == "" && env["ETCDSYNC_NATS_TOKEN_FILE"] == "" &&
		env["ETCDSYNC_NATS_CREDS"] == "" && env["ETCDSYNC_NATS_NKEY"] == "" {
		t.Errorf("%s: ETCDSYNC_NATS_URL without NATS credentials (ETCDSYNC_NATS_USER and ETCDSYNC_NATS_PASSWORD_FILE, or a token, creds or nkey file)", d.Name)
	}
}

func containerEnv(t *testing.T, b *built, d *appsv1.Deployment, wantCmd string) map[string]string {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%s: %d containers, want 1", d.Name, len(cs))
	}
	c := cs[0]
	if len(c.Command) != 0 {
		t.Errorf("%s: command %v: the image's entrypoint is the binary; give the subcommand in args", d.Name, c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != wantCmd {
		t.Fatalf("%s: args %v, want %q first", d.Name, c.Args, wantCmd)
	}
	flags := flagsOf(t)[wantCmd]
	for _, a := range c.Args[1:] {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "--") {
			t.Errorf("%s: argument %q: flags start with --", d.Name, a)
		} else if _, ok := flags[name]; !ok {
			t.Errorf("%s: etcdsync %s has no flag --%s", d.Name, wantCmd, name)
		}
	}
	envFlags := envToFlag(t, wantCmd)
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			t.Errorf("%s: envFrom %v: only ConfigMaps are used", d.Name, ef)
			continue
		}
		cm := b.configMaps[ef.ConfigMapRef.Name]
		if cm == nil {
			t.Errorf("%s: envFrom ConfigMap %q is not in the build", d.Name, ef.ConfigMapRef.Name)
			continue
		}
		for k, v := range cm.Data {
			env[ef.Prefix+k] = v
		}
	}
	// Every etcdsync container knows the namespace it runs in, from the
	// downward API: the applier and auditor exclude it from the scope.
	podNS := false
	for _, e := range c.Env {
		if e.Name == "POD_NAMESPACE" {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
				t.Errorf("%s: POD_NAMESPACE must come from the downward API (fieldRef metadata.namespace)", d.Name)
			}
			podNS = true
		}
	}
	if !podNS {
		t.Errorf("%s: no POD_NAMESPACE from the downward API: the applier and auditor could not exclude their own namespace", d.Name)
	}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "ETCDSYNC_") {
			continue
		}
		if e.ValueFrom != nil {
			env[e.Name] = "placeholder" // from a Secret: the name is checked, not the value
			continue
		}
		env[e.Name] = e.Value
	}
	for name := range env {
		if !strings.HasPrefix(name, "ETCDSYNC_") {
			t.Errorf("%s: environment variable %q from a ConfigMap is not an etcdsync flag variable", d.Name, name)
		} else if _, ok := envFlags[name]; !ok {
			t.Errorf("%s: %s is not a flag of etcdsync %s (see `etcdsync %s -h`)", d.Name, name, wantCmd, wantCmd)
		}
	}
	// Let the binary parse the whole environment and command line: -h
	// prints the usage (exit 0) only when every value parsed.
	args := append(slices.Clone(c.Args), "-h")
	if _, errOut, code := runEtcdsync(t, env, args...); code != 0 {
		t.Errorf("%s: etcdsync %v with the container's environment: exit %d: %s", d.Name, args, code, errOut)
	}
	required := map[string][]string{
		"publish": {"ETCDSYNC_ETCD_ENDPOINTS"},
		"apply":   {"ETCDSYNC_ETCD_ENDPOINTS", "ETCDSYNC_NATS_URL"},
		"audit":   {"ETCDSYNC_PRIMARY_ENDPOINTS", "ETCDSYNC_STANDBY_ENDPOINTS"},
	}
	for _, r := range required[wantCmd] {
		if env[r] == "" {
			t.Errorf("%s: required %s is not set", d.Name, r)
		}
	}
	// TLS, credentials and key files must lie on a read-only Secret mount.
	for name, v := range env {
		if secretFileEnv.MatchString(name) {
			if !onSecretMount(d, c, v) {
				t.Errorf("%s: %s=%s is not on a read-only Secret volume", d.Name, name, v)
			}
		}
	}
	// The probes' port serves --metrics-addr.
	addr := env["ETCDSYNC_METRICS_ADDR"]
	_, port, err := net.SplitHostPort(addr)
	if err != nil || addr == "" {
		t.Fatalf("%s: ETCDSYNC_METRICS_ADDR=%q: want e.g. :9090 (probes and Prometheus need it)", d.Name, addr)
	}
	if host, _, _ := net.SplitHostPort(addr); host == "127.0.0.1" || host == "localhost" {
		t.Errorf("%s: ETCDSYNC_METRICS_ADDR=%q is not reachable from the kubelet", d.Name, addr)
	}
	var metricsPort *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].Name == "metrics" {
			metricsPort = &c.Ports[i]
		}
	}
	if metricsPort == nil || fmt.Sprint(metricsPort.ContainerPort) != port {
		t.Errorf("%s: container port \"metrics\" %v does not match ETCDSYNC_METRICS_ADDR %q", d.Name, metricsPort, addr)
	}
	return env
}

// onSecretMount reports whether path lies under a read-only mount of a
// Secret volume.
func onSecretMount(d *appsv1.Deployment, c corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly || !strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return true
			}
		}
	}
	return false
}

// checkWorkload checks the pod template: selector, probes, security
// context, ServiceAccount, volumes, the image and the metrics Service.
func checkWorkload(t *testing.T, b *built, d *appsv1.Deployment, image string) {
	t.Helper()
	ps := d.Spec.Template.Spec
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template's labels %v", d.Name, k, v, d.Spec.Template.Labels)
		}
	}
	if ps.ServiceAccountName == "" || b.accounts[ps.ServiceAccountName] == nil {
		t.Errorf("%s: ServiceAccount %q is not in the build", d.Name, ps.ServiceAccountName)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false (no Kubernetes API access)", d.Name)
	}
	if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext must set runAsNonRoot and the RuntimeDefault seccomp profile", d.Name)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	for _, c := range ps.Containers {
		if c.Image == "" || c.Image != image {
			t.Errorf("%s/%s: image %q, want %q", d.Name, c.Name, c.Image, image)
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s/%s: container securityContext must set readOnlyRootFilesystem, no privilege escalation, drop ALL", d.Name, c.Name)
		}
		probe := func(kind string, p *corev1.Probe, path string) {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s/%s: no HTTP %s probe", d.Name, c.Name, kind)
				return
			}
			if p.HTTPGet.Path != path {
				t.Errorf("%s/%s: %s probe path %q, want %q", d.Name, c.Name, kind, p.HTTPGet.Path, path)
			}
			if !portExists(c, p.HTTPGet.Port) {
				t.Errorf("%s/%s: %s probe port %v is not a container port", d.Name, c.Name, kind, p.HTTPGet.Port.String())
			}
		}
		probe("liveness", c.LivenessProbe, "/healthz")
		probe("readiness", c.ReadinessProbe, "/readyz")
		if c.StartupProbe != nil {
			probe("startup", c.StartupProbe, "/healthz")
		}
		for _, m := range c.VolumeMounts {
			v, ok := vols[m.Name]
			if !ok {
				t.Errorf("%s/%s: volume mount %q has no volume", d.Name, c.Name, m.Name)
			} else if v.Secret != nil && !m.ReadOnly {
				t.Errorf("%s/%s: Secret volume %q must be mounted read-only", d.Name, c.Name, m.Name)
			}
		}
	}
	// One Service selects the pods and exposes their metrics port.
	var found bool
	for _, s := range b.services {
		if !selects(s.Spec.Selector, d.Spec.Template.Labels) {
			continue
		}
		found = true
		for _, p := range s.Spec.Ports {
			if !portExists(ps.Containers[0], p.TargetPort) {
				t.Errorf("Service %s: targetPort %s is not a port of %s", s.Name, p.TargetPort.String(), d.Name)
			}
		}
	}
	if !found {
		t.Errorf("%s: no Service selects its pods", d.Name)
	}
}

func checkPDB(t *testing.T, b *built, d *appsv1.Deployment) {
	t.Helper()
	for _, p := range b.pdbs {
		if p.Spec.Selector == nil || !selects(p.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			continue
		}
		if p.Spec.MinAvailable == nil || *p.Spec.MinAvailable != intstr.FromInt32(1) {
			t.Errorf("PodDisruptionBudget %s: minAvailable %v, want 1", p.Name, p.Spec.MinAvailable)
		}
		// A crash-looping pod (an applier stopped on an error that needs an
		// operator restarts into it) is never Ready: with the default policy
		// it could not be evicted while the budget is not met, and it would
		// block every node drain.
		if p.Spec.UnhealthyPodEvictionPolicy == nil || *p.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
			t.Errorf("PodDisruptionBudget %s: unhealthyPodEvictionPolicy %v, want AlwaysAllow: a pod that is not Ready must never block a drain", p.Name, p.Spec.UnhealthyPodEvictionPolicy)
		}
		return
	}
	t.Errorf("%s: no PodDisruptionBudget selects its pods", d.Name)
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func portExists(c corev1.Container, p intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return true
		}
	}
	return false
}

// secretFileEnv matches the variables that name TLS, credentials and key
// files.
var secretFileEnv = regexp.MustCompile(`^ETCDSYNC_((ETCD|PRIMARY|STANDBY|NATS)_(CACERT|CERT|KEY)|NATS_CREDS|NATS_NKEY|NATS_PASSWORD_FILE|NATS_TOKEN_FILE|LOG_KEY_FILE)$`)
