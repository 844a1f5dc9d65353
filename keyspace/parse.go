package keyspace

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrOutsidePrefix is returned (wrapped) by Parse for a key that is not under
// the Kubernetes etcd prefix, such as etcd's root key "compact_rev_key" or
// another application's keys.
var ErrOutsidePrefix = errors.New("key outside prefix")

// ErrMalformed is returned (wrapped, with the reason) by Parse for a key under
// the prefix that does not have the shape of a Kubernetes storage key: an
// empty or extra path segment, a missing name, a resource with a dot after a
// group, or bytes that are not UTF-8.
var ErrMalformed = errors.New("malformed key")

// Key is a Kubernetes etcd key split into its parts.
//
// Resource is the API resource name, not the storage segment: "minions" keys
// report "nodes", "controllers" report "replicationcontrollers", "ingress"
// reports "ingresses", "services/specs" reports "services" and
// "services/endpoints" reports "endpoints". Group is set only when the key
// carries it (custom resources, CRDs, APIServices and other aggregated
// groups, which always contain a dot); built-in resources report an empty
// Group because their keys do not name one and cohabiting groups share one
// key (apps and extensions deployments, core and events.k8s.io events).
// Namespace is empty for cluster-scoped objects, including Namespace objects
// themselves (whose Name is the namespace).
type Key struct {
	Group, Resource, Namespace, Name string
	// Internal marks keys the apiserver keeps for itself that are not API
	// objects: masterleases, peerserverleases, ranges and health.
	Internal bool
}

// Parse splits a Kubernetes etcd key stored under prefix (kube-apiserver's
// --etcd-prefix, e.g. "/registry"; a trailing "/" is ignored, and "" or "/"
// mean keys directly under the root, like "/pods/ns/n") into a Key.
//
// It returns an error wrapping ErrOutsidePrefix if the key is not under
// prefix+"/", and an error wrapping ErrMalformed if the key is the prefix
// itself or does not parse. Parse never panics, whatever the bytes.
func Parse(prefix string, key []byte) (Key, error) {
	p, perr := parseKey(prefix, key)
	switch perr {
	case parseOK:
	case parseOutside:
		return Key{}, fmt.Errorf("parse key %q: %w %q", key, ErrOutsidePrefix, normPrefix(prefix)+"/")
	default:
		return Key{}, fmt.Errorf("parse key %q: %w: %s", key, ErrMalformed, perr)
	}
	return Key{
		Group:     string(p.group),
		Resource:  string(p.resource),
		Namespace: string(p.namespace),
		Name:      string(p.name),
		Internal:  p.internal,
	}, nil
}

// parsed is the allocation-free form of Key used on the hot path: every
// slice aliases the key, or a package-level name for mapped resources.
type parsed struct {
	group     []byte
	resource  []byte // API resource name
	storage   []byte // storage prefix as it appears in the key: "minions", "services/specs", "cr.bar.com/foos"
	namespace []byte
	name      []byte
	internal  bool
}

// parseError says why a key did not parse without allocating an error.
type parseError uint8

const (
	parseOK parseError = iota
	parseOutside
	parseIsPrefix
	parseNoResource
	parseNoName
	parseEmptySegment
	parseTooManySegments
	parseInvalidUTF8
	parseUnknownServices
	parseDottedResource
)

func (e parseError) String() string {
	switch e {
	case parseOK:
		return "ok"
	case parseOutside:
		return "outside prefix"
	case parseIsPrefix:
		return "key is the prefix itself"
	case parseNoResource:
		return "no resource after the prefix"
	case parseNoName:
		return "no object name"
	case parseEmptySegment:
		return "empty path segment"
	case parseTooManySegments:
		return "more than namespace and name after the resource"
	case parseInvalidUTF8:
		return "not valid UTF-8"
	case parseUnknownServices:
		return `"services/" not followed by "specs/" or "endpoints/"`
	case parseDottedResource:
		return `a "." in the resource after the group (another apiserver's --etcd-prefix?)`
	}
	return "unknown parse error"
}

