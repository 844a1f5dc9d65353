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
}

// SnapshotState tracks a snapshot being applied.
type SnapshotState struct {
	ClusterID  uint64 `json:"cluster_id"`
	Generation uint64 `json:"generation"`
	Revision   int64  `json:"revision"`
	Prefix     string `json:"prefix"`
	// BaseRevision is the standby revision when the first snapshot began;
	// in-scope keys not written since are absent from the snapshot.
	BaseRevision int64 `json:"base_revision"`
	// InScopeBefore counts the standby's in-scope keys at BaseRevision.
	InScopeBefore int64 `json:"in_scope_before"`
	// Chunks and Keys count what was applied so far.
	Chunks uint64 `json:"chunks"`
	Keys   uint64 `json:"keys"`
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
