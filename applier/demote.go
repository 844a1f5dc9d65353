package applier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/keyspace"
)

// ErrRunning is returned by Demote while an applier or a publisher of the
// etcd is running (or, killed, its lease has not expired yet).
var ErrRunning = errors.New("an etcdsync component of this etcd is running")

// ErrNotPromoted is returned by Demote for a standby that was never
// promoted: its applier follows the stream and must not lose its place.
var ErrNotPromoted = errors.New("not promoted")

// presenceTTL is how long the presence key of a killed applier lingers, in seconds.
const presenceTTL = 10

// PresencePrefix is where every running applier of stream keeps a key
// bound to a lease it keeps alive (the key's value names the process):
// Demote refuses while one exists.
func PresencePrefix(stream string) string { return keyspace.OwnPrefix + "applier/" + stream + "/" }

// ElectionPrefix is the default leader-election prefix of a command
// ("apply", "publish") on stream, as the etcdsync commands use it.
func ElectionPrefix(stream, cmd string) string {
	return keyspace.OwnPrefix + "election/" + stream + "/" + cmd
}

// presence is this applier's lease-bound presence key.
type presence struct {
	lease  clientv3.LeaseID
	cancel context.CancelFunc // stops the keep-alive
	done   chan struct{}      // closed when the keep-alive ends
}

// holdPresence makes sure the applier's presence key exists, bound to a
// lease kept alive until releasePresence (or until the lease is lost:
// the next session takes a new one). It is called before every session
// reads the checkpoint, so Demote either sees the key or this applier
// reads what Demote wrote.
func (a *Applier) holdPresence(ctx context.Context) (<-chan struct{}, error) {
	if p := a.pres; p != nil {
		select {
		case <-p.done:
			a.releasePresence()
		default:
			return p.done, nil
		}
	}
	g, err := a.etcd.Grant(ctx, presenceTTL)
	if err != nil {
		return nil, fmt.Errorf("grant presence lease: %w", err)
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ch, err := a.etcd.KeepAlive(kctx, g.ID)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("keep presence lease alive: %w", err)
	}
	p := &presence{lease: g.ID, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for range ch { // ends when kctx is cancelled or the lease is lost
		}
	}()
	a.pres = p
	host, _ := os.Hostname()
	key := fmt.Sprintf("%s%x", PresencePrefix(a.cfg.Stream), g.ID)
	if _, err := a.etcd.Put(ctx, key, fmt.Sprintf("%s-%d", host, os.Getpid()), clientv3.WithLease(g.ID)); err != nil {
		a.releasePresence()
		return nil, fmt.Errorf("write presence key %s: %w", key, err)
	}
	return p.done, nil
}

// releasePresence stops the keep-alive and revokes the lease, removing the
// presence key (if etcd is unreachable, the lease expires on its own).
func (a *Applier) releasePresence() {
	p := a.pres
	if p == nil {
		return
	}
	a.pres = nil
	p.cancel()
	<-p.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = a.etcd.Revoke(ctx, p.lease)
}

// DemoteConfig configures Demote.
type DemoteConfig struct {
	// Stream is the log stream name and CheckpointKey the checkpoint key
	// (default "/etcdsync/checkpoint/<Stream>").
	Stream, CheckpointKey string
	// ElectionKeys are leader-election prefixes whose candidates count as
	// running components. Default: the apply and publish elections of Stream.
	ElectionKeys []string
}

// DemoteReport says what a demoted etcd held.
type DemoteReport struct {
	// Held is the checkpoint the etcd held, promoted marker included (nil:
	// it held none, and nothing was changed).
	Held *Checkpoint `json:"held,omitempty"`
	// ClusterID is the cluster ID (hex) of the primary whose copy the etcd
	// held when it was promoted.
	ClusterID string `json:"cluster_id,omitempty"`
	// SavedAt is the key where the held checkpoint was saved.
	SavedAt string `json:"saved_at,omitempty"`
	// Revision is the etcd's revision after the demotion.
	Revision int64 `json:"revision"`
}

