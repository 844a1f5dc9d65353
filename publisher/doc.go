// Package publisher watches a primary etcd and appends every revision to the
// etcdsync log stream.
//
// Invariants:
//
//   - One record per source revision: all watch events sharing a ModRevision
//     are published together, in revision order, with no revision skipped.
//   - Resume from the stream tail: a publisher (re)starts by reading the last
//     message of the log and watching from the revision after it. It never
//     keeps a position of its own, so the stream is the only truth.
//   - A new generation, starting with a consistent snapshot, begins whenever
//     continuity cannot be proven: empty stream, source cluster changed,
//     source revision behind the tail (restored etcd), etcd compacted past the
//     tail, or a record left half-published at the tail by a crash.
//   - Fencing: every session starts by writing an epoch marker with
//     ExpectLastSequence(tail); every data message carries
//     ExpectLastSequenceForSubject(epoch, epoch subject). Once another
//     publisher has written a newer epoch, this one's writes are rejected and
//     Run returns ErrFenced. A write acknowledged as a duplicate (the newer
//     publisher stored the same record first) also means ErrFenced: a
//     session never repeats a record of its own, because it starts exactly
//     at the tail its epoch fenced.
//   - Every data message also expects the stream's last sequence to be the
//     one before it, so a message lost in a reconnect cannot leave a hole.
//   - Progress: while the prefix is idle, an empty revision record at the
//     watch's progress revision moves the log's position with the source.
//   - Publishing is asynchronous with a bounded window; acknowledgements are
//     checked in publish order; any error ends the session, and the next
//     session re-reads the tail (with capped exponential backoff).
package publisher
