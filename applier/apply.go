package applier

import (
	"context"
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
	idx   map[string]int
	bytes int
	revs  int // revisions completed in this transaction
}

func (b *txnBuilder) reset() {
	b.ops = b.ops[:0]
	clear(b.idx)
	b.bytes, b.revs = 0, 0
}

// opOverhead approximates the request bytes of one operation besides its key and value.
const opOverhead = 32

// ApplyBatch applies msgs, which must continue the log exactly where the
// applier stands (the first message's sequence is the last consumed + 1, and
// each is the previous + 1). It decodes every message before it writes
// anything: a corrupt message returns an error wrapping streams.ErrCorrupt
// and nothing of the batch is written. A sequence jump returns a *GapError.
// A checkpoint that changed under the applier returns ErrConflict. After any
// error the applier's state must be re-read from the standby (Run does).
func (a *Applier) ApplyBatch(ctx context.Context, msgs []Msg) error {
	recs, err := a.decode(msgs)
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
		f, err := streams.DecodeFrame(m.Data)
		if err != nil {
			return nil, fmt.Errorf("decode message at seq %d: %w", m.Seq, err)
		}
		if f.Part != 0 && !a.asm.Pending() && m.Seq == a.sessionStart {
			// The session starts in the middle of a record: the checkpoint
			// does not belong to this stream's history (a recreated stream
			// grown past it). Not corruption: re-seed.
			return nil, fmt.Errorf("session starts at seq %d inside a record (part %d of %d): %w", m.Seq, f.Part, f.Parts, ErrNoBase)
		}
		if a.asm.Pending() && f.Kind == streams.KindEpoch {
			// A publisher died half-way through a record; its successor's
			// epoch abandons the fragment (it starts a new generation).
			a.log.Warn("incomplete record abandoned by a new publisher epoch", "seq", m.Seq)
			a.asm.Reset()
		}
		rec, done, err := a.asm.Add(f)
		if err != nil {
			return nil, fmt.Errorf("decode message at seq %d: %w", m.Seq, err)
		}
		if done {
			recs = append(recs, record{Record: rec, seq: m.Seq, part: f.Part})
		}
	}
	return recs, nil
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
		if err := a.addEvents(ctx, r); err != nil {
			return err
		}
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
			return nil
		}
		if err := a.addEvents(ctx, r); err != nil {
			return err
		}
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
		if !a.rules.Allowed(e.Key) {
			continue
		}
		a.work.Partial = &Partial{Seq: r.seq, Events: i}
		err := a.add(ctx, e)
		if err != nil {
			return err
		}
	}
	a.work.Partial = nil
	return nil
}

// add adds one key operation to the transaction being built, flushing it
// first when it is full. A later write of a key already in the transaction
// replaces the earlier one.
func (a *Applier) add(ctx context.Context, e *streams.Event) error {
	var op clientv3.Op
	switch {
	case e.Type == streams.EventDelete:
		op = clientv3.OpDelete(string(e.Key))
	case e.Lease != 0:
		id, err := a.leases.standbyLease(ctx, e.Lease, e.LeaseTTL)
		if err != nil {
			return err
		}
		op = clientv3.OpPut(string(e.Key), string(e.Value), clientv3.WithLease(id))
	default:
		op = clientv3.OpPut(string(e.Key), string(e.Value))
	}
	size := len(e.Key) + len(e.Value) + opOverhead
	if i, ok := a.txn.idx[string(e.Key)]; ok {
		a.txn.ops[i] = op
		a.txn.bytes += size
		return nil
	}
	if len(a.txn.ops)+2 > a.cfg.MaxTxnOps || (len(a.txn.ops) > 0 && a.txn.bytes+size > a.cfg.MaxTxnBytes) {
		if err := a.flush(ctx); err != nil {
			return err
		}
	}
	a.txn.idx[string(e.Key)] = len(a.txn.ops)
	a.txn.ops = append(a.txn.ops, op)
	a.txn.bytes += size
	return nil
}

// flush commits the pending operations together with the checkpoint of the
// work completed so far, guarded by the checkpoint's mod revision.
func (a *Applier) flush(ctx context.Context) error {
	ck := a.work
	ck.AppliedAt = time.Now()
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
	ops := append(a.txn.ops, clientv3.OpPut(key, ck.encode()))
	start := time.Now()
	resp, err := a.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", a.ckRev)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("apply txn of %d ops up to seq %d: %w", len(ops), ck.Position.Seq, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("apply txn up to seq %d: checkpoint %s is no longer at mod revision %d: %w", ck.Position.Seq, key, a.ckRev, ErrConflict)
	}
	a.metrics.observeTxn(time.Since(start), len(a.txn.ops), a.txn.revs, ck)
	a.ckRev, a.ck = resp.Header.Revision, ck
	a.applied.Store(&ck)
	a.txn.reset()
	return nil
}

func sameSnapshot(x, y *SnapshotState) bool {
	if x == nil || y == nil {
		return x == y
	}
	return *x == *y
}