// DemotedKey is where Demote saves the checkpoint it removes.
func DemotedKey(stream string) string { return keyspace.OwnPrefix + "demoted/" + stream }

// Demote turns a promoted etcd back into a standby: it removes the
// checkpoint (promoted marker and position: its applier re-seeds from the
// newest snapshot of the stream it follows, since the etcd took writes of
// its own while it was the primary), saves it under DemotedKey, and
// reports what it held. In the same transaction it checks that no applier
// of the stream holds a presence key and no apply or publish election has
// a candidate; otherwise it changes nothing and returns ErrRunning.
// A checkpoint without the promoted marker is refused with ErrNotPromoted;
// an etcd without a checkpoint is left as it is (Held nil).
func Demote(ctx context.Context, cfg DemoteConfig, etcd *clientv3.Client) (DemoteReport, error) {
	if cfg.CheckpointKey == "" {
		cfg.CheckpointKey = Config{Stream: cfg.Stream}.checkpointKey()
	}
	if cfg.ElectionKeys == nil {
		cfg.ElectionKeys = []string{ElectionPrefix(cfg.Stream, "apply"), ElectionPrefix(cfg.Stream, "publish")}
	}
	running := append([]string{PresencePrefix(cfg.Stream)}, cfg.ElectionKeys...)
	var rep DemoteReport
	for attempt := 0; ; attempt++ {
		if err := checkNotRunning(ctx, etcd, running); err != nil {
			return rep, err
		}
		resp, err := etcd.Get(ctx, cfg.CheckpointKey)
		if err != nil {
			return rep, fmt.Errorf("demote: read checkpoint %s: %w", cfg.CheckpointKey, err)
		}
		if len(resp.Kvs) == 0 {
			rep.Revision = resp.Header.Revision
			return rep, nil
		}
		ck, rev, err := ReadCheckpoint(ctx, etcd, cfg.CheckpointKey)
		if err != nil {
			return rep, fmt.Errorf("demote: %w", err)
		}
		if !ck.Promoted {
			return rep, fmt.Errorf("demote: checkpoint %s at %s: %w (its applier follows the stream: nothing to demote)", cfg.CheckpointKey, ck.Position, ErrNotPromoted)
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(cfg.CheckpointKey), "=", rev)}
		for _, p := range running {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(p), "=", 0).WithPrefix())
		}
		tresp, err := etcd.Txn(ctx).If(cmps...).
			Then(clientv3.OpPut(DemotedKey(cfg.Stream), ck.encode()), clientv3.OpDelete(cfg.CheckpointKey)).Commit()
		if err != nil {
			return rep, fmt.Errorf("demote: remove checkpoint %s: %w", cfg.CheckpointKey, err)
		}
		if tresp.Succeeded {
			rep.Held, rep.ClusterID = &ck, fmt.Sprintf("%x", ck.Position.ClusterID)
			rep.SavedAt, rep.Revision = DemotedKey(cfg.Stream), tresp.Header.Revision
			return rep, nil
		}
		if attempt > 100 {
			return rep, fmt.Errorf("demote: checkpoint %s kept changing: %w", cfg.CheckpointKey, ErrConflict)
		}
	}
}

// checkNotRunning returns ErrRunning, naming the holders, when a key
// exists under one of prefixes.
func checkNotRunning(ctx context.Context, etcd *clientv3.Client, prefixes []string) error {
	var held []string
	for _, p := range prefixes {
		resp, err := etcd.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithLimit(10))
		if err != nil {
			return fmt.Errorf("demote: read %s: %w", p, err)
		}
		for _, kv := range resp.Kvs {
			held = append(held, fmt.Sprintf("%s (%s)", kv.Key, kv.Value))
		}
	}
	if len(held) > 0 {
		return fmt.Errorf("demote: %w: %s; stop it first (scale it to zero; a killed one's lease expires within %ds)",
			ErrRunning, strings.Join(held, ", "), presenceTTL)
	}
	return nil
}
