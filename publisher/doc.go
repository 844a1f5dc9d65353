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
//     tail, or a source that no longer holds the history the log describes.
//     The reason, with its evidence, is logged and carried in
//     snapshot-begin.
//   - A crash half-way through a record is not a broken history: the
//     successor publishes an unfinished revision again, whole (its parts
//     get message IDs of their own, so the stream does not take them for
//     another publisher's duplicates), and takes an unfinished snapshot
//     again at its own revision (reason "resumed"), both in the same
//     generation; the applier drops the fragment at the successor's epoch,
//     and a standby that follows the log applies no snapshot because of the
//     crash. Only a compaction past that revision starts a new generation.
//   - Continuity is proven, not assumed (continuity.go): a restored etcd
//     keeps its cluster ID (a copy of a member's data directory even its
//     member ID and raft term), and --bump-revision moves its revision past
//     the log. The witness is the newest record with events: its last keys
//     (at most 3), with their mod revisions and values, must read the
//     same on the source at the log's revision (or the prefix must be empty
//     after a snapshot of no keys). Checked at session start (the tail's
//     witness, found by reading back at most 10,000 messages; none within
//     reach is a new generation), before anything is published after the
//     etcd connection was interrupted or a response's revision went
//     backwards (the witness of that moment is pinned first), and every
//     ProbeInterval (default 1s). A revision in the source's future is a
//     broken history; a compacted one proves nothing and is not a break by
//     itself (the watch then fails with ErrCompacted).
//   - The log carries the source's keyspace digest (digest.go,
//     streams.Digest): every revision record the digest of the keyspace
//     under the prefix after it, every event the hash of its key's
//     previous value (from the watch's previous key-value), every
//     snapshot-end the digest of its keys, every epoch the digest at its
//     revision. A session takes the digest from the tail record and proves
//     it by rescanning the source pinned at the tail's revision (a tail
//     without one: the rescan gives it); a running session rescans at the
//     last revision sent every VerifyInterval (default 10m), in the
//     background, and a snapshot taken at a revision the log describes is
//     such a rescan. A mismatch is a broken history: logged with both
//     digests, counted (etcdsync_publisher_verify_mismatches_total), and
//     the next session starts a new generation; a match sets
//     etcdsync_publisher_last_verified_timestamp_seconds. An event whose
//     previous value etcd could not send (the revision before it
//     compacted) stops the digest: records carry none until a snapshot
//     (reason "digest_lost") gives it again. Keys attached to a lease are
//     outside every digest: the standby expires them on its own clock.
//   - Fencing: every session starts by writing an epoch marker with
//     ExpectLastSequence(tail); every data message carries
//     ExpectLastSequence(the message before it). Once another publisher has
//     written a newer epoch, the stream's last sequence has moved, this
//     one's writes are rejected and Run returns ErrFenced (the rejection is
//     told from a lost publish by reading the epoch subject: only a marker
//     that passes its MAC check fences; a forged one ends the session, and
//     the next starts a new generation after it). No data
//     message carries a per-subject expectation: a replicated stream
//     refuses a second one on the same subject while the first is in its
//     raft pipeline, so it would reject every pipelined message at R3. A
//     write acknowledged as a duplicate (the newer publisher stored the
//     same record first) also means ErrFenced: a
//     session never repeats a record of its own, because it starts exactly
//     at the tail its epoch fenced.
//   - A publisher never writes to a mirror: when the log stream exists and
//     mirrors another (the standby site's NATS given by mistake), every
//     session start refuses it with ErrMirrorStream naming the stream and
//     its origin, before it creates or updates anything. Only promote
//     converts a mirror.
//   - The stream is the operator's: a publisher creates a missing one from
//     its flags and never changes an existing one (differences are logged).
//     It refuses (ErrRetention, not retried) a stream that cannot hold a
//     complete snapshot: max age not above the snapshot interval, or max
//     bytes below twice the snapshot it just published.
//   - Every data message also expects the stream's last sequence to be the
//     one before it, so a message lost in a reconnect cannot leave a hole.
//   - Periodic snapshots (every SnapshotInterval) are due one interval after
//     the newest snapshot-begin of the generation in the stream, not after a
//     session's start: a session that finds one overdue takes it at once, at
//     the tail's revision, so sessions shorter than the interval (restarts,
//     handovers, reconnects) cannot starve them. The age of the newest
//     complete snapshot (its snapshot-end acknowledged, or read from the
//     stream at session start) is exported for the snapshot-age alert.
//   - Progress: while the prefix is idle, an empty revision record at the
//     watch's progress revision moves the log's position with the source.
//   - A stalled watch ends its session: when no watch response follows a
//     progress request for 3 progress intervals, the session reads the
//     source (bounded by one interval); a source that does not answer, or
//     whose revision is past what the watch delivered, ends the session
//     (etcdsync_publisher_watch_stalls_total) and the next one watches again
//     from the tail. Silence alone is legitimate: etcd sends no progress
//     while the watch's next revision is ahead of the store. A half-open
//     connection is closed by gRPC keepalive on the etcd client, which the
//     caller configures (DialKeepAliveTime; cmd/etcdsync sets it on every
//     client it dials).
//   - Publishing is asynchronous with a bounded window; acknowledgements are
//     checked in publish order; any error ends the session, and the next
//     session re-reads the tail (with capped exponential backoff).
package publisher
