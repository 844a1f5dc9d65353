package applier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdsync/etcdsync/streams"
)

// Msg is one log message as the applier consumes it.
type Msg struct {
	// Seq is the message's stream sequence.
	Seq uint64
	// Subject is the subject the message was published on (its MAC covers it).
	Subject string
	// Data is the message body (one frame).
	Data []byte
}

// record is one decoded record and the sequence of its last message.
type record struct {
	streams.Record
	seq  uint64
	part int
}

// txnBuilder accumulates the operations of the next standby transaction.
type txnBuilder struct {
	ops   []clientv3.Op
	keys  []string // the key of each operation
	sizes []int    // the request bytes of each operation
	idx   map[string]int
	bytes int // request bytes of ops
	revs  int // revisions completed in this transaction
	// unparsed counts the ops whose key does not parse as a Kubernetes key
	// (keyspace.Rules.Check).
	unparsed int
}

func (b *txnBuilder) reset() {
	b.ops, b.keys, b.sizes = b.ops[:0], b.keys[:0], b.sizes[:0]
	clear(b.idx)
	b.bytes, b.revs, b.unparsed = 0, 0, 0
}

// cost returns the operations and the request bytes that the events the
// rules allow add to the transaction being built: an event on a key already
// written (by the transaction or an earlier event) replaces that operation,
// adding its size difference and no operation. A lease is counted at its
// largest.
func (b *txnBuilder) cost(events []streams.Event, allow func([]byte) bool) (ops, bytes int) {
	var seen map[string]int // sizes of the keys the events wrote so far
	if len(events) > 1 {
		seen = make(map[string]int, len(events))
	}
	for i := range events {
		e := &events[i]
		if !allow(e.Key) {
			continue
		}
		size := eventBytes(e)
		old, ok := seen[string(e.Key)]
		if !ok {
			if j, in := b.idx[string(e.Key)]; in {
				old, ok = b.sizes[j], true
			}
		}
		if ok {
			bytes += size - old
		} else {
			ops++
			bytes += size
		}
		if seen != nil {
			seen[string(e.Key)] = size
		}
	}
	return ops, bytes
}

// eventBytes is the request size of e's operation, its lease counted at the largest.
func eventBytes(e *streams.Event) int {
	if e.Type == streams.EventDelete {
		return deleteOpBytes(len(e.Key))
	}
	lease := int64(0)
	if e.Lease != 0 {
		lease = leaseBound
	}
	return putOpBytes(len(e.Key), len(e.Value), lease)
}

// budget bounds one standby transaction.
type budget struct {
	maxOps   int // operations, the checkpoint included (MaxTxnOps)
	maxBytes int // request bytes, the checkpoint included (MaxTxnBytes)
	reserve  int // request bytes of the checkpoint's compare and put
}

// fits reports whether ops operations of bytes request bytes and the
// checkpoint fit in one transaction.
func (b budget) fits(ops, bytes int) bool {
	return ops+1 <= b.maxOps && bytes+b.reserve <= b.maxBytes
}

func (a *Applier) budget() budget {
	return budget{maxOps: a.cfg.MaxTxnOps, maxBytes: a.cfg.MaxTxnBytes, reserve: checkpointReserve(a.cfg.checkpointKey())}
}

// ApplyBatch applies msgs, which must continue the log exactly where the
// applier stands (the first message's sequence is the last consumed + 1, and
// each is the previous + 1). It decodes every message before it writes
// anything: a corrupt message returns an error wrapping streams.ErrCorrupt
// and nothing of the batch is written. A sequence jump returns a *GapError.
// A checkpoint that changed under the applier returns ErrConflict. After any
// error the applier's state must be re-read from the standby (Run does).
func (a *Applier) ApplyBatch(ctx context.Context, msgs []Msg) error {
	recs, err := a.decode(msgs)
	if err == nil {
		err = a.checkBatch(recs)
	}
	if errors.Is(err, streams.ErrCorrupt) || errors.Is(err, streams.ErrNewerFormat) {
		// Nothing of the batch is written; the checkpoint says why the
		// applier stopped, for status and readiness.
		return a.stop(ctx, err)
	}
	if err != nil {
		return err
	}
	for i := range recs {
		if err := a.applyRecord(ctx, &recs[i]); err != nil {
			return err
		}
	}
	if a.work.Position != a.ck.Position || len(a.txn.ops) > 0 || !sameSnapshot(a.work.Snapshot, a.ck.Snapshot) || a.ck.Partial != nil {
		return a.flush(ctx)
	}
	return nil
}

