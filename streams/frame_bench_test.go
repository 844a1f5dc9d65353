package streams

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// BenchmarkFrame measures what signing adds to one message on each side:
// the publisher's encode (and MAC) and the applier's decode (and MAC check)
// of a one-event revision record with a 1 KiB value, W2's shape in
// `make bench`. Run: go test -run '^$' -bench Frame ./streams
func BenchmarkFrame(b *testing.B) {
	rec := &Record{Kind: KindRevision, ClusterID: 1, Generation: 2, Revision: 100000, Time: time.Unix(1, 0),
		Events: []Event{{Type: EventPut, Key: []byte("/registry/configmaps/bench/key-012345"),
			Value: bytes.Repeat([]byte{'v'}, 1024), CreateRevision: 99999, ModRevision: 100000, Version: 1}}}
	for _, signed := range []bool{false, true} {
		var ring *KeyRing
		if signed {
			ring = testRing(b)
		}
		name := fmt.Sprintf("signed=%t", signed)
		b.Run(name+"/encode", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := SplitRecord(rec, 1<<20, ring, testSubject, uint64(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
		msg, err := SplitRecord(rec, 1<<20, ring, testSubject, 41)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				f, err := DecodeFrame(msg[0])
				if err != nil {
					b.Fatal(err)
				}
				if err := ring.Verify(f, testSubject, 41); err != nil {
					b.Fatal(err)
				}
				if _, err := DecodeRecord(f.Payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
