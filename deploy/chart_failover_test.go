package deploy

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// siteValues are the values of the two sites of a pair in the site-relative
// form (localEtcd, remoteEtcd, localSite, remoteSite): each describes itself
// and the other once, for good.
var siteValues = map[string]string{
	"A": `
role: primary
localSite: primary
remoteSite: standby
localEtcd:
  endpoints: ["https://10.0.0.10:2379", "https://10.0.0.11:2379"]
  tlsSecret: etcdsync-etcd-a-tls
remoteEtcd:
  endpoints: ["https://etcd.site-b.example:12379"]
  tlsSecret: etcdsync-etcd-b-tls
logKey: {existingSecret: etcdsync-log-key}
nats:
  passwords: {existingSecret: etcdsync-nats-credentials}
networkPolicy:
  remoteEtcdTo:
    - ipBlock: {cidr: 192.0.2.0/24}
`,
	"B": `
role: standby
localSite: standby
remoteSite: primary
localEtcd:
  endpoints: ["https://etcd.site-b.example:12379"]
  tlsSecret: etcdsync-etcd-b-tls
remoteEtcd:
  endpoints: ["https://10.0.0.10:2379", "https://10.0.0.11:2379"]
  tlsSecret: etcdsync-etcd-a-tls
logKey: {existingSecret: etcdsync-log-key}
nats:
  passwords: {existingSecret: etcdsync-nats-credentials}
networkPolicy:
  localEtcdTo:
    - ipBlock: {cidr: 192.0.2.0/24}
`,
}

// siteRelease renders one site's values with role set, as
// `helm upgrade --reuse-values --set role=ROLE` does.
func siteRelease(t *testing.T, site, role string) *rendered {
	t.Helper()
	var vals map[string]any
	if err := yaml.Unmarshal([]byte(siteValues[site]), &vals); err != nil {
		t.Fatal(err)
	}
	vals["role"] = role
	r := renderDecoded(t, vals)
	checkRelease(t, r)
	return r
}

func envOf(t *testing.T, r *rendered, name, cmd string) map[string]string {
	t.Helper()
	d := r.deployments[name]
	if d == nil {
		t.Fatalf("no Deployment %s; have %v", name, keys(r.deployments))
	}
	return containerEnv(t, r.built, d, cmd)
}

// secretAt is the Secret mounted at dir in d's container.
func secretAt(d *appsv1.Deployment, dir string) string {
	c := d.Spec.Template.Spec.Containers[0]
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				return v.Secret.SecretName
			}
		}
	}
	return ""
}

// TestChartRoleFlip: with site-relative values a failover and a failback
// are a change of `role` alone. Site A rendered as the primary publishes
// its own etcd under its own name; the same values with only role changed
// make a valid standby that applies into its own etcd, audits it against
// the other site's, and reads the log the other site publishes after its
// promotion (the name promote --publish-site gives by default).
func TestChartRoleFlip(t *testing.T) {
	aEtcd, bEtcd := "https://10.0.0.10:2379,https://10.0.0.11:2379", "https://etcd.site-b.example:12379"

	// Site A as the primary, as installed.
	a := siteRelease(t, "A", "primary")
	pub := envOf(t, a, "etcdsync-publisher", "publish")
	if pub["ETCDSYNC_ETCD_ENDPOINTS"] != aEtcd || pub["ETCDSYNC_SITE"] != "primary" {
		t.Errorf("A as primary publishes etcd %q as site %q; want its own etcd %q as site primary", pub["ETCDSYNC_ETCD_ENDPOINTS"], pub["ETCDSYNC_SITE"], aEtcd)
	}
	if s := secretAt(a.deployments["etcdsync-publisher"], "/etc/etcdsync/etcd"); s != "etcdsync-etcd-a-tls" {
		t.Errorf("A's publisher reaches its etcd with Secret %q, want etcdsync-etcd-a-tls", s)
	}

	// Site A as the standby after a failover to B: only role changed.
	a = siteRelease(t, "A", "standby")
	ap := envOf(t, a, "etcdsync-applier", "apply")
	au := envOf(t, a, "etcdsync-auditor", "audit")
	if ap["ETCDSYNC_ETCD_ENDPOINTS"] != aEtcd || au["ETCDSYNC_STANDBY_ENDPOINTS"] != aEtcd || au["ETCDSYNC_PRIMARY_ENDPOINTS"] != bEtcd {
		t.Errorf("A as standby: applier etcd %q, auditor standby %q primary %q; want standby = its own %q, primary = B's %q",
			ap["ETCDSYNC_ETCD_ENDPOINTS"], au["ETCDSYNC_STANDBY_ENDPOINTS"], au["ETCDSYNC_PRIMARY_ENDPOINTS"], aEtcd, bEtcd)
	}
	if ap["ETCDSYNC_SITE"] != "standby" || au["ETCDSYNC_SITE"] != "standby" {
		t.Errorf("A as standby reads site %q/%q, want standby (B's name, promote's default --publish-site)", ap["ETCDSYNC_SITE"], au["ETCDSYNC_SITE"])
	}
	for _, m := range []struct{ deploy, dir, want string }{
		{"etcdsync-applier", "/etc/etcdsync/etcd", "etcdsync-etcd-a-tls"},
		{"etcdsync-auditor", "/etc/etcdsync/etcd", "etcdsync-etcd-a-tls"},
		{"etcdsync-auditor", "/etc/etcdsync/primary-etcd", "etcdsync-etcd-b-tls"},
	} {
		if s := secretAt(a.deployments[m.deploy], m.dir); s != m.want {
			t.Errorf("A as standby: %s mounts Secret %q at %s, want %s", m.deploy, s, m.dir, m.want)
		}
	}
	// Its NetworkPolicies follow: its own etcd at its addresses, B's at
	// the peers named for the remote etcd.
	applierNP := jsonOf(t, a.networkPolicies["etcdsync-applier"].Spec.Egress)
	auditorNP := jsonOf(t, a.networkPolicies["etcdsync-auditor"].Spec.Egress)
	if !strings.Contains(applierNP, `"10.0.0.10/32"`) || strings.Contains(applierNP, "192.0.2.0/24") {
		t.Errorf("A's applier egress %s: want A's etcd only", applierNP)
	}
	if !strings.Contains(auditorNP, `"10.0.0.10/32"`) || !strings.Contains(auditorNP, `{"protocol":"TCP","port":12379}],"to":[{"ipBlock":{"cidr":"192.0.2.0/24"}}]`) {
		t.Errorf("A's auditor egress %s: want A's etcd at its addresses and B's at 192.0.2.0/24:12379", auditorNP)
	}

	// Each state of the pair is consistent: the standby reads what the
	// primary publishes and audits it against the primary's etcd.
	for _, state := range []struct{ primary, standby string }{{"A", "B"}, {"B", "A"}} {
		p := siteRelease(t, state.primary, "primary")
		s := siteRelease(t, state.standby, "standby")
		pub := envOf(t, p, "etcdsync-publisher", "publish")
		ap := envOf(t, s, "etcdsync-applier", "apply")
		au := envOf(t, s, "etcdsync-auditor", "audit")
		if pub["ETCDSYNC_SITE"] != ap["ETCDSYNC_SITE"] || pub["ETCDSYNC_SITE"] != au["ETCDSYNC_SITE"] {
			t.Errorf("%s primary publishes as site %q; %s standby reads %q/%q", state.primary, pub["ETCDSYNC_SITE"], state.standby, ap["ETCDSYNC_SITE"], au["ETCDSYNC_SITE"])
		}
		if pub["ETCDSYNC_ETCD_ENDPOINTS"] != au["ETCDSYNC_PRIMARY_ENDPOINTS"] {
			t.Errorf("%s primary publishes etcd %q; %s's auditor compares with %q", state.primary, pub["ETCDSYNC_ETCD_ENDPOINTS"], state.standby, au["ETCDSYNC_PRIMARY_ENDPOINTS"])
		}
		if ap["ETCDSYNC_ETCD_ENDPOINTS"] == pub["ETCDSYNC_ETCD_ENDPOINTS"] {
			t.Errorf("%s standby applies into the primary's etcd %q", state.standby, ap["ETCDSYNC_ETCD_ENDPOINTS"])
		}
	}
}

