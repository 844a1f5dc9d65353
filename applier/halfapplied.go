package applier

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/streams"
)

// HalfApplied describes a source revision too large for one standby
// transaction of which only the first events are on the standby (the
// checkpoint's Partial marker): until the rest is applied the standby is not
// a copy of the primary at any one revision.
type HalfApplied struct {
	// AfterRevision is the checkpoint's revision, the last one complete on
	// the standby; the half-applied revision is the next one in the log.
	AfterRevision int64 `json:"after_revision"`
	// Seq is the stream sequence of the half-applied record's last message.
	Seq uint64 `json:"seq"`
	// Revision is the half-applied source revision (0: unknown, the stream
	// could not be read).
	Revision int64 `json:"revision,omitempty"`
	// EventsApplied counts the record's first events already processed
	// (written to the standby, or skipped as out of scope).
	EventsApplied int `json:"events_applied"`
	// Events is the record's number of events (0: unknown).
	Events int `json:"events,omitempty"`
	// InFlightKey, when set, is a key of the record an operation written
	// alone may have put on the standby ahead of the checkpoint (the
	// applier stopped between that write and the checkpoint after it).
	InFlightKey string `json:"in_flight_key,omitempty"`
}

// String says which revision is half applied and how much of it.
func (h *HalfApplied) String() string {
	rev := fmt.Sprintf("the revision after %d", h.AfterRevision)
	if h.Revision != 0 {
		rev = fmt.Sprintf("revision %d", h.Revision)
	}
	of := ""
	if h.Events != 0 {
		of = fmt.Sprintf(" of its %d", h.Events)
	}
	if h.InFlightKey != "" {
		return fmt.Sprintf("%s (stream seq %d) may be half applied: the first %d%s events are on the standby, and its write of key %q may be too; the rest are not",
			rev, h.Seq, h.EventsApplied, of, h.InFlightKey)
	}
	return fmt.Sprintf("%s (stream seq %d) is half applied: the first %d%s events are on the standby, the rest are not",
		rev, h.Seq, h.EventsApplied, of)
}

// halfApplied returns what ck says is half applied (nil: nothing, or a
// snapshot is in progress, which reports itself). stream may be nil; when
// set, the record is read from it for its revision and size (best effort:
// what cannot be read stays unknown).
func halfApplied(ctx context.Context, stream jetstream.Stream, ck *Checkpoint) *HalfApplied {
	p := ck.Partial
	if in := ck.InFlight; in != nil && ck.Snapshot == nil {
		q := Partial{Seq: in.Seq}
		if p != nil && p.Seq == in.Seq {
			q.Events = p.Events
		}
		p = &q
	}
	if p == nil || ck.Snapshot != nil {
		return nil
	}
	h := &HalfApplied{AfterRevision: ck.Position.Revision, Seq: p.Seq, EventsApplied: p.Events}
	if ck.InFlight != nil {
		h.InFlightKey = ck.InFlight.Key
	}
	if stream == nil {
		return h
	}
	last, err := stream.GetMsg(ctx, p.Seq)
	if err != nil {
		return h
	}
	f, err := streams.DecodeFrame(last.Data)
	if err != nil || f.Part != f.Parts-1 || uint64(f.Part) >= p.Seq {
		return h
	}
	var asm streams.Assembler
	for seq := p.Seq - uint64(f.Part); seq <= p.Seq; seq++ {
		m := last
		if seq != p.Seq {
			if m, err = stream.GetMsg(ctx, seq); err != nil {
				return h
			}
		}
		f, err := streams.DecodeFrame(m.Data)
		if err != nil {
			return h
		}
		rec, done, err := asm.Add(f)
		if err != nil {
			return h
		}
		if done && rec.Kind == streams.KindRevision {
			h.Revision, h.Events = rec.Revision, len(rec.Events)
		}
	}
	return h
}
