package auditor_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/streams"
)

// Drift reports and drift events carry keyed hashes of values, never a
// plain SHA-256 a reader could test guessed values against: with the log
// key ring, HMAC-SHA256 under its signing key (every holder of the ring
// can recompute it); without, under a random key of the auditor, stable
// across its reports.
func TestAuditValueHashesKeyed(t *testing.T) {
	const primaryValue, standbyValue = "password=hunter2", "password=letmein"
	e := newEnv(t, true)
	put(t, e.standby.Client, "/registry/secrets/app/db", standbyValue)
	e.writeCheckpoint(put(t, e.primary.Client, "/registry/secrets/app/db", primaryValue), nil)
	ctx := testenv.Context(t)
	key := bytes.Repeat([]byte{3}, 32)
	ring, err := streams.ParseKeyRing([]byte("k1:" + base64.StdEncoding.EncodeToString(key)))
	if err != nil {
		t.Fatal(err)
	}
	keyed := func(v string) string {
		m := hmac.New(sha256.New, key)
		m.Write([]byte("etcdsync value hash\x00" + v))
		return hex.EncodeToString(m.Sum(nil))
	}
	plain := func(v string) string {
		h := sha256.Sum256([]byte(v))
		return hex.EncodeToString(h[:])
	}

	cfg := e.config()
	cfg.LogKeys = ring
	rep, err := e.auditor(cfg, nil).Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mismatched.Count != 1 {
		t.Fatalf("want one mismatched key: %s", fmtKeys(rep))
	}
	m := rep.Mismatched.Keys[0]
	if m.PrimaryHMAC != keyed(primaryValue) || m.StandbyHMAC != keyed(standbyValue) || rep.ValueHMACKey != "log:k1" {
		t.Fatalf("value hashes %s / %s under %q: want HMAC-SHA256 under the log key, %s / %s under log:k1",
			m.PrimaryHMAC, m.StandbyHMAC, rep.ValueHMACKey, keyed(primaryValue), keyed(standbyValue))
	}
	keyEvents, _ := readRun(t, e.js.JS, rep.ID)
	if len(keyEvents) != 1 || keyEvents[0].PrimaryHMAC != m.PrimaryHMAC || keyEvents[0].ValueHMACKey != "log:k1" {
		t.Fatalf("key events %+v: want the report's keyed hashes and key", keyEvents)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "primary hmac:"+m.PrimaryHMAC[:12]) || !strings.Contains(text.String(), "under key log:k1") {
		t.Fatalf("text report lacks the keyed hash and its key:\n%s", text.String())
	}

	// Without a ring: a random key, the same for every report of one auditor.
	a := e.auditor(e.config(), nil)
	first, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := first.Mismatched.Keys[0], second.Mismatched.Keys[0]
	if !strings.HasPrefix(first.ValueHMACKey, "random:") || first.ValueHMACKey != second.ValueHMACKey || h1.PrimaryHMAC != h2.PrimaryHMAC {
		t.Fatalf("random-key hashes: %q %s, then %q %s: want one random key for the auditor", first.ValueHMACKey, h1.PrimaryHMAC, second.ValueHMACKey, h2.PrimaryHMAC)
	}
	for _, h := range []string{m.PrimaryHMAC, m.StandbyHMAC, h1.PrimaryHMAC, h1.StandbyHMAC} {
		if h == plain(primaryValue) || h == plain(standbyValue) {
			t.Fatalf("a report carries the plain SHA-256 of a value: %s", h)
		}
	}
	if h1.PrimaryHMAC == m.PrimaryHMAC {
		t.Fatal("the random key is the log key")
	}
}
