// Package applier replays the etcdsync log into the standby etcd.
//
// Invariants:
//
//   - Order: messages are consumed in stream order; every message's stream
//     sequence must be the previous one + 1. A jump (retention or a purge
//     removed messages) is never skipped: the session ends with ErrGap and
//     Run re-seeds the standby from the newest snapshot that is not older
//     than the checkpoint (or asks the publisher for one).
//   - Authenticated: with a key ring (Config.LogKeys) every message's MAC
//     is checked for its stream position before anything of its batch is
//     written; a forged, altered, replayed or unsigned message stops the
//     applier (streams.ErrUnauthenticated). ReadVerifiedStatus and Promote
//     (PromoteConfig.LogKeys) check the stream's last messages the same
//     way: one that fails is reported (StreamStatus.Unauthenticated,
//     PromoteReport.Unauthenticated) and never taken as the publisher's
//     position, the drain target or the revision to bump past.
//   - Exactly-once effect: the checkpoint (a key in the standby etcd, default
//     "/etcdsync/checkpoint/<stream>") is written in the same transaction as
//     the operations it covers, guarded by a compare on its own mod-revision.
//     A crash leaves both or neither; a second applier with a stale view
//     fails the compare (ErrConflict) and re-reads the checkpoint.
//   - Batching: consecutive revisions are folded into one standby
//     transaction up to MaxTxnOps operations and MaxTxnBytes request bytes,
//     the checkpoint's compare and put counted in both; a later write of a
//     key replaces an earlier one in the same transaction (etcd rejects a
//     transaction that writes a key twice), its size difference counted,
//     the transaction flushed first when it would exceed the budget.
//   - Transactions end at revision boundaries: a revision that fits whole
//     in one transaction is never split across two (the transaction being
//     built ends before it), so the standby never shows part of a source
//     transaction. A revision larger than one transaction is split; the
//     checkpoint records how many of its events are durable (Partial) and
//     advances only with its last part.
//   - Values up to the standby's request limit: an operation too large to
//     go with the checkpoint under MaxRequestBytes is written alone under
//     the checkpoint compare, and the checkpoint follows in a transaction
//     of its own (a crash in between re-applies the operation, which is
//     idempotent). Every value a kube-apiserver write carried to a primary
//     with the same limit fits that way (its own compare and read-back of
//     the key are larger than the checkpoint compare). A put the standby
//     refuses even alone under the compare (a plain etcd put within about
//     20 bytes plus the checkpoint key's length of the limit: the request
//     the primary took has no room for a compare) is written as a plain
//     put, right after an empty transaction under the compare proves the
//     checkpoint is still the applier's, and counted in
//     etcdsync_applier_unguarded_puts_total. Fencing holds for it too: the
//     applier reads the checkpoint at the put's revision, and a put that
//     landed after another applier wrote the checkpoint is undone (the key
//     restored to its state before it, unless written again since) and the
//     session ends with ErrConflict. Before any operation is written
//     alone, the checkpoint records it as in flight (InFlight), so status
//     and promote report the next revision as possibly half applied until
//     the checkpoint follows. A plain put within one byte of the
//     limit may still not fit: etcd's request IDs are a byte longer on
//     some members than on others. An operation the
//     standby refuses even alone stops the applier with a *TooLargeError
//     (ErrTooLarge) naming the key, the request size and the limit, never
//     retried; the checkpoint records it (Stopped) for status and
//     readiness until the next checkpoint the applier writes.
//   - Bootstrap: a snapshot makes the standby's in-scope keyspace exactly
//     the snapshot: every snapshot key is put, then every in-scope standby key
//     under the snapshot's prefix that the snapshot did not write (its
//     mod-revision is not above the standby revision recorded when the
//     snapshot began) is deleted. A snapshot interrupted and replaced by a
//     newer one belongs to the same bootstrap; starting one clears any
//     half-applied record (Partial) of the history it replaces.
//   - Mass-delete guard: the deletions it counts are of keys that were on
//     the standby before the bootstrap's first snapshot began (created at or
//     below that snapshot's base revision); keys an interrupted snapshot of
//     the same bootstrap created are the pipeline's own. More than
//     MassDeleteMinKeys of them and more than MaxDeleteRatio of the
//     standby's in-scope keys at that time stop the applier (ErrMassDelete)
//     unless AllowMassDelete.
//   - No rollback: the standby is never re-seeded from a snapshot older than
//     its checkpoint (same source cluster, an earlier generation or a lower
//     revision). A stream that ends before the checkpoint in the
//     checkpoint's own history (same cluster, generation not above the
//     checkpoint's: a mirror refilling from seq 1; a recreated stream starts
//     a generation above every earlier one) is waited for, as is a stream
//     whose only snapshots are older; the log says what for and the
//     etcdsync_applier_waiting_for_stream_seq and _waiting_for_snapshot
//     gauges show it. Only Reseed (etcdsync apply --reseed) accepts the
//     rollback. A stream of another history (another cluster, a later
//     generation, or no longer holding a half-applied snapshot's begin
//     record at its sequence) re-seeds from its newest snapshot.
//   - Snapshot transactions are sent one at a time, like revisions: etcd
//     reorders concurrent transactions, and the snapshot's owner-first order
//     (CRDs, Namespaces, then ascending CreateRevision) must reach the
//     standby as published, or its garbage collector could see a child
//     before its owner.
//   - Scope: keys the rules exclude are never written or deleted. The
//     checkpoint key lies outside the scope (Config.Validate refuses it
//     otherwise).
//   - Half-applied revisions are never hidden: while a checkpoint's Partial
//     marker is set, ReadStatus and Promote report which revision is half
//     applied and how many of its events are on the standby, and Promote
//     returns ErrInconsistent.
//   - Revision-faithful failover: Promote with BumpRevision raises the
//     standby's revision above every source revision seen, then compacts
//     the standby at the bumped revision (PromoteReport.CompactedRevision),
//     so no watch can resume inside the replica's history, whose revision
//     numbers are the standby's and not the primary's: a client that last
//     saw an older resourceVersion gets ErrCompacted (410 Gone) and
//     re-lists. A re-run compacts only if the history before the fence is
//     still readable.

