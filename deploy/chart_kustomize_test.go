package deploy

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// kustomizeValues are the chart values each overlay corresponds to.
var kustomizeValues = map[string]string{
	"primary": "ci/kustomize-primary-values.yaml",
	"standby": "ci/kustomize-standby-values.yaml",
}

// kustomizeAllowed are the differences between an overlay and the chart
// rendered with its values that are meant, each with its reason. A key is
// "<overlay> <Kind>/<name>" for an object only one side has, or
// "<overlay> <Deployment> <field>" for a field of a Deployment. Anything
// else that differs is drift, and an entry that no longer differs must go.
var kustomizeAllowed = map[string]string{
	"primary Namespace/etcdsync":               "kustomize/base creates the namespace (Pod Security labels included); Helm installs into one (helm --create-namespace)",
	"standby Namespace/etcdsync":               "kustomize/base creates the namespace (Pod Security labels included); Helm installs into one (helm --create-namespace)",
	"standby ConfigMap/etcdsync-scope":         "kustomize shares the scope rules between the applier and the auditor through a ConfigMap (envFrom); the chart writes them into both containers' environment, and the environments are compared resolved",
	"primary NetworkPolicy/etcdsync-publisher": "the overlays know neither the NATS namespace nor the etcd addresses of a site; the chart derives its NetworkPolicies from its values",
	"standby NetworkPolicy/etcdsync-applier":   "the overlays know neither the NATS namespace nor the etcd addresses of a site; the chart derives its NetworkPolicies from its values",
	"standby NetworkPolicy/etcdsync-auditor":   "the overlays know neither the NATS namespace nor the etcd addresses of a site; the chart derives its NetworkPolicies from its values",
	"standby etcdsync-applier envFrom":         "the scope ConfigMap (see ConfigMap/etcdsync-scope); resolved into the environment compared",
	"standby etcdsync-auditor envFrom":         "the scope ConfigMap (see ConfigMap/etcdsync-scope); resolved into the environment compared",
}

// TestChartMatchesKustomize: kustomize is the second way to install, over
// the same values. Each overlay and the chart rendered with the values it
// corresponds to (chart/etcdsync/ci/kustomize-*-values.yaml) give the same
// objects and the same Deployments: replicas, pod settings, and containers
// with the same command line, environment (flags and ETCDSYNC_* variables,
// the scope ConfigMap resolved; excluded namespaces compared as a set),
// ports, probes, resources, security context and Secret mounts; the
// Services and PodDisruptionBudgets select and expose the same. Meant
// differences are listed in kustomizeAllowed with their reason.
func TestChartMatchesKustomize(t *testing.T) {
	used := map[string]bool{}
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			k := build(t, overlay)
			r := renderDecoded(t, chartValues(t, kustomizeValues[overlay]))
			checkRelease(t, r)
			differ := func(key, format string, args ...any) {
				t.Helper()
				key = overlay + " " + key
				if _, ok := kustomizeAllowed[key]; ok {
					used[key] = true
					return
				}
				t.Errorf("%s: "+format, append([]any{key}, args...)...)
			}
			// The same objects.
			ko, co := objectNames(k), objectNames(r.built)
			for _, o := range ko {
				if !slices.Contains(co, o) {
					differ(o, "in kustomize/%s, not in the chart", overlay)
				}
			}
			for _, o := range co {
				if !slices.Contains(ko, o) {
					differ(o, "in the chart, not in kustomize/%s", overlay)
				}
			}
			for name, kd := range k.deployments {
				cd := r.deployments[name]
				if cd == nil {
					continue
				}
				kf, cf := deploymentFields(t, k, kd), deploymentFields(t, r.built, cd)
				for _, f := range unionKeys(kf, cf) {
					if kf[f] != cf[f] {
						differ(name+" "+f, "kustomize %s, chart %s", orNone(kf[f]), orNone(cf[f]))
					}
				}
			}
			for name, ks := range k.services {
				if cs := r.services[name]; cs != nil && (jsonOf(t, ks.Spec.Ports) != jsonOf(t, cs.Spec.Ports) || !reflect.DeepEqual(ks.Spec.Selector, cs.Spec.Selector)) {
					differ("Service/"+name+" spec", "kustomize %s %v, chart %s %v", jsonOf(t, ks.Spec.Ports), ks.Spec.Selector, jsonOf(t, cs.Spec.Ports), cs.Spec.Selector)
				}
			}
			for name, kp := range k.pdbs {
				if cp := r.pdbs[name]; cp != nil && jsonOf(t, kp.Spec) != jsonOf(t, cp.Spec) {
					differ("PodDisruptionBudget/"+name+" spec", "kustomize %s, chart %s", jsonOf(t, kp.Spec), jsonOf(t, cp.Spec))
				}
			}
		})
	}
	if !t.Failed() {
		for key := range kustomizeAllowed {
			if !used[key] {
				t.Errorf("kustomizeAllowed %q: no such difference any more; remove the entry", key)
			}
		}
	}
}

