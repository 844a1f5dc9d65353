package e2e

import (
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
	rev := f.appendBigRevisionFragment(t)
	// The successor's epoch, as it writes it: the same generation, resuming
	// after the revision before the fragment's; then it died.
	tailSeq := lastSeq(t, f.stream)
	f.appendParts(t, &streams.Record{Kind: streams.KindEpoch, Revision: rev - 1, Time: time.Now(),
		Leader: fmt.Sprintf("successor-%d", tailSeq)}, 1<<20, 1)
	f.pcfg.MaxMessageBytes = 64 << 10 // the next publisher splits the same way
	f.restart(t)
}
