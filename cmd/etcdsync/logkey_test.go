package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/streams"
)

// writeKeyRing writes a key ring file holding one key, id, of 32 bytes of
// fill, and returns its path.
func writeKeyRing(t *testing.T, id string, fill byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), id+".key")
	line := id + ":" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, 32)) + "\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestStatusAndPromoteDistrustForgedTail: a client with write access to
// the stream but no log key appends a forged revision record claiming a
// source revision far ahead. With --log-key-file, status reports the
// unauthenticated tail instead of taking the publisher's position from it
// (exit 1), and promote neither waits for it nor bumps the standby's
// revision past what it claims: it reports it and exits 1, fenced.
func TestStatusAndPromoteDistrustForgedTail(t *testing.T) {
	primary, pcli := startEtcd(t)
	standby, scli := startEtcd(t)
	ns := startNATS(t, "primary", "")
	url := ns.ClientURL()
	keyFile := writeKeyRing(t, "k1", 1)
	ctx := context.Background()
	pub := runBackground(t, "publish", "--etcd-endpoints", primary.Endpoint, "--nats-url", url, "--log-key-file", keyFile)
	runBackground(t, "apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", url, "--log-key-file", keyFile)
	var last int64
	for _, k := range []string{"a", "b", "c"} {
		resp, err := pcli.Put(ctx, "/registry/configmaps/app/"+k, k)
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	applied := func() applier.Checkpoint {
		ck, _, err := applier.ReadCheckpoint(ctx, scli, "/etcdsync/checkpoint/"+streams.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
	eventually(t, 30*time.Second, "the last revision applied", func() bool { return applied().Position.Revision >= last })
	pub.stop(t)

	// The forgery: right after the tail, signed with a key of the right ID
	// but the wrong bytes.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	subj := streams.Subjects{Site: streams.DefaultSite}
	tail, err := streams.ReadTail(ctx, stream, subj)
	if err != nil || tail.Revision < last {
		t.Fatalf("tail %+v (%v), want revision %d at least", tail, err, last)
	}
	last = tail.Revision
	eventually(t, 30*time.Second, "the log applied", func() bool { return applied().Position.Seq == tail.StreamLastSeq })
	const ahead = 20000
	forged := streams.Record{Kind: streams.KindRevision, ClusterID: tail.ClusterID, Generation: tail.Generation,
		Revision: last + ahead, Time: time.Now(), Events: []streams.Event{{Type: streams.EventPut,
			Key: []byte("/registry/clusterrolebindings/injected-admin"), Value: []byte("pwned"), CreateRevision: last + ahead, ModRevision: last + ahead, Version: 1}}}
	wrong, err := streams.ParseKeyRing([]byte("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := streams.NewMsgs(subj, &forged, 1<<20, wrong, tail.StreamLastSeq)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(ctx, msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	seq := fmt.Sprintf("seq %d", ack.Sequence)

	// status: the forged position is reported, not used.
	code, out, stderr := runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--nats-url", url, "--log-key-file", keyFile, "--json")
	var st statusOutput
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != exitFailure || st.Stream == nil {
		t.Fatalf("status --json: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	if st.Stream.Revision == last+ahead || !st.Stream.Authenticated || len(st.Stream.Unauthenticated) != 1 ||
		!strings.Contains(st.Stream.Unauthenticated[0], seq) || !strings.Contains(stderr, "MAC") {
		t.Fatalf("status took the forged tail: stream %+v\n%s", st.Stream, stderr)
	}
	code, out, _ = runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--nats-url", url, "--log-key-file", keyFile)
	if code != exitFailure || !strings.Contains(out, "UNAUTHENTICATED") || !strings.Contains(out, "publisher at   unknown") || strings.Contains(out, fmt.Sprint(last+ahead)) {
		t.Fatalf("status table: exit %d\n%s", code, out)
	}
	// Without the key ring it cannot tell, and says so.
	if _, out, _ := runCmd(t, "status", "--standby-endpoints", standby.Endpoint, "--nats-url", url); !strings.Contains(out, "MACs           NOT CHECKED") {
		t.Fatalf("status without --log-key-file does not say the log is unchecked:\n%s", out)
	}

	// promote --dry-run: drained up to the last authentic message, whose
	// revision is the stream's last.
	code, out, stderr = runCmd(t, "promote", "--standby-endpoints", standby.Endpoint, "--nats-url", url, "--log-key-file", keyFile, "--dry-run", "--json")
	var dry promoteOutput
	if err := json.Unmarshal([]byte(out), &dry); err != nil || code != exitOK {
		t.Fatalf("promote --dry-run: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	if dry.StreamLastRevision != last || !dry.Drained || !strings.Contains(dry.Unauthenticated, seq) {
		t.Fatalf("promote --dry-run took the forged tail: last revision %d (want %d), drained %v, unauthenticated %q",
			dry.StreamLastRevision, last, dry.Drained, dry.Unauthenticated)
	}
	// promote: fenced at once, the revision bumped past the real last one
	// only, the forgery reported, exit 1.
	code, out, stderr = runCmd(t, "promote", "--standby-endpoints", standby.Endpoint, "--nats-url", url, "--log-key-file", keyFile,
		"--bump-revision", "--drain-timeout", "5s", "--json")
	var rep promoteOutput
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitFailure {
		t.Fatalf("promote: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	if !rep.Checkpoint.Promoted || !rep.Drained || rep.StreamLastRevision != last || rep.StandbyRevision >= last+ahead ||
		!strings.Contains(rep.Unauthenticated, seq) || !strings.Contains(stderr, "MAC") {
		t.Fatalf("promote report: promoted %v, drained %v, stream last revision %d (want %d), standby revision %d (forged %d), unauthenticated %q\n%s",
			rep.Checkpoint.Promoted, rep.Drained, rep.StreamLastRevision, last, rep.StandbyRevision, last+ahead, rep.Unauthenticated, stderr)
	}
	if resp, err := scli.Get(ctx, "/registry/clusterrolebindings/injected-admin"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the forged key reached the standby (%v)", err)
	}
}

// TestAuditKeysValueHashes: `audit --log-key-file` shows a mismatched
// key's values as HMAC-SHA256 under the ring's signing key, the same for
// two runs and never the plain SHA-256; without the flag, under another
// (random) key.
func TestAuditKeysValueHashes(t *testing.T) {
	p := newAuditPair(t, true)
	p.put(p.standby, "/registry/configmaps/app/b", "changed")
	keyFile := writeKeyRing(t, "k1", 1)
	audit := func(extra ...string) auditor.KeyDrift {
		t.Helper()
		code, stdout, stderr := runCmd(t, p.args(append([]string{"--once", "--json"}, extra...)...)...)
		var rep auditor.Report
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != exitFailure || rep.Mismatched.Count != 1 {
			t.Fatalf("audit %q: exit %d, %v\n%s%s", extra, code, err, stdout, stderr)
		}
		want := "random:"
		if len(extra) > 0 {
			want = "log:k1"
		}
		if !strings.HasPrefix(rep.ValueHMACKey, want) {
			t.Fatalf("audit %q: value_hmac_key %q, want %s...", extra, rep.ValueHMACKey, want)
		}
		return rep.Mismatched.Keys[0]
	}
	keyed := audit("--log-key-file", keyFile)
	m := hmac.New(sha256.New, bytes.Repeat([]byte{1}, 32))
	m.Write([]byte("etcdsync value hash\x00v"))
	plain := sha256.Sum256([]byte("v"))
	if keyed.PrimaryHMAC != hex.EncodeToString(m.Sum(nil)) || keyed.PrimaryHMAC == hex.EncodeToString(plain[:]) {
		t.Fatalf("primary value hash %s: want HMAC-SHA256 under the log key, %x", keyed.PrimaryHMAC, m.Sum(nil))
	}
	if again := audit("--log-key-file", keyFile); again.PrimaryHMAC != keyed.PrimaryHMAC {
		t.Fatalf("two audits with the same key ring disagree: %s, %s", keyed.PrimaryHMAC, again.PrimaryHMAC)
	}
	if random := audit(); random.PrimaryHMAC == keyed.PrimaryHMAC || random.PrimaryHMAC == hex.EncodeToString(plain[:]) {
		t.Fatalf("without --log-key-file the hash %s is the log key's or the plain SHA-256", random.PrimaryHMAC)
	}
}
