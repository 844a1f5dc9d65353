package keyspace

import (
	"strings"
	"sync"
	"testing"
)

func mustNew(t testing.TB, cfg Config) *Rules {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return r
}

func TestRulesKubernetesDefault(t *testing.T) {
	r := mustNew(t, DefaultConfig())
	tests := []struct {
		key        string
		want       bool
		wantReason string // substring of Explain's reason
	}{
		{"/registry/pods/ns/n", true, "included"},
		{"/registry/configmaps/ns/n", true, "included"},
		{"/registry/secrets/ns/token", true, "included"},
		{"/registry/deployments/app/web", true, "included"},
		{"/registry/cr.bar.com/foos/ns/n", true, "included"},
		{"/registry/custom.fancy.com/pants/n", true, "included"},
		{"/registry/gateway.networking.k8s.io/httproutes/ns/r", true, "included"},
		{"/registry/gateway.networking.k8s.io/gatewayclasses/istio", true, "included"},
		{"/registry/apiextensions.k8s.io/customresourcedefinitions/foos.cr.bar.com", true, "included"},
		{"/registry/apiregistration.k8s.io/apiservices/v1.apps", true, "included"},
		{"/registry/services/specs/ns/svc", true, "included"},
		{"/registry/services/endpoints/ns/svc", true, "included"},
		{"/registry/endpointslices/ns/svc-abc", true, "included"},
		{"/registry/controllers/ns/rc", true, "included"},
		{"/registry/ingress/ns/ing", true, "included"},
		{"/registry/namespaces/app", true, "included"},
		{"/registry/namespaces/default", true, "included"},
		{"/registry/leases/app/operator-lock", true, "included"},
		{"/registry/configmaps/ns/kube-root-ca.crt.bak", true, "included"},
		// Preset.
		{"compact_rev_key", false, `key "compact_rev_key" excluded (preset kubernetes`},
		{"/etcdsync/checkpoint/X", false, "etcdsync's own key"},
		{"/etcdsync/", false, "etcdsync's own key"},
		{"", false, "outside prefix"},
		{"/other/app/key", false, `outside prefix "/registry/" (preset kubernetes)`},
		{"/registryx/pods/ns/n", false, "outside prefix"},
		{"/registry/health", false, `"/registry/health" and keys under it excluded (preset kubernetes`},
		{"/registry/masterleases/10.0.0.1", false, "masterleases"},
		{"/registry/peerserverleases/id", false, "peerserverleases"},
		{"/registry/ranges/serviceips", false, "ranges"},
		{"/registry/ranges/servicenodeports", false, "ranges"},
		{"/registry/ipaddresses/10.96.0.1", false, "ipaddresses"},
		{"/registry/servicecidrs/kubernetes", false, `key "/registry/servicecidrs/kubernetes" excluded (preset kubernetes: the cluster's default ServiceCIDR`},
		{"/registry/servicecidrs/user-range", true, "included"}, // user data a failover needs
		{"/registry/servicecidrs/kubernetes-2", true, "included"},
		{"/registry/clustertrustbundles/kubernetes.io:kube-apiserver-serving:7c3f9a", false,
			`key starting with "/registry/clustertrustbundles/kubernetes.io:kube-apiserver-serving:" excluded (preset kubernetes: each cluster's kube-apiserver serving CA bundle`},
		{"/registry/clustertrustbundles/example.com:signer:abc", true, "included"},
		{"/registry/clustertrustbundles/kubernetes.io:kube-apiserver-client:abc", true, "included"},
		{"/registry/resourceslices/node-1-gpu.example.com-x7k2p", false, `"/registry/resourceslices" and keys under it excluded (preset kubernetes: node-bound`},
		{"/registry/certificatesigningrequests/csr-8x2kq", false, `"/registry/certificatesigningrequests" and keys under it excluded (preset kubernetes: node- and CA-bound`},
		{"/registry/podcertificaterequests/app/req-web-0-abcde", false, `"/registry/podcertificaterequests" and keys under it excluded (preset kubernetes: node- and CA-bound`},
		{"/registry/masterleases/10.0.0.2", false, "the primary's apiserver IPs: replicated with their lease's remaining TTL"},
		{"/registry/peerserverleases/apiserver-abc", false, "replicated with their lease's remaining TTL"},
		{"/registry/resourceclaims/app/gpu", true, "included"},
		{"/registry/minions/node-1", false, "minions"},
		{"/registry/csinodes/node-1", false, "csinodes"},
		{"/registry/volumeattachments/csi-abc", false, "volumeattachments"},
		{"/registry/events/ns/pod.17a", false, "events"},
		{"/registry/events", false, "events"},
		{"/registry/events/a/b/c", false, "events"}, // malformed, still excluded by bytes
		{"/registry/services/specs/default/kubernetes", false, `key "/registry/services/specs/default/kubernetes" excluded`},
		{"/registry/services/endpoints/default/kubernetes", false, "default/kubernetes Endpoints"},
		{"/registry/endpointslices/default/kubernetes", false, "default/kubernetes EndpointSlice"},
		{"/registry/services/specs/other/kubernetes", true, "included"},
		{"/registry/configmaps/app/kube-root-ca.crt", false, `configmap "kube-root-ca.crt" excluded (preset kubernetes`},
		{"/registry/configmaps/default/kube-root-ca.crt", false, "kube-root-ca.crt"},
		{"/registry/secrets/app/kube-root-ca.crt", true, "included"},
		{"/registry/cr.bar.com/configmaps/app/kube-root-ca.crt", true, "included"},
		// Preset namespaces, including their Namespace objects.
		{"/registry/leases/kube-node-lease/node-1", false, `namespace "kube-node-lease" excluded (preset kubernetes)`},
		{"/registry/leases/kube-system/kube-scheduler", false, `namespace "kube-system" excluded (preset kubernetes)`},
		{"/registry/configmaps/kube-public/cluster-info", false, `namespace "kube-public" excluded (preset kubernetes)`},
		{"/registry/namespaces/kube-system", false, `namespace "kube-system" excluded (preset kubernetes)`},
		{"/registry/cr.bar.com/foos/kube-system/n", false, `namespace "kube-system"`},
		{"/registry/cr.bar.com/namespaces/kube-system", true, "included"}, // not the Namespace object
		// Malformed keys under the prefix are in scope.
		{"/registry", true, "key does not parse: key is the prefix itself"},
		{"/registry/", true, "key does not parse"},
		{"/registry//x", true, "key does not parse: empty path segment"},
		{"/registry/pods/ns/n/", true, "key does not parse"},
		{"/registry/pods/kube-system/n/x", true, "key does not parse: more than"},
		{"/registry/pods/ns/\xff", true, "not valid UTF-8"},
		{"/registry/podsecuritypolicy/restricted", true, "included"},
	}
	for _, tt := range tests {
		got := r.Allowed([]byte(tt.key))
		ok, reason := r.Explain([]byte(tt.key))
		if got != tt.want || ok != tt.want {
			t.Errorf("Allowed(%q) = %v, Explain = %v (%s), want %v", tt.key, got, ok, reason, tt.want)
		}
		if !strings.Contains(reason, tt.wantReason) {
			t.Errorf("Explain(%q) reason = %q, want it to contain %q", tt.key, reason, tt.wantReason)
		}
	}
}

