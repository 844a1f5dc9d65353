package applier

import (
	"context"
	"errors"
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

// A batch that does not continue the stream where the applier stands (a
// message missing before it, or in it) is a gap: ApplyBatch returns a
// *GapError wrapping streams.ErrGap and writes nothing of the batch.
func TestGapWritesNothing(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newTestApplier(t, e.Client, DefaultConfig())
	msgs := a.msgs(revision(2, putEvent("/k/a", "v")), revision(3, putEvent("/k/b", "v")), revision(4, putEvent("/k/c", "v")))
	for _, batch := range [][]Msg{msgs[1:], {msgs[0], msgs[2]}} {
		err := a.ApplyBatch(context.Background(), batch)
		var gap *GapError
		if !errors.As(err, &gap) || !errors.Is(err, ErrGap) {
			t.Fatalf("batch of seqs %d..%d after seq %d: %v, want a *GapError", batch[0].Seq, batch[len(batch)-1].Seq, msgs[0].Seq-1, err)
		}
		a.nextSeq = msgs[0].Seq // as a new session from the checkpoint would
		a.asm.Reset()
	}
	resp, err := e.Client.Get(context.Background(), "/k/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("a batch with a gap wrote %d keys (%v)", resp.Count, err)
	}
}

// Keys the scope excludes are never written or deleted: revisions that
// touch one (here under etcdsync's own prefix, excluded in every mode)
// write their other keys only.
func TestExcludedKeysNeverWritten(t *testing.T) {
	e := testenv.StartEtcd(t)
	if _, err := e.Client.Put(context.Background(), "/etcdsync/kept", "standby's own"); err != nil {
		t.Fatal(err)
	}
	a := newTestApplier(t, e.Client, DefaultConfig())
	a.apply(revision(2, putEvent("/etcdsync/elsewhere", "v"), putEvent("/k/a", "v")),
		revision(3, streams.Event{Type: streams.EventDelete, Key: []byte("/etcdsync/kept")}))
	for key, want := range map[string]int64{"/etcdsync/elsewhere": 0, "/k/a": 1, "/etcdsync/kept": 1} {
		resp, err := e.Client.Get(context.Background(), key, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != want {
			t.Errorf("%s: %d on the standby, want %d", key, resp.Count, want)
		}
	}
}