// decode turns messages into complete records, checking sequence continuity.
func (a *Applier) decode(msgs []Msg) ([]record, error) {
	var recs []record
	for _, m := range msgs {
		if m.Seq != a.nextSeq {
			return nil, &GapError{Want: a.nextSeq, Got: m.Seq}
		}
		a.nextSeq++
		// Mirrors keep the origin's sequences, so the message before this
		// one is m.Seq-1 on both sites.
		f, err := a.cfg.LogKeys.DecodeVerified(m.Data, m.Subject, m.Seq-1)
		if errors.Is(err, streams.ErrUnauthenticated) {
			a.metrics.unauthenticated.Inc()
			return nil, fmt.Errorf("message at seq %d: %w", m.Seq, err)
		}
		if err != nil {
			return nil, decodeError(m.Seq, err)
		}
		if f.Part != 0 && !a.asm.Pending() {
			// A later part with no record begun: the log before it is not
			// the one the checkpoint follows (a stream recreated and grown
			// past the checkpoint, found at a session's start or under a
			// running session). Not corruption: re-seed.
			return nil, fmt.Errorf("seq %d is inside a record (part %d of %d) the applier did not see begin: %w", m.Seq, f.Part, f.Parts, ErrNoBase)
		}
		if a.asm.Pending() && f.Kind == streams.KindEpoch {
			// A publisher died half-way through a record; its successor's
			// epoch abandons the fragment (the successor publishes the
			// record again whole, or starts a new generation).
			a.log.Warn("incomplete record abandoned by a new publisher epoch", "seq", m.Seq)
			a.asm.Reset()
		}
		rec, done, err := a.asm.Add(f)
		if err != nil {
			return nil, decodeError(m.Seq, err)
		}
		if done {
			recs = append(recs, record{Record: rec, seq: m.Seq, part: f.Part})
		}
	}
	return recs, nil
}

// checkBatch finds, before anything of the batch is written, the records
// that contradict the ones before them: a revision inside a snapshot that
// has not ended, or a snapshot end that does not count what the snapshot
// sent. It follows the snapshot state as applyRecord will and stops
// following at the first record applyRecord would refuse for another
// reason (a history the standby has no base of), which then returns that
// error first. applyRecord keeps the same checks.
func (a *Applier) checkBatch(recs []record) error {
	w := &a.work
	type snap struct {
		clusterID, gen uint64
		rev            int64
		chunks, keys   uint64
	}
	var cur *snap
	if s := w.Snapshot; s != nil {
		cur = &snap{s.ClusterID, s.Generation, s.Revision, s.Chunks, s.Keys}
	}
	pos, reseed := w.Position, a.reseed
	same := func(r *record) bool {
		return cur != nil && cur.clusterID == r.ClusterID && cur.gen == r.Generation && cur.rev == r.Revision
	}
	for i := range recs {
		r := &recs[i]
		switch r.Kind {
		case streams.KindEpoch:
			pos.Seq = r.seq
		case streams.KindRevision:
			if cur != nil {
				return fmt.Errorf("revision %d at seq %d arrived before snapshot at revision %d ended: %w", r.Revision, r.seq, cur.rev, streams.ErrCorrupt)
			}
			if pos.ClusterID != r.ClusterID || pos.Generation != r.Generation || pos.Seq == 0 {
				return nil // ErrNoBase from applyRecord
			}
			pos.Revision, pos.Seq = max(pos.Revision, r.Revision), r.seq
		case streams.KindSnapshotBegin:
			hist := Checkpoint{Position: pos}
			if cur != nil {
				hist.Snapshot = &SnapshotState{ClusterID: cur.clusterID, Generation: cur.gen, Revision: cur.rev}
			}
			if !reseed && hist.olderGeneration(&r.Record) {
				return nil // ErrNoBase from applyRecord
			}
			if !reseed && cur == nil && pos.Seq != 0 && pos.ClusterID == r.ClusterID && pos.Generation == r.Generation && r.Revision <= pos.Revision {
				continue // a periodic snapshot the standby is past
			}
			reseed = false
			cur = &snap{clusterID: r.ClusterID, gen: r.Generation, rev: r.Revision}
		case streams.KindSnapshotChunk:
			if same(r) {
				cur.chunks++
				cur.keys += uint64(len(r.Events))
			} else if cur == nil && (pos.ClusterID != r.ClusterID || pos.Generation != r.Generation || pos.Seq == 0) {
				return nil // ErrNoBase from checkHistory
			}
		case streams.KindSnapshotEnd:
			if !same(r) {
				if cur == nil && (pos.ClusterID != r.ClusterID || pos.Generation != r.Generation || pos.Seq == 0) {
					return nil // ErrNoBase from checkHistory
				}
				continue
			}
			if cur.chunks != r.Chunk || cur.keys != r.Keys {
				return fmt.Errorf("snapshot at revision %d ended at seq %d with %d chunks and %d keys, applied %d chunks and %d keys: %w",
					r.Revision, r.seq, r.Chunk, r.Keys, cur.chunks, cur.keys, streams.ErrCorrupt)
			}
			pos = streams.Position{ClusterID: r.ClusterID, Generation: r.Generation, Revision: r.Revision, Seq: r.seq}
			cur = nil
		}
	}
	return nil
}

