package keyspace

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name        string
		prefix      string // "/registry" if empty, unless emptyPrefix
		emptyPrefix bool
		key         string
		want        Key
		wantErr     error
	}{
		// Core namespaced and cluster-scoped.
		{name: "pod", key: "/registry/pods/ns/n", want: Key{Resource: "pods", Namespace: "ns", Name: "n"}},
		{name: "configmap", key: "/registry/configmaps/ns/n", want: Key{Resource: "configmaps", Namespace: "ns", Name: "n"}},
		{name: "secret", key: "/registry/secrets/default/token-abc", want: Key{Resource: "secrets", Namespace: "default", Name: "token-abc"}},
		{name: "kube-root-ca", key: "/registry/configmaps/app/kube-root-ca.crt", want: Key{Resource: "configmaps", Namespace: "app", Name: "kube-root-ca.crt"}},
		{name: "namespace object", key: "/registry/namespaces/kube-system", want: Key{Resource: "namespaces", Name: "kube-system"}},
		{name: "deployment", key: "/registry/deployments/ns/web", want: Key{Resource: "deployments", Namespace: "ns", Name: "web"}},
		{name: "lease kube-node-lease", key: "/registry/leases/kube-node-lease/node-1", want: Key{Resource: "leases", Namespace: "kube-node-lease", Name: "node-1"}},
		{name: "lease kube-system", key: "/registry/leases/kube-system/kube-scheduler", want: Key{Resource: "leases", Namespace: "kube-system", Name: "kube-scheduler"}},
		{name: "clusterrole", key: "/registry/clusterroles/admin", want: Key{Resource: "clusterroles", Name: "admin"}},
		{name: "event", key: "/registry/events/ns/pod.17a", want: Key{Resource: "events", Namespace: "ns", Name: "pod.17a"}},
		// Special storage segments report API names.
		{name: "service", key: "/registry/services/specs/default/kubernetes", want: Key{Resource: "services", Namespace: "default", Name: "kubernetes"}},
		{name: "endpoints", key: "/registry/services/endpoints/ns/svc", want: Key{Resource: "endpoints", Namespace: "ns", Name: "svc"}},
		{name: "node", key: "/registry/minions/node-1", want: Key{Resource: "nodes", Name: "node-1"}},
		{name: "replicationcontroller", key: "/registry/controllers/ns/rc", want: Key{Resource: "replicationcontrollers", Namespace: "ns", Name: "rc"}},
		{name: "ingress", key: "/registry/ingress/ns/ing", want: Key{Resource: "ingresses", Namespace: "ns", Name: "ing"}},
		// Grouped.
		{name: "custom namespaced", key: "/registry/cr.bar.com/foos/ns/n", want: Key{Group: "cr.bar.com", Resource: "foos", Namespace: "ns", Name: "n"}},
		{name: "custom cluster", key: "/registry/custom.fancy.com/pants/n", want: Key{Group: "custom.fancy.com", Resource: "pants", Name: "n"}},
		{name: "gateway", key: "/registry/gateway.networking.k8s.io/httproutes/ns/route", want: Key{Group: "gateway.networking.k8s.io", Resource: "httproutes", Namespace: "ns", Name: "route"}},
		{name: "gatewayclass", key: "/registry/gateway.networking.k8s.io/gatewayclasses/istio", want: Key{Group: "gateway.networking.k8s.io", Resource: "gatewayclasses", Name: "istio"}},
		{name: "crd", key: "/registry/apiextensions.k8s.io/customresourcedefinitions/foos.cr.bar.com", want: Key{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Name: "foos.cr.bar.com"}},
		{name: "apiservice", key: "/registry/apiregistration.k8s.io/apiservices/v1.apps", want: Key{Group: "apiregistration.k8s.io", Resource: "apiservices", Name: "v1.apps"}},
		// Internal.
		{name: "health", key: "/registry/health", want: Key{Resource: "health", Internal: true}},
		{name: "masterlease", key: "/registry/masterleases/10.0.0.1", want: Key{Resource: "masterleases", Name: "10.0.0.1", Internal: true}},
		{name: "peerserverlease", key: "/registry/peerserverleases/id-1", want: Key{Resource: "peerserverleases", Name: "id-1", Internal: true}},
		{name: "range", key: "/registry/ranges/serviceips", want: Key{Resource: "ranges", Name: "serviceips", Internal: true}},
		// Prefixes.
		{name: "custom prefix", prefix: "/k8s/cluster-a", key: "/k8s/cluster-a/pods/ns/n", want: Key{Resource: "pods", Namespace: "ns", Name: "n"}},
		{name: "prefix trailing slash", prefix: "/registry/", key: "/registry/pods/ns/n", want: Key{Resource: "pods", Namespace: "ns", Name: "n"}},
		{name: "root prefix", prefix: "/", key: "/pods/ns/n", want: Key{Resource: "pods", Namespace: "ns", Name: "n"}},
		{name: "empty prefix", emptyPrefix: true, key: "/pods/ns/n", want: Key{Resource: "pods", Namespace: "ns", Name: "n"}},
		{name: "default prefix key under custom", prefix: "/k8s", key: "/registry/pods/ns/n", wantErr: ErrOutsidePrefix},
		// Outside the prefix.
		{name: "empty", key: "", wantErr: ErrOutsidePrefix},
		{name: "compact_rev_key", key: "compact_rev_key", wantErr: ErrOutsidePrefix},
		{name: "etcdsync checkpoint", key: "/etcdsync/checkpoint/X", wantErr: ErrOutsidePrefix},
		{name: "prefix lookalike", key: "/registryx/pods/ns/n", wantErr: ErrOutsidePrefix},
		{name: "no leading slash", key: "registry/pods/ns/n", wantErr: ErrOutsidePrefix},
		{name: "root prefix no slash", prefix: "/", key: "pods/ns/n", wantErr: ErrOutsidePrefix},
		// Malformed.
		{name: "prefix itself", key: "/registry", wantErr: ErrMalformed},
		{name: "prefix slash", key: "/registry/", wantErr: ErrMalformed},
		{name: "double slash", key: "/registry//x", wantErr: ErrMalformed},
		{name: "resource only", key: "/registry/pods", wantErr: ErrMalformed},
		{name: "resource slash", key: "/registry/pods/", wantErr: ErrMalformed},
		{name: "trailing slash", key: "/registry/pods/ns/n/", wantErr: ErrMalformed},
		{name: "namespace trailing slash", key: "/registry/pods/ns/", wantErr: ErrMalformed},
		{name: "empty namespace", key: "/registry/pods//n", wantErr: ErrMalformed},
		{name: "too many segments", key: "/registry/pods/a/b/c", wantErr: ErrMalformed},
		{name: "non-UTF-8 name", key: "/registry/pods/ns/\xff\xfe", wantErr: ErrMalformed},
		{name: "non-UTF-8 resource", key: "/registry/\xc3/ns/n", wantErr: ErrMalformed},
		{name: "group only", key: "/registry/cr.bar.com", wantErr: ErrMalformed},
		{name: "group slash", key: "/registry/cr.bar.com/", wantErr: ErrMalformed},
		{name: "group resource only", key: "/registry/cr.bar.com/foos", wantErr: ErrMalformed},
		{name: "group too many", key: "/registry/cr.bar.com/foos/a/b/c", wantErr: ErrMalformed},
		// An aggregated API server with --etcd-prefix "/registry/<group>"
		// stores "<group>/<resource>" under it: a resource never has a dot.
		{name: "aggregated namespaced", key: "/registry/wardle.example.com/wardle.example.com/flunders/ns/n", wantErr: ErrMalformed},
		{name: "aggregated cluster-scoped", key: "/registry/wardle.example.com/wardle.example.com/fischers/n", wantErr: ErrMalformed},
		{name: "dotted resource", key: "/registry/cr.bar.com/foos.v1/n", wantErr: ErrMalformed},
		{name: "services alone", key: "/registry/services", wantErr: ErrMalformed},
		{name: "services unknown", key: "/registry/services/other/ns/n", wantErr: ErrMalformed},
		{name: "services specs no name", key: "/registry/services/specs", wantErr: ErrMalformed},
		{name: "masterleases no name", key: "/registry/masterleases", wantErr: ErrMalformed},
		{name: "health with slash", key: "/registry/health/", wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := tt.prefix
			if prefix == "" && !tt.emptyPrefix {
				prefix = "/registry"
			}
			got, err := Parse(prefix, []byte(tt.key))
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("Parse(%q, %q) error = %v, want %v", prefix, tt.key, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Parse(%q, %q) = %+v, want %+v", prefix, tt.key, got, tt.want)
			}
		})
	}
}

