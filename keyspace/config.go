package keyspace

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Mode values for Config.Mode.
const (
	// ModeKubernetes parses Kubernetes keys and applies the kubernetes
	// preset. It is the default (also for an empty Mode).
	ModeKubernetes = "kubernetes"
	// ModeRaw is for plain etcd: keys are not parsed and there is no preset;
	// only OwnPrefix and the prefix rules apply.
	ModeRaw = "raw"
)

// OwnPrefix is etcdsync's own key prefix ("/etcdsync/"). Keys under it are
// excluded in every mode, before any other rule.
const OwnPrefix = "/etcdsync/"

// defaultPrefix is kube-apiserver's default --etcd-prefix.
const defaultPrefix = "/registry"

// Config selects the replicated keys. The zero value is usable: an empty
// Mode means ModeKubernetes and an empty Prefix means "/registry".
type Config struct {
	// Mode is ModeKubernetes (default) or ModeRaw.
	Mode string
	// Prefix is the Kubernetes etcd prefix (kube-apiserver --etcd-prefix),
	// default "/registry". It must start with "/"; one trailing "/" is
	// ignored and "/" means keys directly under the root. Ignored in raw mode.
	Prefix string
	// ExcludeNamespaces are excluded in addition to the preset's namespaces:
	// every key in them and their Namespace object. DNS-1123 labels.
	// Kubernetes mode only.
	ExcludeNamespaces []string
	// OwnNamespace is the namespace etcdsync itself runs in (POD_NAMESPACE,
	// from the downward API), excluded like ExcludeNamespaces: both sites
	// run etcdsync there, and neither may receive the other's Deployments,
	// Secrets or configuration. Empty when etcdsync runs outside
	// Kubernetes. Ignored in raw mode, where keys are not parsed.
	OwnNamespace string
	// ExcludePrefixes are full etcd key prefixes to exclude, compared bytewise,
	// e.g. "/registry/secrets/". They must start with "/" in kubernetes mode.
	ExcludePrefixes []string
	// IncludePrefixes, if non-empty, restrict the scope to keys under one of
	// them. In kubernetes mode they must start with "/" and overlap Prefix.
	IncludePrefixes []string
	// ExcludeResources are resources to exclude, matched against the parsed
	// key: a built-in resource by API name or storage segment ("pods",
	// "nodes" or "minions", "services" or "services/specs"), or a grouped
	// resource as "group/resource" ("cr.bar.com/foos"). A name without group
	// never matches a grouped key. Kubernetes mode only.
	ExcludeResources []string
}

// DefaultConfig returns the default Config: ModeKubernetes, Prefix
// "/registry", no extra rules.
func DefaultConfig() Config {
	return Config{Mode: ModeKubernetes, Prefix: defaultPrefix}
}

// withDefaults fills in the empty Mode and Prefix.
func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeKubernetes
	}
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	return c
}

