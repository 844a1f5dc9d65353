package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// firstDataTxnOnly lets the first standby transaction that writes keys
// through and fails every later one: an applier crashing for good half-way
// through a revision split across transactions.
type firstDataTxnOnly struct{ passed atomic.Bool }

func (f *firstDataTxnOnly) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if r, ok := req.(*etcdserverpb.TxnRequest); ok && len(r.Success) > 1 && !f.passed.CompareAndSwap(false, true) {
		return errInjected
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// A 30-key prefix delete (one source revision) is split across standby
// transactions of 8 operations; the applier dies for good after the first.
// Status and promote say that revision is half applied and how many of its
// events are on the standby, and promote's error says so (issue 15.5).
func TestPromoteAndStatusReportHalfAppliedRevision(t *testing.T) {
	p := newPipeline(t)
	p.startPublisher(p.publisherConfig())
	cfg := rawApplierConfig(p)
	cfg.MaxTxnOps = 8
	_, ar := p.startApplier(cfg)
	var before int64
	for i := 0; i < 30; i++ {
		before = put(t, p.primary.Client, fmt.Sprintf("/ha/k%02d", i), "v")
	}
	p.waitConverged(rawRules(t), 20*time.Second)
	if err := ar.stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	del, err := p.primary.Client.Delete(ctx, "/ha/", clientv3.WithPrefix())
	if err != nil || del.Deleted != 30 {
		t.Fatalf("prefix delete: %v, %d deleted", err, del.Deleted)
	}
	rev := del.Header.Revision
	testenvEventually(t, func() bool { return p.publishedRevision(t) >= rev }, "stream holds the prefix delete")

	f := &firstDataTxnOnly{}
	cli, err := clientv3.New(clientv3.Config{Endpoints: p.standby.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(f.interceptor)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ap, err := applier.New(cfg, cli, p.conn(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, ap.Run)
	testenvEventually(t, func() bool { return ap.Applied().Partial != nil }, "first part of the prefix delete applied")
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	resp, err := p.standby.Client.Get(ctx, "/ha/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	deleted := 30 - int(resp.Count)
	if deleted == 0 || deleted == 30 {
		t.Fatalf("%d of 30 keys deleted on the standby: want a half-applied revision", deleted)
	}
	want := applier.HalfApplied{AfterRevision: before, Seq: ap.Applied().Partial.Seq, Revision: rev, EventsApplied: deleted, Events: 30}

	st, err := applier.ReadStatus(ctx, p.standby.Client, p.js.JS, streams.DefaultStream, streams.DefaultSite, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.HalfApplied == nil || *st.HalfApplied != want {
		t.Fatalf("status half applied %+v, want %+v", st.HalfApplied, want)
	}

	rep, err := applier.Promote(ctx, applier.PromoteConfig{Stream: streams.DefaultStream, DrainTimeout: time.Second}, p.standby.Client, p.js.JS)
	if !errors.Is(err, applier.ErrInconsistent) {
		t.Fatalf("promote: want ErrInconsistent, got %v", err)
	}
	if rep.HalfApplied == nil || *rep.HalfApplied != want {
		t.Fatalf("promote report half applied %+v, want %+v", rep.HalfApplied, want)
	}
	if wantText := fmt.Sprintf("revision %d (stream seq %d) is half applied: the first %d of its 30 events", rev, want.Seq, deleted); !strings.Contains(rep.Inconsistent, wantText) || !strings.Contains(err.Error(), wantText) {
		t.Fatalf("promote says %q (error %q), want it to say %q", rep.Inconsistent, err, wantText)
	}
}
