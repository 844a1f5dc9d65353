package applier

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/streams"
)

// Checkpoint is the applier's durable state, stored as JSON in the standby
// etcd so operators can read it with etcdctl.
type Checkpoint struct {
	// Position is the last complete record applied and the stream sequence
	// of the last message consumed.
	Position streams.Position `json:"position"`
	// SourceTime is when the publisher observed Position.Revision.
	SourceTime time.Time `json:"source_time"`
	// AppliedAt is when this checkpoint was written.
	AppliedAt time.Time `json:"applied_at"`
	// Snapshot is set while a snapshot is being applied.
	Snapshot *SnapshotState `json:"snapshot,omitempty"`
	// Partial is set when a record larger than one standby transaction is
	// half applied: its first Events events are durable.
	Partial *Partial `json:"partial,omitempty"`
	// Promoted fences the applier: set by promotion, never cleared by it.
	Promoted bool `json:"promoted,omitempty"`
	// Stopped says why the applier stopped (see Stop); nil while it runs.
	Stopped *Stop `json:"stopped,omitempty"`
	// InFlight is set while an operation too large to go with the
	// checkpoint is written alone: until the checkpoint that follows it,
	// the standby may hold that write of the next record. Only reported
	// (status, promote); resuming ignores it.
	InFlight *InFlight `json:"in_flight,omitempty"`
	// Digest is the digest of the standby's in-scope keys after the
	// operations this checkpoint covers (nil: not known; see ScopeDigest).
	Digest *ScopeDigest `json:"digest,omitempty"`
	// LogDigest is the digest of the whole source keyspace under the
	// publisher's prefix at Position, as the log's events give it (nil: not
	// known); every digested record must carry the same (see LogChain).
	LogDigest *streams.Digest `json:"log_digest,omitempty"`
}

// InFlight names the write an alone operation may have made ahead of the
// checkpoint.
type InFlight struct {
	// Seq is the stream sequence of the record's last message.
	Seq uint64 `json:"seq"`
	// Key is the key written.
	Key string `json:"key"`
}

// SnapshotState tracks a snapshot being applied.
type SnapshotState struct {
	ClusterID  uint64 `json:"cluster_id"`
	Generation uint64 `json:"generation"`
	Revision   int64  `json:"revision"`
	Prefix     string `json:"prefix"`
	// BaseRevision is the standby revision when this snapshot began;
	// in-scope keys not written since are absent from the snapshot.
	BaseRevision int64 `json:"base_revision"`
	// FirstBaseRevision is the standby revision when the first snapshot of
	// this bootstrap began (snapshots interrupted and replaced by a newer
	// one belong to the same bootstrap). Keys created after it are the
	// pipeline's own; only older ones count for the mass-delete guard.
	// Zero in checkpoints written before it existed: BaseRevision then.
	FirstBaseRevision int64 `json:"first_base_revision,omitempty"`
	// InScopeBefore counts the standby's in-scope keys when the first
	// snapshot of this bootstrap began.
	InScopeBefore int64 `json:"in_scope_before"`
	// BeginSeq is the stream sequence of the snapshot's begin record (zero
	// in checkpoints written before it existed): a restart checks that the
	// stream still holds it there, so a recreated stream is not taken for
	// the rest of this snapshot.
	BeginSeq uint64 `json:"begin_seq,omitempty"`
	// Chunks and Keys count what was applied so far.
	Chunks uint64 `json:"chunks"`
	Keys   uint64 `json:"keys"`
}

// history returns the history the standby holds or is being seeded with:
// the snapshot being applied, else the last position.
func (ck *Checkpoint) history() (cluster, gen uint64, rev int64) {
	if s := ck.Snapshot; s != nil {
		return s.ClusterID, s.Generation, s.Revision
	}
	return ck.Position.ClusterID, ck.Position.Generation, ck.Position.Revision
}

// olderThan reports whether the snapshot (its snapshot-begin record) is an
// earlier point of the checkpoint's history: the same source cluster and
// an earlier generation, or the same generation at a lower revision.
// Re-seeding from it would roll the standby back. Snapshots of another
// cluster are not comparable and never older.
func (ck *Checkpoint) olderThan(snap *streams.Record) bool {
	cluster, gen, rev := ck.history()
	if ck.Position.Seq == 0 || snap.ClusterID != cluster {
		return false
	}
	return snap.Generation < gen || (snap.Generation == gen && snap.Revision < rev)
}

// olderGeneration reports whether r belongs to the source cluster the
// standby follows but to a generation before the one it holds (or is
// applying a snapshot of): an earlier history, such as genuine messages of
// a recreated stream replayed at their old sequences. Applying its
// snapshot would roll the standby back.
func (ck *Checkpoint) olderGeneration(r *streams.Record) bool {
	if ck.Position.Seq == 0 && ck.Snapshot == nil {
		return false
	}
	cluster, gen, _ := ck.history()
	return r.ClusterID == cluster && r.Generation < gen
}

// firstBase returns the standby revision when the bootstrap's first snapshot began.
func (s *SnapshotState) firstBase() int64 {
	if s.FirstBaseRevision != 0 {
		return s.FirstBaseRevision
	}
	return s.BaseRevision
}

// Partial records how much of a record split across standby transactions
// is applied.
type Partial struct {
	// Seq is the stream sequence of the record's last message.
	Seq uint64 `json:"seq"`
	// Events is the number of the record's events already applied.
	Events int `json:"events"`
}

// ReadCheckpoint reads the checkpoint at key from the standby. It returns the
// checkpoint and the key's mod revision (0 when absent, with a zero checkpoint).
func ReadCheckpoint(ctx context.Context, cli *clientv3.Client, key string) (Checkpoint, int64, error) {
	ck, modRev, _, err := readCheckpoint(ctx, cli, key)
	return ck, modRev, err
}

// readCheckpoint is ReadCheckpoint that also returns the etcd revision the
// checkpoint was read at.
func readCheckpoint(ctx context.Context, cli *clientv3.Client, key string) (Checkpoint, int64, int64, error) {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return Checkpoint{}, 0, 0, fmt.Errorf("read checkpoint %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return Checkpoint{}, 0, resp.Header.Revision, nil
	}
	var ck Checkpoint
	if err := json.Unmarshal(resp.Kvs[0].Value, &ck); err != nil {
		return Checkpoint{}, 0, 0, fmt.Errorf("read checkpoint %s: %w", key, err)
	}
	return ck, resp.Kvs[0].ModRevision, resp.Header.Revision, nil
}

func (ck *Checkpoint) encode() string {
	b, err := json.Marshal(ck)
	if err != nil {
		panic(fmt.Sprintf("encode checkpoint: %v", err)) // only plain fields: cannot fail
	}
	return string(b)
}