//   - Lag is measured against the origin: when the stream is a mirror (the
//     standby site's copy of the primary's log), ReadStatus counts the
//     messages the mirror has not copied and takes the lag in seconds as at
//     least the time since the mirror last heard from its origin
//     (StreamStatus.Mirror), and the applier exports both
//     (etcdsync_applier_mirror_last_contact_seconds,
//     etcdsync_applier_mirror_origin_lag_messages), so a stalled link
//     between the sites never reads as lag 0.
//   - Scope record: the applier records its effective scope (ScopeRecord:
//     keyspace config, rules text with the preset, the publisher prefix
//     the last snapshot announced, fingerprint) at "<checkpoint key>/scope"
//     when a session starts and when a snapshot announces another prefix,
//     guarded by the checkpoint's mod revision. The auditor compares, and
//     repairs, within that scope.
//   - Verification (verify.go): the checkpoint carries the digest of the
//     standby's in-scope keys (ScopeDigest: per resource type, keys under a
//     lease left out), moved by every in-scope operation handed to the
//     transaction builder, so the operations and the digest that covers them
//     are written in one transaction. It starts empty with every snapshot
//     applied (the snapshot's keys then go in one by one) and follows each
//     revision by its events' previous-value hashes; a revision record
//     without digests, or scope rules other than the checkpoint's at
//     session start, make it unknown (nil) until the next snapshot: one
//     applied, or one the applier skips because it stands exactly at its
//     revision (periodic, digest_lost), whose in-scope keys are then
//     gathered from its chunks: they give a digest the checkpoint lacks,
//     or must equal the one it has (else the applier followed the log
//     wrongly: logged, counted, and the snapshot's digest replaces it, so
//     the standby's verification shows the difference). At most 64
//     resource types keep digests of their own (the rest share "(other)";
//     names cut at 128 bytes), so the checkpoint stays within the room
//     every transaction's budget sets aside for it. Verify
//     reads the checkpoint and scans the in-scope keys pinned at the
//     revision it was read at, so anything written in scope behind the
//     applier's back up to then is seen; a checkpoint in the middle of a
//     snapshot or of an operation written alone, or kept under other rules,
//     is Unverified, never a mismatch. Every VerifyInterval the applier
//     verifies in the background (applying never waits for it), records
//     the outcome at VerifyKey for status, counts mismatches and publishes
//     each on etcdsync.<site>.drift.verify; /readyz is not affected.
//   - The log chain (verify.go): the checkpoint also carries LogDigest,
//     the digest of the whole source keyspace under the publisher's prefix
//     as the log's events give it, started by every snapshot applied (or
//     skipped at the applier's position) and moved by each applied
//     revision record as a whole, after its last event. Every digested
//     record and snapshot end must carry the same digest: one that does
//     not (a log that is not the history it claims, or a record the
//     applier skipped or misplaced) is logged and counted
//     (etcdsync_applier_log_chain_breaks_total), and the chain continues
//     from the record's digest; applying never stops for it. A record
//     without digests makes it unknown until the next snapshot.
//   - Corrupt messages stop the applier (errors wrap streams.ErrCorrupt)
//     before anything of their batch is written. A message of a later
//     frame or record version stops it the same way with "written by a
//     newer etcdsync ...: upgrade the applier" (streams.ErrNewerFormat),
//     which is not reported as corruption.
package applier