// TestChartSiteValuesMixedRefused: the two ways to name the etcds are
// exclusive, and the site-relative one needs both sites' names, distinct.
func TestChartSiteValuesMixedRefused(t *testing.T) {
	base := func() map[string]any {
		var v map[string]any
		if err := yaml.Unmarshal([]byte(siteValues["A"]), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name string
		edit func(v map[string]any)
		want []string
	}{
		{"primaryEtcd with localEtcd", func(v map[string]any) {
			v["primaryEtcd"] = map[string]any{"endpoints": []any{"https://10.0.0.10:2379"}}
		}, []string{"primaryEtcd", "localEtcd"}},
		{"standbyEtcd TLS with localEtcd", func(v map[string]any) {
			v["standbyEtcd"] = map[string]any{"tlsSecret": "x"}
		}, []string{"standbyEtcd", "localEtcd"}},
		{"primaryEtcdTo with localEtcd", func(v map[string]any) {
			v["networkPolicy"] = map[string]any{"primaryEtcdTo": []any{map[string]any{"ipBlock": map[string]any{"cidr": "10.0.0.0/8"}}}}
		}, []string{"networkPolicy.primaryEtcdTo", "localEtcdTo"}},
		{"the same name for both sites", func(v map[string]any) { v["remoteSite"] = "primary" }, []string{"localSite", "remoteSite"}},
		{"site contradicting the sites' names", func(v map[string]any) { v["site"] = "standby" }, []string{"site", "localSite"}},
		{"no remote etcd", func(v map[string]any) { delete(v, "remoteEtcd") }, []string{"/remoteEtcd/endpoints"}},
		{"no local site name", func(v map[string]any) { delete(v, "localSite") }, []string{"/localSite"}},
		{"no remote site name", func(v map[string]any) { delete(v, "remoteSite") }, []string{"/remoteSite"}},
		{"remoteEtcd with primaryEtcd", func(v map[string]any) {
			delete(v, "localEtcd")
			v["primaryEtcd"] = map[string]any{"endpoints": []any{"https://10.0.0.10:2379"}}
		}, []string{"remoteEtcd", "localEtcd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := base()
			tc.edit(v)
			_, _, err := renderChart(t, v)
			if err == nil {
				t.Fatalf("rendered; want a refusal naming %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %s: %v", w, err)
				}
			}
		})
	}
	// site may repeat the name the roles give.
	v := base()
	v["site"] = "primary"
	if _, _, err := renderChart(t, v); err != nil {
		t.Errorf("site equal to localSite on the primary: %v", err)
	}
}
