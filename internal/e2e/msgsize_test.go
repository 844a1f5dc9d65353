package e2e

import (
	"strings"
	"testing"
	"time"
)

// A publisher whose message size is the stream's max_msg_size still
// publishes a record split in parts: a part leaves room for the message's
// headers, which JetStream counts in max_msg_size (issue 15.7).
func TestPartsLeaveRoomForHeaders(t *testing.T) {
	p := newPipeline(t)
	pcfg := p.publisherConfig()
	pcfg.Stream.MaxMsgSize, pcfg.MaxMessageBytes = 64<<10, 64<<10
	p.startPublisher(pcfg)
	p.startApplier(rawApplierConfig(p))
	put(t, p.primary.Client, "/parts/small", "x")
	put(t, p.primary.Client, "/parts/big", strings.Repeat("v", 200<<10))
	p.waitConverged(rawRules(t), 30*time.Second)
}
