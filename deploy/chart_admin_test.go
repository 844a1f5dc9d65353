package deploy

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// runbookAdmin are the runbook's ADMIN='...' lines: the flags that make
// promote and streams init log in to NATS as the admin identity.
var runbookAdmin = regexp.MustCompile(`(?m)^\s*(?:#\s*[^\n]*?:\s*)?ADMIN='([^']*)'`)

// adminFlags returns the runbook's admin flags for one way to log in to
// NATS: "passwords" (--nats-user) or "credentials" (--nats-creds).
func adminFlags(t *testing.T, login string) []string {
	t.Helper()
	b, err := os.ReadFile("RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"passwords": "--nats-user", "credentials": "--nats-creds"}[login]
	for _, m := range runbookAdmin.FindAllStringSubmatch(string(b), -1) {
		if f := strings.Fields(m[1]); len(f) > 0 && f[0] == want {
			return f
		}
	}
	t.Fatalf("RUNBOOK.md has no ADMIN='%s ...' line", want)
	return nil
}

// TestChartNATSAdmin: promote and streams init change the log stream (the
// mirror becomes writable; the mirror is created), which none of the
// components' NATS identities may do. With nats.admin the admin identity's
// secret is mounted read-only into the auditor's pod only, where the
// runbook runs them, and the runbook's flags name that file; no component
// logs in with it.
func TestChartNATSAdmin(t *testing.T) {
	for _, login := range []string{"passwords", "credentials"} {
		t.Run(login, func(t *testing.T) {
			vals := chartValues(t, "ci/standby-values.yaml")
			nats := maps.Clone(vals["nats"].(map[string]any))
			delete(nats, "passwords")
			delete(nats, "credentials")
			nats[login] = map[string]any{"existingSecret": "etcdsync-nats-" + login}
			nats["admin"] = map[string]any{"existingSecret": "etcdsync-nats-admin"}
			vals["nats"] = nats
			r := renderDecoded(t, vals)
			checkRelease(t, r)
			flags := adminFlags(t, login)
			for _, name := range keys(r.deployments) {
				d := r.deployments[name]
				c := d.Spec.Template.Spec.Containers[0]
				mounted := slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
					return v.Secret != nil && v.Secret.SecretName == "etcdsync-nats-admin"
				})
				if name != "etcdsync-auditor" {
					if mounted {
						t.Errorf("%s mounts the NATS admin Secret; only the auditor's pod may", name)
					}
					continue
				}
				if !mounted {
					t.Fatalf("%s does not mount the NATS admin Secret", name)
				}
				env := containerEnv(t, r.built, d, "audit")
				if u := env["ETCDSYNC_NATS_USER"]; u == "etcdsync-admin" || strings.Contains(env["ETCDSYNC_NATS_CREDS"], "admin") {
					t.Errorf("the auditor itself logs in as the admin identity (%v)", env)
				}
				// The runbook's flags name files on the admin Secret's mount.
				for i, f := range flags {
					if f != "--nats-password-file" && f != "--nats-creds" {
						continue
					}
					if i+1 >= len(flags) || !onSecretMount(d, c, flags[i+1]) || !strings.HasPrefix(flags[i+1], "/etc/etcdsync/nats-admin/") {
						t.Errorf("RUNBOOK.md ADMIN %v: %s is not on the admin Secret's read-only mount in %s", flags, f, name)
					}
				}
				for _, v := range d.Spec.Template.Spec.Volumes {
					if v.Secret == nil || v.Secret.SecretName != "etcdsync-nats-admin" {
						continue
					}
					path := map[string]string{"passwords": "password", "credentials": "nats.creds"}[login]
					key := map[string]string{"passwords": "admin-password", "credentials": "nats.creds"}[login]
					if len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != key || v.Secret.Items[0].Path != path {
						t.Errorf("admin Secret items %v, want the key %s as %s", v.Secret.Items, key, path)
					}
				}
				// The runbook's promote and streams init parse with the
				// pod's environment and the admin flags.
				for _, cmd := range [][]string{{"promote"}, {"streams", "init"}} {
					args := append(append(slices.Clone(cmd), flags...), "-h")
					if _, errOut, code := runEtcdsync(t, env, args...); code != 0 {
						t.Errorf("etcdsync %v with the auditor's environment: exit %d: %s", args, code, errOut)
					}
				}
			}
		})
	}
	// The publisher's pod never holds it, and it needs the auditor.
	vals := chartValues(t, "ci/primary-values.yaml")
	nats := maps.Clone(vals["nats"].(map[string]any))
	nats["admin"] = map[string]any{"existingSecret": "etcdsync-nats-admin"}
	vals["nats"] = nats
	r := renderDecoded(t, vals)
	for _, v := range r.deployments["etcdsync-publisher"].Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "etcdsync-nats-admin" {
			t.Error("the publisher mounts the NATS admin Secret")
		}
	}
	vals = chartValues(t, "ci/standby-values.yaml")
	nats = maps.Clone(vals["nats"].(map[string]any))
	nats["admin"] = map[string]any{"existingSecret": "etcdsync-nats-admin"}
	vals["nats"] = nats
	vals["auditor"] = map[string]any{"enabled": false}
	if _, _, err := renderChart(t, vals); err == nil || !strings.Contains(err.Error(), "nats.admin") || !strings.Contains(err.Error(), "auditor.enabled") {
		t.Errorf("nats.admin without the auditor: err = %v, want a refusal naming nats.admin and auditor.enabled", err)
	}
}
