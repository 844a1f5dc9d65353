package auditor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
)

// ErrScopeMismatch means Repair refused to write: the scope compared is not
// the one the applier recorded (or the applier recorded none), so a repair
// could write into, or delete from, keys the applier leaves alone.
var ErrScopeMismatch = errors.New("scope differs from the applier's")

// Sources of the scope an audit compares (ScopeInfo.Source).
const (
	// ScopeFromApplier: the scope the applier recorded in the standby.
	ScopeFromApplier = "applier"
	// ScopeFromConfig: Config.Scope and Config.Prefix (the audit's flags).
	ScopeFromConfig = "config"
)

// ScopeInfo says which scope an audit compared, where it came from, and how
// it differs from the applier's.
type ScopeInfo struct {
	// Source is ScopeFromApplier or ScopeFromConfig; Origin, with
	// ScopeFromConfig, says where the options came from (Config.ScopeOrigin).
	Source string `json:"source"`
	Origin string `json:"origin,omitempty"`
	// Rules are the effective rules compared (keyspace.Rules.String).
	Rules string `json:"rules"`
	// Key is the standby key of the applier's scope record; Recorded says
	// whether the applier wrote one, RecordedAt when.
	Key        string    `json:"key"`
	Recorded   bool      `json:"recorded"`
	RecordedAt time.Time `json:"recorded_at,omitzero"`
	// Fingerprint identifies the scope compared, ApplierFingerprint the
	// applier's (empty when none is recorded).
	Fingerprint        string `json:"fingerprint"`
	ApplierFingerprint string `json:"applier_fingerprint,omitempty"`
	// Differences lists the rules on which the scope compared and the
	// applier's differ, each starting with "applier only: " or "audit
	// only: ".
	Differences []string `json:"differences,omitempty"`
	// UnknownNamespaces are excluded namespaces (Scope.ExcludeNamespaces)
	// whose Namespace object is on neither side: likely typos, which leave
	// the namespace meant replicated.
	UnknownNamespaces []string `json:"unknown_namespaces,omitempty"`
	// Repairable is false when Repair refuses to write (NotRepairable says
	// why): the applier recorded no scope, or it differs.
	Repairable    bool   `json:"repairable"`
	NotRepairable string `json:"not_repairable,omitempty"`
}

// scope is the scope of one audit or repair.
type scope struct {
	rules  *keyspace.Rules
	prefix string // the publisher's prefix
	cfg    keyspace.Config
	info   ScopeInfo
}

// inScope reports whether key is compared: under the publisher's prefix
// and allowed by the rules.
func (s *scope) inScope(key []byte) bool {
	return s.rules.Allowed(key) && bytes.HasPrefix(key, []byte(s.prefix))
}

// check reports, like inScope, whether key is compared, and whether it is
// compared without parsing as a Kubernetes key (keyspace.Rules.Check).
func (s *scope) check(key []byte) (in, unparsed bool) {
	if !bytes.HasPrefix(key, []byte(s.prefix)) {
		return false, false
	}
	return s.rules.Check(key)
}

// keyRange returns the range of keys compared: the publisher's prefix, or
// every key.
func (s *scope) keyRange() (start, end string) {
	if s.prefix == "" {
		return "\x00", "\x00"
	}
	return s.prefix, clientv3.GetPrefixRangeEnd(s.prefix)
}

