package leader_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdsync/etcdsync/internal/leader"
	"github.com/etcdsync/etcdsync/internal/testenv"
)

const electionKey = "/etcdsync/election/test/leader"

// waitBound bounds every wait for an election event. Elections here hand
// over by resigning or by a revoked lease, never by a lease expiring, so
// the bound only has to be shorter than the longest TTL used below.
const waitBound = 30 * time.Second

// errStepDown is what a led function returns to hand leadership over; the
// replicas' Retry accepts it, so they campaign again.
var errStepDown = errors.New("step down")

// term is one period of leadership as the led function saw it.
type term struct {
	id  string
	ctx context.Context
}

// group runs replicas of one election and records what their led
// functions see.
type group struct {
	t      *testing.T
	cli    *clientv3.Client
	terms  chan term    // a led function started
	active atomic.Int32 // led functions running now
	most   atomic.Int32 // most led functions ever running at once
}

func newGroup(t *testing.T, cli *clientv3.Client) *group {
	return &group{t: t, cli: cli, terms: make(chan term, 16)}
}

// replica is one running leader.Run.
type replica struct {
	id       string
	stepDown chan error    // the led function returns what it receives
	exited   chan struct{} // closed when leader.Run has returned
	err      error         // leader.Run's result, once exited is closed
	cancel   context.CancelFunc
}

// wait cancels the replica and returns leader.Run's result.
func (r *replica) wait(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.exited:
		return r.err
	case <-time.After(waitBound):
		t.Fatalf("replica %s: Run did not return within %s of its context being cancelled", r.id, waitBound)
		return nil
	}
}

// start runs leader.Run for id with the given lease TTL.
func (g *group) start(id string, ttl int) *replica {
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{id: id, stepDown: make(chan error, 1), exited: make(chan struct{}), cancel: cancel}
	cfg := leader.Config{Key: electionKey, ID: id, TTL: ttl, Retry: func(err error) bool { return errors.Is(err, errStepDown) }}
	fn := func(ctx context.Context) error {
		n := g.active.Add(1)
		defer g.active.Add(-1)
		for m := g.most.Load(); n > m && !g.most.CompareAndSwap(m, n); m = g.most.Load() {
		}
		g.terms <- term{id: id, ctx: ctx}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-r.stepDown:
			return err
		}
	}
	go func() {
		defer close(r.exited)
		r.err = leader.Run(ctx, g.cli, cfg, fn)
	}()
	g.t.Cleanup(func() { r.wait(g.t) })
	return r
}

// nextTerm waits for a led function to start and requires it to be id's,
// with id named leader in etcd. It fails if any replica's Run returns first.
func (g *group) nextTerm(id string, running ...*replica) term {
	g.t.Helper()
	timeout := time.After(waitBound)
	for {
		select {
		case tm := <-g.terms:
			if tm.id != id {
				g.t.Fatalf("replica %s leads, want %s", tm.id, id)
			}
			if got := g.leader(); got != id {
				g.t.Fatalf("replica %s leads but the election names %q", id, got)
			}
			return tm
		case <-timeout:
			g.t.Fatalf("replica %s did not lead within %s", id, waitBound)
		default:
		}
		for _, r := range running {
			select {
			case <-r.exited:
				g.t.Fatalf("replica %s: Run returned %v while waiting for %s to lead", r.id, r.err, id)
			default:
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leader returns the ID the election names as leader, read from etcd.
func (g *group) leader() string {
	g.t.Helper()
	s, err := concurrency.NewSession(g.cli)
	if err != nil {
		g.t.Fatal(err)
	}
	defer s.Close()
	resp, err := concurrency.NewElection(s, electionKey).Leader(context.Background())
	if err != nil {
		g.t.Fatalf("read the election leader: %v", err)
	}
	return string(resp.Kvs[0].Value)
}

// candidates returns the election's keys: one per campaigning replica.
func (g *group) candidates() []*mvccpb.KeyValue {
	g.t.Helper()
	resp, err := g.cli.Get(context.Background(), electionKey+"/", clientv3.WithPrefix())
	if err != nil {
		g.t.Fatal(err)
	}
	return resp.Kvs
}

func (g *group) candidateCount() int { return len(g.candidates()) }

// TestCampaignResignRecampaign: of two replicas only one leads; a leader
// that steps down hands over at once (by resigning, long before its lease
// could expire), campaigns again, and leads again when the other steps down.
func TestCampaignResignRecampaign(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	g := newGroup(t, etcd.Client)
	const ttl = 60 // longer than waitBound: a handover cannot be an expiry

	a := g.start("a", ttl)
	g.nextTerm("a", a)
	b := g.start("b", ttl)
	testenv.Eventually(t, waitBound, func() bool { return g.candidateCount() == 2 }, "b campaigns")
	if got := g.leader(); got != "a" {
		t.Fatalf("with b campaigning the election names %q, want a", got)
	}

	a.stepDown <- errStepDown
	g.nextTerm("b", a, b)
	testenv.Eventually(t, waitBound, func() bool { return g.candidateCount() == 2 }, "a campaigns again")

	b.stepDown <- errStepDown
	g.nextTerm("a", a, b)

	if n := g.most.Load(); n != 1 {
		t.Errorf("%d led functions ran at once, want 1", n)
	}
	for _, r := range []*replica{a, b} {
		if err := r.wait(t); err != nil {
			t.Errorf("replica %s: Run = %v after cancel, want nil", r.id, err)
		}
	}
}

// TestLeadershipLostWhenLeaseRevoked: when the session's lease goes (here
// revoked; in production expired while the leader was cut off), the led
// function's context is cancelled, and Run campaigns again rather than
// return, whatever the led function returned.
func TestLeadershipLostWhenLeaseRevoked(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	g := newGroup(t, etcd.Client)
	a := g.start("a", 3) // keep-alives every second, so a revoked lease is noticed soon

	first := g.nextTerm("a", a)
	kvs := g.candidates()
	if len(kvs) != 1 {
		t.Fatalf("%d election keys, want 1", len(kvs))
	}
	lease := clientv3.LeaseID(kvs[0].Lease)
	if _, err := etcd.Client.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}

	select {
	case <-first.ctx.Done():
	case <-time.After(waitBound):
		t.Fatalf("the led function's context is still live %s after its lease was revoked", waitBound)
	}
	second := g.nextTerm("a", a)
	if second.ctx.Err() != nil {
		t.Fatalf("new term's context already done: %v", second.ctx.Err())
	}
	if kvs := g.candidates(); len(kvs) != 1 || clientv3.LeaseID(kvs[0].Lease) == lease {
		t.Fatalf("election keys after re-campaign: %v, want one under a new lease", kvs)
	}
	if err := a.wait(t); err != nil {
		t.Errorf("Run = %v after cancel, want nil", err)
	}
}