// decodeError wraps a decoding error of the message at seq; one written by
// a newer etcdsync says what to do about it.
func decodeError(seq uint64, err error) error {
	if errors.Is(err, streams.ErrNewerFormat) {
		return fmt.Errorf("message at seq %d: %w: upgrade the applier", seq, err)
	}
	return fmt.Errorf("decode message at seq %d: %w", seq, err)
}

func (a *Applier) applyRecord(ctx context.Context, r *record) error {
	w := &a.work
	switch r.Kind {
	case streams.KindEpoch:
		w.Position.Seq = r.seq
	case streams.KindRevision:
		if w.Snapshot != nil {
			return fmt.Errorf("revision %d at seq %d arrived before snapshot at revision %d ended: %w", r.Revision, r.seq, w.Snapshot.Revision, streams.ErrCorrupt)
		}
		if w.Position.ClusterID != r.ClusterID || w.Position.Generation != r.Generation || w.Position.Seq == 0 {
			return fmt.Errorf("revision %d of cluster %x generation %d at seq %d, standby holds %s: %w",
				r.Revision, r.ClusterID, r.Generation, r.seq, w.Position, ErrNoBase)
		}
		if r.Revision <= w.Position.Revision {
			w.Position.Seq = r.seq // republished revision: already applied
			return nil
		}
		if err := a.startRevision(ctx, r); err != nil {
			return err
		}
		a.shadow = nil // the snapshot it gathered ended before this revision
		if !r.Digested {
			// Without the events' previous-value hashes the digest
			// cannot follow: unknown until the next snapshot applied.
			w.Digest = nil
		}
		if err := a.addEvents(ctx, r); err != nil {
			return err
		}
		a.chainRevision(r)
		a.txn.revs++
		if a.log.Enabled(ctx, slog.LevelDebug) {
			keys, more := a.inScopeKeys(r)
			a.log.Debug("revision applied", "revision", r.Revision, "events", len(r.Events), "seq", r.seq, "keys", keys, "more_keys", more)
		}
		w.Position = streams.Position{ClusterID: r.ClusterID, Generation: r.Generation, Revision: r.Revision, Part: r.part, Seq: r.seq}
		w.SourceTime = r.Time
	case streams.KindSnapshotBegin:
		return a.beginSnapshot(ctx, r)
	case streams.KindSnapshotChunk:
		s := w.Snapshot
		if s == nil || s.ClusterID != r.ClusterID || s.Generation != r.Generation || s.Revision != r.Revision {
			if err := a.checkHistory(r); err != nil {
				return err
			}
			w.Position.Seq = r.seq // a snapshot the standby does not need
			a.shadowChunk(r)
			return nil
		}
		if err := a.addEvents(ctx, r); err != nil {
			return err
		}
		a.chainChunk(r)
		s.Chunks++
		s.Keys += uint64(len(r.Events))
		w.Position.Seq = r.seq
		if time.Since(a.progressAt) >= 2*time.Second {
			a.progressAt = time.Now()
			a.log.Info("snapshot apply progress", "revision", s.Revision, "keys", s.Keys, "chunks", s.Chunks, "seq", r.seq)
		}
	case streams.KindSnapshotEnd:
		return a.endSnapshot(ctx, r)
	}
	return nil
}

