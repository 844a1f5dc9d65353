package publisher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/etcdsync/etcdsync/streams"
)

// A restored etcd keeps its cluster ID (and a copy of a member's data
// directory keeps its member ID and raft term), and a restore with
// --bump-revision moves the revision forward: nothing in a response header
// tells a restored primary from the one the log describes. So the
// publisher proves continuity from the log itself: the newest record with
// events says which keys the source held at which mod revision, and the
// source, read at a revision the log has reached, must still agree.

// verifyTimeout bounds one read of a witness.
const verifyTimeout = 10 * time.Second

// maxWitnessKeys is the number of keys of one record a witness keeps.
const maxWitnessKeys = 3

// maxWitnessScan bounds how many messages a session start reads backwards
// from the stream's tail to find the newest record with events. With
// progress records every 5s and a periodic snapshot every 4h (the
// defaults) the newest record with keys is at most ~2,900 messages back.
const maxWitnessScan = 10000

// witness is what the log claims about the source at revision at: the keys
// of the newest record with events, which no later record changes, or that
// the prefix held no key at all (a snapshot of no keys, no event since).
type witness struct {
	at    int64
	keys  []witnessKey
	empty bool
}

// witnessKey is one key as the log left it.
type witnessKey struct {
	key     string
	deleted bool
	modRev  int64
	// value is the published value (puts). It aliases the watch response
	// or the message it came from, neither of which is ever modified, so
	// following the witness costs no copy and no hash per revision.
	value []byte
}

// isZero reports whether w claims nothing (no record with events seen).
func (w witness) isZero() bool { return len(w.keys) == 0 && !w.empty }

// note moves w past rec, the next record of the log.
func (w *witness) note(rec *streams.Record) {
	switch {
	case len(rec.Events) > 0 && (rec.Kind == streams.KindRevision || rec.Kind == streams.KindSnapshotChunk):
		evs := rec.Events[max(0, len(rec.Events)-maxWitnessKeys):]
		keys := make([]witnessKey, len(evs))
		for i := range evs {
			e := &evs[i]
			keys[i] = witnessKey{key: string(e.Key), deleted: e.Type == streams.EventDelete, modRev: e.ModRevision}
			if !keys[i].deleted {
				keys[i].value = e.Value
			}
		}
		*w = witness{at: rec.Revision, keys: keys}
	case rec.Kind == streams.KindSnapshotEnd && rec.Keys == 0:
		*w = witness{at: rec.Revision, empty: true}
	case rec.Revision > w.at && (rec.Kind == streams.KindRevision || rec.Kind == streams.KindSnapshotBegin):
		// No event in between: the keys still read the same at the
		// record's revision (a revision record without events says
		// every event up to its revision was delivered).
		w.at = rec.Revision
	}
}

// historyBroken ends a session whose source no longer holds the history the
// log describes (a restored etcd); the next session starts a new generation.
type historyBroken struct{ evidence string }

func (e *historyBroken) Error() string {
	return "source history differs from the log: " + e.evidence
}

// Unwrap makes errors.Is(err, errNewGeneration) true.
func (e *historyBroken) Unwrap() error { return errNewGeneration }

// errAbandoned means a record's parts are followed by another record
// before its last part: its publisher died half-way, and its successor
// published the revision again.
var errAbandoned = errors.New("record abandoned before its last part")

// errWitnessCompacted means the source compacted the revision a witness is
// read at: continuity is neither proven nor disproven by that witness.
var errWitnessCompacted = errors.New("witness revision compacted")