// Validate reports every problem in c, joined with errors.Join, or nil.
// Empty Mode and Prefix are valid (they take their defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	kube := c.Mode == ModeKubernetes
	switch c.Mode {
	case ModeKubernetes:
		if err := validatePrefix(c.Prefix); err != nil {
			errs = append(errs, err)
		}
	case ModeRaw:
		if len(c.ExcludeNamespaces) > 0 {
			add("exclude namespaces %q: not supported in raw mode (keys are not parsed)", c.ExcludeNamespaces)
		}
		if len(c.ExcludeResources) > 0 {
			add("exclude resources %q: not supported in raw mode (keys are not parsed)", c.ExcludeResources)
		}
	default:
		add("unknown mode %q (want %q or %q)", c.Mode, ModeKubernetes, ModeRaw)
	}

	if kube {
		if c.OwnNamespace != "" {
			if err := validateNamespace(c.OwnNamespace); err != nil {
				add("own namespace %q (POD_NAMESPACE): %w", c.OwnNamespace, err)
			}
		}
		for _, ns := range c.ExcludeNamespaces {
			if err := validateNamespace(ns); err != nil {
				add("exclude namespace %q: %w", ns, err)
			}
		}
		for _, res := range c.ExcludeResources {
			if err := validateResource(res); err != nil {
				add("exclude resource %q: %w", res, err)
			}
		}
	}
	inside := normPrefix(c.Prefix) + "/"
	for _, p := range c.ExcludePrefixes {
		switch {
		case p == "":
			add("exclude prefix %q: empty (would exclude every key)", p)
		case kube && !strings.HasPrefix(p, "/"):
			add("exclude prefix %q: must start with %q in kubernetes mode", p, "/")
		}
	}
	for _, p := range c.IncludePrefixes {
		switch {
		case p == "":
			add("include prefix %q: empty (use no include prefixes to include every key)", p)
		case strings.HasPrefix(p, OwnPrefix):
			add("include prefix %q: under etcdsync's own prefix %q, which is always excluded", p, OwnPrefix)
		case kube && !strings.HasPrefix(p, "/"):
			add("include prefix %q: must start with %q in kubernetes mode", p, "/")
		case kube && !strings.HasPrefix(p, inside) && !strings.HasPrefix(inside, p):
			add("include prefix %q: outside prefix %q, nothing under it can be in scope", p, inside)
		}
	}
	return errors.Join(errs...)
}

// validatePrefix checks the Kubernetes etcd prefix.
func validatePrefix(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("prefix %q: must start with %q", p, "/")
	case strings.Contains(p, "//"):
		return fmt.Errorf("prefix %q: empty path segment", p)
	case !utf8.ValidString(p):
		return fmt.Errorf("prefix %q: not valid UTF-8", p)
	case strings.HasPrefix(normPrefix(p)+"/", OwnPrefix):
		return fmt.Errorf("prefix %q: under etcdsync's own prefix %q, which is always excluded", p, OwnPrefix)
	}
	return nil
}

// validateNamespace checks that ns is a DNS-1123 label, as every Kubernetes
// namespace is.
func validateNamespace(ns string) error {
	if ns == "" {
		return errors.New("empty")
	}
	if strings.Contains(ns, "/") {
		return errors.New(`contains "/"`)
	}
	return validateLabel(ns)
}

// validateResource checks an ExcludeResources entry.
func validateResource(res string) error {
	if res == "" {
		return errors.New("empty")
	}
	if res == "services/specs" || res == "services/endpoints" {
		return nil // built-in storage segments with a slash
	}
	group, name, grouped := strings.Cut(res, "/")
	if !grouped {
		if strings.Contains(res, ".") {
			return errors.New(`contains "." (name a grouped resource as "group/resource", e.g. "cr.bar.com/foos")`)
		}
		return validateLabel(res)
	}
	if !strings.Contains(group, ".") {
		return fmt.Errorf("group %q has no dot: built-in resources are stored without their group, name them alone (e.g. %q)", group, name)
	}
	if err := validateSubdomain(group); err != nil {
		return fmt.Errorf("group %q: %w", group, err)
	}
	if strings.Contains(name, "/") {
		return errors.New(`more than one "/" (want "group/resource")`)
	}
	if err := validateLabel(name); err != nil {
		return fmt.Errorf("resource %q: %w", name, err)
	}
	return nil
}

// validateLabel checks a DNS-1123 label: 1 to 63 lowercase letters, digits
// and '-', starting and ending with a letter or digit.
func validateLabel(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return errors.New("not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)")
		}
	}
	return nil
}

// validateSubdomain checks a DNS-1123 subdomain: dot-separated labels, at
// most 253 characters.
func validateSubdomain(s string) error {
	if len(s) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(s, ".") {
		if err := validateLabel(label); err != nil {
			return fmt.Errorf("label %q: %w", label, err)
		}
	}
	return nil
}
