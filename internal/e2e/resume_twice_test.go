package e2e

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/etcdsync/etcdsync/streams"
)

// A successor that wrote its epoch over a predecessor's unfinished revision
// and died before publishing that revision again (a crash loop on the same
// large revision) leaves the log continuous: the fragment, then an epoch of
// the same generation whose revision is the one before the fragment's. The
// next publisher must continue the generation: its continuity proof reads
// past the fragment below the epoch, and the revision it publishes again
// must not be taken for another publisher's writes (the fragment's parts
// carry the message IDs of a first publication).
func TestInterruptedRevisionUnderSuccessorEpochKeepsGeneration(t *testing.T) {
	f := newResumeFixture(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB: several 64 KiB messages
	rev := put(t, f.p.primary.Client, "/r/big", string(big))
	resp, err := f.p.primary.Client.Get(context.Background(), "/r/big")
	if err != nil {
		t.Fatal(err)
	}
	kv := resp.Kvs[0]
	rec := &streams.Record{Kind: streams.KindRevision, Revision: rev, Time: time.Now(), Events: []streams.Event{{Type: streams.EventPut,
		Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version}}}
	f.appendParts(t, rec, 64<<10, 2)
	// The successor's epoch, as it writes it: the same generation, resuming
	// after the revision before the fragment's; then it died.
	tailSeq := lastSeq(t, f.stream)
	f.appendParts(t, &streams.Record{Kind: streams.KindEpoch, Revision: rev - 1, Time: time.Now(),
		Leader: fmt.Sprintf("successor-%d", tailSeq)}, 1<<20, 1)
	f.pcfg.MaxMessageBytes = 64 << 10 // the next publisher splits the same way
	f.restart(t)
}
