package publisher

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseTTLs remembers source lease TTLs briefly, so an event burst on one
// lease (Kubernetes reuses a lease for a minute of events) costs one lookup.
// Only the publishing goroutine uses it.
type leaseTTLs struct {
	etcd *clientv3.Client
	m    map[int64]leaseTTL
}

type leaseTTL struct {
	ttl int64 // seconds remaining at `at`; <= 0 when expired
	at  time.Time
}

// leaseCacheFor is how long a looked-up TTL is reused (counting down).
const leaseCacheFor = time.Second

// remaining returns the seconds lease id has left (0 when expired or gone).
func (c *leaseTTLs) remaining(ctx context.Context, id int64) (int64, error) {
	now := time.Now()
	if e, ok := c.m[id]; ok && now.Sub(e.at) < leaseCacheFor {
		return max(e.ttl-int64(now.Sub(e.at)/time.Second), 0), nil
	}
	if len(c.m) > 10000 {
		clear(c.m)
	}
	resp, err := c.etcd.TimeToLive(ctx, clientv3.LeaseID(id))
	if err != nil {
		return 0, fmt.Errorf("read ttl of lease %x: %w", id, err)
	}
	ttl := max(resp.TTL, 0)
	c.m[id] = leaseTTL{ttl: ttl, at: now}
	return ttl, nil
}
