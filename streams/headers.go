package streams

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Header names carried by every log message.
const (
	HeaderKind       = "Etcdsync-Kind"
	HeaderCluster    = "Etcdsync-Cluster"
	HeaderGeneration = "Etcdsync-Generation"
	HeaderRevision   = "Etcdsync-Revision"
	HeaderPart       = "Etcdsync-Part" // "<index>/<count>"
)

// MsgID returns the Nats-Msg-Id of part of r:
// "<cluster-id>:<generation>:<revision>[:<part>]" for revisions, with a
// kind suffix for the other records, so republishing the same record is
// deduplicated by the stream. Snapshot records carry the snapshot's start
// time (every record of one snapshot has the same Time), so two snapshots
// at the same revision are different records.
func MsgID(r *Record, part, parts int) string {
	id := fmt.Sprintf("%x:%d:%d", r.ClusterID, r.Generation, r.Revision)
	switch r.Kind {
	case KindSnapshotBegin:
		id += ":snap-" + strconv.FormatInt(r.Time.UnixNano(), 10) + "-begin"
	case KindSnapshotChunk:
		id += ":snap-" + strconv.FormatInt(r.Time.UnixNano(), 10) + "-chunk-" + strconv.FormatUint(r.Chunk, 10)
	case KindSnapshotEnd:
		id += ":snap-" + strconv.FormatInt(r.Time.UnixNano(), 10) + "-end"
	case KindEpoch:
		id += ":epoch-" + r.Leader
	}
	if parts > 1 {
		id += ":" + strconv.Itoa(part)
	}
	return id
}

// HeaderRoom is what a log message sets aside for its headers: etcdsync's
// and the Msg-Id (well under 512 bytes: identifiers and numbers) and the
// expected-sequence headers a publisher adds. JetStream counts headers in
// a stream's max_msg_size, and NATS in max_payload.
const HeaderRoom = 1 << 10

// NewMsgs encodes r into one or more messages (parts) on the log subjects
// of subj, each at most maxMsg bytes with its headers (a body of at most
// maxMsg - HeaderRoom bytes), with headers and Msg-Id set. With a non-nil
// ring every message is signed for its position: the first follows stream
// sequence prevSeq, each next one the message before it.
func NewMsgs(subj Subjects, r *Record, maxMsg int, ring *KeyRing, prevSeq uint64) ([]*nats.Msg, error) {
	frames, err := SplitRecord(r, maxMsg-HeaderRoom, ring, subj.ForKind(r.Kind), prevSeq)
	if err != nil {
		return nil, err
	}
	msgs := make([]*nats.Msg, len(frames))
	for i, f := range frames {
		h := nats.Header{}
		h.Set(HeaderKind, r.Kind.String())
		h.Set(HeaderCluster, strconv.FormatUint(r.ClusterID, 16))
		h.Set(HeaderGeneration, strconv.FormatUint(r.Generation, 10))
		h.Set(HeaderRevision, strconv.FormatInt(r.Revision, 10))
		h.Set(HeaderPart, strconv.Itoa(i)+"/"+strconv.Itoa(len(frames)))
		h.Set(nats.MsgIdHdr, MsgID(r, i, len(frames)))
		msgs[i] = &nats.Msg{Subject: subj.ForKind(r.Kind), Header: h, Data: f}
	}
	return msgs, nil
}
