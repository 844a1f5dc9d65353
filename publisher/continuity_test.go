package publisher

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

func put(key, value string, rev int64) streams.Event {
	return streams.Event{Type: streams.EventPut, Key: []byte(key), Value: []byte(value), ModRevision: rev}
}

func del(key string, rev int64) streams.Event {
	return streams.Event{Type: streams.EventDelete, Key: []byte(key), ModRevision: rev}
}

func keysOf(w witness) []string {
	var out []string
	for _, k := range w.keys {
		out = append(out, fmt.Sprintf("%s@%d del=%v", k.key, k.modRev, k.deleted))
	}
	return out
}

// The witness follows the newest record with events; records without events
// only move the revision it is read at.
func TestWitnessNote(t *testing.T) {
	rev := func(r int64, evs ...streams.Event) streams.Record {
		return streams.Record{Kind: streams.KindRevision, Revision: r, Events: evs}
	}
	tests := []struct {
		name      string
		recs      []streams.Record
		wantAt    int64
		wantKeys  []string
		wantEmpty bool
	}{
		{name: "nothing", recs: nil},
		{name: "revision with events", recs: []streams.Record{rev(5, put("/a", "1", 5))}, wantAt: 5, wantKeys: []string{"/a@5 del=false"}},
		{name: "progress moves the revision", recs: []streams.Record{rev(5, put("/a", "1", 5)), rev(9)}, wantAt: 9, wantKeys: []string{"/a@5 del=false"}},
		{name: "a progress record behind does not", recs: []streams.Record{rev(5, put("/a", "1", 5)), rev(4)}, wantAt: 5, wantKeys: []string{"/a@5 del=false"}},
		{name: "newest record wins", recs: []streams.Record{rev(5, put("/a", "1", 5)), rev(6, del("/a", 6))}, wantAt: 6, wantKeys: []string{"/a@6 del=true"}},
		{name: "last keys of a large record", recs: []streams.Record{rev(7, del("/a", 7), del("/b", 7), del("/c", 7), del("/d", 7))}, wantAt: 7,
			wantKeys: []string{"/b@7 del=true", "/c@7 del=true", "/d@7 del=true"}},
		{name: "snapshot chunk", recs: []streams.Record{
			rev(5, put("/a", "1", 5)),
			{Kind: streams.KindSnapshotBegin, Revision: 8},
			{Kind: streams.KindSnapshotChunk, Revision: 8, Events: []streams.Event{put("/x", "1", 3), put("/y", "1", 8)}},
			{Kind: streams.KindSnapshotEnd, Revision: 8, Keys: 2},
		}, wantAt: 8, wantKeys: []string{"/x@3 del=false", "/y@8 del=false"}},
		{name: "empty snapshot", recs: []streams.Record{
			rev(5, del("/a", 5)),
			{Kind: streams.KindSnapshotBegin, Revision: 8},
			{Kind: streams.KindSnapshotEnd, Revision: 8, Keys: 0},
		}, wantAt: 8, wantEmpty: true},
		{name: "epoch changes nothing", recs: []streams.Record{rev(5, put("/a", "1", 5)), {Kind: streams.KindEpoch, Revision: 9}}, wantAt: 5, wantKeys: []string{"/a@5 del=false"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var w witness
			for i := range tc.recs {
				w.note(&tc.recs[i])
			}
			if tc.wantKeys == nil && !tc.wantEmpty {
				if !w.isZero() {
					t.Fatalf("witness %+v, want none", w)
				}
				return
			}
			if w.at != tc.wantAt || w.empty != tc.wantEmpty || fmt.Sprint(keysOf(w)) != fmt.Sprint(tc.wantKeys) {
				t.Fatalf("witness at %d empty %v keys %v, want at %d empty %v keys %v", w.at, w.empty, keysOf(w), tc.wantAt, tc.wantEmpty, tc.wantKeys)
			}
		})
	}
}

// A response whose revision is below one seen earlier is reported.
func TestProverObserve(t *testing.T) {
	pr := &prover{seen: 10}
	for _, tc := range []struct {
		rev  int64
		want bool
	}{{10, false}, {12, false}, {11, true}, {12, false}, {3, true}, {13, false}} {
		if got := pr.observe(tc.rev); got != tc.want {
			t.Fatalf("observe(%d) after seen %d: got %v, want %v", tc.rev, pr.seen, got, tc.want)
		}
	}
}

