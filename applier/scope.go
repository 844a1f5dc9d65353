package applier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/keyspace"
)

// ScopeVersion is the format version of a ScopeRecord.
const ScopeVersion = 1

// ScopeKey returns the standby key of the scope record of the applier whose
// checkpoint is at checkpointKey: "<checkpointKey>/scope".
func ScopeKey(checkpointKey string) string { return checkpointKey + "/scope" }

// ScopeRecordKey returns the standby key of the scope record of an applier
// with c: ScopeKey of its checkpoint key.
func (c Config) ScopeRecordKey() string { return ScopeKey(c.checkpointKey()) }

// ScopeRecord is the applier's effective scope, written by the applier in
// the standby next to its checkpoint (ScopeKey) when it starts, and again
// when a snapshot announces another publisher prefix, so that the auditor
// compares, and repairs, exactly what the applier replicates. It is JSON,
// readable with etcdctl.
type ScopeRecord struct {
	// Version is ScopeVersion.
	Version int `json:"version"`
	// Keyspace is the applier's keyspace configuration, every field of it.
	Keyspace keyspace.Config `json:"keyspace"`
	// Rules are the effective rules (keyspace.Rules.String), one per line,
	// the preset's included: what the applier's etcdsync version makes of
	// Keyspace.
	Rules string `json:"rules"`
	// SourcePrefix is the publisher's prefix ("" = every key), as the last
	// snapshot the applier saw announced it; SourcePrefixKnown is false
	// until the applier has seen one.
	SourcePrefix      string `json:"source_prefix"`
	SourcePrefixKnown bool   `json:"source_prefix_known"`
	// PresetVersion identifies the preset (the rules Keyspace's Mode and
	// Prefix make without any other option) of the applier's version.
	PresetVersion string `json:"preset_version"`
	// Fingerprint identifies the whole scope: Lines, hashed.
	Fingerprint string `json:"fingerprint"`
	// WrittenAt is when the applier wrote the record.
	WrittenAt time.Time `json:"written_at"`
}

// NewScopeRecord returns the scope record of cfg and a publisher prefix
// (known false: not announced yet).
func NewScopeRecord(cfg keyspace.Config, sourcePrefix string, known bool) (ScopeRecord, error) {
	rules, err := keyspace.New(cfg)
	if err != nil {
		return ScopeRecord{}, err
	}
	preset, err := keyspace.New(keyspace.Config{Mode: cfg.Mode, Prefix: cfg.Prefix})
	if err != nil {
		return ScopeRecord{}, err
	}
	r := ScopeRecord{Version: ScopeVersion, Keyspace: cfg, Rules: rules.String(), SourcePrefix: sourcePrefix,
		SourcePrefixKnown: known, PresetVersion: fingerprint(sortedLines(preset.String()))}
	r.Fingerprint = fingerprint(r.Lines())
	return r, nil
}

// Lines returns the scope as sorted lines, one per rule, and one for the
// publisher prefix: two scopes are the same exactly when their lines are.
// The order of options (e.g. of excluded namespaces) does not matter.
func (r ScopeRecord) Lines() []string {
	prefix := "publisher prefix not known yet"
	if r.SourcePrefixKnown {
		prefix = fmt.Sprintf("publisher prefix %q", r.SourcePrefix)
	}
	return sortedLines(r.Rules + "\n" + prefix)
}

// sortedLines splits s into its non-empty lines, sorted.
func sortedLines(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return lines
}

// fingerprint returns a short hex SHA-256 of lines.
func fingerprint(lines []string) string {
	h := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(h[:8])
}

// ReadScope reads the scope record at key (opts, e.g. clientv3.WithRev,
// pin the read). ok is false when there is none.
func ReadScope(ctx context.Context, cli *clientv3.Client, key string, opts ...clientv3.OpOption) (r ScopeRecord, ok bool, err error) {
	resp, err := cli.Get(ctx, key, opts...)
	if err != nil {
		return ScopeRecord{}, false, fmt.Errorf("read scope record %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return ScopeRecord{}, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return ScopeRecord{}, false, fmt.Errorf("decode scope record %s: %w", key, err)
	}
	return r, true, nil
}

// recordScope writes the applier's scope record unless the standby already
// holds the same scope. The publisher prefix is sourcePrefix when known,
// else the one in the checkpoint's snapshot in progress, else the one
// already recorded. The write is guarded by the checkpoint's mod revision
// as last read, so only the applier holding the checkpoint records its
// scope (a failed guard is ErrConflict).
func (a *Applier) recordScope(ctx context.Context, sourcePrefix string, known bool) error {
	key := ScopeKey(a.cfg.checkpointKey())
	old, had, err := ReadScope(ctx, a.etcd, key)
	if err != nil {
		return err
	}
	switch {
	case known:
	case a.ck.Snapshot != nil:
		sourcePrefix, known = a.ck.Snapshot.Prefix, true
	case had:
		sourcePrefix, known = old.SourcePrefix, old.SourcePrefixKnown
	}
	rec, err := NewScopeRecord(a.cfg.Scope, sourcePrefix, known)
	if err != nil {
		return err
	}
	if known {
		defer func() { a.scopePrefix = &sourcePrefix }()
	}
	if had && old.Fingerprint == rec.Fingerprint {
		return nil
	}
	rec.WrittenAt = time.Now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode scope record: %w", err)
	}
	ck := a.cfg.checkpointKey()
	resp, err := a.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(ck), "=", a.ckRev)).
		Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("write scope record %s: %w", key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("write scope record %s: %w", key, ErrConflict)
	}
	a.log.Info("scope recorded", "key", key, "fingerprint", rec.Fingerprint, "publisher_prefix", rec.SourcePrefix,
		"publisher_prefix_known", rec.SourcePrefixKnown)
	return nil
}

// sawSourcePrefix records the publisher prefix a snapshot announced, when
// it is not the one recorded.
func (a *Applier) sawSourcePrefix(ctx context.Context, prefix string) error {
	if a.scopePrefix != nil && *a.scopePrefix == prefix {
		return nil
	}
	return a.recordScope(ctx, prefix, true)
}