// verify reads the keys of w at w.at on the source and returns a
// *historyBroken error with the evidence when the source disagrees with
// the log, errWitnessCompacted when the revision is compacted, another
// error when the source could not be read, and nil when it agrees.
// clusterID is the source cluster the log is of.
func (p *Publisher) verify(ctx context.Context, clusterID uint64, w witness) error {
	if w.isZero() {
		return nil
	}
	var ops []clientv3.Op
	if w.empty {
		key, end := p.cfg.Prefix, clientv3.GetPrefixRangeEnd(p.cfg.Prefix)
		if key == "" {
			key, end = "\x00", "\x00"
		}
		ops = append(ops, clientv3.OpGet(key, clientv3.WithRange(end), clientv3.WithCountOnly(), clientv3.WithRev(w.at)))
	}
	for _, k := range w.keys {
		opts := []clientv3.OpOption{clientv3.WithRev(w.at)}
		if k.deleted {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		ops = append(ops, clientv3.OpGet(k.key, opts...))
	}
	resp, err := p.etcd.Txn(ctx).Then(ops...).Commit()
	switch {
	case errors.Is(err, rpctypes.ErrFutureRev):
		return &historyBroken{fmt.Sprintf("revision %d, which the log holds, is in the source's future: its revision went backwards", w.at)}
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("verify the log at revision %d: %w", w.at, errWitnessCompacted)
	case err != nil:
		return fmt.Errorf("verify the log at revision %d: %w", w.at, err)
	}
	if resp.Header.ClusterId != clusterID {
		return &historyBroken{fmt.Sprintf("source cluster changed from %x to %x", clusterID, resp.Header.ClusterId)}
	}
	if resp.Header.Revision < w.at {
		return &historyBroken{fmt.Sprintf("source revision %d is behind revision %d, which the log holds", resp.Header.Revision, w.at)}
	}
	rs := resp.Responses
	if w.empty {
		if n := rs[0].GetResponseRange().Count; n != 0 {
			return &historyBroken{fmt.Sprintf("the log holds no key under the prefix at revision %d, the source holds %d", w.at, n)}
		}
		rs = rs[1:]
	}
	for i, k := range w.keys {
		kvs := rs[i].GetResponseRange().Kvs
		switch {
		case k.deleted && len(kvs) != 0:
			return &historyBroken{fmt.Sprintf("key %q at revision %d: the log deleted it at revision %d, the source holds it (mod revision %d)", k.key, w.at, k.modRev, kvs[0].ModRevision)}
		case k.deleted:
		case len(kvs) == 0:
			return &historyBroken{fmt.Sprintf("key %q at revision %d: the log holds it (mod revision %d), the source does not", k.key, w.at, k.modRev)}
		case kvs[0].ModRevision != k.modRev:
			return &historyBroken{fmt.Sprintf("key %q at revision %d: mod revision %d in the log, %d on the source", k.key, w.at, k.modRev, kvs[0].ModRevision)}
		case !bytes.Equal(kvs[0].Value, k.value):
			return &historyBroken{fmt.Sprintf("key %q at revision %d: mod revision %d on both, but the value differs", k.key, w.at, k.modRev)}
		}
	}
	return nil
}

// lastWitness reads the log backwards from tail to the newest record with
// events of the tail's cluster and generation (at most maxWitnessScan
// messages) and returns its witness, read at the tail's revision. It
// returns a zero witness when there is none within reach.
func (p *Publisher) lastWitness(ctx context.Context, stream jetstream.Stream, tail streams.Tail) (witness, error) {
	wantCluster := strconv.FormatUint(tail.ClusterID, 16)
	wantGen := strconv.FormatUint(tail.Generation, 10)
	stop := uint64(1)
	if tail.Seq > maxWitnessScan {
		stop = tail.Seq - maxWitnessScan
	}
	for seq := tail.Seq; seq >= stop && seq > 0; {
		msg, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return witness{}, nil // retention removed the rest
		}
		if err != nil {
			return witness{}, fmt.Errorf("read the log at seq %d: %w", seq, err)
		}
		if msg.Header.Get(streams.HeaderCluster) != wantCluster || msg.Header.Get(streams.HeaderGeneration) != wantGen {
			return witness{}, nil // an earlier history
		}
		f, err := streams.DecodeFrame(msg.Data)
		if err != nil {
			return witness{}, fmt.Errorf("read the log at seq %d: %w", seq, err)
		}
		if p.cfg.LogKeys.Verify(f, msg.Subject, seq-1) != nil {
			return witness{}, nil // what fails its MAC proves nothing
		}
		if uint64(f.Part) >= seq {
			return witness{}, fmt.Errorf("read the log at seq %d: part %d of %d cannot start before seq 1", seq, f.Part, f.Parts)
		}
		first := seq - uint64(f.Part)
		if seq == tail.Seq && f.Part < f.Parts-1 {
			// The tail is a record whose publisher died before its last
			// part: it proves nothing (the successor publishes it again).
			seq = first - 1
			continue
		}
		rec, err := p.readRecord(ctx, stream, first, f, seq)
		if errors.Is(err, streams.ErrUnauthenticated) {
			return witness{}, nil
		}
		if errors.Is(err, errAbandoned) {
			// A record whose publisher died before its last part (a later
			// publisher's epoch follows it): it proves nothing.
			seq = first - 1
			continue
		}
		if err != nil {
			return witness{}, err
		}
		var w witness
		w.note(&rec)
		if !w.isZero() {
			w.at = max(w.at, tail.Revision)
			return w, nil
		}
		seq = first - 1
	}
	return witness{}, nil
}

