package publisher

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/streams"
)

// snapshot publishes a consistent copy of the source keyspace under the
// prefix, read with paginated Gets pinned at one revision R, as
// snapshot-begin, snapshot-chunk... and snapshot-end records. It returns R.
func (p *Publisher) snapshot(ctx context.Context, s *sender, reason string) (int64, error) {
	start := time.Now()
	key, end := p.cfg.Prefix, clientv3.GetPrefixRangeEnd(p.cfg.Prefix)
	if key == "" {
		key, end = "\x00", "\x00"
	}
	// The first page fixes R.
	resp, err := p.etcd.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(p.cfg.SnapshotPageSize))
	if err != nil {
		return 0, fmt.Errorf("snapshot: first page: %w", err)
	}
	rev := resp.Header.Revision
	begin := &streams.Record{Kind: streams.KindSnapshotBegin, Revision: rev, Time: start, Prefix: []byte(p.cfg.Prefix), Reason: reason}
	if err := s.send(ctx, begin); err != nil {
		return 0, err
	}
	var (
		chunk      = streams.Record{Kind: streams.KindSnapshotChunk, Revision: rev}
		chunkBytes int
		keys       uint64
	)
	flush := func() error {
		if len(chunk.Events) == 0 {
			return nil
		}
		chunk.Time = time.Now()
		if err := s.send(ctx, &chunk); err != nil {
			return err
		}
		chunk = streams.Record{Kind: streams.KindSnapshotChunk, Revision: rev, Chunk: chunk.Chunk + 1}
		chunkBytes = 0
		return nil
	}
	for {
		for _, kv := range resp.Kvs {
			e := streams.Event{Type: streams.EventPut, Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
			chunk.Events = append(chunk.Events, e)
			chunkBytes += streams.EventSize(&e)
			keys++
			if chunkBytes >= p.cfg.SnapshotChunkBytes {
				if err := flush(); err != nil {
					return 0, err
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		next := string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		resp, err = p.etcd.Get(ctx, next, clientv3.WithRange(end), clientv3.WithLimit(p.cfg.SnapshotPageSize), clientv3.WithRev(rev))
		if err != nil {
			return 0, fmt.Errorf("snapshot at revision %d: page after %d keys: %w", rev, keys, err)
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	endRec := &streams.Record{Kind: streams.KindSnapshotEnd, Revision: rev, Time: time.Now(), Chunk: chunk.Chunk, Keys: keys}
	if err := s.send(ctx, endRec); err != nil {
		return 0, err
	}
	p.metrics.snapshots.WithLabelValues(snapshotReasonLabel(reason)).Inc()
	p.metrics.snapshotsKeys.Add(float64(keys))
	p.log.Info("snapshot published", "revision", rev, "keys", keys, "chunks", chunk.Chunk, "reason", reason, "duration", time.Since(start))
	return rev, nil
}

// snapshotReasonLabel maps a reason to a bounded label value.
func snapshotReasonLabel(reason string) string {
	switch {
	case reason == "first start":
		return "first_start"
	case len(reason) >= 6 && reason[:6] == "source":
		return "continuity"
	default:
		return "other"
	}
}