var kustomizeHash = regexp.MustCompile(`-[a-z0-9]{10}$`)

// objectNames lists Kind/name of every object of a build.
func objectNames(b *built) []string {
	var out []string
	add := func(kind string, names []string) {
		for _, n := range names {
			out = append(out, kind+"/"+n)
		}
	}
	add("Deployment", keys(b.deployments))
	add("Service", keys(b.services))
	add("PodDisruptionBudget", keys(b.pdbs))
	for _, n := range keys(b.configMaps) {
		out = append(out, "ConfigMap/"+kustomizeHash.ReplaceAllString(n, "")) // kustomize's content hash
	}
	add("ServiceAccount", keys(b.accounts))
	add("Namespace", keys(b.namespaces))
	add("Secret", keys(b.secrets))
	add("NetworkPolicy", keys(b.networkPolicies))
	return out
}

// deploymentFields are a Deployment's settings that both ways must give
// alike, each as JSON: the pod's, and its one container's with the
// environment resolved variable by variable and the Secret mounts by path.
func deploymentFields(t *testing.T, b *built, d *appsv1.Deployment) map[string]string {
	t.Helper()
	ps := d.Spec.Template.Spec
	if len(ps.Containers) != 1 {
		t.Fatalf("%s: %d containers", d.Name, len(ps.Containers))
	}
	c := ps.Containers[0]
	f := map[string]string{
		"replicas": jsonOf(t, d.Spec.Replicas), "strategy": jsonOf(t, d.Spec.Strategy), "selector": jsonOf(t, d.Spec.Selector),
		"serviceAccountName": ps.ServiceAccountName, "automountServiceAccountToken": jsonOf(t, ps.AutomountServiceAccountToken),
		"enableServiceLinks": jsonOf(t, ps.EnableServiceLinks), "terminationGracePeriodSeconds": jsonOf(t, ps.TerminationGracePeriodSeconds),
		"podSecurityContext": jsonOf(t, ps.SecurityContext), "affinity": jsonOf(t, ps.Affinity),
		"container name": c.Name, "image": c.Image, "imagePullPolicy": string(c.ImagePullPolicy),
		"command": jsonOf(t, c.Command), "args": jsonOf(t, c.Args), "ports": jsonOf(t, c.Ports),
		"startupProbe": jsonOf(t, c.StartupProbe), "livenessProbe": jsonOf(t, c.LivenessProbe), "readinessProbe": jsonOf(t, c.ReadinessProbe),
		"resources": jsonOf(t, c.Resources), "securityContext": jsonOf(t, c.SecurityContext),
	}
	if len(c.EnvFrom) > 0 {
		f["envFrom"] = jsonOf(t, c.EnvFrom)
	}
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil || b.configMaps[ef.ConfigMapRef.Name] == nil {
			t.Fatalf("%s: envFrom %v is not a ConfigMap of the build", d.Name, ef)
		}
		for k, v := range b.configMaps[ef.ConfigMapRef.Name].Data {
			env[ef.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = "from " + jsonOf(t, e.ValueFrom)
		} else {
			env[e.Name] = e.Value
		}
	}
	for name, v := range env {
		if name == "ETCDSYNC_EXCLUDE_NAMESPACE" {
			ns := strings.Split(v, ",")
			slices.Sort(ns)
			v = strings.Join(ns, ",") + " (as a set)"
		}
		f["env "+name] = v
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok || v.Secret == nil {
			t.Fatalf("%s: mount %s is not a Secret volume", d.Name, m.Name)
		}
		f["mount "+m.MountPath] = fmt.Sprintf("readOnly=%v subPath=%q Secret %s items %s mode %s",
			m.ReadOnly, m.SubPath, v.Secret.SecretName, jsonOf(t, v.Secret.Items), jsonOf(t, v.Secret.DefaultMode))
	}
	return f
}

func unionKeys(a, b map[string]string) []string {
	ks := keys(a)
	for k := range b {
		if _, ok := a[k]; !ok {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