// checkHistory fails with ErrNoBase when r belongs to a history (cluster,
// generation) the standby holds no base of and r cannot start one: the
// checkpoint is foreign to this stream, or the record that would have
// started the generation is gone. Run re-seeds.
func (a *Applier) checkHistory(r *record) error {
	w := &a.work
	if w.Snapshot != nil {
		return nil // a snapshot in progress; another snapshot's records are skipped
	}
	if w.Position.ClusterID != r.ClusterID || w.Position.Generation != r.Generation || w.Position.Seq == 0 {
		return fmt.Errorf("%s record of cluster %x generation %d at seq %d, standby holds %s: %w",
			r.Kind, r.ClusterID, r.Generation, r.seq, w.Position, ErrNoBase)
	}
	return nil
}

// addEvents adds the in-scope events of r to the transaction. A transaction
// flushed half-way through r records in the checkpoint how many of r's
// events it made durable, and a restart resumes r after them, so no event
// is written twice.
// debugKeys bounds the keys a debug line names.
const debugKeys = 32

// inScopeKeys returns the first debugKeys keys r writes or deletes on the
// standby, as "put <key>" or "delete <key>" (never values), and how many
// more there are.
func (a *Applier) inScopeKeys(r *record) ([]string, int) {
	var keys []string
	more := 0
	for i := range r.Events {
		e := &r.Events[i]
		if !a.rules.Allowed(e.Key) {
			continue
		}
		if len(keys) == debugKeys {
			more++
			continue
		}
		op := "put "
		if e.Type == streams.EventDelete {
			op = "delete "
		}
		keys = append(keys, op+string(e.Key))
	}
	return keys, more
}

func (a *Applier) addEvents(ctx context.Context, r *record) error {
	from := 0
	if p := a.work.Partial; p != nil && p.Seq == r.seq {
		from = p.Events
	}
	for i := from; i < len(r.Events); i++ {
		e := &r.Events[i]
		allowed, unparsed := a.rules.Check(e.Key)
		if !allowed {
			continue
		}
		a.work.Partial = &Partial{Seq: r.seq, Events: i}
		err := a.add(ctx, e, unparsed)
		if err != nil {
			return err
		}
	}
	a.work.Partial = nil
	return nil
}

// startRevision ends the transaction being built before r when r fits
// whole in a transaction but not in what remains of this one: transactions
// end at revision boundaries, so the standby never shows part of a source
// transaction. Only a revision larger than a whole transaction is split.
func (a *Applier) startRevision(ctx context.Context, r *record) error {
	if len(a.txn.ops) == 0 {
		return nil
	}
	b := a.budget()
	ops, bytes := a.txn.cost(r.Events, a.rules.Allowed)
	if b.fits(len(a.txn.ops)+ops, a.txn.bytes+bytes) {
		return nil
	}
	if ops, bytes = (&txnBuilder{}).cost(r.Events, a.rules.Allowed); !b.fits(ops, bytes) {
		return nil // split anyway: it may as well fill this transaction
	}
	return a.flush(ctx)
}

// add adds one key operation to the transaction being built, flushing it
// first when it is full. A later write of a key already in the transaction
// replaces the earlier one, unless its size would take the transaction over
// its budget: then the transaction is flushed first.
func (a *Applier) add(ctx context.Context, e *streams.Event, unparsed bool) error {
	var op clientv3.Op
	var lease clientv3.LeaseID
	switch {
	case e.Type == streams.EventDelete:
		op = clientv3.OpDelete(string(e.Key))
	case e.Lease != 0:
		id, err := a.leases.standbyLease(ctx, e.Lease, e.LeaseTTL)
		if err != nil {
			return err
		}
		lease = id
		op = clientv3.OpPut(string(e.Key), string(e.Value), clientv3.WithLease(id))
	default:
		op = clientv3.OpPut(string(e.Key), string(e.Value))
	}
	size := deleteOpBytes(len(e.Key))
	if e.Type != streams.EventDelete {
		size = putOpBytes(len(e.Key), len(e.Value), int64(lease))
	}
	b := a.budget()
	if i, ok := a.txn.idx[string(e.Key)]; ok {
		grow := size - a.txn.sizes[i]
		if len(a.txn.ops) == 1 || b.fits(len(a.txn.ops), a.txn.bytes+grow) {
			a.txn.ops[i], a.txn.sizes[i] = op, size
			a.txn.bytes += grow
			a.digestEvent(e)
			return nil
		}
		if err := a.flush(ctx); err != nil {
			return err
		}
	} else if len(a.txn.ops) > 0 && !b.fits(len(a.txn.ops)+1, a.txn.bytes+size) {
		if err := a.flush(ctx); err != nil {
			return err
		}
	}
	a.txn.idx[string(e.Key)] = len(a.txn.ops)
	a.txn.ops = append(a.txn.ops, op)
	a.txn.keys = append(a.txn.keys, string(e.Key))
	a.txn.sizes = append(a.txn.sizes, size)
	a.txn.bytes += size
	if unparsed {
		a.txn.unparsed++
	}
	a.digestEvent(e)
	return nil
}

