// Package keyspace decides which etcd keys etcdsync replicates from the
// primary to the standby (and which keys the auditor compares). The
// publisher, applier and auditor all build the same Rules from the same
// Config, so a key is either in scope everywhere or nowhere.
//
// # Modes
//
// In ModeKubernetes (the default) keys are Kubernetes storage keys under a
// prefix (kube-apiserver's --etcd-prefix, default "/registry"):
//
//	<prefix>/<resource>/[<namespace>/]<name>           built-in resources
//	<prefix>/<group>/<resource>/[<namespace>/]<name>   CRDs, custom resources, APIServices, ...
//
// A group always contains a dot and a built-in storage segment never does,
// so a dot in the first segment means "grouped"; a resource never contains
// one (an aggregated API server with its own --etcd-prefix
// "<prefix>/<group>" stores "<prefix>/<group>/<group>/<resource>/...",
// which does not parse). Names never contain "/", so two segments after the
// resource mean namespaced and one means cluster-scoped. Built-in storage
// segments that differ from the resource name are "minions" (nodes), "controllers" (replicationcontrollers),
// "ingress" (ingresses), "services/specs" (services) and
// "services/endpoints" (endpoints); Parse reports the API resource name and
// ExcludeResources accepts either. Parse never reports a group for built-in
// resources: their keys do not carry one (and cohabiting groups, such as
// core and events.k8s.io events, share a key).
//
// In ModeRaw (plain etcd) keys are not parsed: there is no preset, and only
// OwnPrefix, IncludePrefixes and ExcludePrefixes apply. ExcludeNamespaces
// and ExcludeResources are configuration errors in raw mode.
//
// # Decision order
//
// The first rule that matches decides; Explain names it:
//
//  1. OwnPrefix ("/etcdsync/"): etcdsync's own keys, excluded in every mode;
//  2. IncludePrefixes: if any are set, a key under none of them is excluded;
//  3. ExcludePrefixes;
//  4. the kubernetes preset (kubernetes mode): compact_rev_key, every key
//     outside the prefix, <prefix>/health, masterleases, peerserverleases,
//     ranges, ipaddresses, minions (nodes), csinodes, volumeattachments,
//     resourceslices, certificatesigningrequests, podcertificaterequests
//     and events (each segment and everything under it), the
//     default/kubernetes Service, Endpoints and EndpointSlice, the default
//     ServiceCIDR (servicecidrs/kubernetes; other ServiceCIDRs are user
//     data and replicated), the kube-apiserver serving ClusterTrustBundles
//     (clustertrustbundles/kubernetes.io:kube-apiserver-serving:*), and
//     every ConfigMap named kube-root-ca.crt;
//  5. ExcludeResources, matched against the parsed key;
//  6. excluded namespaces: the preset's kube-system, kube-public and
//     kube-node-lease, OwnNamespace (the namespace etcdsync runs in, from
//     POD_NAMESPACE: both sites run etcdsync there) plus ExcludeNamespaces. A namespace covers every
//     namespaced key in it and its own Namespace object
//     (<prefix>/namespaces/<ns>). Cluster-scoped objects that merely refer
//     to a namespace (webhooks, APIServices, PVs) cannot be told from the key
//     and stay in scope.
//
// Everything else is in scope.
//
// # Keys that do not parse
//
// A key under the prefix that does not have the shape above (an empty or
// extra segment, a missing name, a non-UTF-8 byte, the prefix itself) is in
// scope unless a prefix rule (1 to 4, which compare bytes) excludes it. Such
// keys may be leftovers of removed APIs or another writer's data (an
// aggregated API server storing under its own --etcd-prefix inside the
// prefix), and a disaster-recovery copy must not silently lose data; the
// auditor still compares them. Resource, namespace and ConfigMap-name rules
// never match them, so Rules.Check reports them as unparsed: the applier
// counts them (etcdsync_applier_unparsed_keys_total) and the audit report
// says how many it compared, for an operator to see them rather than find
// an excluded namespace's objects among them replicated.
//
// # Invariants
//
//   - Rules are immutable after New and safe for concurrent use.
//   - Allowed and Check do not allocate and never panic on any bytes;
//     Allowed(k) always equals the first result of Explain(k) and of
//     Check(k).
//   - Keys are compared as bytes; prefixes are plain byte prefixes (include
//     the trailing "/" to mean a directory).
package keyspace