// TestRulesCheckUnparsed: Check reports the keys in scope that do not
// parse as Kubernetes keys, which no namespace or resource rule can
// exclude, such as an aggregated API server's storage under its own
// --etcd-prefix "/registry/<group>".
func TestRulesCheckUnparsed(t *testing.T) {
	kube := mustNew(t, Config{ExcludeNamespaces: []string{"app"}, ExcludePrefixes: []string{"/registry/old/"}})
	raw := mustNew(t, Config{Mode: ModeRaw})
	tests := []struct {
		r                 *Rules
		key               string
		allowed, unparsed bool
	}{
		{kube, "/registry/pods/ns/p", true, false},
		{kube, "/registry/cr.bar.com/foos/ns/f", true, false},
		{kube, "/registry/wardle.example.com/wardle.example.com/flunders/app/f", true, true}, // namespace "app" not seen
		{kube, "/registry/wardle.example.com/wardle.example.com/fischers/f", true, true},     // not namespace "fischers"
		{kube, "/registry/wardle.example.com/wardle.example.com/app/f", true, true},          // not namespace "app"
		{kube, "/registry/pods/app/p/x", true, true},
		{kube, "/registry//x", true, true},
		{kube, "/registry", true, true},
		{kube, "/registry/pods/ns/\xff", true, true},
		{kube, "/registry/pods/app/p", false, false},
		{kube, "/registry/old/a/b/c/d", false, false},  // excluded by a prefix rule
		{kube, "/registry/events/a/b/c", false, false}, // excluded by the preset
		{kube, "/wardle/flunders/app/f", false, false}, // outside the prefix
		{kube, "/etcdsync/checkpoint/X", false, false},
		{raw, "/registry//x", true, false},
		{raw, "anything", true, false},
	}
	for _, tt := range tests {
		allowed, unparsed := tt.r.Check([]byte(tt.key))
		if allowed != tt.allowed || unparsed != tt.unparsed {
			t.Errorf("Check(%q) = %v, %v; want %v, %v", tt.key, allowed, unparsed, tt.allowed, tt.unparsed)
		}
	}
	if s := kube.String(); !strings.Contains(s, "keys that do not parse as Kubernetes keys") || !strings.Contains(s, "the applier and the auditor count them") {
		t.Errorf("String() does not say that keys that do not parse are counted:\n%s", s)
	}
}