// flush commits the pending operations together with the checkpoint of the
// work completed so far, guarded by the checkpoint's mod revision. A single
// operation too large to go with the checkpoint under the standby's request
// limit is written alone under the checkpoint compare, and the checkpoint
// follows in a transaction of its own (a crash in between re-applies the
// operation, which is idempotent). An operation the standby refuses even
// alone stops the applier with a *TooLargeError, recorded in the checkpoint.
func (a *Applier) flush(ctx context.Context) error {
	ck := a.work
	ck.AppliedAt = time.Now()
	ck.Stopped = nil // whatever stopped an earlier session is past
	ck.InFlight = nil
	ck.Digest = ck.Digest.clone() // a.work's goes on changing
	if ck.Snapshot != nil {
		s := *ck.Snapshot
		ck.Snapshot = &s
	}
	if ck.Partial != nil && ck.Partial.Events == 0 {
		ck.Partial = nil // nothing of the record is in this transaction
	}
	if ck.Partial != nil {
		p := *ck.Partial
		ck.Partial = &p
	}
	key := a.cfg.checkpointKey()
	val := ck.encode()
	ckOp := clientv3.OpPut(key, val)
	cmp := compareBytes(len(key), a.ckRev)
	size := requestBytes(cmp + a.txn.bytes + putOpBytes(len(key), len(val), 0))
	start := time.Now()
	var rev int64
	var err error
	alone := len(a.txn.ops) == 1 && size > a.cfg.MaxRequestBytes
	if !alone {
		rev, err = a.commit(ctx, append(a.txn.ops, ckOp), ck.Position.Seq)
		switch {
		case err == nil:
		case !tooLarge(err):
			return err
		case len(a.txn.ops) != 1:
			return a.stop(ctx, &TooLargeError{Bytes: size, Limit: a.cfg.MaxRequestBytes})
		default:
			alone = true // the standby's limit is below the configured one
		}
	}
	if alone {
		// Until the checkpoint follows the operation, the standby may hold
		// it ahead of the checkpoint: say so in the checkpoint first, for
		// status and promote (a snapshot in progress says it itself).
		if ck.Snapshot == nil {
			pre := a.ck
			pre.InFlight = &InFlight{Seq: ck.Position.Seq, Key: a.txn.keys[0]}
			if ck.Partial != nil {
				pre.InFlight.Seq = ck.Partial.Seq
			}
			r, err := a.commit(ctx, []clientv3.Op{clientv3.OpPut(key, pre.encode())}, ck.Position.Seq)
			if err != nil {
				return err
			}
			a.ckRev, a.ck = r, pre
		}
		_, err := a.commit(ctx, a.txn.ops, ck.Position.Seq)
		if tooLarge(err) && a.txn.ops[0].IsPut() {
			err = a.putUnguarded(ctx, a.txn.ops[0], ck.Position.Seq)
		}
		if err != nil {
			if tooLarge(err) {
				return a.stop(ctx, &TooLargeError{Key: a.txn.keys[0], Bytes: requestBytes(cmp + a.txn.bytes), Limit: a.cfg.MaxRequestBytes})
			}
			return err
		}
		if rev, err = a.commit(ctx, []clientv3.Op{ckOp}, ck.Position.Seq); err != nil {
			return err
		}
	}
	a.metrics.observeTxn(time.Since(start), len(a.txn.ops), a.txn.unparsed, a.txn.revs, ck)
	a.ckRev, a.ck = rev, ck
	a.applied.Store(&ck)
	a.txn.reset()
	return nil
}

