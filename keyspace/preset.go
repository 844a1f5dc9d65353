package keyspace

import "fmt"

// presetName names the kubernetes preset in reasons and rule listings.
const presetName = "preset kubernetes"

// presetNamespaces are excluded in kubernetes mode: cluster-specific
// configuration, leader election and apiserver identity leases
// (kube-system), cluster-info and bootstrap data (kube-public), and node
// heartbeats (kube-node-lease).
var presetNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// presetSubtrees are storage segments excluded with everything under them
// (the key "<prefix>/<segment>" itself and "<prefix>/<segment>/..."), with
// why. Matched on the bytes, so malformed keys under them are excluded too.
var presetSubtrees = []struct{ segment, why string }{
	{"health", "apiserver health probe key"},
	{"masterleases", "the primary's apiserver IPs: replicated with their lease's remaining TTL and renewed by each primary write, they would put the primary's apiservers into the standby's default/kubernetes Endpoints"},
	{"peerserverleases", "the primary's apiserver peer addresses: replicated with their lease's remaining TTL and renewed by each primary write, the standby's apiservers would proxy requests to the primary's"},
	{"ranges", "per-cluster service IP and node port allocator state"},
	{"ipaddresses", "per-cluster service IP allocator state"},
	{"minions", "nodes belong to the cluster that runs them"},
	{"csinodes", "node-bound"},
	{"volumeattachments", "node-bound"},
	{"resourceslices", "node-bound, like csinodes: published by each node's DRA drivers"},
	{"certificatesigningrequests", "node- and CA-bound: the standby would sign the primary's pending requests with its own CA"},
	{"podcertificaterequests", "node- and CA-bound: the standby would sign the primary's pending requests with its own CA"},
	{"events", "ephemeral, and about the primary's own objects and nodes"},
}

// presetKeys are single keys (relative to the prefix) that point at the
// primary's own apiservers; the standby's reconciler owns its copies.
var presetKeys = []struct{ key, why string }{
	{"services/specs/default/kubernetes", "the default/kubernetes Service"},
	{"services/endpoints/default/kubernetes", "the default/kubernetes Endpoints"},
	{"endpointslices/default/kubernetes", "the default/kubernetes EndpointSlice"},
	{"servicecidrs/kubernetes", "the cluster's default ServiceCIDR, from its own --service-cluster-ip-range; ServiceCIDRs users create are replicated"},
}

// presetNamePrefixes are key prefixes (relative to the prefix) that end
// inside an object's name: every object whose name starts so is excluded,
// and nothing else of its resource.
var presetNamePrefixes = []struct{ prefix, why string }{
	{"clustertrustbundles/kubernetes.io:kube-apiserver-serving:",
		"each cluster's kube-apiserver serving CA bundle: the publisher on each side deletes the other's, and a re-seed would delete the standby's own"},
}

// compactRevKey is etcd-root key kube-apiserver uses to coordinate
// compaction; it is outside the prefix and must never be copied.
const compactRevKey = "compact_rev_key"

// rootCAConfigMap is the ConfigMap the standby's root-CA publisher writes
// into every namespace with its own CA.
const rootCAConfigMap = "kube-root-ca.crt"

// presetKind says how a preset rule matches.
type presetKind uint8

const (
	presetExact     presetKind = iota // key equals match
	presetOutside                     // key is outside the prefix
	presetSubtree                     // key equals match or starts with match+"/"
	presetKeyPrefix                   // key starts with match (a name prefix)
	presetConfigMap                   // parsed key is a ConfigMap named match, any namespace
)

// presetRule is one rule of the kubernetes preset, with its reason and its
// line for Rules.String precomputed so that matching never allocates.
type presetRule struct {
	kind   presetKind
	match  []byte
	sub    []byte // match + "/" for presetSubtree
	reason string // for Explain
	line   string // for String
}

// buildPreset returns the kubernetes preset for the normalized prefix, in
// the order the rules are checked.
func buildPreset(prefix string) []presetRule {
	inside := prefix + "/"
	rules := []presetRule{
		{
			kind:   presetExact,
			match:  []byte(compactRevKey),
			reason: fmt.Sprintf("key %q excluded (%s: etcd compaction clock)", compactRevKey, presetName),
			line:   fmt.Sprintf("exclude key %q (%s: etcd compaction clock)", compactRevKey, presetName),
		},
		{
			kind:   presetOutside,
			reason: fmt.Sprintf("outside prefix %q (%s)", inside, presetName),
			line:   fmt.Sprintf("exclude every key outside prefix %q (%s)", inside, presetName),
		},
	}
	for _, s := range presetSubtrees {
		m := prefix + "/" + s.segment
		rules = append(rules, presetRule{
			kind:   presetSubtree,
			match:  []byte(m),
			sub:    []byte(m + "/"),
			reason: fmt.Sprintf("%q and keys under it excluded (%s: %s)", m, presetName, s.why),
			line:   fmt.Sprintf("exclude %q and every key under it (%s: %s)", m, presetName, s.why),
		})
	}
	for _, k := range presetKeys {
		m := prefix + "/" + k.key
		rules = append(rules, presetRule{
			kind:   presetExact,
			match:  []byte(m),
			reason: fmt.Sprintf("key %q excluded (%s: %s)", m, presetName, k.why),
			line:   fmt.Sprintf("exclude key %q (%s: %s)", m, presetName, k.why),
		})
	}
	for _, n := range presetNamePrefixes {
		m := prefix + "/" + n.prefix
		rules = append(rules, presetRule{
			kind:   presetKeyPrefix,
			match:  []byte(m),
			reason: fmt.Sprintf("key starting with %q excluded (%s: %s)", m, presetName, n.why),
			line:   fmt.Sprintf("exclude every key starting with %q (%s: %s)", m, presetName, n.why),
		})
	}
	rules = append(rules, presetRule{
		kind:   presetConfigMap,
		match:  []byte(rootCAConfigMap),
		reason: fmt.Sprintf("configmap %q excluded (%s: the standby publishes its own root CA)", rootCAConfigMap, presetName),
		line:   fmt.Sprintf("exclude every ConfigMap named %q, in every namespace (%s: the standby publishes its own root CA)", rootCAConfigMap, presetName),
	})
	return rules
}