// resolveScope reads the applier's scope record from the standby (at
// revision rev; 0: the current one) and decides the scope compared: the
// recorded one unless Config.ExplicitScope, Config.Scope and Config.Prefix
// otherwise or when none is recorded. Any difference between the two is
// listed, and makes the scope not repairable.
func (a *Auditor) resolveScope(ctx context.Context, rev int64) (*scope, error) {
	key := a.cfg.scopeKey()
	var opts []clientv3.OpOption
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	rec, ok, err := applier.ReadScope(ctx, a.standby, key, opts...)
	if err != nil {
		return nil, err
	}
	info := ScopeInfo{Source: ScopeFromConfig, Key: key, Recorded: ok}
	cfg, prefix := a.cfg.Scope, a.cfg.Prefix
	if ok {
		info.RecordedAt, info.ApplierFingerprint = rec.WrittenAt, rec.Fingerprint
		if !a.cfg.ExplicitScope && !a.cfg.ExplicitPrefix {
			info.Source = ScopeFromApplier
		}
		if !a.cfg.ExplicitScope {
			cfg = rec.Keyspace
		}
		if !a.cfg.ExplicitPrefix && rec.SourcePrefixKnown {
			prefix = rec.SourcePrefix
		}
	}
	mine, err := applier.NewScopeRecord(cfg, prefix, true)
	if err != nil {
		if info.Source == ScopeFromApplier {
			return nil, fmt.Errorf("scope recorded by the applier at %s: %w", key, err)
		}
		return nil, err
	}
	rules, err := keyspace.New(cfg)
	if err != nil {
		return nil, err
	}
	info.Fingerprint, info.Rules = mine.Fingerprint, mine.Rules
	if info.Source == ScopeFromConfig {
		info.Origin = a.cfg.ScopeOrigin
	}
	switch {
	case !ok:
		info.NotRepairable = fmt.Sprintf("the applier recorded no scope at %s (an applier older than this auditor?), so this audit's scope cannot be confirmed", key)
	default:
		info.Differences = diffLines(rec.Lines(), mine.Lines())
		if len(info.Differences) > 0 {
			info.NotRepairable = fmt.Sprintf("the scope compared differs from the applier's (recorded at %s)", key)
		}
	}
	info.Repairable = info.NotRepairable == ""
	return &scope{rules: rules, prefix: prefix, cfg: cfg, info: info}, nil
}

// findUnknownNamespaces sets info.UnknownNamespaces: the excluded
// namespaces whose Namespace object is neither on the primary at
// primaryRev nor on the standby at standbyRev (0: the current revision).
func (a *Auditor) findUnknownNamespaces(ctx context.Context, sc *scope, primaryRev, standbyRev int64) error {
	if sc.cfg.Mode == keyspace.ModeRaw {
		return nil
	}
	root := sc.cfg.Prefix
	if root == "" {
		root = keyspace.DefaultConfig().Prefix
	}
	root = strings.TrimSuffix(root, "/")
	exists := func(cli *clientv3.Client, key string, rev int64) (bool, error) {
		resp, err := cli.Get(ctx, key, clientv3.WithRev(rev), clientv3.WithCountOnly())
		if err != nil {
			return false, fmt.Errorf("look for namespace object %s: %w", key, err)
		}
		return resp.Count > 0, nil
	}
	for _, ns := range sc.cfg.ExcludeNamespaces {
		key := root + "/namespaces/" + ns
		found, err := exists(a.standby, key, standbyRev)
		if err == nil && !found {
			found, err = exists(a.primary, key, primaryRev)
		}
		if err != nil {
			return err
		}
		if !found && !slices.Contains(sc.info.UnknownNamespaces, ns) {
			sc.info.UnknownNamespaces = append(sc.info.UnknownNamespaces, ns)
		}
	}
	return nil
}

// Scope reads the applier's scope record from the standby and returns the
// scope an audit would compare now, where it comes from, how it differs
// from the applier's and which excluded namespaces exist on neither side
// now, and the publisher prefix compared.
func (a *Auditor) Scope(ctx context.Context) (ScopeInfo, string, error) {
	sc, err := a.resolveScope(ctx, 0)
	if err != nil {
		return ScopeInfo{}, "", err
	}
	if err := a.findUnknownNamespaces(ctx, sc, 0, 0); err != nil {
		return ScopeInfo{}, "", err
	}
	return sc.info, sc.prefix, nil
}

// diffLines lists the lines only in applier's or only in audit's (both
// sorted).
func diffLines(applierLines, auditLines []string) []string {
	var out []string
	for _, l := range applierLines {
		if _, found := slices.BinarySearch(auditLines, l); !found {
			out = append(out, "applier only: "+l)
		}
	}
	for _, l := range auditLines {
		if _, found := slices.BinarySearch(applierLines, l); !found {
			out = append(out, "audit only: "+l)
		}
	}
	return out
}
