package applier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/digestscan"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// ScopeDigest is the keyspace digest (streams.Digest) of the standby's
// in-scope keys as the applier wrote them, per resource type
// (keyspace.Rules.ResourceOf). It lives in the checkpoint, written in the
// same transaction as the operations it covers, so a scan of the standby
// pinned at the checkpoint's mod revision must give it exactly.
type ScopeDigest struct {
	// Prefix is the publisher's prefix, from the snapshot the digest
	// started with: the scope is the keys under it the rules allow.
	Prefix string `json:"prefix"`
	// Rules fingerprints the scope rules it was kept under: under other
	// rules it says nothing.
	Rules string `json:"rules"`
	// Resources holds the digest and key count of each resource type with
	// keys (keys attached to a lease are outside every digest).
	Resources map[string]ResourceDigest `json:"resources"`
}

// ResourceDigest is the digest of the in-scope keys of one resource type.
type ResourceDigest struct {
	Digest streams.Digest `json:"digest"`
	Keys   int64          `json:"keys"`
}

// newScopeDigest returns the digest of an empty scope under prefix.
func newScopeDigest(prefix string, rules *keyspace.Rules) *ScopeDigest {
	return &ScopeDigest{Prefix: prefix, Rules: rulesFingerprint(rules), Resources: map[string]ResourceDigest{}}
}

func rulesFingerprint(rules *keyspace.Rules) string { return fingerprint(sortedLines(rules.String())) }

func (s *ScopeDigest) clone() *ScopeDigest {
	if s == nil {
		return nil
	}
	c := *s
	c.Resources = maps.Clone(s.Resources)
	return &c
}

// event moves s past the in-scope event e of resource type res: the
// previous pair out (e.PrevHash), the new pair in unless it is a delete or
// attached to a lease.
func (s *ScopeDigest) event(e *streams.Event, res string) {
	r, ok := s.Resources[res]
	if !ok && len(s.Resources) >= maxResources {
		res = otherResources
		r = s.Resources[res]
	}
	if e.PrevHash != ([32]byte{}) {
		r.Digest.Remove(e.PrevHash)
		r.Keys--
	}
	if e.Type == streams.EventPut && e.Lease == 0 {
		r.Digest.AddPair(e.Key, e.Value)
		r.Keys++
	}
	if r.Keys == 0 && r.Digest.IsZero() {
		delete(s.Resources, res)
		return
	}
	s.Resources[res] = r
}

// Total returns the digest and key count of the whole scope.
func (s *ScopeDigest) Total() (streams.Digest, int64) {
	var d streams.Digest
	var n int64
	for _, r := range s.Resources {
		d.Add(r.Digest)
		n += r.Keys
	}
	return d, n
}

// digestEvent moves the working checkpoint's digest past e (an in-scope
// event just handed to the transaction builder).
func (a *Applier) digestEvent(e *streams.Event) {
	if d := a.work.Digest; d != nil {
		d.event(e, resourceOf(a.rules, e.Key))
	}
}

// resumeDigest returns the digest a session continues from the
// checkpoint's d: a copy, or nil when it was kept under other scope rules
// (following it under these would mix two scopes; unknown until a snapshot
// gives it again).
func (a *Applier) resumeDigest(d *ScopeDigest) *ScopeDigest {
	if d != nil && d.Rules != rulesFingerprint(a.rules) {
		a.log.Info("the checkpoint's keyspace digest was kept under other scope rules: dropped until the next snapshot")
		return nil
	}
	return d.clone()
}

// Bounds of the per-resource digests in the checkpoint, so that its size
// (which every standby transaction sets aside room for) stays bounded
// whatever the keyspace: at most maxResources resource types, the rest
// under otherResources, names of at most maxResourceName bytes that JSON
// neither escapes nor alters (see resourceOf).
const (
	maxResources    = 64
	maxResourceName = 128
	// otherResources holds the types past maxResources: '#' is in no name
	// resourceOf returns.
	otherResources = "#more"
	// maxDigestBytes bounds the JSON of a ScopeDigest with maxResources+1
	// entries, prefix and rules excluded.
	maxDigestBytes = 64 + (maxResources+1)*(maxResourceName+128)
)

