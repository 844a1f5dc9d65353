package streams

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func sampleRecord() Record {
	return Record{
		Kind: KindRevision, ClusterID: 0xabcdef, Generation: 3, Revision: 1234,
		Time: time.Unix(0, 1700000000123456789),
		Events: []Event{
			{Type: EventPut, Key: []byte("/registry/pods/ns/a"), Value: []byte("v1"), CreateRevision: 10, ModRevision: 1234, Version: 3, Lease: 7, LeaseTTL: 30},
			{Type: EventDelete, Key: []byte("/registry/pods/ns/b"), ModRevision: 1234},
		},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	recs := []Record{
		sampleRecord(),
		{Kind: KindSnapshotBegin, ClusterID: 1, Generation: 1, Revision: 99, Prefix: []byte("/registry"), Reason: "first start", Time: time.Unix(5, 0)},
		{Kind: KindSnapshotChunk, ClusterID: 1, Generation: 1, Revision: 99, Chunk: 4, Events: []Event{{Type: EventPut, Key: []byte("k"), Value: []byte{}, CreateRevision: 2, ModRevision: 3, Version: 1}}},
		{Kind: KindSnapshotEnd, ClusterID: 1, Generation: 1, Revision: 99, Chunk: 5, Keys: 1234},
		{Kind: KindEpoch, ClusterID: 1, Generation: 2, Revision: -1, Leader: "host-1"},
	}
	for _, r := range recs {
		b := AppendRecord(nil, &r)
		if len(b) > r.EncodedSize() {
			t.Fatalf("%s: encoded %d bytes, bound %d", r.Kind, len(b), r.EncodedSize())
		}
		got, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("%s: decode: %v", r.Kind, err)
		}
		// Empty values decode as nil: the codec does not distinguish them.
		for i := range r.Events {
			if len(r.Events[i].Value) == 0 {
				r.Events[i].Value = nil
			}
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", r.Kind, got, r)
		}
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	good := sampleRecord()
	b := AppendRecord(nil, &good)
	cases := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"bad version", append([]byte{9}, b[1:]...)},
		{"bad kind", append([]byte{1, 77}, b[2:]...)},
		{"truncated", b[:len(b)-3]},
		{"trailing", append(append([]byte{}, b...), 0)},
		{"huge count", append(AppendRecord(nil, &Record{Kind: KindRevision})[:len(AppendRecord(nil, &Record{Kind: KindRevision}))-1], 0xff, 0xff, 0xff, 0x0f)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeRecord(c.in)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("want ErrCorrupt, got %v", err)
			}
		})
	}
}

func TestSplitAndAssemble(t *testing.T) {
	big := sampleRecord()
	big.Events[0].Value = bytes.Repeat([]byte("x"), 1400<<10) // 1.4 MiB value
	frames, err := SplitRecord(&big, 512<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 3 {
		t.Fatalf("want 3 parts, got %d", len(frames))
	}
	var a Assembler
	for i, fb := range frames {
		if len(fb) > 512<<10 {
			t.Fatalf("part %d is %d bytes", i, len(fb))
		}
		f, err := DecodeFrame(fb)
		if err != nil {
			t.Fatal(err)
		}
		r, done, err := a.Add(f)
		if err != nil {
			t.Fatal(err)
		}
		if done != (i == len(frames)-1) {
			t.Fatalf("part %d: done=%v", i, done)
		}
		if done && !bytes.Equal(r.Events[0].Value, big.Events[0].Value) {
			t.Fatal("reassembled value differs")
		}
	}
}

func TestAssemblerRejectsOutOfOrder(t *testing.T) {
	big := sampleRecord()
	big.Events[0].Value = bytes.Repeat([]byte("x"), 300<<10)
	frames, err := SplitRecord(&big, 128<<10)
	if err != nil {
		t.Fatal(err)
	}
	var a Assembler
	f0, _ := DecodeFrame(frames[0])
	f2, _ := DecodeFrame(frames[2])
	if _, _, err := a.Add(f0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Add(f2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("skipped part: want ErrCorrupt, got %v", err)
	}
	var b Assembler
	if _, _, err := b.Add(f2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("part without first: want ErrCorrupt, got %v", err)
	}
}

func TestDecodeFrameDetectsCorruption(t *testing.T) {
	r := sampleRecord()
	frames, err := SplitRecord(&r, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range frames[0] {
		b := append([]byte{}, frames[0]...)
		b[i] ^= 0x40
		f, err := DecodeFrame(b)
		if err == nil {
			// A flipped bit in a varint header field may still parse; the
			// checksum still covers the payload, so decoding must then fail
			// or the frame must be structurally different.
			if _, derr := DecodeRecord(f.Payload); derr == nil && f.Part == 0 && f.Parts == 1 && f.Kind == r.Kind {
				t.Fatalf("flipping byte %d went unnoticed", i)
			}
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d: want ErrCorrupt, got %v", i, err)
		}
	}
	if _, err := DecodeFrame([]byte(`{"json":true}`)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("json body: want ErrCorrupt, got %v", err)
	}
}

func TestPositionStringParse(t *testing.T) {
	p := Position{ClusterID: 0xdeadbeef, Generation: 2, Revision: 99, Part: 1, Seq: 1000}
	q, err := ParsePosition(p.String())
	if err != nil || q != p {
		t.Fatalf("round trip %v -> %v, %v", p, q, err)
	}
	for _, bad := range []string{"", "1:2:3:4", "x:1:2:3@4", "1:2:3@4", "1:2:3:-1@4", "1:2:3:4@x"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Fatalf("%q: want error", bad)
		}
	}
	if !(Position{Generation: 1, Revision: 100}).Less(Position{Generation: 2, Revision: 1}) {
		t.Fatal("generation must order first")
	}
	if !(Position{Generation: 1, Revision: 5, Seq: 9}).Less(Position{Generation: 1, Revision: 6, Seq: 1}) {
		t.Fatal("revision must order before seq")
	}
}

func FuzzDecode(f *testing.F) {
	r := sampleRecord()
	frames, _ := SplitRecord(&r, 1<<20)
	f.Add(frames[0])
	f.Add(AppendRecord(nil, &r))
	f.Add([]byte("ES\x01\x01\x00\x01\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if fr, err := DecodeFrame(b); err == nil {
			var a Assembler
			_, _, _ = a.Add(fr)
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("frame error does not wrap ErrCorrupt: %v", err)
		}
		rec, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("record error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// What decodes must re-encode to a record that decodes the same.
		again, err := DecodeRecord(AppendRecord(nil, &rec))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if again.Kind != rec.Kind || again.Revision != rec.Revision || len(again.Events) != len(rec.Events) {
			t.Fatal("re-encoded record differs")
		}
	})
}
