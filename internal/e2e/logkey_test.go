package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

func keyRing(t *testing.T, lines ...string) *streams.KeyRing {
	t.Helper()
	ring, err := streams.ParseKeyRing([]byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

func keyLine(id string, fill byte) string {
	return id + ":" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, 32))
}

// A client with write access to the stream but no log key cannot write into
// the standby: a forged record, an altered copy of a real record, a real
// record replayed at a later sequence, and a genuine record of another
// site's log signed with the same key for this very position are each
// rejected before anything is written, with an error naming the sequence,
// and the standby is unchanged key by key.
func TestUnauthenticatedMessagesNeverReachStandby(t *testing.T) {
	for _, attack := range []string{"forged", "unsigned", "altered", "replayed", "another-log"} {
		t.Run(attack, func(t *testing.T) {
			p := newPipeline(t)
			ring := keyRing(t, keyLine("k1", 1))
			pcfg := p.publisherConfig()
			pcfg.LogKeys = ring
			_, pub := p.startPublisher(pcfg)
			acfg := rawApplierConfig(p)
			acfg.LogKeys = ring
			reg := prometheus.NewRegistry()
			ap, err := applier.New(acfg, p.standby.Client, p.conn(), reg)
			if err != nil {
				t.Fatal(err)
			}
			run := start(t, ap.Run)
			// The snapshot first, then revisions to forge from.
			put(t, p.primary.Client, "/app/seed", "v")
			p.waitConverged(rawRules(t), 20*time.Second)
			for i := 0; i < 5; i++ {
				put(t, p.primary.Client, fmt.Sprintf("/app/k%d", i), "v")
			}
			p.waitConverged(rawRules(t), 20*time.Second)
			if err := pub.stop(); err != nil {
				t.Fatal(err)
			}
			before := dump(t, p.standby.Client, rawRules(t))

			ctx := context.Background()
			stream, err := p.js.JS.Stream(ctx, streams.DefaultStream)
			if err != nil {
				t.Fatal(err)
			}
			last, err := stream.GetLastMsgForSubject(ctx, streams.Subjects{Site: streams.DefaultSite}.Revision())
			if err != nil {
				t.Fatal(err)
			}
			info, err := stream.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tail := info.State.LastSeq
			var body []byte
			switch attack {
			case "forged", "unsigned", "another-log":
				// A revision right after the tail that writes an admin
				// binding, signed with a key of the right ID but the wrong
				// bytes, or not signed at all.
				f, _ := streams.DecodeFrame(last.Data)
				var a streams.Assembler
				rec, _, err := a.Add(f)
				if err != nil {
					t.Fatal(err)
				}
				evil := streams.Record{Kind: streams.KindRevision, ClusterID: rec.ClusterID, Generation: rec.Generation,
					Revision: rec.Revision + 1, Time: time.Now(), Events: []streams.Event{{Type: streams.EventPut,
						Key: []byte("/app/injected-admin"), Value: []byte("pwned"), CreateRevision: rec.Revision + 1, ModRevision: rec.Revision + 1, Version: 1}}}
				var signer *streams.KeyRing
				subject := streams.Subjects{Site: streams.DefaultSite}.Revision()
				switch attack {
				case "forged":
					signer = keyRing(t, keyLine("k1", 2))
				case "another-log":
					// What the publisher of another site (the reverse
					// direction after a failover) signs with the same key.
					signer, subject = ring, streams.Subjects{Site: "other"}.Revision()
				}
				frames, err := streams.SplitRecord(&evil, 1<<20, signer, subject, tail)
				if err != nil {
					t.Fatal(err)
				}
				body = frames[0]
			case "altered":
				// The last real revision with one byte of its payload
				// changed and the CRC recomputed.
				body = append([]byte{}, last.Data...)
				body[len(body)-4-streams.MACSize-1] ^= 1
				binary.BigEndian.PutUint32(body[len(body)-4:], crc32.Checksum(body[:len(body)-4], crc32.MakeTable(crc32.Castagnoli)))
			case "replayed":
				// A real revision, byte for byte, at a later sequence.
				body = last.Data
			}
			ack, err := p.js.JS.PublishMsg(ctx, &nats.Msg{Subject: streams.Subjects{Site: streams.DefaultSite}.Revision(), Data: body})
			if err != nil {
				t.Fatal(err)
			}
			err = run.wait(t, 30*time.Second, "applier after an unauthenticated message")
			if !errors.Is(err, streams.ErrUnauthenticated) || !strings.Contains(err.Error(), fmt.Sprintf("seq %d", ack.Sequence)) {
				t.Fatalf("applier returned %v, want ErrUnauthenticated naming seq %d", err, ack.Sequence)
			}
			if d := diff(before, dump(t, p.standby.Client, rawRules(t))); d != "" {
				t.Fatalf("the standby changed:\n%s", d)
			}
			if got := metricValue(t, reg, "etcdsync_applier_unauthenticated_messages_total"); got != 1 {
				t.Fatalf("etcdsync_applier_unauthenticated_messages_total = %v, want 1", got)
			}
		})
	}
}

