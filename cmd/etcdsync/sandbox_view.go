package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/publisher"
)

// liveView shows the pipeline's progress on one line until ctx ends: on a
// terminal refreshed in place every 500ms, otherwise a plain line every 5s.
type liveView struct {
	w   io.Writer
	tty bool
	pub *publisher.Publisher
	ap  *applier.Applier
	wl  *workload

	lastWrites int64
	lastAt     time.Time
}

func newLiveView(w io.Writer, pub *publisher.Publisher, ap *applier.Applier, wl *workload) *liveView {
	return &liveView{w: w, tty: isTerminal(w), pub: pub, ap: ap, wl: wl, lastAt: time.Now()}
}

// isTerminal reports whether w is a character device.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Run refreshes the line until ctx ends, then prints it a last time.
func (v *liveView) Run(ctx context.Context) error {
	every := 5 * time.Second
	if v.tty {
		every = 500 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if v.tty {
				fmt.Fprintf(v.w, "\r%s\x1b[K\n", v.line())
			} else {
				fmt.Fprintln(v.w, v.line())
			}
			return nil
		case <-tick.C:
			if v.tty {
				fmt.Fprintf(v.w, "\r%s\x1b[K", v.line())
			} else {
				fmt.Fprintln(v.w, v.line())
			}
		}
	}
}

// line describes the pipeline now. Lag is how old the newest applied
// revision was when applied if the standby has applied everything
// published, otherwise how long ago that revision was observed.
func (v *liveView) line() string {
	now := time.Now()
	writes := v.wl.writes.Load()
	rate := float64(writes-v.lastWrites) / now.Sub(v.lastAt).Seconds()
	v.lastWrites, v.lastAt = writes, now

	pubRev := v.pub.Published().Revision
	ck := v.ap.Applied()
	lag := "-"
	switch {
	case ck.SourceTime.IsZero():
	case ck.Position.Revision >= pubRev:
		lag = fmtLag(ck.AppliedAt.Sub(ck.SourceTime))
	default:
		lag = fmtLag(now.Sub(ck.SourceTime))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "primary rev %d  published rev %d  applied rev %d  lag %s  writes/s %.0f  writes %d",
		v.wl.lastRev.Load(), pubRev, ck.Position.Revision, lag, rate, writes)
	if s := ck.Snapshot; s != nil {
		fmt.Fprintf(&b, "  (bootstrapping: %d snapshot keys)", s.Keys)
	}
	return b.String()
}

// fmtLag rounds d to a readable precision: 10µs below 10ms, else 1ms.
func fmtLag(d time.Duration) string {
	if d < 10*time.Millisecond {
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}