// readRecord reads and joins the parts of the record whose first part is
// at seq first; have is the sequence of f, a part already read.
func (p *Publisher) readRecord(ctx context.Context, stream jetstream.Stream, first uint64, f streams.Frame, have uint64) (streams.Record, error) {
	var a streams.Assembler
	for i := 0; i < f.Parts; i++ {
		seq := first + uint64(i)
		part := f
		if seq != have {
			msg, err := stream.GetMsg(ctx, seq)
			if err != nil {
				return streams.Record{}, fmt.Errorf("read the log at seq %d: %w", seq, err)
			}
			if part, err = streams.DecodeFrame(msg.Data); err != nil {
				return streams.Record{}, fmt.Errorf("read the log at seq %d: %w", seq, err)
			}
			if err := p.cfg.LogKeys.Verify(part, msg.Subject, seq-1); err != nil {
				return streams.Record{}, fmt.Errorf("read the log at seq %d: %w", seq, err)
			}
			if part.Kind != f.Kind || part.Part != i || part.Parts != f.Parts {
				return streams.Record{}, fmt.Errorf("read the log at seq %d: %w", seq, errAbandoned)
			}
		}
		rec, done, err := a.Add(part)
		if err != nil {
			return streams.Record{}, fmt.Errorf("read the log at seq %d: %w", seq, err)
		}
		if done {
			return rec, nil
		}
	}
	return streams.Record{}, fmt.Errorf("read the log at seq %d: record of %d parts is incomplete", first, f.Parts)
}

// watchConnection signals interrupted each time the etcd client's
// connection leaves the ready state (the server went away; the client
// reconnects and resumes the watch by itself, possibly to a restored
// server), until ctx ends.
func (p *Publisher) watchConnection(ctx context.Context, interrupted chan<- struct{}) {
	conn := p.etcd.ActiveConnection()
	if conn == nil {
		return
	}
	signal := func() {
		select {
		case interrupted <- struct{}{}:
		default: // one is already pending
		}
	}
	state := conn.GetState()
	if state != connectivity.Ready {
		signal()
	}
	for conn.WaitForStateChange(ctx, state) {
		if state = conn.GetState(); state != connectivity.Ready {
			signal()
		}
	}
}

// prover keeps what one session must still prove about the source.
type prover struct {
	clusterID uint64
	// interrupted signals that the connection to etcd left the ready state.
	interrupted <-chan struct{}
	// pinned are witnesses taken when the connection to etcd was
	// interrupted or a response's revision went backwards: whatever the
	// watch delivers afterwards may come from a restored server, so they
	// are proven before anything more is published.
	pinned []witness
	// seen is the highest header revision of any response this session.
	seen int64
}

// observe records a response's header revision and reports whether it went
// backwards (then the current witness must be proven again).
func (pr *prover) observe(rev int64) bool {
	if rev < pr.seen {
		return true
	}
	pr.seen = rev
	return false
}

// pin keeps w to be proven before anything more is published.
func (pr *prover) pin(w witness) {
	if w.isZero() {
		return
	}
	if n := len(pr.pinned); n > 0 && pr.pinned[n-1].at == w.at && sameKeys(pr.pinned[n-1], w) {
		return
	}
	if len(pr.pinned) >= 8 {
		// The oldest proves the most (an older restore point); keep it
		// and the newest.
		pr.pinned = append(pr.pinned[:1], pr.pinned[2:]...)
	}
	pr.pinned = append(pr.pinned, w)
}

func sameKeys(a, b witness) bool {
	if a.empty != b.empty || len(a.keys) != len(b.keys) {
		return false
	}
	for i := range a.keys {
		if a.keys[i].key != b.keys[i].key || a.keys[i].modRev != b.keys[i].modRev || !bytes.Equal(a.keys[i].value, b.keys[i].value) {
			return false
		}
	}
	return true
}

// provePinned proves every pinned witness. A broken history or a source
// that cannot be read ends the session (the next one proves the tail
// before it publishes anything); a compacted witness proves nothing and is
// dropped.
func (p *Publisher) provePinned(ctx context.Context, pr *prover) error {
	for len(pr.pinned) > 0 {
		err := p.verify(ctx, pr.clusterID, pr.pinned[0])
		if err != nil && !errors.Is(err, errWitnessCompacted) {
			return err
		}
		pr.pinned = pr.pinned[1:]
	}
	return nil
}

// probe is the periodic check: the pinned witnesses and the newest one. A
// source that cannot be read keeps them for the next probe; only a broken
// history is returned.
func (p *Publisher) probe(ctx context.Context, pr *prover, cur witness) error {
	pr.pin(cur)
	err := p.provePinned(ctx, pr)
	var hb *historyBroken
	if errors.As(err, &hb) {
		return err
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		p.log.Debug("continuity probe", "err", err)
	}
	return nil
}
