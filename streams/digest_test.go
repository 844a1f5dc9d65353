package streams

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

type pair struct{ k, v []byte }

func randomPairs(r *rand.Rand, n int) []pair {
	out := make([]pair, n)
	for i := range out {
		k := make([]byte, 1+r.IntN(40))
		v := make([]byte, r.IntN(200))
		for j := range k {
			k[j] = byte(r.IntN(256))
		}
		for j := range v {
			v[j] = byte(r.IntN(256))
		}
		out[i] = pair{k, v}
	}
	return out
}

func digestOf(ps []pair) Digest {
	var d Digest
	for _, p := range ps {
		d.AddPair(p.k, p.v)
	}
	return d
}

func TestDigestOrderIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 50; trial++ {
		ps := randomPairs(r, 1+r.IntN(100))
		want := digestOf(ps)
		r.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		if got := digestOf(ps); got != want {
			t.Fatalf("trial %d: digest depends on order: %s vs %s", trial, got, want)
		}
	}
}

func TestDigestAddRemoveInverse(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	base := randomPairs(r, 64)
	d := digestOf(base)
	start := d
	extra := randomPairs(r, 64)
	for _, p := range extra {
		d.AddPair(p.k, p.v)
	}
	if d == start {
		t.Fatal("adding 64 pairs did not move the digest")
	}
	// Remove in another order than added.
	for i := len(extra) - 1; i >= 0; i-- {
		d.Remove(ElementHash(extra[i].k, extra[i].v))
	}
	if d != start {
		t.Fatalf("add then remove is not the identity: %s vs %s", d, start)
	}
	for _, p := range base {
		d.Remove(ElementHash(p.k, p.v))
	}
	if !d.IsZero() {
		t.Fatalf("removing every pair leaves %s, want zero", d)
	}
	// A carry across all 256 bits: 0 - x + x.
	var z Digest
	all := [32]byte{}
	for i := range all {
		all[i] = 0xff
	}
	z.Add(all)
	z.Add([32]byte{31: 1})
	if !z.IsZero() {
		t.Fatalf("2^256-1 + 1 = %s, want 0 (mod 2^256)", z)
	}
}

// Every single-byte change of a key or value, and moving a byte from the
// key to the value, moves the digest.
func TestDigestSingleByteChange(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	ps := randomPairs(r, 20)
	want := digestOf(ps)
	for i := range ps {
		for _, target := range []*[]byte{&ps[i].k, &ps[i].v} {
			b := *target
			for j := range b {
				old := b[j]
				b[j] ^= 1 << uint(r.IntN(8))
				if got := digestOf(ps); got == want {
					t.Fatalf("pair %d byte %d changed, digest did not", i, j)
				}
				b[j] = old
			}
		}
	}
	if got := digestOf(ps); got != want {
		t.Fatal("restoring every byte did not restore the digest")
	}
	// Key "ab" value "c" differs from key "a" value "bc".
	if ElementHash([]byte("ab"), []byte("c")) == ElementHash([]byte("a"), []byte("bc")) {
		t.Fatal("length prefixes do not separate key and value")
	}
}

func FuzzDigest(f *testing.F) {
	f.Add([]byte("k"), []byte("v"), []byte("k2"), []byte("v2"))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 []byte) {
		var a, b Digest
		a.AddPair(k1, v1)
		a.AddPair(k2, v2)
		b.AddPair(k2, v2)
		b.AddPair(k1, v1)
		if a != b {
			t.Fatal("order dependent")
		}
		a.Remove(ElementHash(k1, v1))
		var c Digest
		c.AddPair(k2, v2)
		if a != c {
			t.Fatal("remove is not the inverse of add")
		}
		if !bytes.Equal(k1, k2) || !bytes.Equal(v1, v2) {
			if ElementHash(k1, v1) == ElementHash(k2, v2) {
				t.Fatal("two different pairs share an element hash")
			}
		}
	})
}

func TestDigestTextRoundTrip(t *testing.T) {
	var d Digest
	d.AddPair([]byte("k"), []byte("v"))
	b, err := d.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	var got Digest
	if err := got.UnmarshalText(b); err != nil || got != d {
		t.Fatalf("round trip: %v %s != %s", err, got, d)
	}
	for _, bad := range []string{"", "00", string(b[:63]) + "g", string(b) + "00"} {
		if err := got.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q): no error", bad)
		}
	}
}
