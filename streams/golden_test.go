package streams

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite streams/testdata/golden-v2.hex from the current encoder")

// goldenRecord exercises every field of a version-2 record.
func goldenRecord() Record {
	r := Record{
		Kind: KindRevision, ClusterID: 0xcdf818194e3a8c32, Generation: 1764547200123456789, Revision: 424242,
		Time: time.Unix(0, 1764547201987654321), Prefix: []byte("/registry"), Reason: "golden", Chunk: 3, Keys: 9,
		Leader: "host-1", Digested: true,
		Events: []Event{
			{Type: EventPut, Key: []byte("/registry/configmaps/ns/a"), Value: []byte("\x00\xffvalue"), CreateRevision: 7, ModRevision: 424242, Version: 3, Lease: -1, LeaseTTL: 30},
			{Type: EventDelete, Key: []byte("/registry/configmaps/ns/b"), ModRevision: 424242},
		},
	}
	r.Digest.AddPair([]byte("/registry/configmaps/ns/a"), []byte("\x00\xffvalue"))
	r.Events[1].PrevHash = ElementHash([]byte("/registry/configmaps/ns/b"), []byte("old"))
	return r
}

// The wire format does not depend on the architecture or Go version that
// wrote it: a record signed by a fixed key at a fixed position encodes to
// exactly the bytes in testdata, on amd64 and arm64 alike, and those bytes
// decode back to the record. A change here is a format change: bump the
// version and update streams/doc.go (then -update-golden).
func TestGoldenFrame(t *testing.T) {
	r := goldenRecord()
	ring := testRing(t)
	frames, err := SplitRecord(&r, 1<<20, ring, testSubject, 123456)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 1 {
		t.Fatalf("%d frames, want 1", len(frames))
	}
	const path = "testdata/golden-v2.hex"
	if *updateGolden {
		if err := os.WriteFile(path, []byte(hex.EncodeToString(frames[0])+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden, err := hex.DecodeString(strings.TrimSpace(string(want)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(frames[0], golden) {
		t.Fatalf("encoding changed:\n got %x\nwant %x", frames[0], golden)
	}
	f, err := DecodeFrame(golden)
	if err != nil {
		t.Fatal(err)
	}
	if err := ring.Verify(f, testSubject, 123456); err != nil {
		t.Fatal(err)
	}
	var a Assembler
	got, done, err := a.Add(f)
	if err != nil || !done {
		t.Fatalf("decode golden: done %v, %v", done, err)
	}
	if !bytes.Equal(AppendRecord(nil, &got), AppendRecord(nil, &r)) {
		t.Fatalf("golden frame decodes to %+v", got)
	}
}
