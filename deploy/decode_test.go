package deploy

import (
	"strings"
	"testing"
)

// TestDecodeStrictIsCaseSensitive: the strict decoding every manifest and
// rendered object goes through refuses a field in the wrong case, as the
// API server does (it would drop `Replicas` or `ipblock` with a warning,
// leaving the default or an empty peer), and accepts the same document
// correctly cased.
func TestDecodeStrictIsCaseSensitive(t *testing.T) {
	for _, tc := range []struct{ name, doc, field string }{
		{"Deployment spec", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 2}\n", "replicas"},
		{"Service metadata", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", "name"},
		{"NetworkPolicy peer", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}}]}]}\n", "ipBlock"},
		{"PrometheusRule rule", "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: x}\nspec: {groups: [{name: g, rules: [{alert: A, expr: up == 0}]}]}\n", "expr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeObjectsWith([]byte(tc.doc), chartObject); err != nil {
				t.Fatalf("correctly cased: %v", err)
			}
			for _, wrong := range []string{strings.ToUpper(tc.field[:1]) + tc.field[1:], strings.ToLower(tc.field)} {
				if wrong == tc.field {
					continue
				}
				doc := strings.Replace(tc.doc, tc.field+":", wrong+":", 1)
				if _, err := decodeObjectsWith([]byte(doc), chartObject); err == nil {
					t.Errorf("%q decodes as %q: strict decoding must be case-sensitive", wrong, tc.field)
				}
			}
		})
	}
	// Values decoded into API types (NetworkPolicy peers) likewise.
	var peers []struct {
		IPBlock *struct {
			CIDR string `json:"cidr"`
		} `json:"ipBlock"`
	}
	if err := decodeValue([]any{map[string]any{"ipblock": map[string]any{"cidr": "10.0.0.0/8"}}}, &peers); err == nil {
		t.Errorf("decodeValue takes ipblock for ipBlock: %+v", peers)
	}
}
