package applier

import (
	"testing"

	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

// The scope digest follows events exactly as a scan of the keys they
// leave would: new keys in, previous pairs out, leased keys and deletes
// out, resource types kept apart and dropped when empty.
func TestScopeDigestFollowsEvents(t *testing.T) {
	rules, err := keyspace.New(keyspace.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := newScopeDigest("", rules)
	hash := func(k, v string) [32]byte { return streams.ElementHash([]byte(k), []byte(v)) }
	apply := func(e streams.Event) { s.event(&e, rules.ResourceOf(e.Key)) }
	const cm, sec = "/registry/configmaps/a/x", "/registry/secrets/a/y"
	apply(streams.Event{Type: streams.EventPut, Key: []byte(cm), Value: []byte("1")})
	apply(streams.Event{Type: streams.EventPut, Key: []byte(sec), Value: []byte("s")})
	apply(streams.Event{Type: streams.EventPut, Key: []byte(cm), Value: []byte("2"), PrevHash: hash(cm, "1")})
	// Moved onto a lease: out of the digest; back off it: in again.
	apply(streams.Event{Type: streams.EventPut, Key: []byte(sec), Value: []byte("s"), Lease: 7, PrevHash: hash(sec, "s")})
	apply(streams.Event{Type: streams.EventPut, Key: []byte(sec), Value: []byte("t")})
	// A leased key and its delete never count.
	apply(streams.Event{Type: streams.EventPut, Key: []byte("/registry/events/a/e"), Value: []byte("e"), Lease: 7})
	apply(streams.Event{Type: streams.EventDelete, Key: []byte("/registry/events/a/e")})

	var want streams.Digest
	want.AddPair([]byte(cm), []byte("2"))
	want.AddPair([]byte(sec), []byte("t"))
	got, keys := s.Total()
	if got != want || keys != 2 {
		t.Fatalf("digest %s (%d keys), want %s (2 keys)", got.Short(), keys, want.Short())
	}
	if len(s.Resources) != 2 || s.Resources["configmaps"].Keys != 1 || s.Resources["secrets"].Keys != 1 {
		t.Fatalf("resources %+v", s.Resources)
	}
	c := s.clone()
	apply(streams.Event{Type: streams.EventDelete, Key: []byte(sec), PrevHash: hash(sec, "t")})
	if _, ok := s.Resources["secrets"]; ok {
		t.Fatalf("an emptied resource type stays: %+v", s.Resources)
	}
	if c.Resources["secrets"].Keys != 1 {
		t.Fatal("a clone changed with its original")
	}
}
