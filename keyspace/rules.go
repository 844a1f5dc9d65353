package keyspace

import (
	"bytes"
	"fmt"
	"strings"
)

// Rules decides which keys are replicated. Build it with New; it is
// immutable and safe for concurrent use.
type Rules struct {
	mode    string
	prefix  string // normalized: no trailing "/", "" for the root
	include [][]byte
	exclude [][]byte
	preset  []presetRule // nil in raw mode

	// resources maps each lookup name (API name, storage segment or
	// "group/resource") to the configured entry.
	resources     map[string]string
	resourceOrder []string

	// namespaces maps each excluded namespace to its source.
	namespaces     map[string]string
	namespaceOrder []string
}

// Sources of namespace and resource rules, as shown by Explain and String.
const (
	sourceConfig = "config"
	sourceOwn    = "etcdsync's own namespace, from POD_NAMESPACE: both sites run etcdsync there"
)

var ownPrefix = []byte(OwnPrefix)

// New validates cfg (see Config.Validate) and returns its Rules. The Rules
// keep no reference to cfg's slices.
func New(cfg Config) (*Rules, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("keyspace config: %w", err)
	}
	cfg = cfg.withDefaults()
	r := &Rules{mode: cfg.Mode}
	for _, p := range cfg.IncludePrefixes {
		r.include = append(r.include, []byte(p))
	}
	for _, p := range cfg.ExcludePrefixes {
		r.exclude = append(r.exclude, []byte(p))
	}
	if cfg.Mode == ModeRaw {
		return r, nil
	}

	r.prefix = normPrefix(cfg.Prefix)
	r.preset = buildPreset(r.prefix)
	r.resources = make(map[string]string)
	for _, res := range cfg.ExcludeResources {
		if _, dup := r.resources[res]; dup {
			continue
		}
		r.resourceOrder = append(r.resourceOrder, res)
		r.resources[res] = res
		// A built-in storage segment and its API name match each other.
		for storage, api := range storageNames {
			switch res {
			case storage:
				r.resources[api] = res
			case api:
				r.resources[storage] = res
			}
		}
	}
	r.namespaces = make(map[string]string)
	addNamespace := func(ns, source string) {
		if _, dup := r.namespaces[ns]; !dup {
			r.namespaces[ns] = source
			r.namespaceOrder = append(r.namespaceOrder, ns)
		}
	}
	for _, ns := range presetNamespaces {
		addNamespace(ns, presetName)
	}
	if cfg.OwnNamespace != "" {
		addNamespace(cfg.OwnNamespace, sourceOwn)
	}
	for _, ns := range cfg.ExcludeNamespaces {
		addNamespace(ns, sourceConfig)
	}
	return r, nil
}

// storageNames maps built-in storage segments to the API resource names
// Parse reports for them.
var storageNames = map[string]string{
	"minions":            "nodes",
	"controllers":        "replicationcontrollers",
	"ingress":            "ingresses",
	"services/specs":     "services",
	"services/endpoints": "endpoints",
}

// step is the rule that decided a key, in decision order.
type step uint8

const (
	stepIncluded      step = iota // no rule excluded the key
	stepOwn                       // under OwnPrefix
	stepNotIncluded               // not under any include prefix
	stepExcludePrefix             // under an exclude prefix
	stepPreset                    // a kubernetes preset rule
	stepResource                  // an excluded resource
	stepNamespace                 // an excluded namespace
)

// decision is the allocation-free outcome of decide.
type decision struct {
	step   step
	index  int        // include/exclude/preset rule index
	entry  string     // configured resource entry, or namespace source
	ns     []byte     // the excluded namespace (aliases the key)
	unpars parseError // for stepIncluded in kubernetes mode: why the key did not parse, or parseOK
}

// decide applies the rules in order: OwnPrefix, include prefixes, exclude
// prefixes, preset, resources, namespaces. It must not allocate.
func (r *Rules) decide(key []byte) decision {
	if bytes.HasPrefix(key, ownPrefix) {
		return decision{step: stepOwn}
	}
	if len(r.include) > 0 {
		in := false
		for _, p := range r.include {
			if bytes.HasPrefix(key, p) {
				in = true
				break
			}
		}
		if !in {
			return decision{step: stepNotIncluded}
		}
	}
	for i, p := range r.exclude {
		if bytes.HasPrefix(key, p) {
			return decision{step: stepExcludePrefix, index: i}
		}
	}
	if r.mode == ModeRaw {
		return decision{step: stepIncluded}
	}

	p, perr := parseKey(r.prefix, key)
	for i := range r.preset {
		rule := &r.preset[i]
		var hit bool
		switch rule.kind {
		case presetExact:
			hit = bytes.Equal(key, rule.match)
		case presetOutside:
			hit = perr == parseOutside
		case presetSubtree:
			hit = bytes.Equal(key, rule.match) || bytes.HasPrefix(key, rule.sub)
		case presetKeyPrefix:
			hit = bytes.HasPrefix(key, rule.match)
		case presetConfigMap:
			hit = perr == parseOK && len(p.group) == 0 && len(p.namespace) > 0 &&
				string(p.resource) == "configmaps" && bytes.Equal(p.name, rule.match)
		}
		if hit {
			return decision{step: stepPreset, index: i}
		}
	}
	if perr != parseOK {
		// Under the prefix but unparsed: only prefix rules apply.
		return decision{step: stepIncluded, unpars: perr}
	}

	if len(r.resources) > 0 {
		if len(p.group) > 0 {
			if e, ok := r.resources[string(p.storage)]; ok {
				return decision{step: stepResource, entry: e}
			}
		} else if e, ok := r.resources[string(p.resource)]; ok {
			return decision{step: stepResource, entry: e}
		} else if e, ok := r.resources[string(p.storage)]; ok {
			return decision{step: stepResource, entry: e}
		}
	}

	ns := p.namespace
	if len(ns) == 0 && len(p.group) == 0 && string(p.resource) == "namespaces" {
		ns = p.name // a Namespace object belongs to itself
	}
	if len(ns) > 0 {
		if src, ok := r.namespaces[string(ns)]; ok {
			return decision{step: stepNamespace, entry: src, ns: ns}
		}
	}
	return decision{step: stepIncluded}
}

