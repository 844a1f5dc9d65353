package applier

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseMap maps source leases to standby leases: a key attached to a lease
// on the primary is written on the standby attached to a standby lease
// granted with the source lease's remaining TTL, one standby lease per
// source lease, so it expires on the standby too.
//
// A source lease kept alive on the primary is not kept alive on the
// standby: its keys expire there after the TTL they had when last written
// (a write carrying a longer remaining TTL gets a fresh standby lease).
type leaseMap struct {
	etcd *clientv3.Client
	m    map[int64]standbyLease
}

type standbyLease struct {
	id      clientv3.LeaseID
	expires time.Time
}

// standbyLease returns the standby lease for source lease src, granting one
// with ttl seconds (at least 1) when there is none or it is about to expire.
func (l *leaseMap) standbyLease(ctx context.Context, src, ttl int64) (clientv3.LeaseID, error) {
	now := time.Now()
	// Reuse the standby lease while it outlives the source lease's TTL as
	// the event carries it (within a second); a source lease kept alive
	// and written again gets a fresh standby lease with its new TTL.
	if e, ok := l.m[src]; ok && !e.expires.Before(now.Add(time.Duration(ttl-1)*time.Second)) && e.expires.After(now.Add(time.Second)) {
		return e.id, nil
	}
	ttl = max(ttl, 1)
	resp, err := l.etcd.Grant(ctx, ttl)
	if err != nil {
		return 0, fmt.Errorf("grant standby lease for source lease %x: %w", src, err)
	}
	if len(l.m) > 10000 {
		l.reset()
	}
	l.m[src] = standbyLease{id: resp.ID, expires: now.Add(time.Duration(resp.TTL) * time.Second)}
	return resp.ID, nil
}

// reset forgets every mapping (after an error: a lease may have expired).
func (l *leaseMap) reset() { clear(l.m) }