// A signed log replicates end to end, through a key rotation: messages
// signed by the old key and by the new one both verify on an applier that
// holds both.
func TestSignedLogReplicatesAcrossKeyRotation(t *testing.T) {
	p := newPipeline(t)
	old, next := keyLine("old", 1), keyLine("new", 2)
	pcfg := p.publisherConfig()
	pcfg.LogKeys = keyRing(t, old)
	_, pub := p.startPublisher(pcfg)
	acfg := rawApplierConfig(p)
	acfg.LogKeys = keyRing(t, old, next)
	p.startApplier(acfg)
	put(t, p.primary.Client, "/app/a", "1")
	p.waitConverged(rawRules(t), 20*time.Second)
	if err := pub.stop(); err != nil {
		t.Fatal(err)
	}
	pcfg.LogKeys = keyRing(t, next, old)
	p.startPublisher(pcfg)
	put(t, p.primary.Client, "/app/b", "2")
	p.waitConverged(rawRules(t), 20*time.Second)

	// The stream holds messages signed by both keys.
	ctx := context.Background()
	stream, err := p.js.JS.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := stream.Info(ctx)
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		f, err := streams.DecodeFrame(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		ids[f.KeyID] = true
	}
	if !ids["old"] || !ids["new"] || ids[""] {
		t.Fatalf("signing keys in the stream: %v, want old and new and no unsigned message", ids)
	}
}

// A forged message at the stream's tail cannot tell a signing publisher
// where to resume: it claims a revision a few writes ahead of the last
// published one (resuming there would skip those writes), and the
// publisher instead starts a new generation with a snapshot, and keeps
// publishing what the primary writes.
func TestPublisherDistrustsForgedTail(t *testing.T) {
	p := newPipeline(t)
	pcfg := p.publisherConfig()
	pcfg.LogKeys = keyRing(t, keyLine("k1", 1))
	pub, run := p.startPublisher(pcfg)
	put(t, p.primary.Client, "/app/a", "1")
	testenvEventually(t, func() bool { return pub.Published().Revision > 0 }, "first publish")
	first := pub.Published()
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	forged := streams.Record{Kind: streams.KindRevision, ClusterID: first.ClusterID, Generation: first.Generation, Revision: first.Revision + 3, Time: time.Now()}
	msgs, err := streams.NewMsgs(streams.Subjects{Site: streams.DefaultSite}, &forged, 1<<20, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.js.JS.PublishMsg(ctx, msgs[0]); err != nil {
		t.Fatal(err)
	}

	// Writes while the publisher is down pass the forged revision.
	for i := 0; i < 5; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/app/down-%d", i), "v")
	}
	pub2, _ := p.startPublisher(pcfg)
	rev := put(t, p.primary.Client, "/app/b", "2")
	testenvEventually(t, func() bool { return pub2.Published().Revision >= rev }, "the write after the forged tail is published")
	got := pub2.Published()
	if got.Generation == first.Generation {
		t.Fatalf("publisher resumed generation %d after a forged tail, want a new generation", got.Generation)
	}
}
