// Package applier replays the etcdsync log into the standby etcd.
//
// Invariants:
//
//   - Order: messages are consumed in stream order; every message's stream
//     sequence must be the previous one + 1. A jump (retention or a purge
//     removed messages) stops the applier with ErrGap; it is never skipped.
//   - Exactly-once effect: the checkpoint (a key in the standby etcd, default
//     "/etcdsync/checkpoint/<stream>") is written in the same transaction as
//     the operations it covers, guarded by a compare on its own mod-revision.
//     A crash leaves both or neither; a second applier with a stale view
//     fails the compare (ErrConflict) and re-reads the checkpoint.
//   - Batching: consecutive revisions are folded into one standby
//     transaction up to MaxTxnOps operations (checkpoint included) and
//     MaxTxnBytes; a later write of a key replaces an earlier one in the same
//     transaction (etcd rejects a transaction that writes a key twice). A
//     revision larger than one transaction is split; its checkpoint advances
//     only with its last part, and a crash in between re-applies the whole
//     revision, which is idempotent.
//   - Bootstrap: a snapshot makes the standby's in-scope keyspace exactly
//     the snapshot: every snapshot key is put, then every in-scope standby key
//     under the snapshot's prefix that the snapshot did not write (its
//     mod-revision is not above the standby revision recorded when the
//     snapshot began) is deleted, unless that would delete more than
//     MaxDeleteRatio of the standby's in-scope keys (ErrMassDelete).
//   - Snapshot transactions are sent one at a time, like revisions: etcd
//     reorders concurrent transactions, and the snapshot's owner-first order
//     (CRDs, Namespaces, then ascending CreateRevision) must reach the
//     standby as published, or its garbage collector could see a child
//     before its owner.
//   - Scope: keys the rules exclude are never written or deleted.
//   - Scope record: the applier records its effective scope (ScopeRecord:
//     keyspace config, rules text with the preset, the publisher prefix
//     the last snapshot announced, fingerprint) at "<checkpoint key>/scope"
//     when a session starts and when a snapshot announces another prefix,
//     guarded by the checkpoint's mod revision. The auditor compares, and
//     repairs, within that scope.
//   - Corrupt messages stop the applier (errors wrap streams.ErrCorrupt)
//     before anything of their batch is written.
package applier
