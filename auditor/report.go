package auditor

import (
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/etcdsync/etcdsync/streams"
)

// State is the kind of drift of one key.
type State string

// Drift states.
const (
	// Missed: the key is on the primary (at the source revision) and not
	// on the standby.
	Missed State = "missed"
	// Surplus: the key is on the standby only.
	Surplus State = "surplus"
	// Mismatched: the key is on both sides with different values.
	Mismatched State = "mismatched"
)

// KeyDrift is one drifted key as the audit saw it.
type KeyDrift struct {
	// Key is the etcd key. Bytes that are not valid UTF-8 are replaced in
	// JSON; KeyBase64 then holds the exact key.
	Key string `json:"key"`
	// KeyBase64 is the key in standard base64, set only when Key is not
	// valid UTF-8.
	KeyBase64 string `json:"key_base64,omitempty"`
	// State says how the key drifted.
	State State `json:"state"`
	// PrimaryModRevision is the key's mod revision on the primary at the
	// source revision (0 for surplus keys).
	PrimaryModRevision int64 `json:"primary_mod_revision,omitempty"`
	// StandbyModRevision is the key's mod revision on the standby at the
	// standby revision (0 for missed keys).
	StandbyModRevision int64 `json:"standby_mod_revision,omitempty"`
	// PrimaryHMAC and StandbyHMAC are the hex keyed hashes of the values
	// on each side (empty where the key is absent): HMAC-SHA256 under the
	// key Report.ValueHMACKey names, never a plain SHA-256 that a reader
	// could test guessed values against. Values themselves never leave etcd.
	PrimaryHMAC string `json:"primary_value_hmac,omitempty"`
	StandbyHMAC string `json:"standby_value_hmac,omitempty"`
}

// newKeyDrift returns the KeyDrift of key, encoding it when it is not UTF-8.
func newKeyDrift(key []byte, st State) KeyDrift {
	k := KeyDrift{Key: string(key), State: st}
	if !utf8.Valid(key) {
		k.KeyBase64 = base64.StdEncoding.EncodeToString(key)
	}
	return k
}

// rawKey returns the exact key bytes.
func (k KeyDrift) rawKey() (string, error) {
	if k.KeyBase64 == "" {
		return k.Key, nil
	}
	b, err := base64.StdEncoding.DecodeString(k.KeyBase64)
	if err != nil {
		return "", fmt.Errorf("decode key_base64 of %q: %w", k.Key, err)
	}
	return string(b), nil
}

// DriftList counts the keys of one state and lists the first of them.
type DriftList struct {
	// Count is the number of keys in this state.
	Count int64 `json:"count"`
	// Keys are the first Config.MaxKeys of them, in key order.
	Keys []KeyDrift `json:"keys"`
}

func (l *DriftList) add(k KeyDrift, limit int) {
	l.Count++
	if len(l.Keys) < limit {
		l.Keys = append(l.Keys, k)
	}
}