// verify compares what the log claims with the source, read at the
// witness's revision.
func TestVerify(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := context.Background()
	cli := e.Client
	mustPut := func(k, v string) int64 {
		resp, err := cli.Put(ctx, k, v)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	ra := mustPut("/v/a", "1")
	mustPut("/v/gone", "x")
	resp, err := cli.Delete(ctx, "/v/gone")
	if err != nil {
		t.Fatal(err)
	}
	rdel := resp.Header.Revision
	rb := mustPut("/v/b", "2")
	mustPut("/other", "later") // after rb: /v/a and /v/b unchanged
	status, err := cli.Get(ctx, "/v/a")
	if err != nil {
		t.Fatal(err)
	}
	clusterID, now := status.Header.ClusterId, status.Header.Revision

	cfg := DefaultConfig()
	cfg.Prefix = "/v/"
	p := &Publisher{cfg: cfg, etcd: cli}
	with := func(at int64, evs ...streams.Event) witness {
		var w witness
		w.note(&streams.Record{Kind: streams.KindRevision, Revision: at, Events: evs})
		w.at = at
		return w
	}
	tests := []struct {
		name       string
		w          witness
		cluster    uint64
		wantBroken bool
		wantErr    error
	}{
		{name: "agrees", w: with(now, put("/v/a", "1", ra), del("/v/gone", rdel), put("/v/b", "2", rb))},
		{name: "agrees at the key's own revision", w: with(ra, put("/v/a", "1", ra))},
		{name: "no witness", w: witness{}},
		{name: "other mod revision", w: with(now, put("/v/a", "1", ra+100)), wantBroken: true},
		{name: "other value", w: with(now, put("/v/a", "other", ra)), wantBroken: true},
		{name: "key missing", w: with(now, put("/v/lost", "1", rb)), wantBroken: true},
		{name: "deleted key present", w: with(now, del("/v/a", ra)), wantBroken: true},
		{name: "revision in the future", w: with(now+50, put("/v/a", "1", ra)), wantBroken: true},
		{name: "other cluster", w: with(now, put("/v/a", "1", ra)), cluster: clusterID + 1, wantBroken: true},
		{name: "empty prefix claimed", w: witness{at: now, empty: true}, wantBroken: true},
		{name: "empty prefix agrees", w: witness{at: ra - 1, empty: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cluster := clusterID
			if tc.cluster != 0 {
				cluster = tc.cluster
			}
			err := p.verify(ctx, cluster, tc.w)
			var broken *historyBroken
			switch {
			case tc.wantBroken && !errors.As(err, &broken):
				t.Fatalf("verify: %v, want a broken history", err)
			case tc.wantBroken && !errors.Is(err, errNewGeneration):
				t.Fatalf("verify: %v does not start a new generation", err)
			case !tc.wantBroken && err != nil:
				t.Fatalf("verify: %v, want nil", err)
			}
		})
	}
	t.Run("compacted is not a break", func(t *testing.T) {
		if _, err := cli.Compact(ctx, now); err != nil {
			t.Fatal(err)
		}
		err := p.verify(ctx, clusterID, with(ra, put("/v/a", "1", ra)))
		if !errors.Is(err, errWitnessCompacted) {
			t.Fatalf("verify of a compacted revision: %v, want errWitnessCompacted", err)
		}
		var broken *historyBroken
		if errors.As(err, &broken) {
			t.Fatalf("verify of a compacted revision: %v is a broken history", err)
		}
	})
}

// The periodic probe proves the newest witness; a witness the source
// disagrees with ends the session, one it cannot read stays pinned.
func TestProbe(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := context.Background()
	resp, err := e.Client.Put(ctx, "/p/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	rev, clusterID := resp.Header.Revision, resp.Header.ClusterId
	p := &Publisher{cfg: DefaultConfig(), etcd: e.Client, log: discardLogger()}
	var good, bad witness
	good.note(&streams.Record{Kind: streams.KindRevision, Revision: rev, Events: []streams.Event{put("/p/a", "1", rev)}})
	bad.note(&streams.Record{Kind: streams.KindRevision, Revision: rev, Events: []streams.Event{put("/p/a", "not what the source holds", rev)}})

	pr := &prover{clusterID: clusterID}
	if err := p.probe(ctx, pr, good); err != nil || len(pr.pinned) != 0 {
		t.Fatalf("probe of a witness the source agrees with: %v, pinned %d", err, len(pr.pinned))
	}
	if err := p.probe(ctx, pr, bad); !errors.Is(err, errNewGeneration) {
		t.Fatalf("probe of a witness the source disagrees with: %v, want a new generation", err)
	}
	// A pinned witness (taken at an interruption) is proven by the next
	// probe although the newest witness agrees.
	pr = &prover{clusterID: clusterID}
	pr.pin(bad)
	if err := p.probe(ctx, pr, good); !errors.Is(err, errNewGeneration) {
		t.Fatalf("probe with a pinned witness the source disagrees with: %v, want a new generation", err)
	}
	// A source that cannot be read keeps the witness pinned.
	pr = &prover{clusterID: clusterID}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.probe(cctx, pr, good); err != nil || len(pr.pinned) != 1 {
		t.Fatalf("probe that cannot read the source: %v, pinned %d, want nil and 1", err, len(pr.pinned))
	}
}

// lastWitness finds the newest record with events of the tail's generation,
// reading back over progress records, epochs and multi-part records.
func TestLastWitness(t *testing.T) {
	js := testenv.StartJetStream(t)
	ctx := context.Background()
	cfg := DefaultConfig()
	stream, err := streams.EnsureLogStream(ctx, js.JS, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	subj := streams.Subjects{Site: cfg.Stream.Site}
	publish := func(r streams.Record) {
		t.Helper()
		r.ClusterID, r.Time = 0xabc, time.Unix(1, 0)
		if r.Generation == 0 {
			r.Generation = 7
		}
		msgs, err := streams.NewMsgs(subj, &r, 4<<10, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if _, err := js.JS.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := &Publisher{cfg: cfg, subj: subj}
	find := func() witness {
		t.Helper()
		tail, err := streams.ReadTail(ctx, stream, subj)
		if err != nil {
			t.Fatal(err)
		}
		w, err := p.lastWitness(ctx, stream, tail)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}

	publish(streams.Record{Kind: streams.KindRevision, Revision: 3, Generation: 6, Events: []streams.Event{put("/old-generation", "1", 3)}})
	publish(streams.Record{Kind: streams.KindRevision, Revision: 4})
	if w := find(); !w.isZero() {
		t.Fatalf("witness %v from another generation, want none", keysOf(w))
	}

	big := make([]byte, 10<<10) // three parts of 4 KiB
	publish(streams.Record{Kind: streams.KindRevision, Revision: 5, Events: []streams.Event{put("/a", "1", 5), put("/big", string(big), 5)}})
	publish(streams.Record{Kind: streams.KindRevision, Revision: 6})
	publish(streams.Record{Kind: streams.KindEpoch, Revision: 6, Leader: "x"})
	publish(streams.Record{Kind: streams.KindRevision, Revision: 9})
	w := find()
	if w.at != 9 || fmt.Sprint(keysOf(w)) != "[/a@5 del=false /big@5 del=false]" {
		t.Fatalf("witness at %d keys %v, want the multi-part revision 5 read at 9", w.at, keysOf(w))
	}

	publish(streams.Record{Kind: streams.KindSnapshotBegin, Revision: 10})
	publish(streams.Record{Kind: streams.KindSnapshotEnd, Revision: 10, Keys: 0})
	publish(streams.Record{Kind: streams.KindRevision, Revision: 11})
	if w := find(); !w.empty || w.at != 11 {
		t.Fatalf("witness %+v, want the empty snapshot read at 11", w)
	}

	// Progress records beyond the scan's reach: nothing proves the history.
	if err := stream.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	publish(streams.Record{Kind: streams.KindRevision, Revision: 12})
	if w := find(); !w.isZero() {
		t.Fatalf("witness %+v after a purge, want none", w)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkWitnessNote measures what following the witness costs per
// published revision (one 1 KiB put, the common Kubernetes write).
func BenchmarkWitnessNote(b *testing.B) {
	rec := streams.Record{Kind: streams.KindRevision, Revision: 1, Events: []streams.Event{put("/registry/pods/ns/name", string(make([]byte, 1024)), 1)}}
	var w witness
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		rec.Revision = int64(i + 1)
		w.note(&rec)
	}
}

// With a log key ring, only authenticated records prove the history: a
// record that fails its MAC check (forged, or written unsigned) is no
// witness, so the session cannot be talked into continuing a history.
func TestLastWitnessAuthenticated(t *testing.T) {
	js := testenv.StartJetStream(t)
	ctx := context.Background()
	ring, err := streams.ParseKeyRing([]byte("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.LogKeys = ring
	stream, err := streams.EnsureLogStream(ctx, js.JS, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	subj := streams.Subjects{Site: cfg.Stream.Site}
	var seq uint64
	publish := func(r streams.Record, ring *streams.KeyRing) {
		t.Helper()
		r.ClusterID, r.Generation, r.Time = 0xabc, 7, time.Unix(1, 0)
		msgs, err := streams.NewMsgs(subj, &r, 4<<10, ring, seq)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			ack, err := js.JS.PublishMsg(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			seq = ack.Sequence
		}
	}
	p := &Publisher{cfg: cfg, subj: subj}
	find := func() witness {
		t.Helper()
		tail, err := streams.ReadTail(ctx, stream, subj)
		if err != nil {
			t.Fatal(err)
		}
		w, err := p.lastWitness(ctx, stream, tail)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	publish(streams.Record{Kind: streams.KindRevision, Revision: 5, Events: []streams.Event{put("/a", "1", 5)}}, ring)
	publish(streams.Record{Kind: streams.KindRevision, Revision: 6}, ring)
	if w := find(); fmt.Sprint(keysOf(w)) != "[/a@5 del=false]" {
		t.Fatalf("witness %v from signed records, want /a@5", keysOf(w))
	}
	publish(streams.Record{Kind: streams.KindRevision, Revision: 8, Events: []streams.Event{put("/forged", "1", 8)}}, nil)
	if w := find(); !w.isZero() {
		t.Fatalf("witness %v from an unsigned record, want none", keysOf(w))
	}
}