// Allowed reports whether key is in scope, i.e. replicated and audited. It
// is the hot path: it does not allocate and never panics, whatever the bytes.
func (r *Rules) Allowed(key []byte) bool {
	return r.decide(key).step == stepIncluded
}

// Check reports, like Allowed, whether key is in scope, and whether it is
// in scope without parsing as a Kubernetes key (unparsed): a key under the
// prefix that only the prefix rules could decide, to which no resource,
// namespace or ConfigMap rule applies, such as an aggregated API server's
// storage under its own --etcd-prefix inside the prefix, or leftovers of a
// removed API. The applier and the auditor count such keys so that an
// operator sees them. unparsed is false for excluded keys and in raw mode.
// Like Allowed, Check does not allocate and never panics.
func (r *Rules) Check(key []byte) (allowed, unparsed bool) {
	d := r.decide(key)
	if d.step != stepIncluded {
		return false, false
	}
	return true, d.unpars != parseOK
}

// Explain reports whether key is in scope, like Allowed, and which rule
// decided, e.g. `namespace "kube-system" excluded (preset kubernetes)` or
// "included". It allocates; use Allowed on the hot path.
func (r *Rules) Explain(key []byte) (allowed bool, reason string) {
	d := r.decide(key)
	switch d.step {
	case stepOwn:
		return false, fmt.Sprintf("etcdsync's own key (prefix %q)", OwnPrefix)
	case stepNotIncluded:
		return false, fmt.Sprintf("not under any include prefix %q", r.include)
	case stepExcludePrefix:
		return false, fmt.Sprintf("exclude prefix %q", r.exclude[d.index])
	case stepPreset:
		return false, r.preset[d.index].reason
	case stepResource:
		return false, fmt.Sprintf("resource %q excluded (%s)", d.entry, sourceConfig)
	case stepNamespace:
		return false, fmt.Sprintf("namespace %q excluded (%s)", d.ns, d.entry)
	}
	if d.unpars != parseOK {
		return true, fmt.Sprintf("included (key does not parse: %s; only prefix rules apply)", d.unpars)
	}
	return true, "included"
}

// String describes the effective rules, one per line, in the order they are
// applied, for `etcdsync apply --print-rules`.
func (r *Rules) String() string {
	var b strings.Builder
	if r.mode == ModeRaw {
		fmt.Fprintf(&b, "mode %s: keys are not parsed, no preset\n", r.mode)
	} else {
		fmt.Fprintf(&b, "mode %s: prefix %q\n", r.mode, r.prefix+"/")
	}
	fmt.Fprintf(&b, "exclude every key under %q (etcdsync's own keys, every mode)\n", OwnPrefix)
	if len(r.include) > 0 {
		fmt.Fprintf(&b, "exclude every key not under one of %q (%s)\n", r.include, sourceConfig)
	}
	for _, p := range r.exclude {
		fmt.Fprintf(&b, "exclude every key under %q (%s)\n", p, sourceConfig)
	}
	for _, rule := range r.preset {
		b.WriteString(rule.line)
		b.WriteByte('\n')
	}
	for _, res := range r.resourceOrder {
		fmt.Fprintf(&b, "exclude resource %q (%s)\n", res, sourceConfig)
	}
	for _, ns := range r.namespaceOrder {
		fmt.Fprintf(&b, "exclude namespace %q: its keys and its Namespace object (%s)\n", ns, r.namespaces[ns])
	}
	if r.mode == ModeRaw {
		b.WriteString("include every other key\n")
	} else {
		b.WriteString("include every other key under the prefix; keys that do not parse as Kubernetes keys (e.g. an aggregated API server's own --etcd-prefix under it) are decided by the prefix rules above only, no resource or namespace rule applies to them, and the applier and the auditor count them\n")
	}
	return b.String()
}

// ResourceOf names the resource type key belongs to, for reports that
// narrow a difference down: "configmaps", "deployments",
// "stable.example.com/crontabs" (the storage segment, with the group for
// custom and aggregated resources), "(other)" for a key under the prefix
// that does not parse. In raw mode, and for keys outside the prefix, it is
// the key's first path segment ("/app/" for "/app/a/b"); keys without a
// second "/" share "/" (or "" without a leading one). It never panics.
func (r *Rules) ResourceOf(key []byte) string {
	if r.preset != nil {
		p, perr := parseKey(r.prefix, key)
		switch perr {
		case parseOK:
			return string(p.storage)
		case parseOutside:
		default:
			return "(other)"
		}
	}
	if len(key) > 1 {
		if i := bytes.IndexByte(key[1:], '/'); i >= 0 {
			return string(key[:i+2])
		}
	}
	if len(key) > 0 && key[0] == '/' {
		return "/"
	}
	return ""
}