// API resource names reported for storage segments that differ from them.
var (
	resNodes                  = []byte("nodes")
	resReplicationControllers = []byte("replicationcontrollers")
	resIngresses              = []byte("ingresses")
	resServices               = []byte("services")
	resEndpoints              = []byte("endpoints")
)

// normPrefix drops one trailing "/" so that "/registry/" and "/registry"
// name the same prefix, and "/" means the root.
func normPrefix(prefix string) string {
	return strings.TrimSuffix(prefix, "/")
}

// isInternal reports whether the first segment after the prefix is one of
// the apiserver's non-object keys.
func isInternal(seg []byte) bool {
	switch string(seg) {
	case "masterleases", "peerserverleases", "ranges", "health":
		return true
	}
	return false
}

// parseKey is Parse without allocation. See Parse for the rules.
func parseKey(prefix string, key []byte) (parsed, parseError) {
	var out parsed
	pre := normPrefix(prefix)
	if len(key) <= len(pre) || string(key[:len(pre)]) != pre || key[len(pre)] != '/' {
		if pre != "" && string(key) == pre {
			return out, parseIsPrefix
		}
		return out, parseOutside
	}
	rest := key[len(pre)+1:]
	if len(rest) == 0 {
		return out, parseNoResource
	}
	if !utf8.Valid(rest) {
		return out, parseInvalidUTF8
	}

	// Step 1: the storage prefix, one or two segments.
	seg0, tail, hasTail := bytes.Cut(rest, slash)
	if len(seg0) == 0 {
		return out, parseEmptySegment
	}
	switch {
	case isInternal(seg0):
		out.internal = true
		out.resource, out.storage = seg0, seg0
		if !hasTail && string(seg0) == "health" {
			return out, parseOK // the health probe key has no name
		}
	case string(seg0) == "services":
		if !hasTail {
			return out, parseNoName
		}
		var seg1 []byte
		seg1, tail, hasTail = bytes.Cut(tail, slash)
		switch string(seg1) {
		case "specs":
			out.resource = resServices
		case "endpoints":
			out.resource = resEndpoints
		default:
			return out, parseUnknownServices
		}
		out.storage = rest[:len(seg0)+1+len(seg1)]
	case bytes.IndexByte(seg0, '.') >= 0:
		// Groups always contain a dot; built-in prefixes never do.
		if !hasTail {
			return out, parseNoResource
		}
		var seg1 []byte
		seg1, tail, hasTail = bytes.Cut(tail, slash)
		if len(seg1) == 0 {
			return out, parseEmptySegment
		}
		if bytes.IndexByte(seg1, '.') >= 0 {
			// Resources never contain a dot (CRD plurals are DNS-1035
			// labels): this is an aggregated API server's own
			// --etcd-prefix "<prefix>/<group>", holding
			// "<group>/<resource>/...", not a resource of group seg0.
			return out, parseDottedResource
		}
		out.group, out.resource = seg0, seg1
		out.storage = rest[:len(seg0)+1+len(seg1)]
	default:
		out.storage = seg0
		switch string(seg0) {
		case "minions":
			out.resource = resNodes
		case "controllers":
			out.resource = resReplicationControllers
		case "ingress":
			out.resource = resIngresses
		default:
			out.resource = seg0
		}
	}

	// Step 2: [namespace/]name.
	if !hasTail {
		return out, parseNoName
	}
	first, second, namespaced := bytes.Cut(tail, slash)
	if len(first) == 0 {
		return out, parseEmptySegment
	}
	if !namespaced {
		out.name = first
		return out, parseOK
	}
	if len(second) == 0 {
		return out, parseEmptySegment
	}
	if bytes.IndexByte(second, '/') >= 0 {
		return out, parseTooManySegments
	}
	out.namespace, out.name = first, second
	return out, parseOK
}

var slash = []byte("/")
