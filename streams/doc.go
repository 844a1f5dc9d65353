// Package streams is etcdsync's wire contract: the names of the JetStream
// stream and subjects, the stream configurations, the binary message codec,
// message headers, the Position type, and an embedded JetStream server.
//
// # The log
//
// One stream (default name "ETCDSYNC") holds the log of one site on subjects
// "etcdsync.<site>.log.>". Every message of the log is one frame of one
// record. A record is one of:
//
//   - a revision: every watch event of one source revision (one source
//     transaction), applied on the standby together;
//   - snapshot-begin, snapshot-chunk, snapshot-end: a consistent copy of the
//     source keyspace at one revision, taken with paginated Get(WithRev(R));
//   - epoch: a fencing marker written by a publisher when it takes over.
//
// A record larger than one message is split into numbered parts (frames with
// the same kind, consecutive stream sequences, parts 0..n-1). The applier
// reassembles the parts before it decodes the record, so a 1.4 MiB value or a
// prefix delete of 50k keys is still one revision for positioning.
//
// # Frame format (version 1)
//
//	offset  size     field
//	0       2        magic "ES"
//	2       1        frame version (1)
//	3       1        kind (1 revision, 2 snapshot-begin, 3 snapshot-chunk, 4 snapshot-end, 5 epoch)
//	4       uvarint  part index (0-based)
//	.       uvarint  number of parts (>= 1)
//	.       4        CRC-32C (Castagnoli) of the payload, big endian
//	.       rest     payload: bytes [part*size, ...) of the encoded record
//
// # Record format (version 1), all integers varint/uvarint
//
//	1 byte record version (1), 1 byte kind,
//	uvarint cluster id, uvarint generation, varint revision, varint time (unix ns),
//	bytes prefix, bytes reason, uvarint chunk, uvarint keys, bytes leader,
//	uvarint event count, then per event:
//	  1 byte type (1 put, 2 delete), bytes key, bytes value,
//	  varint create revision, varint mod revision, varint version, varint lease,
//	  varint lease TTL (seconds remaining when observed)
//
// where "bytes" is a uvarint length followed by that many bytes. Decoding
// never panics: truncated, oversized or corrupt input returns an error that
// wraps ErrCorrupt and names the field.
//
// # Positions
//
// A Position names how far a consumer of the log has come: the source
// cluster, the generation (an unbroken history of that cluster), the last
// source revision whose effect is complete, and the stream sequence of the
// last message consumed. Stream sequences are contiguous on the log: a jump
// means retention or a purge removed messages, never something to skip.
package streams