// putUnguarded writes a put that etcd refuses under the checkpoint compare
// by itself: a plain put within a few dozen bytes of the request limit is
// as large a request as the primary took, with no room for a compare. The
// applier first proves, with an empty transaction under the compare, that
// the checkpoint is still its own; the checkpoint advances in the
// transaction after it (a crash in between re-applies the same value from
// the checkpoint). An applier paused between that proof and its put can
// find, when the put lands, that another applier wrote the checkpoint in
// between: the put then came after the other's writes, so it is undone
// (the key's state just before it restored, unless the key changed again
// since) and ErrConflict returned.
func (a *Applier) putUnguarded(ctx context.Context, op clientv3.Op, seq uint64) error {
	if _, err := a.commit(ctx, nil, seq); err != nil {
		return err
	}
	resp, err := a.etcd.Do(ctx, op)
	if err != nil {
		return fmt.Errorf("apply put of key %q up to seq %d without the checkpoint compare: %w", op.KeyBytes(), seq, err)
	}
	a.metrics.unguardedPuts.Inc()
	rev := resp.Put().Header.Revision
	ck, err := a.etcd.Get(ctx, a.cfg.checkpointKey(), clientv3.WithRev(rev))
	if err != nil {
		return fmt.Errorf("check the checkpoint at the unguarded put of key %q (standby revision %d): %w", op.KeyBytes(), rev, err)
	}
	if len(ck.Kvs) == 1 && ck.Kvs[0].ModRevision == a.ckRev {
		return nil // still ours when the put landed: ordered before any other applier's writes
	}
	if err := a.undoPut(ctx, op.KeyBytes(), rev); err != nil {
		a.log.Error("a put written after another applier took over could not be undone: the standby may hold a stale value until the next write of the key or an audit repair",
			"key", string(op.KeyBytes()), "standby_revision", rev, "err", err)
	}
	return fmt.Errorf("unguarded put of key %q landed at standby revision %d after the checkpoint %s left mod revision %d: %w",
		op.KeyBytes(), rev, a.cfg.checkpointKey(), a.ckRev, ErrConflict)
}

// undoPut restores key to its state before the put at standby revision
// rev, unless the key was written again since.
func (a *Applier) undoPut(ctx context.Context, key []byte, rev int64) error {
	prev, err := a.etcd.Get(ctx, string(key), clientv3.WithRev(rev-1))
	if err != nil {
		return err
	}
	restore := clientv3.OpDelete(string(key))
	if len(prev.Kvs) == 1 {
		restore = clientv3.OpPut(string(key), string(prev.Kvs[0].Value), clientv3.WithLease(clientv3.LeaseID(prev.Kvs[0].Lease)))
	}
	_, err = a.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(key)), "=", rev)).Then(restore).Commit()
	return err
}

// commit writes ops under the checkpoint compare and returns the standby
// revision it made.
func (a *Applier) commit(ctx context.Context, ops []clientv3.Op, seq uint64) (int64, error) {
	key := a.cfg.checkpointKey()
	resp, err := a.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", a.ckRev)).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("apply txn of %d ops up to seq %d: %w", len(ops), seq, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("apply txn up to seq %d: checkpoint %s is no longer at mod revision %d: %w", seq, key, a.ckRev, ErrConflict)
	}
	return resp.Header.Revision, nil
}

// stop records err in the durable checkpoint (Checkpoint.Stopped), so
// that status and readiness can say why the applier stopped, and returns it.
func (a *Applier) stop(ctx context.Context, err error) error {
	ck := a.ck
	ck.Stopped = &Stop{Reason: err.Error(), At: time.Now()}
	if _, werr := a.commit(ctx, []clientv3.Op{clientv3.OpPut(a.cfg.checkpointKey(), ck.encode())}, ck.Position.Seq); werr != nil {
		return fmt.Errorf("%w (recording it in the checkpoint: %w)", err, werr)
	}
	return err
}

func sameSnapshot(x, y *SnapshotState) bool {
	if x == nil || y == nil {
		return x == y
	}
	return *x == *y
}
