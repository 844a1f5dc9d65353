package applier_test

import (
	"testing"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
)

// TestScopeFingerprint checks which changes make two scope records differ.
func TestScopeFingerprint(t *testing.T) {
	base := keyspace.Config{ExcludeNamespaces: []string{"a", "b"}}
	rec := func(cfg keyspace.Config, prefix string, known bool) applier.ScopeRecord {
		t.Helper()
		r, err := applier.NewScopeRecord(cfg, prefix, known)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	want := rec(base, "", true)
	tests := []struct {
		name string
		got  applier.ScopeRecord
		same bool
	}{
		{"same options", rec(keyspace.Config{ExcludeNamespaces: []string{"a", "b"}}, "", true), true},
		{"options in another order", rec(keyspace.Config{ExcludeNamespaces: []string{"b", "a"}}, "", true), true},
		{"explicit defaults", rec(keyspace.Config{Mode: keyspace.ModeKubernetes, Prefix: "/registry", ExcludeNamespaces: []string{"a", "b"}}, "", true), true},
		{"another namespace", rec(keyspace.Config{ExcludeNamespaces: []string{"a", "c"}}, "", true), false},
		{"one namespace less", rec(keyspace.Config{ExcludeNamespaces: []string{"a"}}, "", true), false},
		{"an excluded resource", rec(keyspace.Config{ExcludeNamespaces: []string{"a", "b"}, ExcludeResources: []string{"pods"}}, "", true), false},
		{"another etcd prefix", rec(keyspace.Config{Prefix: "/kube", ExcludeNamespaces: []string{"a", "b"}}, "", true), false},
		{"raw", rec(keyspace.Config{Mode: keyspace.ModeRaw}, "", true), false},
		{"another publisher prefix", rec(base, "/registry/", true), false},
		{"publisher prefix unknown", rec(base, "", false), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if same := tt.got.Fingerprint == want.Fingerprint; same != tt.same {
				t.Errorf("fingerprint %s vs %s: same = %v, want %v\nlines %q\nwant  %q", tt.got.Fingerprint, want.Fingerprint, same, tt.same, tt.got.Lines(), want.Lines())
			}
		})
	}
	// A rule this version's preset does not make (another version's) shows
	// in the lines, hence in the fingerprint.
	other := want
	other.Rules += "exclude every key under \"/registry/newthing/\" (preset kubernetes)\n"
	if l := other.Lines(); len(l) != len(want.Lines())+1 {
		t.Errorf("lines of a record with one more rule: %q", l)
	}
	if want.PresetVersion != rec(keyspace.Config{}, "/x/", false).PresetVersion {
		t.Errorf("preset version depends on options beyond mode and prefix")
	}
	if want.PresetVersion == rec(keyspace.Config{Prefix: "/kube"}, "", true).PresetVersion {
		t.Errorf("preset version does not depend on the etcd prefix")
	}
}

// TestPresetVersion pins the kubernetes preset's version, which the
// applier records with its scope: a preset that excludes other keys must
// have another version, so that an auditor of one etcdsync version reports
// the difference with an applier of another (and refuses to repair)
// rather than compare other keys silently. Change the value with the
// preset, never alone.
func TestPresetVersion(t *testing.T) {
	rec, err := applier.NewScopeRecord(keyspace.Config{}, "", true)
	if err != nil {
		t.Fatal(err)
	}
	// 1f040c731394fcea: before resourceslices, certificatesigningrequests,
	// podcertificaterequests, the kube-apiserver serving ClusterTrustBundles
	// and only the default ServiceCIDR.
	const want = "0fdde943da2aabc1"
	if rec.PresetVersion != want {
		t.Errorf("preset version %s, want %s: a changed preset must change the pinned version (and say what changed)", rec.PresetVersion, want)
	}
}
