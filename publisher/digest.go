package publisher

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/internal/digestscan"
	"github.com/etcdsync/etcdsync/streams"
)

// The log's keyspace digests (see streams.Digest): every revision record
// carries the digest of the source keyspace under the prefix after that
// revision, every event the hash of its key's previous value. The
// publisher keeps the digest from the watch alone (remove the previous
// pair, add the new one) and rescans the source to prove it: at session
// start (at the tail's revision), every VerifyInterval (at the last
// revision sent) and whenever a snapshot of the same generation is taken
// at a revision the log already describes. A rescan that disagrees means
// the log no longer tells the source's truth: a new generation starts.

// scanPageSize is the number of keys (with values) per read of a digest
// rescan: small enough that a page of large objects stays bounded.
const scanPageSize = 256

// keyspaceDigest is what the records sent so far say the source keyspace
// digest is.
type keyspaceDigest struct {
	// known is false until a snapshot, the tail record or a scan gave the
	// digest, and again after an event's previous value could not be known.
	known bool
	// rev is the revision d describes.
	rev int64
	d   streams.Digest
}

// follow moves k past the events of the revision record rec and marks rec
// with the digest after it (rec is left undigested while k is unknown).
func (k *keyspaceDigest) follow(rec *streams.Record) {
	rec.Digested = false
	if !k.known {
		return
	}
	var zero [32]byte
	for i := range rec.Events {
		e := &rec.Events[i]
		if e.PrevHash != zero {
			k.d.Remove(e.PrevHash)
		}
		if e.Type == streams.EventPut && e.Lease == 0 {
			k.d.AddPair(e.Key, e.Value)
		}
	}
	k.rev = rec.Revision
	rec.Digested, rec.Digest = true, k.d
}

// stamp marks rec (an epoch) with the digest at its revision when k knows it.
func (k *keyspaceDigest) stamp(rec *streams.Record) {
	if k.known && k.rev == rec.Revision {
		rec.Digested, rec.Digest = true, k.d
	}
}

// prevHash returns the element hash of the previous (key, value) pair of
// the watch event ev, zero when the key was new or its previous version
// was attached to a lease (outside every digest). ok is false when the
// previous value is unknown: the event changed an existing key but etcd
// sent no previous value (it could not read the revision before the event,
// compacted meanwhile).
func prevHash(ev *clientv3.Event) (h [32]byte, ok bool) {
	pk := ev.PrevKv
	switch {
	case pk == nil:
		return h, ev.IsCreate()
	case pk.Lease != 0:
		return h, true
	}
	return streams.ElementHash(pk.Key, pk.Value), true
}

// scanDigest reads the source under the prefix pinned at rev and returns
// its digest and key count.
func (p *Publisher) scanDigest(ctx context.Context, rev int64) (digestscan.Result, error) {
	res, err := digestscan.Scan(ctx, p.etcd, digestscan.Options{Prefix: p.cfg.Prefix, Revision: rev, PageSize: scanPageSize})
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return res, fmt.Errorf("rescan the source at revision %d: %w", rev, errWitnessCompacted)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return res, &historyBroken{fmt.Sprintf("revision %d, which the log holds, is in the source's future: its revision went backwards", rev)}
	case err != nil:
		return res, fmt.Errorf("rescan the source at revision %d: %w", rev, err)
	}
	return res, nil
}

// checkDigest compares the digest the log carries for revision rev (want)
// with got, a scan of the source at rev. It counts the outcome and returns
// a *historyBroken error with the evidence on a mismatch.
func (p *Publisher) checkDigest(rev int64, want streams.Digest, got digestscan.Result) error {
	if got.Digest != want {
		p.metrics.mismatches.Inc()
		err := &historyBroken{fmt.Sprintf("keyspace digest at revision %d: %s in the log, %s on the source (%d keys): the source no longer holds what the log describes",
			rev, want.Short(), got.Digest.Short(), got.Keys)}
		p.log.Error("the source's keyspace differs from the log", "revision", rev, "log_digest", want.String(), "source_digest", got.Digest.String(), "source_keys", got.Keys)
		return err
	}
	p.metrics.verified.SetToCurrentTime()
	p.log.Debug("source keyspace matches the log", "revision", rev, "digest", want.Short(), "keys", got.Keys)
	return nil
}

// verifyDigest rescans the source at k's revision and checks k against it.
// It returns nil when they match, errWitnessCompacted (wrapped) when the
// revision is compacted, a *historyBroken error on a mismatch.
func (p *Publisher) verifyDigest(ctx context.Context, k keyspaceDigest) error {
	got, err := p.scanDigest(ctx, k.rev)
	if err != nil {
		return err
	}
	return p.checkDigest(k.rev, k.d, got)
}
