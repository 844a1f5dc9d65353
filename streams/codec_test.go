package streams

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"reflect"
	"strings"
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
		{"old version", append([]byte{1}, b[1:]...)},
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
	frames, err := SplitRecord(&big, 512<<10, nil, testSubject, 0)
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
	frames, err := SplitRecord(&big, 128<<10, nil, testSubject, 0)
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

// Every bit of every byte of a frame, header included, is covered: flipping
// any one of them is an error, for unsigned and signed frames, and a signed
// frame whose bytes survive the CRC (recomputed by an attacker) still fails
// its MAC.
func TestDecodeFrameDetectsEveryBitFlip(t *testing.T) {
	r := sampleRecord()
	ring := testRing(t)
	for _, tc := range []struct {
		name string
		ring *KeyRing
	}{{"unsigned", nil}, {"signed", ring}} {
		frames, err := SplitRecord(&r, 1<<20, tc.ring, testSubject, 41)
		if err != nil {
			t.Fatal(err)
		}
		orig := frames[0]
		for i := range orig {
			for bit := 0; bit < 8; bit++ {
				b := append([]byte{}, orig...)
				b[i] ^= 1 << bit
				if _, err := DecodeFrame(b); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: flipping bit %d of byte %d of %d: err = %v, want ErrCorrupt", tc.name, bit, i, len(orig), err)
				}
			}
		}
	}
	if _, err := DecodeFrame([]byte(`{"json":true}`)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("json body: want ErrCorrupt, got %v", err)
	}
}

// A frame's kind must be its record's kind: a revision record relabelled as
// an epoch (with a valid checksum) is rejected by the assembler.
func TestAssemblerChecksRecordKind(t *testing.T) {
	r := sampleRecord()
	payload := AppendRecord(nil, &r)
	fb := AppendFrame(nil, Frame{Kind: KindEpoch, Part: 0, Parts: 1, Payload: payload}, nil, testSubject, 0)
	f, err := DecodeFrame(fb)
	if err != nil {
		t.Fatal(err)
	}
	var a Assembler
	if _, _, err := a.Add(f); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "epoch frame holds a revision record") {
		t.Fatalf("relabelled frame: err = %v", err)
	}
}

