package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/internal/embedded"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
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

// startSiteWithPayload is startSite with NATS' max_payload set.
func startSiteWithPayload(t *testing.T, domain string, maxPayload int32, leafListen string, leafRemotes ...string) *site {
	t.Helper()
	cfg := streams.DefaultServerConfig()
	cfg.StoreDir, cfg.Listen, cfg.Domain, cfg.Name = t.TempDir(), "127.0.0.1:-1", domain, domain
	cfg.LeafListen, cfg.LeafRemotes, cfg.MaxPayload = leafListen, leafRemotes, maxPayload
	s, err := streams.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); s.Shutdown(); s.WaitForShutdown() })
	return &site{srv: s, nc: nc, js: js}
}

// A mirror takes every message its origin took: its max_msg_size follows
// the origin's, here above the default, whether EnsureMirror creates it or
// finds one created with a fixed size (issue 15.7: a mirror fixed at 8 MiB
// stalled on the first larger message of a 16 MiB origin).
func TestMirrorTakesWhatItsOriginTook(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprintf("existing=%v", existing), func(t *testing.T) {
			ctx := context.Background()
			const payload = 16 << 20
			leafPort, err := embedded.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			leafA := fmt.Sprintf("127.0.0.1:%d", leafPort)
			natsA := startSiteWithPayload(t, "primary", payload, leafA)
			natsB := startSiteWithPayload(t, "standby", payload, "", "nats-leaf://"+leafA)
			cfg := streams.DefaultLogConfig()
			cfg.MaxMsgSize = payload
			if _, err := streams.EnsureLogStream(ctx, natsA.js, cfg); err != nil {
				t.Fatal(err)
			}
			mcfg := streams.MirrorConfig{Name: cfg.Name, OriginDomain: "primary"}
			if existing {
				old := mcfg.StreamConfig()
				old.MaxMsgSize = streams.DefaultMaxMsgSize
				testenv.Eventually(t, 20*time.Second, func() bool { _, err := natsB.js.CreateStream(ctx, old); return err == nil }, "mirror created across the leafnode")
			}
			var mirror jetstream.Stream
			testenv.Eventually(t, 20*time.Second, func() bool {
				mirror, err = streams.EnsureMirror(ctx, natsB.js, mcfg)
				return err == nil
			}, "mirror ensured across the leafnode")
			// Twice: a mirror below the size may let the first larger
			// message through and stall on the next.
			subj := streams.Subjects{Site: cfg.Site}.Revision()
			for _, size := range []int{12 << 20, 10, 12 << 20, 10} {
				// A minute, not the client's default of a few seconds: a
				// 12 MiB message under -race on a busy machine takes longer.
				pctx, cancel := context.WithTimeout(ctx, time.Minute)
				_, err := natsA.js.Publish(pctx, subj, make([]byte, size))
				cancel()
				if err != nil {
					t.Fatalf("origin refused a %d-byte message: %v", size, err)
				}
			}
			testenv.Eventually(t, 60*time.Second, func() bool {
				info, err := mirror.Info(ctx)
				return err == nil && info.State.LastSeq == 4
			}, "mirror holding every message of its origin")
		})
	}
}
