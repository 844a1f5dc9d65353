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
//     with the same limit fits (its own compare and read-back are larger);
//     a plain etcd put within the compare's size (about 50 bytes plus the
//     checkpoint key) of the limit does not. An operation the standby
//     refuses even alone stops the applier with a *TooLargeError (ErrTooLarge)
//     naming the key, the request size and the limit, never retried; the
//     checkpoint records it (Stopped) for status and readiness.
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
//   - Corrupt messages stop the applier (errors wrap streams.ErrCorrupt)
//     before anything of their batch is written.
package applier
