package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// verifyCost is one `etcdsync verify` of the standby after W1: the wall
// time and peak RSS of the run that printed VERIFIED.
type verifyCost struct {
	wall     time.Duration
	peakRSS  int64 // bytes (getrusage ru_maxrss)
	keys     int64 // the standby's keys under /registry/ when it ran
	attempts int   // runs until VERIFIED (exit 3 while a snapshot still applies)
}

// exitUnverified is etcdsync verify's exit status when there is nothing to
// compare with yet (no digest in the checkpoint, a snapshot being applied).
const exitUnverified = 3

// measureVerify runs `bin verify --standby-endpoints standby` as a process
// until it prints VERIFIED (retrying while it exits 3), and returns the wall
// time and peak RSS of that run. Exit 1 (MISMATCH), 2 or any other failure
// ends it with an error; so does timeout.
func measureVerify(ctx context.Context, bin, standby string, keys int64, timeout time.Duration) (verifyCost, error) {
	c := verifyCost{keys: keys}
	deadline := time.Now().Add(timeout)
	for {
		c.attempts++
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, "verify", "--standby-endpoints", standby)
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		c.wall = time.Since(t0)
		if cmd.ProcessState != nil {
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				c.peakRSS = ru.Maxrss << 10 // KiB on Linux
			}
		}
		var exit *exec.ExitError
		switch {
		case err == nil && strings.Contains(out.String(), "VERIFIED"):
			return c, nil
		case err == nil:
			return c, fmt.Errorf("etcdsync verify exited 0 without VERIFIED: %s", strings.TrimSpace(out.String()))
		case errors.As(err, &exit) && exit.ExitCode() == exitUnverified:
			if time.Now().After(deadline) {
				return c, fmt.Errorf("etcdsync verify: still not verified after %s (%d runs): %s: %w", timeout, c.attempts, strings.TrimSpace(out.String()), errTimeout)
			}
		default:
			return c, fmt.Errorf("etcdsync verify: %w: %s", err, strings.TrimSpace(out.String()))
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// String formats the cost as the report prints it.
func (c verifyCost) String() string {
	s := fmt.Sprintf("%s, peak RSS %s", fmtDur(c.wall), mib(c.peakRSS))
	if c.attempts > 1 {
		s += fmt.Sprintf(" (run %d: the earlier ones exited 3, nothing to compare with yet)", c.attempts)
	}
	return s
}
