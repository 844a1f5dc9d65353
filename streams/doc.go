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
// # Frame format (version 2)
//
//	offset  size     field
//	0       2        magic "ES"
//	2       1        frame version (2)
//	3       1        kind (1 revision, 2 snapshot-begin, 3 snapshot-chunk, 4 snapshot-end, 5 epoch)
//	4       1        flags (bit 0: the frame is signed; other bits must be 0)
//	5       uvarint  part index (0-based)
//	.       uvarint  number of parts (>= 1)
//	.       1+n      signed frames only: key ID length n (1..64), key ID
//	.       ...      payload: bytes [part*size, ...) of the encoded record
//	.       32       signed frames only: MAC
//	end-4   4        CRC-32C (Castagnoli) of every byte before it, big endian
//
// The CRC covers the whole frame, header included, and is checked before
// anything of the header is trusted; a frame's kind must equal its
// record's. The MAC is HMAC-SHA256, under the key the key ID names, of
//
//	"etcdsync log frame v2\x00" || uint64 big endian: stream sequence of the message before this one
//	|| uvarint length, subject the message is published on || frame bytes before the MAC
//
// so a message verifies only at the place it was published at: its
// position and its subject, which names the site and the record kind.
// Forged, altered and replayed messages fail, and so does a genuine
// message of another site's log signed with the same key (the reverse
// direction after a failover) copied into this one. Mirrors keep the
// origin's sequences and subjects, so the standby checks the same MAC.
// The stream's name is not covered (a mirror may be named differently):
// two deployments that share a site name must not share a key.
// Readers take a record's cluster, generation and revision from the
// verified record, never from the message headers (Header* in
// headers.go, for people and tools reading the stream), which no MAC
// covers. The key ring (KeyRing, --log-key-file)
// holds one key per line, "ID:BASE64", at least 32 bytes each; the first
// signs and all verify, so keys rotate without downtime. A consumer with a
// ring rejects unsigned frames (ErrUnauthenticated); without one it reads
// signed and unsigned frames alike.
//
// Every later version keeps the magic first and this CRC last, so a
// reader tells a frame (or a record inside a checked frame) of a later
// version from a corrupt one: it returns ErrNewerFormat, "written by a newer
// etcdsync", and the applier and publisher stop and ask for an upgrade
// rather than report corruption or start a new generation.
//
// Version 1 (CRC over the payload only, no flags, no MAC, no digests) is
// not read. A publisher whose stream tail it cannot read or authenticate
// starts a new generation with a snapshot after it, so upgrading is: stop
// the publisher, let the applier drain, upgrade both; the applier re-seeds
// from the new generation's snapshot.
//
// # Record format (version 2), all integers varint/uvarint
//
//	1 byte record version (2), 1 byte kind,
//	uvarint cluster id, uvarint generation, varint revision, varint time (unix ns),
//	bytes prefix, bytes reason, uvarint chunk, uvarint keys, bytes leader,
//	bytes digest (empty, or 32 bytes: the record is Digested),
//	uvarint event count, then per event:
//	  1 byte type (1 put, 2 delete), bytes key, bytes value,
//	  varint create revision, varint mod revision, varint version, varint lease,
//	  varint lease TTL (seconds remaining when observed),
//	  bytes previous hash (32 bytes in a Digested record, else empty)
//
// where "bytes" is a uvarint length followed by that many bytes. Every
// fixed-size integer is big endian and every other one a varint, so the
// format does not depend on the architecture that wrote it (an amd64
// primary and an arm64 standby read the same bytes); TestGoldenFrame checks
// a signed frame byte for byte against testdata/golden-v2.hex. Decoding
// never panics: truncated, oversized or corrupt input returns an error that
// wraps ErrCorrupt and names the field.
//
// # Digests
//
// A Digested revision record carries Digest, the multiset digest (see
// Digest) of the source keyspace under the publisher's prefix after that
// revision, and each of its events the ElementHash of the key's previous
// pair, so that anyone replaying the log can keep a digest without reading
// etcd: remove PrevHash, add the new pair. A Digested snapshot-end carries
// the digest of the snapshot, a Digested epoch the digest at its revision
// (so that a publisher resuming after an epoch still has one). Keys under
// a lease are outside every digest. A record without a digest (its
// publisher could not follow the digest; see publisher) breaks the chain
// until the next Digested snapshot-end. DecodeRecordHeader reads the
// digest from a record's first part alone.
//
// # Positions
//
// A Position names how far a consumer of the log has come: the source
// cluster, the generation (an unbroken history of that cluster), the last
// source revision whose effect is complete, and the stream sequence of the
// last message consumed. Stream sequences are contiguous on the log: a jump
// means retention or a purge removed messages, never something to skip.
package streams