func TestRulesConfigured(t *testing.T) {
	r := mustNew(t, Config{
		Prefix:            "/k8s/",
		ExcludeNamespaces: []string{"cpaas-system", "kube-system"},
		ExcludePrefixes:   []string{"/k8s/secrets/", "/k8s/configmaps/kube-public/"},
		ExcludeResources:  []string{"pods", "minions", "cr.bar.com/foos", "services/endpoints", "ingresses"},
	})
	tests := []struct {
		key        string
		want       bool
		wantReason string
	}{
		{"/k8s/deployments/app/web", true, "included"},
		{"/registry/deployments/app/web", false, `outside prefix "/k8s/"`},
		{"/k8s/secrets/app/s", false, `exclude prefix "/k8s/secrets/"`},
		{"/k8s/secrets/kube-system/s", false, `exclude prefix "/k8s/secrets/"`}, // prefix rules come first
		{"/k8s/configmaps/kube-public/cluster-info", false, "exclude prefix"},
		{"/k8s/minions/n", false, "preset kubernetes"}, // preset before resources
		{"/k8s/pods/app/p", false, `resource "pods" excluded (config)`},
		{"/k8s/pods/cpaas-system/p", false, `resource "pods"`}, // resources before namespaces
		{"/k8s/cr.bar.com/foos/app/f", false, `resource "cr.bar.com/foos" excluded (config)`},
		{"/k8s/cr.bar.com/bars/app/f", true, "included"},
		{"/k8s/other.bar.com/foos/app/f", true, "included"},
		{"/k8s/services/endpoints/app/svc", false, `resource "services/endpoints"`},
		{"/k8s/endpoints/app/svc", false, `resource "services/endpoints"`}, // API name matches the storage entry
		{"/k8s/services/specs/app/svc", true, "included"},
		{"/k8s/ingress/app/ing", false, `resource "ingresses"`}, // storage segment matches the API entry
		{"/k8s/configmaps/cpaas-system/c", false, `namespace "cpaas-system" excluded (config)`},
		{"/k8s/namespaces/cpaas-system", false, `namespace "cpaas-system" excluded (config)`},
		{"/k8s/configmaps/kube-system/c", false, `namespace "kube-system" excluded (preset kubernetes)`},
		{"/k8s/namespaces/cpaas", true, "included"},
	}
	for _, tt := range tests {
		got := r.Allowed([]byte(tt.key))
		ok, reason := r.Explain([]byte(tt.key))
		if got != tt.want || ok != tt.want {
			t.Errorf("Allowed(%q) = %v, Explain = %v (%s), want %v", tt.key, got, ok, reason, tt.want)
		}
		if !strings.Contains(reason, tt.wantReason) {
			t.Errorf("Explain(%q) reason = %q, want it to contain %q", tt.key, reason, tt.wantReason)
		}
	}
}

