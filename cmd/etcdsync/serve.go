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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// newRegistry returns the registry a command's components register on,
// with the Go runtime and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// health answers /healthz and /readyz.
//
// /healthz is 200 "ok" while the process serves HTTP (liveness).
//
// /readyz is 200 "ready" once the startup checks passed (etcd answered,
// NATS connected), the component's Run has started and has not returned,
// and every NATS connection is currently connected; 503 with the reason
// otherwise. It does not prove that revisions are flowing: alert on the
// components' lag and revision metrics for that.
type health struct {
	running atomic.Bool
	conns   []*nats.Conn
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reason := ""
	if !h.running.Load() {
		reason = "not running"
	}
	for _, nc := range h.conns {
		if reason == "" && !nc.IsConnected() {
			reason = "nats " + nc.Status().String()
		}
	}
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
	h := &health{conns: conns}
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
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		log.Info("serving metrics", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
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
