package streams_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

// The tail a publisher resumes from, and that status and promote report,
// is read from the authenticated record: headers, which no MAC covers, are
// rewritten here as a client with publish rights could write them, and
// change nothing. A record split across messages is read from its first
// part, which holds the record's fields.
func TestVerifiedTailIgnoresUnauthenticatedHeaders(t *testing.T) {
	js := testenv.StartJetStream(t)
	ctx := context.Background()
	stream, err := streams.EnsureLogStream(ctx, js.JS, streams.DefaultLogConfig())
	if err != nil {
		t.Fatal(err)
	}
	ring, err := streams.ParseKeyRing([]byte("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))))
	if err != nil {
		t.Fatal(err)
	}
	subj := streams.Subjects{Site: streams.DefaultSite}
	var last uint64
	publish := func(r *streams.Record, maxMsg int) {
		t.Helper()
		msgs, err := streams.NewMsgs(subj, r, maxMsg, ring, last)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			m.Header.Set(streams.HeaderCluster, "ffff")
			m.Header.Set(streams.HeaderGeneration, "99")
			m.Header.Set(streams.HeaderRevision, "123456")
			m.Header.Set(streams.HeaderPart, "0/1")
			ack, err := js.JS.PublishMsg(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			last = ack.Sequence
		}
	}
	check := func(what string, wantRev int64, wantComplete bool) {
		t.Helper()
		tail, err := streams.ReadVerifiedTail(ctx, stream, subj, ring)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if tail.Seq != last || tail.ClusterID != 0xabc || tail.Generation != 7 || tail.Revision != wantRev || tail.Complete != wantComplete {
			t.Fatalf("%s: tail %+v, want seq %d cluster abc generation 7 revision %d complete %v (the record's, not the headers')",
				what, tail, last, wantRev, wantComplete)
		}
	}
	rec := streams.Record{Kind: streams.KindRevision, ClusterID: 0xabc, Generation: 7, Revision: 41, Time: time.Unix(1, 0),
		Events: []streams.Event{{Type: streams.EventPut, Key: []byte("/k"), Value: []byte("v"), ModRevision: 41}}}
	publish(&rec, 1<<20)
	check("single-part revision", 41, true)

	big := rec
	big.Revision = 42
	big.Events = []streams.Event{{Type: streams.EventPut, Key: []byte("/big"), Value: bytes.Repeat([]byte{'x'}, 20<<10), ModRevision: 42}}
	publish(&big, 4<<10)
	check("last part of a multi-part revision", 42, true)

	// A tail signed with another key, and one that is no frame at all, tell
	// nothing: unauthenticated, with the sequence to start a new
	// generation after.
	other, err := streams.ParseKeyRing([]byte("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{4}, 32))))
	if err != nil {
		t.Fatal(err)
	}
	forged := rec
	forged.Revision = 99
	msgs, err := streams.NewMsgs(subj, &forged, 1<<20, other, last)
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range [][]byte{msgs[0].Data, []byte("junk")} {
		ack, err := js.JS.Publish(ctx, subj.Revision(), body)
		if err != nil {
			t.Fatal(err)
		}
		tail, err := streams.ReadVerifiedTail(ctx, stream, subj, ring)
		if !errors.Is(err, streams.ErrUnauthenticated) || tail.Seq != ack.Sequence || tail.Revision != 0 {
			t.Fatalf("tail %q: %+v, %v; want ErrUnauthenticated at seq %d and nothing taken from it", body[:4], tail, err, ack.Sequence)
		}
	}
}
