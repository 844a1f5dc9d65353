package applier

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

// frames encodes r as the stream would carry it, split into messages of
// at most maxMsg bytes, numbered after the applier's last message.
func (a *testApplier) frames(r streams.Record, maxMsg int) []Msg {
	a.t.Helper()
	r.ClusterID, r.Generation, r.Time = testCluster, testGeneration, time.Now()
	frames, err := streams.SplitRecord(&r, maxMsg, nil, "etcdsync.primary.log.rev", 0)
	if err != nil {
		a.t.Fatal(err)
	}
	var msgs []Msg
	for _, f := range frames {
		a.seq++
		msgs = append(msgs, Msg{Seq: a.seq, Data: f})
	}
	return msgs
}

// A publisher that died half-way through a multi-part record left its
// first part in the stream; its successor's epoch marker abandons the
// fragment, and the revision published again whole after it applies.
// Nothing of the fragment reaches the standby.
func TestEpochAbandonsFragment(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newTestApplier(t, e.Client, DefaultConfig())
	big := a.frames(revision(2, putEvent("/k/fragment", strings.Repeat("x", 2000))), 512)
	if len(big) < 2 {
		t.Fatalf("the record is %d message(s), want several", len(big))
	}
	a.seq -= uint64(len(big) - 1) // the publisher died after the first part
	batch := append(big[:1], a.msgs(streams.Record{Kind: streams.KindEpoch, Revision: 1}, revision(2, putEvent("/k/whole", "v")))...)
	if err := a.ApplyBatch(context.Background(), batch); err != nil {
		t.Fatalf("fragment, epoch, revision: %v", err)
	}
	resp, err := e.Client.Get(context.Background(), "/k/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != "/k/whole" {
		t.Fatalf("standby holds %v, want /k/whole alone", resp.Kvs)
	}
	if ck, _, err := ReadCheckpoint(context.Background(), e.Client, DefaultConfig().checkpointKey()); err != nil || ck.Position.Revision != 2 || ck.Partial != nil {
		t.Fatalf("checkpoint %+v (%v), want revision 2, nothing partial", ck, err)
	}
}