func testRing(t testing.TB) *KeyRing {
	t.Helper()
	ring, err := ParseKeyRing([]byte("# test ring\nk2026:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) +
		"\nold-1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 40)) + "  # rotated out soon\n"))
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

// recrc recomputes a frame's trailing CRC, as an attacker would.
func recrc(b []byte) []byte {
	b = append([]byte{}, b...)
	binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
	return b
}

func TestFrameMAC(t *testing.T) {
	ring := testRing(t)
	r := sampleRecord()
	frames, err := SplitRecord(&r, 1<<20, ring, testSubject, 41)
	if err != nil {
		t.Fatal(err)
	}
	f, err := DecodeFrame(frames[0])
	if err != nil {
		t.Fatal(err)
	}
	if f.KeyID != "k2026" {
		t.Fatalf("signed by %q, want the ring's first key", f.KeyID)
	}
	if err := ring.Verify(f, testSubject, 41); err != nil {
		t.Fatalf("genuine frame: %v", err)
	}
	// The previous key verifies what it signed (rotation).
	older, _ := ParseKeyRing([]byte("old-1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 40))))
	oldFrames, _ := SplitRecord(&r, 1<<20, older, testSubject, 7)
	of, _ := DecodeFrame(oldFrames[0])
	if err := ring.Verify(of, testSubject, 7); err != nil {
		t.Fatalf("frame signed by a second key of the ring: %v", err)
	}

	unsigned, _ := SplitRecord(&r, 1<<20, nil, testSubject, 41)
	uf, _ := DecodeFrame(unsigned[0])
	if err := (*KeyRing)(nil).Verify(uf, testSubject, 41); err != nil {
		t.Fatalf("no ring: %v", err)
	}
	other, _ := ParseKeyRing([]byte("k2026:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{8}, 32))))
	forgedFrames, _ := SplitRecord(&r, 1<<20, other, testSubject, 41)
	forged, _ := DecodeFrame(forgedFrames[0])
	// An altered payload with a recomputed CRC.
	altered := append([]byte{}, frames[0]...)
	altered[len(altered)-4-MACSize-1] ^= 1
	af, err := DecodeFrame(recrc(altered))
	if err != nil {
		t.Fatal(err)
	}
	unknownFrames, _ := SplitRecord(&r, 1<<20, mustRing(t, "nope:"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))), testSubject, 41)
	unknown, _ := DecodeFrame(unknownFrames[0])
	for _, tc := range []struct {
		name    string
		f       Frame
		subject string
		prev    uint64
		wantMsg string
	}{
		{"unsigned", uf, testSubject, 41, "carries no MAC"},
		{"forged with another key of the same ID", forged, testSubject, 41, "does not match"},
		{"altered payload", af, testSubject, 41, "does not match"},
		{"replayed at another position", f, testSubject, 42, "does not match"},
		{"replayed into another site's log", f, Subjects{Site: "other"}.Revision(), 41, "does not match"},
		{"replayed as another record kind", f, Subjects{Site: DefaultSite}.SnapshotChunk(), 41, "does not match"},
		{"unknown key", unknown, testSubject, 41, `key "nope"`},
	} {
		err := ring.Verify(tc.f, tc.subject, tc.prev)
		if !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("%s: err = %v, want ErrUnauthenticated mentioning %q", tc.name, err, tc.wantMsg)
		}
	}
}

// testSubject is the subject test frames are signed for: revisions of the
// default site's log.
var testSubject = Subjects{Site: DefaultSite}.Revision()

func mustRing(t testing.TB, s string) *KeyRing {
	t.Helper()
	r, err := ParseKeyRing([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseKeyRing(t *testing.T) {
	k32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"ok", "a:" + k32, ""},
		{"comments and blanks", "# c\n\n  a-1:" + k32 + " # x\nB2:" + k32 + "\n", ""},
		{"empty", "# nothing\n", "holds no key"},
		{"no colon", k32, "want ID:BASE64"},
		{"bad id", "a_b:" + k32, "letters, digits and dashes"},
		{"duplicate", "a:" + k32 + "\na:" + k32, "given twice"},
		{"short", "a:" + base64.StdEncoding.EncodeToString(make([]byte, 31)), "at least 32"},
		{"not base64", "a:!!!!", "not base64"},
	} {
		r, err := ParseKeyRing([]byte(tc.in))
		if tc.wantErr == "" {
			if err != nil || r.SigningKeyID() == "" {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		} else if strings.Contains(err.Error(), k32) {
			t.Errorf("%s: error shows the key: %v", tc.name, err)
		}
	}
}

func TestDigestedRecordRoundTrip(t *testing.T) {
	r := sampleRecord()
	r.Digested = true
	r.Digest.AddPair([]byte("a"), []byte("b"))
	r.Events[1].PrevHash = ElementHash([]byte("/registry/pods/ns/b"), []byte("old"))
	got, err := DecodeRecord(AppendRecord(nil, &r))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Digested || got.Digest != r.Digest || got.Events[1].PrevHash != r.Events[1].PrevHash || got.Events[0].PrevHash != ([32]byte{}) {
		t.Fatalf("digest fields lost in the round trip: %+v", got)
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
	ring := testRing(f)
	frames, _ := SplitRecord(&r, 1<<20, nil, testSubject, 0)
	f.Add(frames[0], uint64(0))
	signed, _ := SplitRecord(&r, 1<<20, ring, testSubject, 5)
	f.Add(signed[0], uint64(5))
	f.Add(AppendRecord(nil, &r), uint64(0))
	f.Add([]byte("ES\x02\x01\x00\x01\x01\x00\x00\x00\x00"), uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, prev uint64) {
		if fr, err := DecodeFrame(b); err == nil {
			var a Assembler
			_, _, _ = a.Add(fr)
			// A frame that verifies must be exactly one the publisher
			// signed at that position.
			if ring.Verify(fr, testSubject, prev) == nil && !(prev == 5 && bytes.Equal(b, signed[0])) {
				t.Fatalf("a mutated frame verified at prev seq %d", prev)
			}
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewerFormat) {
			t.Fatalf("frame error does not wrap ErrCorrupt: %v", err)
		}
		// The same bytes as a payload behind a valid CRC reach the record
		// decoder and the assembler.
		var a Assembler
		if fr, err := DecodeFrame(AppendFrame(nil, Frame{Kind: KindRevision, Parts: 1, Payload: b}, nil, testSubject, 0)); err != nil {
			t.Fatalf("re-framed payload: %v", err)
		} else if _, _, err := a.Add(fr); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewerFormat) {
			t.Fatalf("assembler error does not wrap ErrCorrupt: %v", err)
		}
		rec, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewerFormat) {
				t.Fatalf("record error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// What decodes re-encodes to the same record, split in parts of
		// 16 to 271 payload bytes (most records take several).
		parts, err := SplitRecord(&rec, frameOverhead+16+int(prev%256), ring, testSubject, prev)
		if err != nil {
			t.Fatal(err)
		}
		var asm Assembler
		for i, p := range parts {
			fr, err := DecodeFrame(p)
			if err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			if err := ring.Verify(fr, testSubject, prev+uint64(i)); err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			again, done, err := asm.Add(fr)
			if err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			if done != (i == len(parts)-1) {
				t.Fatalf("part %d of %d: done = %v", i, len(parts), done)
			}
			if done && !bytes.Equal(AppendRecord(nil, &again), AppendRecord(nil, &rec)) {
				t.Fatal("round trip through frames changed the record")
			}
		}
	})
}

// asVersion rewrites a frame's version byte to v and re-seals its CRC, as a
// later etcdsync that keeps the magic and the trailing CRC would write it.
func asVersion(frame []byte, v byte) []byte {
	b := append([]byte{}, frame...)
	b[2] = v
	body := b[:len(b)-4]
	return binary.BigEndian.AppendUint32(body, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
}

// A frame or record of a later version is "written by a newer etcdsync",
// not corrupt; an older one, or a version byte changed without its CRC, is
// corrupt.
func TestDecodeNewerVersion(t *testing.T) {
	r := sampleRecord()
	frames, err := SplitRecord(&r, 1<<20, nil, testSubject, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = DecodeFrame(asVersion(frames[0], frameVersion+1))
	if !errors.Is(err, ErrNewerFormat) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "written by a newer etcdsync (frame version 3") {
		t.Fatalf("frame version 3: got %v, want ErrNewerFormat only", err)
	}
	if _, err := DecodeFrame(asVersion(frames[0], 1)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("frame version 1: got %v, want ErrCorrupt", err)
	}
	flipped := append([]byte{}, frames[0]...)
	flipped[2] = frameVersion + 1
	if _, err := DecodeFrame(flipped); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNewerFormat) {
		t.Fatalf("version byte changed without its CRC: got %v, want ErrCorrupt", err)
	}

	rec := AppendRecord(nil, &r)
	rec[0] = recordVersion + 1
	var a Assembler
	f, err := DecodeFrame(AppendFrame(nil, Frame{Kind: KindRevision, Parts: 1, Payload: rec}, nil, testSubject, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Add(f); !errors.Is(err, ErrNewerFormat) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("record version 3: got %v, want ErrNewerFormat only", err)
	}
}

// Value hashes are keyed: under the ring's signing key they are
// HMAC-SHA256(key, domain || value), the same for every holder of the ring
// and never the plain SHA-256; without a ring each hasher has a random key.
func TestValueHasher(t *testing.T) {
	value := []byte("hunter2")
	plain := sha256.Sum256(value)
	ring := testRing(t)
	h := ring.ValueHasher()
	m := hmac.New(sha256.New, bytes.Repeat([]byte{7}, 32))
	m.Write([]byte("etcdsync value hash\x00"))
	m.Write(value)
	if got := h.Sum(value); !bytes.Equal(got[:], m.Sum(nil)) || got == plain {
		t.Fatalf("keyed hash %x: want HMAC-SHA256 under the signing key %x, never SHA-256 %x", got, m.Sum(nil), plain)
	}
	if h.KeyID() != "log:k2026" || testRing(t).ValueHasher().Sum(value) != h.Sum(value) {
		t.Fatalf("key ID %q, or two holders of the ring disagree", h.KeyID())
	}
	var none *KeyRing
	r1, r2 := none.ValueHasher(), none.ValueHasher()
	if r1.Sum(value) == plain || r1.Sum(value) != r1.Sum(value) || r1.Sum(value) == r2.Sum(value) ||
		!strings.HasPrefix(r1.KeyID(), "random:") || r1.KeyID() == r2.KeyID() {
		t.Fatalf("random hashers %q and %q: want distinct random keys, stable within one, never SHA-256", r1.KeyID(), r2.KeyID())
	}
}

// A Position's JSON is snake_case with the 64-bit identifiers as strings
// (a generation above 2^53 survives a reader that parses numbers as
// doubles), and the legacy form of older checkpoints still decodes.
func TestPositionJSON(t *testing.T) {
	p := Position{ClusterID: 0xc8ad042f6fc91eb3, Generation: 1796223725408743266, Revision: 99, Part: 1, Seq: 7}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cluster_id":"c8ad042f6fc91eb3","generation":"1796223725408743266","revision":99,"part":1,"seq":7}`
	if string(b) != want {
		t.Fatalf("JSON %s, want %s", b, want)
	}
	var got Position
	if err := json.Unmarshal(b, &got); err != nil || got != p {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	var legacy Position
	if err := json.Unmarshal([]byte(`{"ClusterID":1234,"Generation":7,"Revision":99,"Part":0,"Seq":2}`), &legacy); err != nil ||
		legacy != (Position{ClusterID: 1234, Generation: 7, Revision: 99, Seq: 2}) {
		t.Fatalf("legacy: %+v %v", legacy, err)
	}
	for _, bad := range []string{`{"cluster_id":"xyz"}`, `{"cluster_id":"1","generation":"-1"}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &legacy); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
