// Package digestscan computes the keyspace digest (streams.Digest) of an
// etcd range by reading it, pinned at one revision: the side of a
// verification that a replayed log is compared with. The publisher scans
// the primary, the applier and `etcdsync verify` the standby.
package digestscan

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/streams"
)

// Result is the digest of a scanned range.
type Result struct {
	// Revision is the revision the scan was pinned at.
	Revision int64
	// Digest covers every key in the range without a lease (see
	// streams.Digest), Keys counts them.
	Digest streams.Digest
	Keys   uint64
	// Groups holds a digest per group name when Options.Group is set.
	Groups map[string]GroupDigest
}

// GroupDigest is the digest of the keys of one group.
type GroupDigest struct {
	Digest streams.Digest
	Keys   uint64
}

// Options say what a scan reads.
type Options struct {
	// Prefix is the range scanned ("" : the whole keyspace).
	Prefix string
	// Revision pins the scan (0: the current revision, which Result names).
	Revision int64
	// PageSize is the number of keys per read (0: 1000).
	PageSize int64
	// Include, when set, leaves out the keys it refuses.
	Include func(key []byte) bool
	// Group, when set, names the group a key's digest is also added to.
	Group func(key []byte) string
}

// Scan reads every key of the range at one revision, paginated, and
// returns their digest. Keys attached to a lease are left out, as every
// digest does. Errors are etcd's (rpctypes.ErrCompacted when the revision
// was compacted), wrapped.
func Scan(ctx context.Context, kv clientv3.KV, o Options) (Result, error) {
	key, end := o.Prefix, clientv3.GetPrefixRangeEnd(o.Prefix)
	if key == "" {
		key, end = "\x00", "\x00"
	}
	page := o.PageSize
	if page <= 0 {
		page = 1000
	}
	res := Result{Revision: o.Revision}
	if o.Group != nil {
		res.Groups = map[string]GroupDigest{}
	}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
		if res.Revision != 0 {
			opts = append(opts, clientv3.WithRev(res.Revision))
		}
		resp, err := kv.Get(ctx, key, opts...)
		if err != nil {
			return Result{}, fmt.Errorf("digest scan at revision %d after %d keys: %w", res.Revision, res.Keys, err)
		}
		if res.Revision == 0 {
			res.Revision = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if kv.Lease != 0 || (o.Include != nil && !o.Include(kv.Key)) {
				continue
			}
			e := streams.ElementHash(kv.Key, kv.Value)
			res.Digest.Add(e)
			res.Keys++
			if o.Group != nil {
				name := o.Group(kv.Key)
				g := res.Groups[name]
				g.Digest.Add(e)
				g.Keys++
				res.Groups[name] = g
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return res, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
