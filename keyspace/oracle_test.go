package keyspace

import (
	"strings"
	"unicode/utf8"
)

// This file is a second implementation of the key grammar and of the scope
// rules, written from DESIGN.md ("Scope rules") and doc.go only, for the
// fuzzers to compare against. It is meant to be obviously right rather than
// fast: it splits strings, allocates freely, and shares no helper, table or
// constant with parse.go, preset.go or rules.go.

// oracleOutcome is how the oracle classifies a key.
type oracleOutcome int

const (
	oracleOK        oracleOutcome = iota // the key parses
	oracleOutside                        // not under prefix + "/"
	oracleMalformed                      // under the prefix, but not a Kubernetes storage key
)

// oracleParse splits key, stored under prefix, into its parts.
//
// The grammar, after the prefix and one "/":
//
//	health                                         the apiserver's health key
//	<internal>/[<namespace>/]<name>                masterleases, peerserverleases, ranges, health
//	services/specs/[<namespace>/]<name>            resource "services"
//	services/endpoints/[<namespace>/]<name>        resource "endpoints"
//	<group with a dot>/<resource without a dot>/[<namespace>/]<name>
//	<segment>/[<namespace>/]<name>                 resource named after the segment,
//	                                               except minions, controllers and ingress
//
// Every segment is non-empty and the part after the prefix is UTF-8.
func oracleParse(prefix string, key []byte) (Key, oracleOutcome) {
	k := string(key)
	root := prefix
	if strings.HasSuffix(root, "/") {
		root = root[:len(root)-1]
	}
	if root != "" && k == root {
		return Key{}, oracleMalformed // the prefix itself
	}
	if !strings.HasPrefix(k, root+"/") {
		return Key{}, oracleOutside
	}
	rest := k[len(root)+1:]
	if !utf8.ValidString(rest) {
		return Key{}, oracleMalformed
	}
	segs := strings.Split(rest, "/")
	for _, s := range segs {
		if s == "" {
			return Key{}, oracleMalformed
		}
	}

	var out Key
	var objectPath []string // [namespace, ]name
	first := segs[0]
	switch {
	case first == "health" && len(segs) == 1:
		return Key{Resource: "health", Internal: true}, oracleOK
	case first == "masterleases" || first == "peerserverleases" || first == "ranges" || first == "health":
		out.Resource, out.Internal = first, true
		objectPath = segs[1:]
	case first == "services":
		if len(segs) < 2 {
			return Key{}, oracleMalformed
		}
		switch segs[1] {
		case "specs":
			out.Resource = "services"
		case "endpoints":
			out.Resource = "endpoints"
		default:
			return Key{}, oracleMalformed
		}
		objectPath = segs[2:]
	case strings.Contains(first, "."):
		if len(segs) < 2 || strings.Contains(segs[1], ".") {
			return Key{}, oracleMalformed
		}
		out.Group, out.Resource = first, segs[1]
		objectPath = segs[2:]
	default:
		out.Resource = oracleAPIName(first)
		objectPath = segs[1:]
	}
	switch len(objectPath) {
	case 1:
		out.Name = objectPath[0]
	case 2:
		out.Namespace, out.Name = objectPath[0], objectPath[1]
	default:
		return Key{}, oracleMalformed // no name, or more than namespace and name
	}
	return out, oracleOK
}

// oracleAPIName maps a built-in storage name to the API resource name;
// any other name is returned as is.
func oracleAPIName(storage string) string {
	switch storage {
	case "minions":
		return "nodes"
	case "controllers":
		return "replicationcontrollers"
	case "ingress":
		return "ingresses"
	case "services/specs":
		return "services"
	case "services/endpoints":
		return "endpoints"
	}
	return storage
}

// oracleAllowed decides whether key is in scope under cfg, following the
// decision order of doc.go. cfg must be valid.
func oracleAllowed(cfg Config, key []byte) bool {
	k := string(key)

	// 1. etcdsync's own keys, every mode.
	if strings.HasPrefix(k, "/etcdsync/") {
		return false
	}
	// 2. Include prefixes: a key under none of them is out.
	if len(cfg.IncludePrefixes) > 0 {
		under := false
		for _, p := range cfg.IncludePrefixes {
			if strings.HasPrefix(k, p) {
				under = true
			}
		}
		if !under {
			return false
		}
	}
	// 3. Exclude prefixes.
	for _, p := range cfg.ExcludePrefixes {
		if strings.HasPrefix(k, p) {
			return false
		}
	}
	if cfg.Mode == "raw" {
		return true
	}

	// 4. The kubernetes preset.
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "/registry"
	}
	root := strings.TrimSuffix(prefix, "/")
	if k == "compact_rev_key" {
		return false
	}
	parsedKey, outcome := oracleParse(prefix, key)
	if outcome == oracleOutside {
		return false
	}
	if strings.HasPrefix(k, root+"/") {
		// The first segment decides, whether or not the rest parses.
		firstSegment := strings.Split(k[len(root)+1:], "/")[0]
		switch firstSegment {
		case "health", "masterleases", "peerserverleases", "ranges", "ipaddresses",
			"minions", "csinodes", "volumeattachments", "resourceslices",
			"certificatesigningrequests", "podcertificaterequests", "events":
			return false
		}
	}
	switch k {
	case root + "/services/specs/default/kubernetes",
		root + "/services/endpoints/default/kubernetes",
		root + "/endpointslices/default/kubernetes",
		root + "/servicecidrs/kubernetes":
		return false
	}
	// The kube-apiserver serving ClusterTrustBundles: names start with the
	// signer name, "/" written ":", then ":".
	if strings.HasPrefix(k, root+"/clustertrustbundles/kubernetes.io:kube-apiserver-serving:") {
		return false
	}
	if outcome == oracleMalformed {
		return true // only prefix rules apply to keys that do not parse
	}
	if parsedKey.Group == "" && parsedKey.Resource == "configmaps" &&
		parsedKey.Namespace != "" && parsedKey.Name == "kube-root-ca.crt" {
		return false
	}

	// 5. Excluded resources.
	for _, entry := range cfg.ExcludeResources {
		if parsedKey.Group != "" {
			if entry == parsedKey.Group+"/"+parsedKey.Resource {
				return false
			}
			continue
		}
		if oracleAPIName(entry) == parsedKey.Resource {
			return false
		}
	}

	// 6. Excluded namespaces; a Namespace object belongs to itself.
	namespace := parsedKey.Namespace
	if parsedKey.Group == "" && parsedKey.Resource == "namespaces" && parsedKey.Namespace == "" {
		namespace = parsedKey.Name
	}
	if namespace != "" {
		excluded := []string{"kube-system", "kube-public", "kube-node-lease"}
		if cfg.OwnNamespace != "" {
			excluded = append(excluded, cfg.OwnNamespace)
		}
		excluded = append(excluded, cfg.ExcludeNamespaces...)
		for _, ns := range excluded {
			if ns == namespace {
				return false
			}
		}
	}
	return true
}

// oracleUnparsed reports whether key, if in scope under cfg, is there
// without parsing as a Kubernetes key: in kubernetes mode, under the
// prefix, and malformed.
func oracleUnparsed(cfg Config, key []byte) bool {
	if cfg.Mode == "raw" {
		return false
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "/registry"
	}
	_, outcome := oracleParse(prefix, key)
	return outcome == oracleMalformed
}
