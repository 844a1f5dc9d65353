// Package auditor compares the standby etcd with the primary at one
// consistent point, reports the drift (keys missed, surplus, mismatched),
// publishes it as drift events on JetStream, serves it over HTTP, and
// repairs it on request without racing the applier.
//
// # The consistent cut
//
// The applier writes its checkpoint (applier.Checkpoint, default key
// "/etcdsync/checkpoint/<stream>") in the same standby transaction as the
// operations it covers. So at any standby revision S, the standby's
// in-scope keyspace is exactly the primary's in-scope keyspace at the
// source revision P recorded in the checkpoint at S. Audit reads the
// checkpoint (the response's header revision is S), then reads the standby
// pinned at S and the primary pinned at P (clientv3.WithRev), both in key
// order with paginated reads of at most Config.PageSize keys and
// Config.PageBytes bytes, and merges the two streams. Writes that reach either side during the audit are invisible to
// it: there are no false positives from revisions in flight.
//
// A report names the revisions compared (S and P) and how old the
// primary's state at P is: the checkpoint's time of observation of P by the
// publisher, and its age at the audit's start (Report.SourceAgeSeconds);
// and how far P is behind the primary's head, the newest revision the
// primary answered with just after the cut (Report.PrimaryHeadRevision,
// Report.BehindHeadRevisions): what the comparison does not cover yet.
//
// While a snapshot is being applied (a re-seed, or the first bootstrap)
// there is nothing to compare: Audit returns ErrReseeding, a state and not
// a failure: it is not counted in etcdsync_auditor_errors_total,
// etcdsync_auditor_reseeding is 1, and /check answers 200 saying so.
//
// An audit cannot run (it returns an error, and `etcdsync audit --once`
// exits 2) when the checkpoint is absent (ErrNotBootstrapped) or a
// snapshot is being applied (ErrReseeding, which is also
// ErrNotBootstrapped); when the primary has compacted past P
// (ErrCompacted: retry when the applier has caught up, or re-seed); when
// the primary is not the cluster the checkpoint follows; or while a record
// split across standby transactions stays half applied (checkpoint
// Partial; Audit waits up to a second for the applier to finish it).
//
// # Invariants
//
//   - Audit never writes to either etcd; it reads each side at one pinned
//     revision.
//   - Memory is bounded in bytes: by a few pages per side (each side's
//     reader runs one page ahead of the merge) plus the drifted keys
//     remembered (Config.MaxTrackedKeys), never by the size of the
//     keyspace or of its values. A page is at most Config.PageBytes
//     (default 4 MiB): the read sets gRPC's receive limit to it, so a
//     larger response is refused from its length before it is read, and
//     asked for again with half the keys, down to one key (read whatever
//     its size). Since etcd builds a response whole before the client can
//     refuse it, a side's first page asks for 16 keys; after each page the
//     number of keys asked for moves towards what fills half a page at the
//     page's largest key-value size, at most doubling, at most
//     Config.PageSize. Measured (BenchmarkAuditLargeValues,
//     TestAuditMemoryLargeValues): one audit of 150 values of 683 KiB
//     peaks at about 60 MiB resident, down from 637 MiB with pages of
//     1000 keys; one audit of 1,000,000 keys of 1 KiB (BenchmarkAudit1M)
//     at about 50 MiB.
//   - Scope: a key is compared when it is under the publisher's prefix and
//     allowed by the applier's rules (keyspace.Rules.Allowed). Keys outside
//     are neither reported nor repaired. See "One scope" below.
//   - Values are compared byte for byte (both values are in memory for the
//     merge, so this is exact and cheaper than hashing both); reports and
//     events carry a keyed hash of each side's value of a drifted key
//     (see "Value hashes"), never the value and never its plain SHA-256.
//   - Repair never races the applier and never undoes a delete: for each
//     key it reads the standby's checkpoint first (source revision P, mod
//     revision M), then the key on the primary pinned at P, and writes the
//     primary's value at P (or deletes a surplus key the primary lacks at
//     P) in one transaction that compares M and the key's standby mod
//     revision as the audit saw it, and writes only the key, never the
//     checkpoint. While M holds, the standby is the primary at P, so a key
//     deleted on the primary at or before P is never written back (the
//     applier's delete of a key missing on the standby changes only the
//     checkpoint). When the checkpoint moved, both reads are made again;
//     a key changed on the standby since the audit is skipped as in
//     flight. Surplus keys are deleted only with Config.RepairSurplus.
//
// # Value hashes
//
// A drifted key's values are shown as HMAC-SHA256(K, "etcdsync value
// hash\x00" || value), hex (KeyDrift.PrimaryHMAC and StandbyHMAC, JSON
// "primary_value_hmac" and "standby_value_hmac"), and Report.ValueHMACKey
// ("value_hmac_key") names K. A plain SHA-256 would let anyone who reads
// the drift stream test guesses of a Secret's value against it; a keyed
// hash does not. K is:
//
//   - with Config.LogKeys (--log-key-file), the ring's signing key:
//     "log:<key ID>". Every holder of the ring computes the same hashes,
//     so reports of different auditors, runs and restarts compare, and an
//     operator with the key file can check a value they hold. A key
//     rotation changes the signing key, and so the hashes (the key ID says
//     which).
//   - without, a random key drawn once per Auditor: "random:<id>" (the id
//     is random too, not derived from the key). Both sides of one audit,
//     and all reports of one auditor process, use the same key, so a
//     mismatched key's two hashes differ and a key's hash is stable from
//     one report to the next; after a restart the hashes change.
//
// # One scope
//
// The applier records its effective scope in the standby next to its
// checkpoint, at "<checkpoint key>/scope" (applier.ScopeRecord, JSON): its
// keyspace.Config, the rules that config makes in its version (preset
// included), the publisher's prefix the last snapshot announced, and a
// fingerprint of those rule lines, sorted (so the order of options does
// not matter, and any field added to keyspace.Config changes the rules
// text, hence the fingerprint). The applier writes it when a session
// starts and when a snapshot announces another prefix, guarded by the
// checkpoint's mod revision.
//
//   - An audit reads the record at S and compares that scope
//     (ScopeFromApplier), unless Config.ExplicitScope: then Config.Scope
//     and Config.Prefix are compared (ScopeFromConfig) and every rule on
//     which they differ from the record is listed (ScopeInfo.Differences,
//     in the text report, the JSON and on /check). Without a record the
//     audit compares Config.Scope and Config.Prefix.
//   - Repair reads the record again and refuses (ErrScopeMismatch, nothing
//     written) when the scope compared differs from it, when there is
//     none, or when the scope changed since the audit: a repair never
//     writes into, or deletes from, keys the applier leaves alone.
//   - An excluded namespace (Scope.ExcludeNamespaces) whose Namespace
//     object is on neither side (primary at P, standby at S) is listed in
//     ScopeInfo.UnknownNamespaces and warned about as a likely typo: the
//     namespace meant is replicated. `etcdsync audit --print-rules` warns
//     the same way.
//   - The rules are rebuilt from the recorded config by this auditor's
//     version; if they differ from the recorded rules text (another preset
//     version), the difference is listed and Repair refuses too.
//
// # Drift events
//
// With a JetStream context, every report is published on the drift stream
// (default "ETCDSYNC_DRIFT"; subjects "etcdsync.<site>.drift" and
// "etcdsync.<site>.drift.>"; file storage, MaxAge default 7 days, discard
// old), created or updated on the first audit. Each run publishes up to
// Config.MaxEvents per-key events on "etcdsync.<site>.drift.key", in key
// order, then exactly one summary event on "etcdsync.<site>.drift.summary"
// (also when nothing drifted). Each message has a Nats-Msg-Id of
// "<run_id>:<index>" or "<run_id>:summary". Bodies are JSON; consumers
// should ignore unknown fields and check "schema". Subscribe with
// `nats sub 'etcdsync.primary.drift.>'` or a durable consumer on the stream.
//
// Summary event (schema "etcdsync.drift.summary/v1"):
//
//	schema               string  "etcdsync.drift.summary/v1"
//	run_id               string  identifies the run; key events carry the same
//	time                 string  RFC 3339 time of publication
//	site                 string  the site of the log (subject token)
//	prefix               string  publisher prefix compared ("" = every key)
//	cluster_id           string  source (primary) cluster ID, hex
//	generation           number  generation of the log the standby follows
//	source_revision      number  P: primary revision compared
//	standby_revision     number  S: standby revision compared
//	stream_seq           number  log stream sequence of the checkpoint at S
//	consistent           bool    true when nothing drifted
//	keys_compared        number  distinct in-scope keys seen on either side
//	missed               number  keys on the primary only
//	surplus              number  keys on the standby only
//	mismatched           number  keys whose values differ
//	key_events           number  per-key events published before this summary
//	key_events_truncated bool    more keys drifted than key_events
//	duration_seconds     number  time the comparison took
//
// Key event (schema "etcdsync.drift.key/v2"; v1 carried plain SHA-256
// hashes in primary_sha256 and standby_sha256): run_id, time, site,
// cluster_id, generation, source_revision and standby_revision as above, and
//
//	index                number  0-based index of the event in its run
//	key                  string  the etcd key (invalid UTF-8 replaced)
//	key_base64           string  exact key, base64; only when key is not UTF-8
//	state                string  "missed", "surplus" or "mismatched"
//	primary_mod_revision number  key's mod revision on the primary at P (absent if 0)
//	standby_mod_revision number  key's mod revision on the standby at S (absent if 0)
//	value_hmac_key       string  key of the value hashes: "log:<key ID>" or "random:<id>"
//	primary_value_hmac   string  hex HMAC-SHA256 of the primary's value (absent for surplus)
//	standby_value_hmac   string  hex HMAC-SHA256 of the standby's value (absent for missed)
//
// Example key event:
//
//	{"schema":"etcdsync.drift.key/v2","run_id":"20250101T120000Z-1a2b3c4d",
//	 "time":"2025-01-01T12:00:00.41Z","site":"primary","cluster_id":"cdf818194e3a8c32",
//	 "generation":1,"source_revision":48211,"standby_revision":51007,"index":0,
//	 "value_hmac_key":"log:k2026","key":"/registry/configmaps/app/settings",
//	 "state":"mismatched","primary_mod_revision":48100,"standby_mod_revision":50990,
//	 "primary_value_hmac":"5d2a0c1...","standby_value_hmac":"b81f7e9..."}
//
// Example summary event:
//
//	{"schema":"etcdsync.drift.summary/v1","run_id":"20250101T120000Z-1a2b3c4d",
//	 "time":"2025-01-01T12:00:00.41Z","site":"primary","prefix":"",
//	 "cluster_id":"cdf818194e3a8c32","generation":1,"source_revision":48211,
//	 "standby_revision":51007,"stream_seq":48390,"consistent":false,
//	 "keys_compared":10234,"missed":0,"surplus":0,"mismatched":1,
//	 "key_events":1,"key_events_truncated":false,"duration_seconds":0.31}
//
// # HTTP and metrics
//
// CheckHandler serves the last report (/check). Metrics, registered on the
// Registerer given to New: etcdsync_auditor_keys{state="missed|surplus|mismatched"},
// etcdsync_auditor_keys_compared, etcdsync_auditor_unparsed_keys (of those,
// the keys that do not parse as Kubernetes keys, which the report names),
// etcdsync_auditor_last_run_timestamp_seconds,
// etcdsync_auditor_last_run_duration_seconds, etcdsync_auditor_errors_total
// (audits that could not complete, re-seeding excluded, and reports not
// published), etcdsync_auditor_reseeding and
// etcdsync_auditor_repaired_keys_total.
package auditor
