package applier

import (
	"context"
	"errors"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/testenv"
)

// An applier whose checkpoint changed under it writes nothing more: every
// transaction it sends is guarded by the checkpoint's mod revision it last
// read. Promote's fence and another applier's checkpoint write both change
// it; the applier's next batch then fails with ErrConflict, its keys absent
// from the standby, and the checkpoint is the one the other writer left.
// (Run's idle applier learns of a fence from its watch; this test stands
// for the applier that has a batch in hand when the fence lands.)
func TestFencedApplierWritesNothing(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fence func(t *testing.T, cli *clientv3.Client, key string)
	}{
		{"promoted", func(t *testing.T, cli *clientv3.Client, key string) {
			if _, err := Promote(context.Background(), PromoteConfig{CheckpointKey: key}, cli, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"another applier wrote the checkpoint", func(t *testing.T, cli *clientv3.Client, key string) {
			ck, _, err := ReadCheckpoint(context.Background(), cli, key)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Put(context.Background(), key, ck.encode()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := testenv.StartEtcd(t)
			cfg := DefaultConfig()
			a := newTestApplier(t, e.Client, cfg)
			a.apply(revision(2, putEvent("/k/before", "v")))
			tt.fence(t, e.Client, cfg.checkpointKey())
			fenced, _, err := ReadCheckpoint(context.Background(), e.Client, cfg.checkpointKey())
			if err != nil {
				t.Fatal(err)
			}
			err = a.ApplyBatch(context.Background(), a.msgs(revision(3, putEvent("/k/after", "v")), revision(4, putEvent("/k/before", "changed"))))
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("batch after the fence: %v, want ErrConflict", err)
			}
			resp, err := e.Client.Get(context.Background(), "/k/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != "/k/before" || string(resp.Kvs[0].Value) != "v" {
				t.Errorf("standby after the fence holds %v, want /k/before=v alone", resp.Kvs)
			}
			after, _, err := ReadCheckpoint(context.Background(), e.Client, cfg.checkpointKey())
			if err != nil {
				t.Fatal(err)
			}
			if after.Position != fenced.Position || after.Promoted != fenced.Promoted || after.Position.Revision != 2 {
				t.Errorf("checkpoint after the fenced batch: %s (promoted %v), want %s (promoted %v) at revision 2",
					after.Position, after.Promoted, fenced.Position, fenced.Promoted)
			}
		})
	}
}