// TestRulesOwnNamespace: the namespace etcdsync runs in is excluded with
// every key in it, the Namespace object included, whatever the flags say,
// and the rule listing says why.
func TestRulesOwnNamespace(t *testing.T) {
	r := mustNew(t, Config{OwnNamespace: "etcdsync", ExcludeNamespaces: []string{"nats"}})
	tests := []struct {
		key        string
		want       bool
		wantReason string
	}{
		{"/registry/deployments/etcdsync/etcdsync-applier", false, `namespace "etcdsync" excluded (etcdsync's own namespace, from POD_NAMESPACE`},
		{"/registry/secrets/etcdsync/etcd-client-cert", false, `namespace "etcdsync"`},
		{"/registry/configmaps/etcdsync/etcdsync-scope", false, `namespace "etcdsync"`},
		{"/registry/namespaces/etcdsync", false, `namespace "etcdsync"`},
		{"/registry/leases/etcdsync/etcdsync-applier", false, `namespace "etcdsync"`},
		{"/registry/configmaps/nats/nats-config", false, `namespace "nats" excluded (config)`},
		{"/registry/deployments/etcdsync-apps/web", true, "included"},
		{"/registry/namespaces/etcdsync2", true, "included"},
	}
	for _, tt := range tests {
		got := r.Allowed([]byte(tt.key))
		ok, reason := r.Explain([]byte(tt.key))
		if got != tt.want || ok != tt.want {
			t.Errorf("Allowed(%q) = %v, Explain = %v (%s), want %v", tt.key, got, ok, reason, tt.want)
		}
		if !strings.Contains(reason, tt.wantReason) {
			t.Errorf("Explain(%q) reason = %q, want it to contain %q", tt.key, reason, tt.wantReason)
		}
	}
	if s := r.String(); !strings.Contains(s, `exclude namespace "etcdsync": its keys and its Namespace object (etcdsync's own namespace, from POD_NAMESPACE`) {
		t.Errorf("String() does not say why the own namespace is excluded:\n%s", s)
	}
	if _, err := New(Config{OwnNamespace: "Bad_NS"}); err == nil || !strings.Contains(err.Error(), "POD_NAMESPACE") {
		t.Errorf("New with a bad own namespace: err = %v, want one naming POD_NAMESPACE", err)
	}
	// Raw mode parses no namespaces: POD_NAMESPACE is set in every manifest
	// and must not make a raw-mode applier refuse to start.
	if _, err := New(Config{Mode: ModeRaw, OwnNamespace: "etcdsync"}); err != nil {
		t.Errorf("raw mode with an own namespace: %v", err)
	}
}

func TestRulesIncludePrefixes(t *testing.T) {
	r := mustNew(t, Config{
		IncludePrefixes: []string{"/registry/cr.bar.com/", "/registry/namespaces/"},
		ExcludePrefixes: []string{"/registry/cr.bar.com/foos/secret-ns/"},
	})
	tests := []struct {
		key        string
		want       bool
		wantReason string
	}{
		{"/registry/cr.bar.com/foos/ns/n", true, "included"},
		{"/registry/namespaces/app", true, "included"},
		{"/registry/namespaces/kube-system", false, `namespace "kube-system"`},
		{"/registry/pods/ns/n", false, "not under any include prefix"},
		{"/etcdsync/checkpoint/X", false, "etcdsync's own key"},
		{"/registry/cr.bar.com/foos/secret-ns/n", false, "exclude prefix"},
	}
	for _, tt := range tests {
		ok, reason := r.Explain([]byte(tt.key))
		if r.Allowed([]byte(tt.key)) != tt.want || ok != tt.want || !strings.Contains(reason, tt.wantReason) {
			t.Errorf("Explain(%q) = %v, %q; want %v, %q", tt.key, ok, reason, tt.want, tt.wantReason)
		}
	}
}