// resourceOf is the resource type a key's digest is kept under: the
// rules' ResourceOf, cut at maxResourceName bytes, every byte outside
// letters, digits and "./-_()" replaced by '_', so that the name is the
// same after a JSON round trip (no escaping, no invalid UTF-8) and of a
// bounded size. The scan of the standby names groups the same way.
func resourceOf(rules *keyspace.Rules, key []byte) string {
	r := []byte(rules.ResourceOf(key))
	if len(r) > maxResourceName {
		r = r[:maxResourceName]
	}
	for i, c := range r {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '/', c == '-', c == '_', c == '(', c == ')':
		default:
			r[i] = '_'
		}
	}
	return string(r)
}

// Verification results.
const (
	Verified   = "verified"
	Mismatch   = "mismatch"
	Unverified = "unverified"
)

// Verification is the outcome of comparing the standby's in-scope keys,
// scanned at the checkpoint's standby revision, with the digest the
// checkpoint carries: no access to the primary or to NATS.
type Verification struct {
	// Result is Verified, Mismatch or Unverified (nothing to compare with:
	// Reason says why).
	Result string    `json:"result"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
	// Position is the checkpoint's: the source position proven.
	Position streams.Position `json:"position"`
	// StandbyRevision is the standby revision the checkpoint was read and
	// the scan pinned at.
	StandbyRevision int64 `json:"standby_revision"`
	// Digest and Keys are the checkpoint's; FoundDigest and FoundKeys the
	// scan's.
	Digest      streams.Digest `json:"digest"`
	Keys        int64          `json:"keys"`
	FoundDigest streams.Digest `json:"found_digest"`
	FoundKeys   int64          `json:"found_keys"`
	// Resources lists the resource types whose digest differs ([] when
	// none), in name order.
	Resources []ResourceDiff `json:"resources"`
	// Promoted says the standby was promoted: from the fence on, the
	// writes of its own clients make it differ from the log.
	Promoted bool `json:"promoted"`
}

// ResourceDiff is one resource type whose keys differ from the digest.
type ResourceDiff struct {
	Resource  string `json:"resource"`
	Keys      int64  `json:"keys"`
	FoundKeys int64  `json:"found_keys"`
}

// Verify reads the checkpoint at checkpointKey on the standby and scans
// the standby's in-scope keys (under the digest's prefix, allowed by rules)
// pinned at the revision the checkpoint was read at, and compares them
// with the checkpoint's digest, per resource type. The checkpoint is the
// one in force at that revision, so the scan sees everything written in
// scope up to it, behind the applier's back or not. It never writes. A checkpoint
// that carries no digest (written before digests existed, after a record
// without one, or under other rules), or that is in the middle of a
// snapshot or of an operation written alone, gives Unverified with the
// reason. Errors are the standby's (unreachable, or the checkpoint's
// revision compacted before the scan).
func Verify(ctx context.Context, etcd *clientv3.Client, checkpointKey string, rules *keyspace.Rules) (Verification, error) {
	ck, modRev, rev, err := readCheckpoint(ctx, etcd, checkpointKey)
	if err != nil {
		return Verification{}, err
	}
	v := Verification{At: time.Now(), Position: ck.Position, StandbyRevision: rev, Resources: []ResourceDiff{}, Promoted: ck.Promoted}
	switch {
	case modRev == 0:
		v.Result, v.Reason = Unverified, "the standby holds no checkpoint: nothing was applied"
	case ck.Digest == nil:
		v.Result, v.Reason = Unverified, "the checkpoint carries no digest (written by an older etcdsync, after a log record without one, or under other scope rules): the next snapshot in the log (periodic, every --snapshot-interval) gives one"
	case ck.Snapshot != nil:
		v.Result, v.Reason = Unverified, "a snapshot is being applied"
	case ck.InFlight != nil:
		v.Result, v.Reason = Unverified, "an operation written alone is ahead of the checkpoint"
	case ck.Digest.Rules != rulesFingerprint(rules):
		v.Result, v.Reason = Unverified, "the checkpoint's digest was kept under other scope rules"
	}
	if v.Result != "" {
		return v, nil
	}
	v.Digest, v.Keys = ck.Digest.Total()
	scan, err := digestscan.Scan(ctx, etcd, digestscan.Options{Prefix: ck.Digest.Prefix, Revision: rev, PageSize: 256,
		Include: rules.Allowed, Group: func(k []byte) string { return resourceOf(rules, k) }})
	if err != nil {
		return Verification{}, fmt.Errorf("verify the standby at revision %d: %w", rev, err)
	}
	v.FoundDigest, v.FoundKeys = scan.Digest, int64(scan.Keys)
	if v.FoundDigest == v.Digest && v.FoundKeys == v.Keys {
		v.Result = Verified
		return v, nil
	}
	v.Result = Mismatch
	if _, ok := ck.Digest.Resources[otherResources]; ok {
		// The checkpoint ran out of room for resource types: the ones it
		// has no entry for are kept together.
		for n, g := range scan.Groups {
			if _, ok := ck.Digest.Resources[n]; !ok && n != otherResources {
				o := scan.Groups[otherResources]
				o.Digest.Add(g.Digest)
				o.Keys += g.Keys
				scan.Groups[otherResources] = o
				delete(scan.Groups, n)
			}
		}
	}
	names := map[string]bool{}
	for n := range ck.Digest.Resources {
		names[n] = true
	}
	for n := range scan.Groups {
		names[n] = true
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		want, got := ck.Digest.Resources[n], scan.Groups[n]
		if want.Digest != got.Digest || want.Keys != int64(got.Keys) {
			v.Resources = append(v.Resources, ResourceDiff{Resource: n, Keys: want.Keys, FoundKeys: int64(got.Keys)})
		}
	}
	return v, nil
}

// VerifyKey is where the applier records the outcome of its last
// verification on the standby (read by status).
func VerifyKey(stream string) string { return keyspace.OwnPrefix + "verify/" + stream }

// ReadVerification reads the outcome the applier of stream recorded last
// (ok false when none).
func ReadVerification(ctx context.Context, etcd *clientv3.Client, stream string) (v Verification, ok bool, err error) {
	resp, err := etcd.Get(ctx, VerifyKey(stream))
	if err != nil {
		return v, false, fmt.Errorf("read %s: %w", VerifyKey(stream), err)
	}
	if len(resp.Kvs) == 0 {
		return v, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return v, false, fmt.Errorf("read %s: %w", VerifyKey(stream), err)
	}
	return v, true, nil
}

// VerifyOnce runs one verification of the standby (Verify), records its
// outcome (metrics, the verify key on the standby, a drift event on
// etcdsync.<site>.drift.verify for a mismatch) and logs it.
func (a *Applier) VerifyOnce(ctx context.Context) (Verification, error) {
	v, err := Verify(ctx, a.etcd, a.cfg.checkpointKey(), a.rules)
	if err != nil {
		return v, err
	}
	switch v.Result {
	case Verified:
		a.vmetrics.last.SetToCurrentTime()
		a.vmetrics.state.Set(1)
		a.log.Info("standby verified: its in-scope keys match the log", "position", v.Position.String(), "standby_revision", v.StandbyRevision,
			"digest", v.Digest.Short(), "keys", v.Keys)
	case Mismatch:
		a.vmetrics.mismatches.Inc()
		a.vmetrics.state.Set(0)
		res := make([]string, len(v.Resources))
		for i, r := range v.Resources {
			res[i] = r.Resource
		}
		a.log.Error("standby MISMATCH: its in-scope keys differ from what the log applied (written behind the applier's back?)",
			"position", v.Position.String(), "standby_revision", v.StandbyRevision, "digest", v.Digest.Short(), "found_digest", v.FoundDigest.Short(),
			"keys", v.Keys, "found_keys", v.FoundKeys, "resources", res)
	default:
		a.vmetrics.state.Set(-1)
		a.log.Info("standby not verified", "reason", v.Reason)
	}
	b, _ := json.Marshal(v)
	if _, err := a.etcd.Put(ctx, VerifyKey(a.cfg.Stream), string(b)); err != nil {
		return v, fmt.Errorf("record the verification: %w", err)
	}
	if v.Result == Mismatch {
		if err := a.nc.Publish(a.subj.Drift()+".verify", b); err != nil {
			a.log.Warn("publish the verification mismatch as a drift event", "err", err)
		}
	}
	return v, nil
}

// monitorDigest verifies the standby every VerifyInterval until ctx ends.
// It only reads the durable checkpoint and the standby: applying never
// waits for it.
func (a *Applier) monitorDigest(ctx context.Context) {
	if a.cfg.VerifyInterval <= 0 {
		return
	}
	t := time.NewTicker(a.cfg.VerifyInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := a.VerifyOnce(ctx); err != nil && ctx.Err() == nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				a.log.Info("standby not verified: its revision was compacted before the scan read it; trying again at the next interval", "err", err)
				continue
			}
			a.log.Warn("standby verification failed; trying again at the next interval", "err", err)
		}
	}
}

// VerifyStandby is Verify under the scope rules the standby's applier
// recorded next to its checkpoint (ScopeKey), so that a command run on
// the standby site needs no scope flags. Without a scope record it returns
// Unverified.
func VerifyStandby(ctx context.Context, etcd *clientv3.Client, checkpointKey string) (Verification, error) {
	rec, ok, err := ReadScope(ctx, etcd, ScopeKey(checkpointKey))
	if err != nil {
		return Verification{}, err
	}
	if !ok {
		return Verification{Result: Unverified, Reason: "the standby holds no scope record: no applier ran against it", At: time.Now(), Resources: []ResourceDiff{}}, nil
	}
	rules, err := keyspace.New(rec.Keyspace)
	if err != nil {
		return Verification{}, fmt.Errorf("the applier's scope record: %w", err)
	}
	return Verify(ctx, etcd, checkpointKey, rules)
}

// shadowDigest gathers the in-scope digest of a snapshot the applier skips.
type shadowDigest struct {
	cluster, gen uint64
	rev          int64
	chunks, keys uint64
	d            *ScopeDigest
	all          streams.Digest // of all the snapshot's keys
}

// shadowChunk adds the in-scope keys of r, a chunk of the snapshot being
// gathered, to the shadow digest.
func (a *Applier) shadowChunk(r *record) {
	sh := a.shadow
	if sh == nil || sh.cluster != r.ClusterID || sh.gen != r.Generation || sh.rev != r.Revision {
		return
	}
	for i := range r.Events {
		e := &r.Events[i]
		if a.rules.Allowed(e.Key) && (sh.d.Prefix == "" || bytes.HasPrefix(e.Key, []byte(sh.d.Prefix))) {
			sh.d.event(e, resourceOf(a.rules, e.Key))
		}
		if e.Lease == 0 {
			sh.all.AddPair(e.Key, e.Value)
		}
	}
	sh.chunks++
	sh.keys += uint64(len(r.Events))
}

// endShadow ends the shadow digest at r, the snapshot-end of a snapshot
// the applier skipped. If the snapshot is whole and the applier still
// stands at its revision, the shadow is the digest of the standby's scope
// as the log has it: a checkpoint without a digest takes it (an upgrade, a
// record without digests, other scope rules), and one with a digest must
// equal it, or the applier followed the log wrongly (logged and counted;
// the shadow replaces it, so the standby's next verification shows where
// it differs).
func (a *Applier) endShadow(r *record) {
	sh, w := a.shadow, &a.work
	a.shadow = nil
	if sh == nil || sh.cluster != r.ClusterID || sh.gen != r.Generation || sh.rev != r.Revision ||
		sh.chunks != r.Chunk || sh.keys != r.Keys || w.Position.Revision != sh.rev || w.Snapshot != nil {
		return
	}
	all := sh.all
	switch {
	case r.Digested && all != r.Digest:
		a.chainBroken(r, "a skipped snapshot's keys do not give the digest its end carries", all, r.Digest)
	case w.LogDigest != nil && *w.LogDigest != all:
		a.chainBroken(r, "the log's events since the last snapshot do not give the next snapshot's keys", *w.LogDigest, all)
	}
	w.LogDigest = &all
	switch {
	case w.Digest == nil:
		a.log.Info("keyspace digest taken from a snapshot at the applier's position", "revision", sh.rev, "seq", r.seq)
	case w.Digest.Prefix == sh.d.Prefix && w.Digest.Rules == sh.d.Rules:
		have, _ := w.Digest.Total()
		want, keys := sh.d.Total()
		if have == want {
			return
		}
		a.vmetrics.mismatches.Inc()
		a.log.Error("the applier's keyspace digest differs from the snapshot at its own position: it followed the log wrongly",
			"revision", sh.rev, "digest", have.Short(), "snapshot_digest", want.Short(), "snapshot_keys", keys, "seq", r.seq)
	}
	w.Digest = sh.d
}

// The log chain: the applier keeps LogDigest, the digest of the whole
// source keyspace under the publisher's prefix as the log's events give
// it, from the snapshot it applied (or skipped at its position) on, and
// every digested record must carry the same: a record whose digest the
// events before it do not give means the log is not the history it
// claims, or the applier skipped or misplaced a record. It is reported
// (log, etcdsync_applier_log_chain_breaks_total) and the chain continues
// from the record's digest; applying never stops for it.

// chainRevision moves the working checkpoint's LogDigest past the applied
// revision record r and checks it against the digest r carries.
func (a *Applier) chainRevision(r *record) {
	w := &a.work
	if w.LogDigest == nil || !r.Digested {
		w.LogDigest = nil
		return
	}
	d := *w.LogDigest
	for i := range r.Events {
		e := &r.Events[i]
		if e.PrevHash != ([32]byte{}) {
			d.Remove(e.PrevHash)
		}
		if e.Type == streams.EventPut && e.Lease == 0 {
			d.AddPair(e.Key, e.Value)
		}
	}
	if d != r.Digest {
		a.chainBroken(r, "the record's digest is not what the log's events before it give", d, r.Digest)
		d = r.Digest
	}
	w.LogDigest = &d
}

// chainChunk adds the keys of r, a chunk of the snapshot being applied, to
// the working checkpoint's LogDigest.
func (a *Applier) chainChunk(r *record) {
	w := &a.work
	if w.LogDigest == nil {
		return
	}
	d := *w.LogDigest
	for i := range r.Events {
		if e := &r.Events[i]; e.Lease == 0 {
			d.AddPair(e.Key, e.Value)
		}
	}
	w.LogDigest = &d
}

// chainSnapshotEnd checks the digest of the snapshot just applied against
// the one its end record carries.
func (a *Applier) chainSnapshotEnd(r *record, what string) {
	w := &a.work
	switch {
	case !r.Digested:
		w.LogDigest = nil
	case w.LogDigest == nil:
	case *w.LogDigest != r.Digest:
		a.chainBroken(r, "an "+what+" snapshot's keys do not give the digest its end carries", *w.LogDigest, r.Digest)
		d := r.Digest
		w.LogDigest = &d
	}
}

// chainBroken reports a break of the log chain at r.
func (a *Applier) chainBroken(r *record, what string, have, want streams.Digest) {
	a.vmetrics.chainBreaks.Inc()
	a.log.Error("log chain broken: "+what, "kind", r.Kind.String(), "revision", r.Revision, "seq", r.seq,
		"digest_from_log", have.Short(), "digest_carried", want.Short())
}

// LogChainBreaks returns the number of log chain breaks this applier saw
// (for tests and status).
func (a *Applier) LogChainBreaks() float64 {
	return testutilCounter(a.vmetrics.chainBreaks)
}