func TestParseErrorMessage(t *testing.T) {
	_, err := Parse("/registry", []byte("/registry//x"))
	want := `parse key "/registry//x": malformed key: empty path segment`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	_, err = Parse("/registry", []byte("compact_rev_key"))
	want = `parse key "compact_rev_key": key outside prefix "/registry/"`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

// FuzzParse compares Parse with oracleParse, an independent implementation
// of the key grammar (oracle_test.go): same parts for a key that parses, the
// same class of error for one that does not.
func FuzzParse(f *testing.F) {
	for _, k := range []string{
		"", "/registry", "/registry/", "/registry//x", "/registry/pods/ns/n", "/registry/pods/ns/n/",
		"/registry/services/specs/default/kubernetes", "/registry/services/endpoints/a/b",
		"/registry/minions/n", "/registry/cr.bar.com/foos/ns/n", "/registry/custom.fancy.com/pants/n",
		"/registry/health", "/registry/masterleases/1.2.3.4", "compact_rev_key", "/etcdsync/checkpoint/X",
		"/registry/pods/\xff", "/registry/a/b/c/d", "/registry/.", "/registry/./x/y",
		"/registry/cr.bar.com//n", "/registry/cr.bar.com//ns/n", "/registry/services//ns/n",
		"/registry/health/x", "/registry/controllers/ns/rc", "/registry/ingress/i",
		"/registry/wardle.example.com/wardle.example.com/fischers/n", "/registry/a.b/c.d/n", "/registry/a.b/c/d.e",
	} {
		f.Add("/registry", []byte(k))
	}
	f.Add("/", []byte("/pods/ns/n"))
	f.Add("", []byte("/"))
	f.Add("/k8s/a/", []byte("/k8s/a/services/specs/n"))
	f.Fuzz(func(t *testing.T, prefix string, key []byte) {
		got, err := Parse(prefix, key)
		want, outcome := oracleParse(prefix, key)
		switch outcome {
		case oracleOK:
			if err != nil || got != want {
				t.Fatalf("Parse(%q, %q) = %+v, %v; oracle says %+v", prefix, key, got, err, want)
			}
		case oracleOutside:
			if !errors.Is(err, ErrOutsidePrefix) || got != (Key{}) {
				t.Fatalf("Parse(%q, %q) = %+v, %v; oracle says outside the prefix", prefix, key, got, err)
			}
		case oracleMalformed:
			if !errors.Is(err, ErrMalformed) || got != (Key{}) {
				t.Fatalf("Parse(%q, %q) = %+v, %v; oracle says malformed", prefix, key, got, err)
			}
		}
	})
}
