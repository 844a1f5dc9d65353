package streams

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
)

// Digest is an order-independent multiset hash of (key, value) pairs: the
// sum modulo 2^256 of ElementHash over the pairs. Adding a pair and
// removing it again is the identity, the order of additions does not
// matter, and any change to a key or a value moves it, so a digest can be
// kept up to date from events alone (add the new pair, remove the previous
// one) and compared with a fresh scan.
//
// What it covers: every key without a lease, with its value. Leases and
// revisions are left out because the standby's differ from the primary's,
// and keys attached to a lease are left out altogether: the standby expires
// them on its own clock, possibly before the log's delete arrives, so they
// could never be compared. A pair whose key carries a lease contributes
// nothing; an event that moves a key from a lease to none (or back) is an
// add (or a remove) of its pair.
//
// The zero Digest is the digest of the empty set. Digest is a value type.
type Digest [32]byte

// ElementHash returns the hash of one (key, value) pair: SHA-256 of the
// length-prefixed key and value, so that no two different pairs share an
// encoding.
func ElementHash(key, value []byte) [32]byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(key)))])
	h.Write(key)
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(value)))])
	h.Write(value)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Add adds the pair with element hash e.
func (d *Digest) Add(e [32]byte) { d.combine(e, false) }

// Remove removes the pair with element hash e (the inverse of Add).
func (d *Digest) Remove(e [32]byte) { d.combine(e, true) }

// AddPair adds (key, value).
func (d *Digest) AddPair(key, value []byte) { d.Add(ElementHash(key, value)) }

// combine adds or subtracts e as 256-bit big-endian integers, modulo 2^256.
func (d *Digest) combine(e [32]byte, sub bool) {
	var carry uint64
	for i := 24; i >= 0; i -= 8 {
		a := binary.BigEndian.Uint64(d[i:])
		b := binary.BigEndian.Uint64(e[i:])
		var r uint64
		if sub {
			r, carry = bits.Sub64(a, b, carry)
		} else {
			r, carry = bits.Add64(a, b, carry)
		}
		binary.BigEndian.PutUint64(d[i:], r)
	}
}

// IsZero reports whether d is the digest of the empty set.
func (d Digest) IsZero() bool { return d == Digest{} }

// String returns the digest in hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Short returns the first 12 hex digits, for logs and tables.
func (d Digest) Short() string { return hex.EncodeToString(d[:6]) }

// MarshalText encodes the digest in hex (JSON, checkpoints).
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText decodes a digest MarshalText encoded.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 2*len(d) {
		return fmt.Errorf("digest: %d hex digits, want %d", len(b), 2*len(d))
	}
	_, err := hex.Decode(d[:], b)
	return err
}