func TestRulesRaw(t *testing.T) {
	r := mustNew(t, Config{
		Mode:            ModeRaw,
		IncludePrefixes: []string{"app/", "/registry/"},
		ExcludePrefixes: []string{"app/tmp/"},
	})
	tests := []struct {
		key        string
		want       bool
		wantReason string
	}{
		{"app/config", true, "included"},
		{"app/tmp/x", false, `exclude prefix "app/tmp/"`},
		{"other/x", false, "not under any include prefix"},
		{"/registry/minions/n", true, "included"},               // no preset in raw mode
		{"/registry/leases/kube-system/l", true, "included"},    // no namespaces in raw mode
		{"/registry//x\xff", true, "included"},                  // no parsing in raw mode
		{"/etcdsync/checkpoint/X", false, "etcdsync's own key"}, // every mode
	}
	for _, tt := range tests {
		ok, reason := r.Explain([]byte(tt.key))
		if r.Allowed([]byte(tt.key)) != tt.want || ok != tt.want || !strings.Contains(reason, tt.wantReason) {
			t.Errorf("Explain(%q) = %v, %q; want %v, %q", tt.key, ok, reason, tt.want, tt.wantReason)
		}
	}
	all := mustNew(t, Config{Mode: ModeRaw})
	for _, k := range []string{"", "compact_rev_key", "x", "/etcdsync"} {
		if !all.Allowed([]byte(k)) {
			t.Errorf("raw Allowed(%q) = false, want true", k)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{name: "default", cfg: DefaultConfig()},
		{name: "zero value", cfg: Config{}},
		{name: "raw", cfg: Config{Mode: ModeRaw, ExcludePrefixes: []string{"foo"}, IncludePrefixes: []string{"bar/"}}},
		{name: "raw ignores prefix", cfg: Config{Mode: ModeRaw, Prefix: "registry"}},
		{name: "full", cfg: Config{Prefix: "/k8s/a/", ExcludeNamespaces: []string{"cpaas-system", "a1"}, ExcludePrefixes: []string{"/k8s/a/secrets/"}, IncludePrefixes: []string{"/k8s/a/", "/k"}, ExcludeResources: []string{"pods", "services/specs", "cr.bar.com/foos", "minions"}}},
		{name: "root prefix", cfg: Config{Prefix: "/"}},
		{name: "unknown mode", cfg: Config{Mode: "etcd"}, wantErr: `unknown mode "etcd"`},
		{name: "prefix without slash", cfg: Config{Prefix: "registry"}, wantErr: `prefix "registry": must start with "/"`},
		{name: "prefix empty segment", cfg: Config{Prefix: "/a//b"}, wantErr: "empty path segment"},
		{name: "prefix non-UTF-8", cfg: Config{Prefix: "/\xff"}, wantErr: "not valid UTF-8"},
		{name: "prefix own", cfg: Config{Prefix: "/etcdsync"}, wantErr: "own prefix"},
		{name: "empty namespace", cfg: Config{ExcludeNamespaces: []string{""}}, wantErr: `exclude namespace "": empty`},
		{name: "namespace with slash", cfg: Config{ExcludeNamespaces: []string{"a/b"}}, wantErr: `exclude namespace "a/b": contains "/"`},
		{name: "namespace uppercase", cfg: Config{ExcludeNamespaces: []string{"Kube-System"}}, wantErr: "DNS-1123 label"},
		{name: "namespace too long", cfg: Config{ExcludeNamespaces: []string{strings.Repeat("a", 64)}}, wantErr: "longer than 63"},
		{name: "raw namespaces", cfg: Config{Mode: ModeRaw, ExcludeNamespaces: []string{"a"}}, wantErr: "not supported in raw mode"},
		{name: "raw resources", cfg: Config{Mode: ModeRaw, ExcludeResources: []string{"pods"}}, wantErr: "not supported in raw mode"},
		{name: "empty exclude prefix", cfg: Config{ExcludePrefixes: []string{""}}, wantErr: "exclude prefix \"\": empty"},
		{name: "raw empty exclude prefix", cfg: Config{Mode: ModeRaw, ExcludePrefixes: []string{""}}, wantErr: "empty"},
		{name: "exclude prefix without slash", cfg: Config{ExcludePrefixes: []string{"registry/secrets/"}}, wantErr: `must start with "/"`},
		{name: "include prefix without slash", cfg: Config{IncludePrefixes: []string{"registry/"}}, wantErr: `must start with "/"`},
		{name: "include prefix outside", cfg: Config{IncludePrefixes: []string{"/other/"}}, wantErr: `outside prefix "/registry/"`},
		{name: "include prefix own", cfg: Config{Mode: ModeRaw, IncludePrefixes: []string{"/etcdsync/x"}}, wantErr: "own prefix"},
		{name: "empty include prefix", cfg: Config{IncludePrefixes: []string{""}}, wantErr: "empty"},
		{name: "empty resource", cfg: Config{ExcludeResources: []string{""}}, wantErr: `exclude resource "": empty`},
		{name: "dotted resource", cfg: Config{ExcludeResources: []string{"foos.cr.bar.com"}}, wantErr: `"group/resource"`},
		{name: "builtin group", cfg: Config{ExcludeResources: []string{"apps/deployments"}}, wantErr: `group "apps" has no dot`},
		{name: "resource extra slash", cfg: Config{ExcludeResources: []string{"cr.bar.com/foos/x"}}, wantErr: `more than one "/"`},
		{name: "resource empty name", cfg: Config{ExcludeResources: []string{"cr.bar.com/"}}, wantErr: "empty"},
		{name: "resource bad group", cfg: Config{ExcludeResources: []string{"cr..com/foos"}}, wantErr: "label"},
		{name: "several problems", cfg: Config{Mode: "x", ExcludePrefixes: []string{""}}, wantErr: "unknown mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if _, err := New(tt.cfg); err != nil {
					t.Fatalf("New() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
			r, nerr := New(tt.cfg)
			if r != nil || nerr == nil || !strings.Contains(nerr.Error(), tt.wantErr) {
				t.Fatalf("New() = %v, %v; want nil and the Validate error", r, nerr)
			}
		})
	}
	err := Config{Mode: "x", ExcludePrefixes: []string{""}}.Validate()
	if got := len(strings.Split(err.Error(), "\n")); got != 2 {
		t.Errorf("Validate() reported %d problems, want 2: %v", got, err)
	}
}

func TestNewCopiesConfig(t *testing.T) {
	cfg := Config{ExcludePrefixes: []string{"/registry/secrets/"}, ExcludeNamespaces: []string{"app"}}
	r := mustNew(t, cfg)
	cfg.ExcludePrefixes[0] = "/registry/pods/"
	cfg.ExcludeNamespaces[0] = "other"
	if !r.Allowed([]byte("/registry/pods/x/p")) || r.Allowed([]byte("/registry/secrets/x/s")) || r.Allowed([]byte("/registry/pods/app/p")) {
		t.Error("Rules changed after the caller modified its Config")
	}
}

func TestString(t *testing.T) {
	r := mustNew(t, Config{
		ExcludeNamespaces: []string{"cpaas-system"},
		ExcludePrefixes:   []string{"/registry/secrets/"},
		IncludePrefixes:   []string{"/registry/"},
		ExcludeResources:  []string{"cr.bar.com/foos"},
	})
	s := r.String()
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	wantInOrder := []string{
		`mode kubernetes: prefix "/registry/"`,
		`"/etcdsync/"`,
		`not under one of ["/registry/"]`,
		`exclude every key under "/registry/secrets/" (config)`,
		`exclude key "compact_rev_key"`,
		`outside prefix "/registry/"`,
		`"/registry/health"`,
		`"/registry/events"`,
		`"/registry/services/specs/default/kubernetes"`,
		`exclude key "/registry/servicecidrs/kubernetes"`,
		`exclude every key starting with "/registry/clustertrustbundles/kubernetes.io:kube-apiserver-serving:"`,
		`"kube-root-ca.crt"`,
		`exclude resource "cr.bar.com/foos" (config)`,
		`exclude namespace "kube-system"`,
		`exclude namespace "cpaas-system": its keys and its Namespace object (config)`,
		`include every other key`,
	}
	i := 0
	for _, l := range lines {
		if i < len(wantInOrder) && strings.Contains(l, wantInOrder[i]) {
			i++
		}
	}
	if i != len(wantInOrder) {
		t.Errorf("String() is missing %q (in order):\n%s", wantInOrder[i], s)
	}
	raw := mustNew(t, Config{Mode: ModeRaw}).String()
	if strings.Contains(raw, presetName) || !strings.Contains(raw, "mode raw") {
		t.Errorf("raw String() =\n%s", raw)
	}
}

func TestAllowedDoesNotAllocate(t *testing.T) {
	kube := mustNew(t, Config{
		ExcludeNamespaces: []string{"cpaas-system"},
		ExcludePrefixes:   []string{"/registry/secrets/"},
		IncludePrefixes:   []string{"/registry/", "/"},
		ExcludeResources:  []string{"pods", "cr.bar.com/foos", "minions"},
	})
	raw := mustNew(t, Config{Mode: ModeRaw, ExcludePrefixes: []string{"a/"}})
	keys := [][]byte{
		[]byte("/registry/deployments/app/web"),
		[]byte("/registry/pods/app/p"),
		[]byte("/registry/cr.bar.com/foos/app/f"),
		[]byte("/registry/custom.fancy.com/pants/n"),
		[]byte("/registry/services/specs/default/kubernetes"),
		[]byte("/registry/services/endpoints/app/svc"),
		[]byte("/registry/ingress/app/i"),
		[]byte("/registry/configmaps/app/kube-root-ca.crt"),
		[]byte("/registry/leases/kube-system/l"),
		[]byte("/registry/namespaces/cpaas-system"),
		[]byte("/registry/events/ns/e"),
		[]byte("/registry/secrets/ns/s"),
		[]byte("/registry//x\xff"),
		[]byte("/etcdsync/checkpoint/X"),
		[]byte("compact_rev_key"),
	}
	for _, r := range []*Rules{kube, raw} {
		for _, k := range keys {
			if n := testing.AllocsPerRun(100, func() { r.Allowed(k) }); n != 0 {
				t.Errorf("Allowed(%q) allocates %v times per call, want 0", k, n)
			}
			if n := testing.AllocsPerRun(100, func() { r.Check(k) }); n != 0 {
				t.Errorf("Check(%q) allocates %v times per call, want 0", k, n)
			}
		}
	}
}

func BenchmarkAllowed(b *testing.B) {
	r := mustNew(b, Config{ExcludeNamespaces: []string{"cpaas-system", "cert-manager"}})
	key := []byte("/registry/cr.bar.com/foos/app/some-object-name")
	b.ReportAllocs()
	for b.Loop() {
		r.Allowed(key)
	}
}

// fuzzConfigs are the configurations FuzzAllowed and the concurrency test
// decide keys under: the default preset, every kind of rule together under
// a custom prefix, the root prefix, and raw mode.
func fuzzConfigs() []Config {
	return []Config{
		DefaultConfig(),
		{
			Prefix:            "/k8s/cluster-a/",
			OwnNamespace:      "etcdsync",
			ExcludeNamespaces: []string{"cpaas-system", "cert-manager"},
			ExcludePrefixes:   []string{"/k8s/cluster-a/secrets/", "/k8s/cluster-a/cr.bar.com/foos/secret-ns/"},
			IncludePrefixes:   []string{"/k8s/cluster-a/", "/k"},
			ExcludeResources:  []string{"pods", "minions", "ingresses", "services/endpoints", "controllers", "cr.bar.com/foos"},
		},
		{
			Prefix:            "/",
			OwnNamespace:      "dr",
			ExcludeNamespaces: []string{"cpaas-system"},
			ExcludePrefixes:   []string{"/secrets/"},
			IncludePrefixes:   []string{"/"},
			ExcludeResources:  []string{"services", "nodes", "replicationcontrollers", "ingress", "endpoints", "cr.bar.com/foos"},
		},
		{
			IncludePrefixes: []string{"/registry/cr.bar.com/", "/registry/namespaces/", "/registry/configmaps/"},
			ExcludePrefixes: []string{"/registry/configmaps/app/"},
		},
		{Mode: ModeRaw, ExcludePrefixes: []string{"app/tmp/"}, IncludePrefixes: []string{"app/", "/"}},
		{Mode: ModeRaw},
	}
}

// scopeKeys are FuzzAllowed's seeds and the keys TestRulesConcurrentUse
// decides.
var scopeKeys = []string{
	"", "/registry", "/registry/", "/registry//x", "/registry/pods/ns/n", "/registry/pods/ns/n/",
	"/registry/services/specs/default/kubernetes", "/registry/configmaps/ns/kube-root-ca.crt",
	"/registry/namespaces/kube-system", "/registry/leases/kube-node-lease/n",
	"/registry/cr.bar.com/foos/ns/n", "/registry/minions/n", "/registry/events",
	"compact_rev_key", "/etcdsync/checkpoint/X", "/registry/pods/\xff", "app/tmp/x",
	// Segments that extend a preset subtree's name are not under it.
	"/registry/eventsx/ns/e", "/registry/healthz", "/registry/rangesx/r", "/k8s/cluster-a/minionsx/n",
	"/events-archive/ns/e",
	// A namespaced key of resource "namespaces" is not a Namespace object.
	"/registry/namespaces/app/kube-system", "/k8s/cluster-a/namespaces/app/etcdsync",
	// A grouped key with an empty resource segment does not parse.
	"/registry/cr.bar.com//kube-system/n", "/k8s/cluster-a/cr.bar.com//cpaas-system/n",
	// Storage segments and API names of excluded resources.
	"/k8s/cluster-a/ingress/app/i", "/k8s/cluster-a/endpoints/app/e", "/k8s/cluster-a/services/endpoints/app/e",
	"/services/specs/app/s", "/controllers/app/rc", "/nodes/n", "/cr.bar.com/foos/app/f", "/cr.bar.com/bars/app/f",
	"/k8s/cluster-a/namespaces/etcdsync", "/namespaces/dr", "/k8s/cluster-a/deployments/cert-manager/d",
	// An aggregated API server's keys under its own --etcd-prefix
	// "<prefix>/<group>": "<group>/<resource>/[<namespace>/]<name>".
	"/registry/wardle.example.com/wardle.example.com/flunders/app/f", "/registry/wardle.example.com/wardle.example.com/kube-system/f",
	"/k8s/cluster-a/w.example.com/w.example.com/cpaas-system/f", "/k8s/cluster-a/cr.bar.com/foos.x/app/f",
	// Per-cluster objects among user data of the same resource.
	"/registry/servicecidrs/kubernetes", "/registry/servicecidrs/user-range", "/registry/servicecidrs/kubernetes/x",
	"/servicecidrs/kubernetes", "/k8s/cluster-a/servicecidrs/kubernetes", "/k8s/cluster-a/servicecidrs/app",
	"/registry/clustertrustbundles/kubernetes.io:kube-apiserver-serving:abc", "/registry/clustertrustbundles/kubernetes.io:kube-apiserver-serving:",
	"/registry/clustertrustbundles/kubernetes.io:kube-apiserver-serving", "/registry/clustertrustbundles/example.com:signer:abc",
	"/k8s/cluster-a/clustertrustbundles/kubernetes.io:kube-apiserver-serving:abc", "/clustertrustbundles/kubernetes.io:kube-apiserver-serving:x/y",
	// Node- and CA-bound resources.
	"/registry/resourceslices/node-1-gpu", "/registry/certificatesigningrequests/csr-1", "/registry/podcertificaterequests/app/req",
	"/k8s/cluster-a/podcertificaterequests/app/req", "/registry/resourceslicesx/s", "/registry/resourceclaims/app/c",
}

// FuzzAllowed compares Allowed and Explain with oracleAllowed, an
// independent implementation of the scope rules (oracle_test.go), under
// each of fuzzConfigs.
func FuzzAllowed(f *testing.F) {
	for _, k := range scopeKeys {
		f.Add([]byte(k))
	}
	cfgs := fuzzConfigs()
	rules := make([]*Rules, len(cfgs))
	for i, cfg := range cfgs {
		rules[i] = mustNew(f, cfg)
	}
	f.Fuzz(func(t *testing.T, key []byte) {
		for i, r := range rules {
			want := oracleAllowed(cfgs[i], key)
			if got := r.Allowed(key); got != want {
				_, reason := r.Explain(key)
				t.Fatalf("config %d: Allowed(%q) = %v (%s); oracle says %v", i, key, got, reason, want)
			}
			if ok, reason := r.Explain(key); ok != want || reason == "" {
				t.Fatalf("config %d: Explain(%q) = %v, %q; oracle says %v", i, key, ok, reason, want)
			}
			wantUnparsed := want && oracleUnparsed(cfgs[i], key)
			if ok, unparsed := r.Check(key); ok != want || unparsed != wantUnparsed {
				t.Fatalf("config %d: Check(%q) = %v, %v; oracle says %v, %v", i, key, ok, unparsed, want, wantUnparsed)
			}
		}
	})
}

// TestRulesConcurrentUse: Rules are safe for concurrent use. Many
// goroutines decide the same keys under the same Rules at once (run it with
// -race) and each gets the answer the oracle gives.
func TestRulesConcurrentUse(t *testing.T) {
	cfgs := fuzzConfigs()
	rules := make([]*Rules, len(cfgs))
	want := make([][]bool, len(cfgs))
	for i, cfg := range cfgs {
		rules[i] = mustNew(t, cfg)
		for _, k := range scopeKeys {
			want[i] = append(want[i], oracleAllowed(cfg, []byte(k)))
		}
	}
	const goroutines, rounds = 16, 20
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for round := range rounds {
				for i, r := range rules {
					for j := range scopeKeys {
						// Each goroutine starts at a different key, so that
						// different rules run at the same time.
						j = (j + g + round) % len(scopeKeys)
						k := []byte(scopeKeys[j])
						if got := r.Allowed(k); got != want[i][j] {
							t.Errorf("config %d: Allowed(%q) = %v, want %v", i, k, got, want[i][j])
							return
						}
						if ok, _ := r.Explain(k); ok != want[i][j] {
							t.Errorf("config %d: Explain(%q) = %v, want %v", i, k, ok, want[i][j])
							return
						}
					}
					_ = r.String()
				}
			}
		})
	}
	wg.Wait()
}

func TestResourceOf(t *testing.T) {
	kube, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	rawCfg := DefaultConfig()
	rawCfg.Mode = "raw"
	raw, err := New(rawCfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rules *Rules
		key   string
		want  string
	}{
		{kube, "/registry/configmaps/ns/cm", "configmaps"},
		{kube, "/registry/services/specs/ns/svc", "services/specs"},
		{kube, "/registry/minions/node-1", "minions"},
		{kube, "/registry/stable.example.com/crontabs/ns/c", "stable.example.com/crontabs"},
		{kube, "/registry/namespaces/ns", "namespaces"},
		{kube, "/registry", "(other)"},
		{kube, "/elsewhere/key", "/elsewhere/"},
		{raw, "/app/a/b", "/app/"},
		{raw, "/app", "/"},
		{raw, "flat", ""},
		{raw, "", ""},
		{raw, "/", "/"},
	} {
		if got := tc.rules.ResourceOf([]byte(tc.key)); got != tc.want {
			t.Errorf("ResourceOf(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
