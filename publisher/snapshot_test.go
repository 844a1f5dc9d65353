package publisher

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/etcdsync/etcdsync/internal/testenv"
)

// snapshotKeys lists the keys under the prefix in pages of
// SnapshotPageSize, every page pinned at one revision: keys written after
// it are not listed, on the first page or on later ones; keys outside the
// prefix never are.
func TestSnapshotKeysPinnedAcrossPages(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := context.Background()
	var at int64
	for i := range 7 {
		resp, err := e.Client.Put(ctx, fmt.Sprintf("/app/k%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		at = resp.Header.Revision
	}
	for _, k := range []string{"/app/a-later", "/app/k3x-later", "/app/z-later", "/other/k"} {
		if _, err := e.Client.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.Prefix, cfg.SnapshotPageSize = "/app/", 3
	p := &Publisher{cfg: cfg, etcd: e.Client}
	keys, rev, err := p.snapshotKeys(ctx, at)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.key)
	}
	want := []string{"/app/k0", "/app/k1", "/app/k2", "/app/k3", "/app/k4", "/app/k5", "/app/k6"}
	if rev != at || !slices.Equal(got, want) {
		t.Fatalf("snapshot keys at revision %d: %q at %d, want %q", at, got, rev, want)
	}
}
