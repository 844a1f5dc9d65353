package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/etcdsync/etcdsync/applier"
)

// newRegistry returns the registry a command's components register on,
// with the Go runtime and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// labelled returns reg seen through the constant labels site (the site
// whose log the component serves: the publishing site) and stream (the log
// stream), which every etcdsync metric of the component then carries, so
// that two sites in one Prometheus, and a role swap (the new primary
// publishes as another site), read apart.
func labelled(reg prometheus.Registerer, site, stream string) prometheus.Registerer {
	return prometheus.WrapRegistererWith(prometheus.Labels{"site": site, "stream": stream}, reg)
}

// readyTimeout bounds one readiness check.
const readyTimeout = 2 * time.Second

// readyCheck reports nil when a running, connected component does its job,
// or why it does not (the error text becomes the /readyz body). It is called
// on every /readyz request with a context bounded by readyTimeout.
type readyCheck func(ctx context.Context) error

// health answers /healthz and /readyz.
//
// /healthz is 200 "ok" while the process serves HTTP (liveness).
//
// /readyz is 200 "ready" once the startup checks passed (etcd answered,
// NATS connected), the component's Run has started and has not returned,
// every NATS connection is currently connected, and the component's
// readiness check (if any) passes; 503 with the reason otherwise. Without a
// check it does not prove that revisions are flowing: alert on the
// components' lag and revision metrics for that.
type health struct {
	running atomic.Bool
	conns   []*nats.Conn
	ready   readyCheck // nil: running and connected is ready
}

// reason returns why the component is not ready, or "".
func (h *health) reason(ctx context.Context) string {
	if !h.running.Load() {
		return "not running"
	}
	for _, nc := range h.conns {
		if !nc.IsConnected() {
			return "nats " + nc.Status().String()
		}
	}
	if h.ready != nil {
		ctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		if err := h.ready(ctx); err != nil {
			return err.Error()
		}
	}
	return ""
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reason := h.reason(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, reason)
		return
	}
	fmt.Fprintln(w, "ready")
}

// runServed runs fn and, when addr is set, an HTTP server on addr with
// /metrics (reg), /healthz and /readyz, until fn returns; the server is shut
// down then (or when ctx ends) and its errors end fn. It returns fn's error,
// or the server's if the server failed first. A listen error is returned
// before fn starts.
func runServed(ctx context.Context, log *slog.Logger, addr string, reg *prometheus.Registry, conns []*nats.Conn, fn func(context.Context) error) error {
	return runServedReady(ctx, log, addr, reg, conns, nil, fn)
}

// route is one more path a component serves next to /metrics, /healthz and /readyz.
type route struct {
	path    string
	handler http.Handler
}

// runServedReady is runServed with a readiness check: /readyz also calls
// ready (nil: none) once fn runs and every connection is up, and answers
// 503 with its error. extra adds paths (the auditor's /check).
func runServedReady(ctx context.Context, log *slog.Logger, addr string, reg *prometheus.Registry, conns []*nats.Conn, ready readyCheck, fn func(context.Context) error, extra ...route) error {
	h := &health{conns: conns, ready: ready}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.Handle("/readyz", h)
		paths := "/metrics /healthz /readyz"
		for _, r := range extra {
			mux.Handle(r.path, r.handler)
			paths += " " + r.path
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		log.Info("serving metrics", "addr", ln.Addr().String(), "paths", paths)
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer scancel()
			return srv.Shutdown(sctx)
		})
	}
	g.Go(func() error {
		defer cancel()
		h.running.Store(true)
		defer h.running.Store(false)
		return fn(gctx)
	})
	return g.Wait()
}

// applyReadiness returns the readiness check of `apply`: the standby is
// ready when its checkpoint (read from the standby, so that a restarted or
// a non-leader applier judges what the standby holds) covers the last
// message of the stream, or when the last revision it applied was observed
// at the source at most maxLag ago. It is not ready while nothing is
// applied, while a snapshot is being applied (the standby is not a
// consistent copy then) and once promoted. Each check reads the stream's
// info and the checkpoint key; an unreadable stream or standby is not ready.
func applyReadiness(standby *clientv3.Client, nc *nats.Conn, cfg applier.Config, maxLag time.Duration) (readyCheck, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("readiness: %w", err)
	}
	return func(ctx context.Context) error {
		stream, err := js.Stream(ctx, cfg.Stream)
		if err != nil {
			return fmt.Errorf("open stream %s: %w", cfg.Stream, err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("read stream %s: %w", cfg.Stream, err)
		}
		st, err := applier.ReadStatus(ctx, standby, nil, cfg.Stream, cfg.Site, cfg.CheckpointKey)
		if err != nil {
			return err
		}
		var ck applier.Checkpoint
		if st.Checkpoint != nil {
			ck = *st.Checkpoint
		}
		return caughtUp(info.State.LastSeq, ck, time.Now(), maxLag)
	}, nil
}

// caughtUp returns nil when ck covers the stream's last sequence lastSeq,
// or when the revision it applied was observed at the source (SourceTime,
// or AppliedAt when unknown) at most maxLag before now; otherwise why not.
func caughtUp(lastSeq uint64, ck applier.Checkpoint, now time.Time, maxLag time.Duration) error {
	switch {
	case ck.Promoted:
		return errors.New("standby promoted: the applier is fenced")
	case ck.Stopped != nil:
		return fmt.Errorf("the applier stopped: %s", ck.Stopped.Reason)
	case ck.Snapshot != nil:
		return fmt.Errorf("applying a snapshot (generation %d, revision %d, %d keys so far): the standby is not a consistent copy yet",
			ck.Snapshot.Generation, ck.Snapshot.Revision, ck.Snapshot.Keys)
	case lastSeq <= ck.Position.Seq:
		return nil
	case ck.Position.Seq == 0:
		return fmt.Errorf("nothing applied yet: %d messages in the stream", lastSeq)
	}
	since := ck.SourceTime
	if since.IsZero() {
		since = ck.AppliedAt
	}
	if lag := now.Sub(since); lag > maxLag {
		return fmt.Errorf("behind: %d stream messages not applied; last applied revision %d observed %s ago (ready max lag %s)",
			lastSeq-ck.Position.Seq, ck.Position.Revision, lag.Round(time.Millisecond), maxLag)
	}
	return nil
}
