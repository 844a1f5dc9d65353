package publisher

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/digestscan"
	"github.com/etcdsync/etcdsync/streams"
)

// snapKey is one key of a snapshot before its value is read.
type snapKey struct {
	key       string
	createRev int64
	class     int
}

// Owner classes, written in this order so the standby's garbage collector
// never sees an object before what it depends on.
const (
	classCRD = iota
	classNamespace
	classOther
)

// ownerClass places CustomResourceDefinitions first, then Namespaces, then
// everything else.
func (p *Publisher) ownerClass(key string) int {
	switch {
	case strings.HasPrefix(key, p.cfg.KubernetesPrefix+"/apiextensions.k8s.io/customresourcedefinitions/"):
		return classCRD
	case strings.HasPrefix(key, p.cfg.KubernetesPrefix+"/namespaces/"):
		return classNamespace
	}
	return classOther
}

// snapshot publishes a consistent copy of the source keyspace under the
// prefix at one revision R as snapshot-begin, snapshot-chunk... and
// snapshot-end records, and returns R. at pins R (0: the current revision).
//
// Keys are published CustomResourceDefinitions first, then Namespaces, then
// in ascending CreateRevision, so an owner reaches the standby before the
// objects created after it (etcd's key order puts pods before replicasets).
// It reads keys only first (bounded by the key count, not the values), then
// values in read-only transactions of up to 128 gets pinned at R.
func (p *Publisher) snapshot(ctx context.Context, s *sender, reason string, at int64) (int64, error) {
	start := time.Now()
	keys, rev, err := p.snapshotKeys(ctx, at)
	if err != nil {
		return 0, err
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := &keys[i], &keys[j]
		if a.class != b.class {
			return a.class < b.class
		}
		if a.createRev != b.createRev {
			return a.createRev < b.createRev
		}
		return a.key < b.key
	})
	begin := &streams.Record{Kind: streams.KindSnapshotBegin, Revision: rev, Time: start, Prefix: []byte(p.cfg.Prefix), Reason: reason}
	s.snapBytes = 0
	if err := s.send(ctx, begin); err != nil {
		return 0, err
	}
	s.lastSnap = start
	// Requests queued until now are answered by this snapshot (an applier
	// that started before the first snapshot would otherwise get a second).
	select {
	case <-p.requests:
	default:
	}
	var (
		chunk      = streams.Record{Kind: streams.KindSnapshotChunk, Revision: rev}
		chunkBytes int
		published  uint64
		digest     streams.Digest // of the keys without a lease
		digested   uint64
	)
	flush := func() error {
		if len(chunk.Events) == 0 {
			return nil
		}
		chunk.Time = start // every record of a snapshot carries its start time (its identity)
		if err := s.send(ctx, &chunk); err != nil {
			return err
		}
		chunk = streams.Record{Kind: streams.KindSnapshotChunk, Revision: rev, Chunk: chunk.Chunk + 1}
		chunkBytes = 0
		return nil
	}
	const perTxn = 128
	ops := make([]clientv3.Op, 0, perTxn)
	for i := 0; i < len(keys); i += perTxn {
		ops = ops[:0]
		for _, k := range keys[i:min(i+perTxn, len(keys))] {
			ops = append(ops, clientv3.OpGet(k.key, clientv3.WithRev(rev)))
		}
		resp, err := p.etcd.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return 0, fmt.Errorf("snapshot at revision %d: read values after %d keys: %w", rev, published, err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				e := streams.Event{Type: streams.EventPut, Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
				if e.Lease != 0 {
					if e.LeaseTTL, err = p.leases.remaining(ctx, e.Lease); err != nil {
						return 0, fmt.Errorf("snapshot at revision %d: %w", rev, err)
					}
				}
				if e.Lease == 0 {
					digest.AddPair(e.Key, e.Value)
					digested++
				}
				chunk.Events = append(chunk.Events, e)
				chunkBytes += streams.EventSize(&e)
				published++
				if chunkBytes >= p.cfg.SnapshotChunkBytes {
					if err := flush(); err != nil {
						return 0, err
					}
				}
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	if published != uint64(len(keys)) {
		return 0, fmt.Errorf("snapshot at revision %d: listed %d keys but read %d values", rev, len(keys), published)
	}
	// A snapshot at a revision the log already describes is a rescan of
	// the source there: it must agree with the digest the log carries.
	if s.dg.known && s.dg.rev == rev {
		if err := p.checkDigest(rev, s.dg.d, digestscan.Result{Revision: rev, Digest: digest, Keys: digested}); err != nil {
			return 0, err
		}
	}
	s.dg = keyspaceDigest{known: true, rev: rev, d: digest}
	endRec := &streams.Record{Kind: streams.KindSnapshotEnd, Revision: rev, Time: start, Chunk: chunk.Chunk, Keys: published,
		Digested: true, Digest: digest}
	if err := s.send(ctx, endRec); err != nil {
		return 0, err
	}
	if s.maxBytes > 0 && s.maxBytes < 2*s.snapBytes {
		// The next snapshot would push this one out before it completes:
		// for a while the stream would hold no complete base.
		return 0, fmt.Errorf("stream %s holds at most %d bytes, less than twice the %d bytes of the snapshot just published at revision %d: raise its max bytes (etcdsync streams init --max-bytes) to at least %d: %w",
			p.cfg.Stream.Name, s.maxBytes, s.snapBytes, rev, 2*s.snapBytes, ErrRetention)
	}
	p.metrics.snapshots.WithLabelValues(reasonLabel(reason)).Inc()
	p.metrics.snapshotsKeys.Add(float64(published))
	p.log.Info("snapshot published", "revision", rev, "keys", published, "chunks", chunk.Chunk, "reason", reason, "duration", time.Since(start))
	return rev, nil
}

// snapshotKeys lists the keys under the prefix at revision at (0: now),
// keys only, paginated and pinned at the revision of the first page.
func (p *Publisher) snapshotKeys(ctx context.Context, at int64) ([]snapKey, int64, error) {
	key, end := p.cfg.Prefix, clientv3.GetPrefixRangeEnd(p.cfg.Prefix)
	if key == "" {
		key, end = "\x00", "\x00"
	}
	var keys []snapKey
	rev := at
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(p.cfg.SnapshotPageSize), clientv3.WithKeysOnly()}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := p.etcd.Get(ctx, key, opts...)
		if err != nil {
			return nil, 0, fmt.Errorf("snapshot: list keys after %d: %w", len(keys), err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			keys = append(keys, snapKey{key: k, createRev: kv.CreateRevision, class: p.ownerClass(k)})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return keys, rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Snapshot reasons, also the values of the reason label.
const (
	ReasonFirstStart = "first_start"
	ReasonContinuity = "continuity"
	ReasonPeriodic   = "periodic"
	ReasonRequested  = "requested"
	// ReasonResumed: the stream ends in a snapshot whose publisher died
	// before its end; its successor takes it again at the same revision,
	// in the same generation.
	ReasonResumed = "resumed"
	// ReasonDigestLost: an event came without its key's previous value,
	// so the keyspace digest could no longer be followed; a snapshot in
	// the same generation gives it again.
	ReasonDigestLost = "digest_lost"
)

// reasonLabel maps a reason text ("continuity: ...") to its label.
func reasonLabel(reason string) string {
	label, _, _ := strings.Cut(reason, ":")
	switch label {
	case ReasonFirstStart, ReasonContinuity, ReasonPeriodic, ReasonRequested, ReasonResumed, ReasonDigestLost:
		return label
	}
	return "other"
}
