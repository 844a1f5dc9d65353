package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"
)

// profiler writes one CPU profile per workload when dir is set.
type profiler struct {
	dir string
	f   *os.File
}

func (p *profiler) start(name string) {
	if p.dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(p.dir, "cpu-"+name+".pprof"))
	if err != nil {
		progress("profile %s: %v", name, err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		progress("profile %s: %v", name, err)
		f.Close()
		return
	}
	p.f = f
}

func (p *profiler) stop() {
	if p.f == nil {
		return
	}
	pprof.StopCPUProfile()
	p.f.Close()
	progress("wrote %s", p.f.Name())
	p.f = nil
}

// watchPipeline prints the in-process publisher's and applier's positions
// every 2s (profile mode only) and returns a function that stops it.
func watchPipeline(r replicator) func() {
	e, ok := r.(*etcdsyncInProcess)
	if !ok {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ck := e.App.Applied()
				progress("  pipeline: published %s, applied %s (snapshot %v)", e.Pub.Published(), ck.Position, ck.Snapshot != nil)
			}
		}
	}()
	return func() { close(done) }
}

// cpuMeter reports the CPU time each process used during a workload.
type cpuMeter struct {
	procs []*proc
	names []string
	last  []time.Duration
	// lastPrimary and lastReplicator are the CPU time the primary etcd
	// and the replicator's processes used in the last report's workload.
	lastPrimary, lastReplicator time.Duration
}

func newCPUMeter(c *cluster) *cpuMeter {
	m := &cpuMeter{}
	m.add(c.primary.proc)
	m.add(c.standby.proc)
	return m
}

func (m *cpuMeter) add(p *proc) {
	m.procs = append(m.procs, p)
	m.names = append(m.names, p.name)
}

// mark starts a measurement (the replicator's processes are added as they appear).
func (m *cpuMeter) mark() {
	m.last = m.sample()
}

func (m *cpuMeter) sample() []time.Duration {
	s := make([]time.Duration, 0, len(m.procs)+1)
	for _, p := range m.procs {
		s = append(s, procCPU(p.pid()))
	}
	return append(s, procCPU(os.Getpid()))
}

// track adds the replicator's processes (call after Start).
func (m *cpuMeter) track(r replicator) {
	for _, p := range r.Procs() {
		m.add(p)
		m.last = append(m.last[:len(m.last)-1], 0, m.last[len(m.last)-1])
	}
}

func (m *cpuMeter) report(workload string, wall time.Duration) string {
	now := m.sample()
	m.lastPrimary, m.lastReplicator = 0, 0
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s wall):", workload, fmtDur(wall))
	for i := range now {
		name := "bench+nats"
		if i < len(m.names) {
			name = m.names[i]
		}
		var prev time.Duration
		if i < len(m.last) {
			prev = m.last[i]
		}
		used := now[i] - prev
		fmt.Fprintf(&b, " %s %.1fs", name, used.Seconds())
		switch {
		case i == 0:
			m.lastPrimary = used
		case i == 1:
		case i < len(m.names):
			m.lastReplicator += used
		}
	}
	m.last = now
	return b.String()
}

// peakRSS formats VmHWM of the replicator's processes so far.
func peakRSS(r replicator) string {
	var parts []string
	for _, p := range r.Procs() {
		if b, err := procStatus(p.pid(), "VmHWM"); err == nil {
			parts = append(parts, p.name+" "+mib(b))
		}
	}
	if len(parts) == 0 {
		return "n/a"
	}
	return strings.Join(parts, ", ")
}
