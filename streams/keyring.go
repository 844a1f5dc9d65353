package streams

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
	"sync"
)

// ErrUnauthenticated is wrapped by every MAC failure: a message without a
// MAC where one is required, with an unknown key ID, or whose MAC does not
// match its bytes and position. It wraps ErrCorrupt, so whatever stops on a
// corrupt message stops on a forged one too.
var ErrUnauthenticated = fmt.Errorf("unauthenticated message: %w", ErrCorrupt)

// MinKeyBytes is the shortest log key a key ring accepts.
const MinKeyBytes = 32

// maxKeyID bounds a key ID (it travels in every frame's header).
const maxKeyID = 64

// MACSize is the size of a frame's MAC (HMAC-SHA256).
const MACSize = sha256.Size

// macDomain separates etcdsync's log MACs from any other use of the key.
const macDomain = "etcdsync log frame v2\x00"

// logKey is one key of a ring.
type logKey struct {
	id  string
	key []byte
	// macs holds HMAC states keyed with key, reused across messages: a
	// reset HMAC starts from its keyed state without hashing the key again.
	macs *sync.Pool
}

func newLogKey(id string, key []byte) logKey {
	return logKey{id: id, key: key, macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

// KeyRing holds the log keys shared by both sites: the first key signs,
// every key verifies, so a key is rotated by adding the new one everywhere
// (second), then moving it first on the publisher, then removing the old
// one once the stream no longer holds messages it signed. A nil *KeyRing
// signs nothing and verifies nothing. Safe for concurrent use.
type KeyRing struct {
	keys []logKey
}

// ParseKeyRing parses a key ring file: one key per line as "ID:BASE64"
// (standard base64 with padding), ID of letters, digits and dashes (at most
// 64), at least 32 bytes of key; "#" starts a comment; blank lines are
// ignored. Errors name the line but never the key.
func ParseKeyRing(b []byte) (*KeyRing, error) {
	r := &KeyRing{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		id, enc, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("key ring line %d: want ID:BASE64", n)
		}
		if err := validKeyID(id); err != nil {
			return nil, fmt.Errorf("key ring line %d: %w", n, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("key ring line %d: key ID %q given twice", n, id)
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
		if err != nil {
			return nil, fmt.Errorf("key ring line %d (key %q): not base64", n, id)
		}
		if len(key) < MinKeyBytes {
			return nil, fmt.Errorf("key ring line %d (key %q): %d bytes of key, want at least %d (e.g. head -c 32 /dev/urandom | base64)", n, id, len(key), MinKeyBytes)
		}
		seen[id] = true
		r.keys = append(r.keys, newLogKey(id, key))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("key ring: %w", err)
	}
	if len(r.keys) == 0 {
		return nil, errors.New("key ring holds no key")
	}
	return r, nil
}

// LoadKeyRing reads and parses the key ring file at path.
func LoadKeyRing(path string) (*KeyRing, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read log key ring: %w", err)
	}
	r, err := ParseKeyRing(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func validKeyID(id string) error {
	if id == "" || len(id) > maxKeyID {
		return fmt.Errorf("key ID %q: want 1 to %d letters, digits and dashes", id, maxKeyID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("key ID %q: want letters, digits and dashes only", id)
		}
	}
	return nil
}

// SigningKeyID returns the ID of the key that signs ("" for a nil ring).
func (r *KeyRing) SigningKeyID() string {
	if r == nil {
		return ""
	}
	return r.keys[0].id
}

// IDs returns the key IDs in ring order.
func (r *KeyRing) IDs() []string {
	if r == nil {
		return nil
	}
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.id
	}
	return ids
}

func (r *KeyRing) lookup(id string) *logKey {
	for i := range r.keys {
		if r.keys[i].id == id {
			return &r.keys[i]
		}
	}
	return nil
}

// appendMAC appends to dst the MAC of a frame's covered bytes at its
// place in the log: the subject it is published on (which names the site
// and the record kind) and the stream sequence of the message before it.
func (k *logKey) appendMAC(dst, covered []byte, subject string, prevSeq uint64) []byte {
	m := k.macs.Get().(hash.Hash)
	m.Reset()
	var hdr [len(macDomain) + 8 + binary.MaxVarintLen64]byte
	b := append(hdr[:0], macDomain...)
	b = binary.BigEndian.AppendUint64(b, prevSeq)
	b = binary.AppendUvarint(b, uint64(len(subject)))
	m.Write(b)
	m.Write([]byte(subject))
	m.Write(covered)
	dst = m.Sum(dst)
	k.macs.Put(m)
	return dst
}

// Verify checks f's MAC against the ring for a message stored on subject
// right after stream sequence prevSeq: a frame copied to another subject
// (another site's log, another record kind) or another position fails. A
// nil ring accepts every frame. Errors wrap ErrUnauthenticated and name the
// key ID, never the key.
func (r *KeyRing) Verify(f Frame, subject string, prevSeq uint64) error {
	if r == nil {
		return nil
	}
	if f.KeyID == "" {
		return fmt.Errorf("%w: %s frame carries no MAC", ErrUnauthenticated, f.Kind)
	}
	key := r.lookup(f.KeyID)
	if key == nil {
		return fmt.Errorf("%w: %s frame signed with key %q, which the key ring does not hold (have %q)", ErrUnauthenticated, f.Kind, f.KeyID, r.IDs())
	}
	var mac [MACSize]byte
	if !hmac.Equal(key.appendMAC(mac[:0], f.covered, subject, prevSeq), f.MAC) {
		return fmt.Errorf("%w: MAC of %s frame (key %q) does not match its bytes at this place (subject %s, after seq %d): forged, altered, or replayed from another position or log",
			ErrUnauthenticated, f.Kind, f.KeyID, subject, prevSeq)
	}
	return nil
}

// DecodeVerified decodes a message body (DecodeFrame) and checks its MAC
// for its place in the log (Verify). With a ring, a body that is not a
// frame this etcdsync can read is unauthenticated too: whoever may publish
// on the log subjects can write any bytes, a checksum included, and only a
// MAC could show that a frame of a later version is genuine. The error
// then wraps ErrUnauthenticated only (not ErrNewerFormat), and says that
// the message may be a newer etcdsync's.
func (r *KeyRing) DecodeVerified(b []byte, subject string, prevSeq uint64) (Frame, error) {
	f, err := DecodeFrame(b)
	if err != nil {
		if r != nil {
			return Frame{}, fmt.Errorf("%w: not a frame this etcdsync can authenticate (forged, or written by a newer etcdsync: then upgrade): %v", ErrUnauthenticated, err)
		}
		return Frame{}, err
	}
	if err := r.Verify(f, subject, prevSeq); err != nil {
		return Frame{}, err
	}
	return f, nil
}

// valueHashDomain separates value hashes from frame MACs made with the
// same key.
const valueHashDomain = "etcdsync value hash\x00"

// ValueHasher computes the keyed hash of a value that leaves the process
// (drift reports and events): HMAC-SHA256 under a key, so that a reader
// without the key cannot test guesses of a value (a Secret's password)
// against it, as it could against a plain SHA-256. Two hashes compare only
// when made under the same key (KeyID). Safe for concurrent use.
type ValueHasher struct {
	keyID string
	key   []byte
}

// ValueHasher returns the hasher of the ring's signing key: its KeyID is
// "log:<ID>", and every holder of the ring computes the same hashes. A nil
// ring returns a hasher under a fresh random key, KeyID "random:<16 hex
// digits>" (random too, not derived from the key): its hashes compare only
// with the same hasher's.
func (r *KeyRing) ValueHasher() *ValueHasher {
	if r != nil {
		return &ValueHasher{keyID: "log:" + r.keys[0].id, key: r.keys[0].key}
	}
	key, id := make([]byte, MinKeyBytes), make([]byte, 8)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	_, _ = rand.Read(id)
	return &ValueHasher{keyID: "random:" + hex.EncodeToString(id), key: key}
}

// KeyID names the key of the hashes: "log:<key ID>" or "random:<id>".
func (h *ValueHasher) KeyID() string { return h.keyID }

// Sum returns HMAC-SHA256(key, "etcdsync value hash\x00" || value).
func (h *ValueHasher) Sum(value []byte) [32]byte {
	var out [32]byte
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(valueHashDomain))
	m.Write(value)
	copy(out[:], m.Sum(nil))
	return out
}