// EventStatus tells whether a report was published as drift events.
type EventStatus struct {
	// Published is true when every event was acknowledged by JetStream.
	Published bool `json:"published"`
	// Stream and Subject say where: Subject is the prefix of the summary
	// and key subjects.
	Stream  string `json:"stream,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Messages is the number of messages acknowledged (summary included).
	Messages int `json:"messages"`
	// Truncated is true when more keys drifted than per-key events were sent.
	Truncated bool `json:"truncated,omitempty"`
	// Error says why events were not (completely) published.
	Error string `json:"error,omitempty"`
}

// Report is the outcome of one audit: the position compared and the keys
// that differ.
type Report struct {
	// ID identifies the run; drift events carry it as run_id.
	ID string `json:"id"`
	// Time is when the audit started; DurationSeconds how long it took.
	Time            time.Time `json:"time"`
	DurationSeconds float64   `json:"duration_seconds"`
	// Site and Prefix are the configured site and publisher prefix.
	Site   string `json:"site"`
	Prefix string `json:"prefix"`
	// ClusterID (hex), Generation, SourceRevision (P) and StreamSeq are
	// the standby's checkpoint at StandbyRevision (S): the standby was
	// read at S and the primary at P.
	ClusterID       string `json:"cluster_id"`
	Generation      uint64 `json:"generation,string"`
	SourceRevision  int64  `json:"source_revision"`
	StreamSeq       uint64 `json:"stream_seq"`
	StandbyRevision int64  `json:"standby_revision"`
	// SourceTime is when the publisher observed SourceRevision on the
	// primary (zero if unknown); SourceAgeSeconds is how long before the
	// audit's start that was: the age of the primary's state compared (on
	// an idle primary it grows without any lag).
	SourceTime       time.Time `json:"source_time,omitzero"`
	SourceAgeSeconds float64   `json:"source_age_seconds"`
	// PrimaryHeadRevision is the primary's newest revision as the audit
	// read it (just after the cut), and BehindHeadRevisions how far
	// SourceRevision is behind it: revisions the compared position does
	// not include yet (writes to any key of the primary, in scope or not;
	// 0 when the standby has caught up). Drift is judged at SourceRevision
	// only.
	PrimaryHeadRevision int64 `json:"primary_head_revision"`
	BehindHeadRevisions int64 `json:"behind_head_revisions"`
	// Compared counts the distinct in-scope keys seen on either side;
	// PrimaryKeys and StandbyKeys count each side's in-scope keys.
	Compared    int64 `json:"keys_compared"`
	PrimaryKeys int64 `json:"primary_keys"`
	StandbyKeys int64 `json:"standby_keys"`
	// Unparsed counts and names the first of the compared keys that do not
	// parse as Kubernetes keys (keyspace.Rules.Check): in scope by the
	// prefix rules alone, whatever their namespace.
	Unparsed UnparsedKeys `json:"unparsed"`
	// Consistent is true when nothing drifted.
	Consistent bool `json:"consistent"`
	// Missed, Surplus and Mismatched count and list the drifted keys.
	Missed     DriftList `json:"missed"`
	Surplus    DriftList `json:"surplus"`
	Mismatched DriftList `json:"mismatched"`
	// ValueHMACKey names the key of the value hashes (KeyDrift.PrimaryHMAC,
	// StandbyHMAC): "log:<key ID>" for the log key ring's signing key
	// (Config.LogKeys), or "random:<id>" for a random key of this auditor
	// process (hashes compare only within its reports).
	ValueHMACKey string `json:"value_hmac_key"`
	// Scope says which scope was compared and where it came from.
	Scope ScopeInfo `json:"scope"`
	// Events says whether the report went out as drift events.
	Events EventStatus `json:"events"`

	// tracked are the first Config.MaxTrackedKeys drifted keys of every
	// state, in key order, for events and Repair (not serialized).
	tracked []KeyDrift
}

// UnparsedKeys counts the compared keys that do not parse as Kubernetes
// keys and lists the first maxUnparsedKeys of them.
type UnparsedKeys struct {
	Count     int64    `json:"count"`
	FirstKeys []string `json:"first_keys,omitempty"`
}

// maxUnparsedKeys bounds UnparsedKeys.FirstKeys.
const maxUnparsedKeys = 5

func (u *UnparsedKeys) add(key []byte) {
	u.Count++
	if len(u.FirstKeys) < maxUnparsedKeys {
		u.FirstKeys = append(u.FirstKeys, string(key))
	}
}

// Drifted returns the number of drifted keys.
func (r *Report) Drifted() int64 { return r.Missed.Count + r.Surplus.Count + r.Mismatched.Count }

// Position returns the source position the standby held at StandbyRevision.
func (r *Report) Position() streams.Position {
	id, _ := strconv.ParseUint(r.ClusterID, 16, 64)
	return streams.Position{ClusterID: id, Generation: r.Generation, Revision: r.SourceRevision, Seq: r.StreamSeq}
}

// keys returns the drifted keys Repair works on: the tracked keys of a
// report from Audit, or the listed keys of a report read back from JSON.
func (r *Report) keys() (keys []KeyDrift, untracked int64) {
	if r.tracked != nil {
		return r.tracked, r.Drifted() - int64(len(r.tracked))
	}
	for _, l := range []struct {
		st   State
		list *DriftList
	}{{Missed, &r.Missed}, {Mismatched, &r.Mismatched}, {Surplus, &r.Surplus}} {
		for _, k := range l.list.Keys {
			if k.State == "" {
				k.State = l.st
			}
			keys = append(keys, k)
		}
	}
	return keys, r.Drifted() - int64(len(keys))
}

// printable returns k as is when every rune prints, quoted otherwise.
func printable(k string) string {
	for _, c := range k {
		if c == utf8.RuneError || !strconv.IsPrint(c) {
			return strconv.Quote(k)
		}
	}
	return k
}

// writeText says which scope was compared, where it came from and how it
// differs from the applier's.
func (s *ScopeInfo) writeText(b *strings.Builder) {
	switch {
	case s.Source == ScopeFromApplier && s.RecordedAt.IsZero():
		fmt.Fprintf(b, "scope: recorded by the applier at %s (fingerprint %s)\n", s.Key, s.Fingerprint)
	case s.Source == ScopeFromApplier:
		fmt.Fprintf(b, "scope: recorded by the applier at %s (%s, fingerprint %s)\n", s.Key, s.RecordedAt.UTC().Format(time.RFC3339), s.Fingerprint)
	case !s.Recorded:
		fmt.Fprintf(b, "scope: this audit's options%s (fingerprint %s); the applier recorded none at %s\n", s.origin(), s.Fingerprint, s.Key)
	case len(s.Differences) == 0:
		fmt.Fprintf(b, "scope: this audit's options%s, the same as the applier's recorded at %s (fingerprint %s)\n", s.origin(), s.Key, s.Fingerprint)
	default:
		fmt.Fprintf(b, "scope: this audit's options%s (fingerprint %s) DIFFERS from the applier's recorded at %s (fingerprint %s):\n",
			s.origin(), s.Fingerprint, s.Key, s.ApplierFingerprint)
		for _, d := range s.Differences {
			fmt.Fprintf(b, "  %s\n", d)
		}
		b.WriteString("  drift below may be keys the applier does not replicate; drop the scope options to use the applier's\n")
	}
	if s.Source == ScopeFromApplier && len(s.Differences) > 0 {
		b.WriteString("  this auditor's etcdsync makes other rules of the same options (another preset version?):\n")
		for _, d := range s.Differences {
			fmt.Fprintf(b, "  %s\n", d)
		}
	}
	if !s.Repairable {
		fmt.Fprintf(b, "  repair refused: %s\n", s.NotRepairable)
	}
	for _, ns := range s.UnknownNamespaces {
		fmt.Fprintf(b, "  warning: excluded namespace %q exists on neither side: a typo? (the namespace meant is replicated)\n", ns)
	}
}

// origin returns " (<Origin>)", or "" without one.
func (s *ScopeInfo) origin() string {
	if s.Origin == "" {
		return ""
	}
	return " (" + s.Origin + ")"
}

// WriteText writes the report for people: the position compared, each kind
// of drift with its first keys, and what to do about it.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "etcdsync audit %s at %s (%.2fs)\n", r.ID, r.Time.UTC().Format(time.RFC3339), r.DurationSeconds)
	fmt.Fprintf(&b, "position: standby revision %d holds source cluster %s generation %d revision %d (stream seq %d)",
		r.StandbyRevision, r.ClusterID, r.Generation, r.SourceRevision, r.StreamSeq)
	if !r.SourceTime.IsZero() {
		fmt.Fprintf(&b, ",\n          observed on the primary at %s, %s before the audit", r.SourceTime.UTC().Format(time.RFC3339),
			time.Duration(r.SourceAgeSeconds*float64(time.Second)).Round(time.Second))
	}
	b.WriteString("\n")
	revs := "revisions"
	if r.BehindHeadRevisions == 1 {
		revs = "revision"
	}
	fmt.Fprintf(&b, "primary head: revision %d, the compared position is %d %s behind it\n", r.PrimaryHeadRevision, r.BehindHeadRevisions, revs)
	prefix := "every key"
	if r.Prefix != "" {
		prefix = "keys under " + strconv.Quote(r.Prefix)
	}
	fmt.Fprintf(&b, "compared: %d in-scope keys (%s; primary %d, standby %d)\n", r.Compared, prefix, r.PrimaryKeys, r.StandbyKeys)
	if u := r.Unparsed; u.Count > 0 {
		fmt.Fprintf(&b, "warning: %d of them do not parse as Kubernetes keys (an aggregated API server storing under its own --etcd-prefix inside the prefix?):\n"+
			"  only the prefix rules decide them, no namespace or resource exclusion applies; exclude them with --exclude-prefix if they must not be replicated\n", u.Count)
		for _, k := range u.FirstKeys {
			fmt.Fprintf(&b, "  %s\n", printable(k))
		}
		if n := u.Count - int64(len(u.FirstKeys)); n > 0 {
			fmt.Fprintf(&b, "  ... and %d more\n", n)
		}
	}
	r.Scope.writeText(&b)
	if r.Consistent {
		fmt.Fprintf(&b, "result: CONSISTENT at source revision %d (standby revision %d), no drift\n", r.SourceRevision, r.StandbyRevision)
	} else {
		fmt.Fprintf(&b, "result: DRIFT, %d key(s) differ (%d missed, %d surplus, %d mismatched)\n",
			r.Drifted(), r.Missed.Count, r.Surplus.Count, r.Mismatched.Count)
	}
	// The three lists are always shown, under the names operators know
	// them by, each with what to do.
	section := func(l *DriftList, title, what, fix string) {
		fmt.Fprintf(&b, "\nLOCAL ETCD %s: %d (%s)\n", title, l.Count, what)
		if l.Count == 0 {
			return
		}
		for _, k := range l.Keys {
			fmt.Fprintf(&b, "  %s", printable(k.Key))
			if k.State == Mismatched {
				fmt.Fprintf(&b, "  primary hmac:%.12s standby hmac:%.12s", k.PrimaryHMAC, k.StandbyHMAC)
			}
			b.WriteString("\n")
		}
		if l == &r.Mismatched {
			fmt.Fprintf(&b, "  (hmac: HMAC-SHA256 of the value under key %s)\n", r.ValueHMACKey)
		}
		if n := l.Count - int64(len(l.Keys)); n > 0 {
			fmt.Fprintf(&b, "  ... and %d more (--max-keys, or --json)\n", n)
		}
		fmt.Fprintf(&b, "  what to do: %s\n", fix)
	}
	section(&r.Missed, "missed keys", "on the primary, not on the standby",
		"re-apply them from the primary with `etcdsync audit --once --repair`")
	section(&r.Surplus, "surplus keys", "on the standby only",
		"confirm with the team that nobody wrote them on the standby on purpose, then delete them with `etcdsync audit --once --repair --repair-surplus`")
	section(&r.Mismatched, "mismatched keys", "different values",
		"re-apply the primary's values with `etcdsync audit --once --repair`")
	b.WriteString("\n")
	switch e := r.Events; {
	case e.Published:
		fmt.Fprintf(&b, "drift events: %d messages published on %s.> (stream %s)", e.Messages, e.Subject, e.Stream)
		if e.Truncated {
			b.WriteString("; per-key events truncated (--max-events)")
		}
		b.WriteString("\n")
	default:
		fmt.Fprintf(&b, "drift events: not published: %s\n", e.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
