package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// readmeGrants reads the etcd roles the README gives each component, per
// etcd ("primary", "standby"): role name → grants.
func readmeGrants(t *testing.T) map[string]map[string][]readmeGrant {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	grant := regexp.MustCompile(`^etcdctl role grant-permission (\S+) (read|write|readwrite) --prefix=true (\S+)`)
	site := regexp.MustCompile(`^# (primary|standby) etcd$`)
	out := map[string]map[string][]readmeGrant{}
	where := ""
	for _, line := range strings.Split(string(b), "\n") {
		if m := site.FindStringSubmatch(line); m != nil {
			where = m[1]
			continue
		}
		m := grant.FindStringSubmatch(line)
		if m == nil || where == "" {
			continue
		}
		if out[where] == nil {
			out[where] = map[string][]readmeGrant{}
		}
		out[where][m[1]] = append(out[where][m[1]], readmeGrant{perm: m[2], prefix: m[3]})
	}
	return out
}

type readmeGrant struct{ perm, prefix string }

// grantRoles creates on cli (as root) each role with its grants and a user
// of the same name with password pw holding it.
func grantRoles(t *testing.T, cli *clientv3.Client, roles map[string][]readmeGrant, pw string) {
	t.Helper()
	ctx := context.Background()
	perms := map[string]clientv3.PermissionType{"read": clientv3.PermissionType(clientv3.PermRead),
		"write": clientv3.PermissionType(clientv3.PermWrite), "readwrite": clientv3.PermissionType(clientv3.PermReadWrite)}
	for role, grants := range roles {
		if _, err := cli.RoleAdd(ctx, role); err != nil {
			t.Fatal(err)
		}
		for _, g := range grants {
			if _, err := cli.RoleGrantPermission(ctx, role, g.prefix, clientv3.GetPrefixRangeEnd(g.prefix), perms[g.perm]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cli.UserAdd(ctx, role, pw); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.UserGrantRole(ctx, role, role); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEtcdPermissionsFromREADME: with etcd auth on both sites and each
// component given exactly the roles the README lists, the pipeline
// replicates, an audit runs and finds the sites consistent, and status and
// a promote dry run (with the applier's user, as the runbook runs them)
// succeed.
func TestEtcdPermissionsFromREADME(t *testing.T) {
	roles := readmeGrants(t)
	for _, want := range []struct{ site, role string }{{"primary", "etcdsync-publisher"}, {"primary", "etcdsync-auditor"},
		{"standby", "etcdsync-applier"}, {"standby", "etcdsync-auditor"}} {
		if len(roles[want.site][want.role]) == 0 {
			t.Fatalf("README: no etcd grants for %s on the %s etcd (want `# %s etcd` then `etcdctl role grant-permission %s ...`)", want.role, want.site, want.site, want.role)
		}
	}
	const rootPW, pw = "root-pw", "component-pw"
	primary, pcli := authEtcd(t, rootPW)
	standby, scli := authEtcd(t, rootPW)
	grantRoles(t, pcli, roles["primary"], pw)
	grantRoles(t, scli, roles["standby"], pw)
	ctx := context.Background()
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/a", "a"); err != nil {
		t.Fatal(err)
	}

	natsAddr := freeAddr(t)
	natsURL := "nats://" + natsAddr
	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--etcd-username", "etcdsync-publisher", "--etcd-password", pw,
		"--prefix", "/registry/", "--data-dir", t.TempDir(), "--nats-listen", natsAddr)
	eventually(t, 20*time.Second, "the publisher to start", func() bool { return strings.Contains(pub.stderr.String(), "publisher starting") })
	applierUser := []string{"--standby-endpoints", standby.Endpoint, "--standby-username", "etcdsync-applier", "--standby-password", pw}
	applyArgs := []string{"apply", "--etcd-endpoints", standby.Endpoint, "--etcd-username", "etcdsync-applier", "--etcd-password", pw, "--nats-url", natsURL}
	ap := runBackground(t, applyArgs...)
	if _, err := pcli.Put(ctx, "/registry/configmaps/app/b", "b"); err != nil {
		t.Fatal(err)
	}
	// etcd checks passwords with bcrypt, slow under the race detector: a
	// command may give up logging in within its connect timeout (exit 3,
	// or 1 with the client's "context deadline exceeded"); it is run
	// again, as a pod restarts. Anything else (a permission denied) is a
	// failure.
	gaveUp := func(code int, stderr string) bool {
		return code == exitUnavailable || code == exitFailure && strings.Contains(stderr, "context deadline exceeded")
	}
	eventually(t, 60*time.Second, "the keys on the standby", func() bool {
		select {
		case code := <-ap.done:
			ap.done <- code
			if !gaveUp(code, ap.stderr.String()) {
				t.Fatalf("apply with the README's applier role: exit %d\n%s", code, ap.stderr)
			}
			ap = runBackground(t, applyArgs...)
		default:
		}
		resp, err := scli.Get(ctx, "/registry/configmaps/app/", clientv3.WithPrefix())
		return err == nil && len(resp.Kvs) == 2
	})
	run := func(what string, args ...string) {
		t.Helper()
		var code int
		var out, stderr string
		eventually(t, 60*time.Second, what, func() bool {
			code, out, stderr = runCmd(t, args...)
			if code != exitOK && !gaveUp(code, stderr) {
				t.Fatalf("%s: exit %d\n%s%s", what, code, out, stderr)
			}
			return code == exitOK
		})
	}
	run("audit with the README's auditor roles", "audit", "--once", "--primary-endpoints", primary.Endpoint, "--primary-username", "etcdsync-auditor", "--primary-password", pw,
		"--standby-endpoints", standby.Endpoint, "--standby-username", "etcdsync-auditor", "--standby-password", pw, "--nats-url", natsURL)
	run("status with the applier's user", append([]string{"status", "--nats-url", natsURL}, applierUser...)...)
	run("promote --dry-run with the applier's user", append([]string{"promote", "--dry-run", "--nats-url", natsURL}, applierUser...)...)
}
