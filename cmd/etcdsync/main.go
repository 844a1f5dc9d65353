// Command etcdsync replicates a primary etcd into a standby etcd through a
// NATS JetStream log, for disaster recovery.
//
//	etcdsync publish   watch the primary etcd, publish to the log
//	etcdsync apply     replay the log into the standby etcd
//	etcdsync audit     compare the standby with the primary, report and repair drift
//	etcdsync status    show the stream, the standby's checkpoint and the lag
//	etcdsync promote   fail over: fence the applier, report the final position
//	etcdsync demote    make a promoted etcd a standby again (failback)
//	etcdsync verify    prove the standby equals the log in scope
//	etcdsync sandbox   the whole pipeline in one process, with a workload
//	etcdsync version   print the version
//
// Every flag is also read from an ETCDSYNC_<FLAG> environment variable
// (--etcd-endpoints from ETCDSYNC_ETCD_ENDPOINTS); the command line wins.
//
// Exit status, the same for every command: 0 success or a clean shutdown
// on SIGINT/SIGTERM; 1 failure (the command ran and the answer is bad:
// drift, lagging, refused, not drained, a runtime error); 2 bad usage (a
// flag or ETCDSYNC_ variable; nothing was contacted); 3 unavailable (an
// etcd or NATS server could not be reached at start-up, or audit and status
// could not make their check).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitUnavailable = 3
)

// unreachableError is a server that could not be reached: exit status 3.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build information is shown.
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills the process the default way.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand.
type command struct {
	name  string
	about string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"publish", "watch the primary etcd and publish its revisions to the JetStream log", runPublish},
	{"apply", "replay the log into the standby etcd (exactly once, scoped by keyspace rules)", runApply},
	{"audit", "compare the standby with the primary at a consistent point; report, publish and repair drift", runAudit},
	{"streams", "set up a site's log stream: streams init --role primary|standby", runStreams},
	{"status", "show the stream, the standby's checkpoint and the lag", runStatus},
	{"promote", "fail over: drain, fence the applier, report the standby's final position", runPromote},
	{"demote", "make a promoted etcd a standby again: clear its checkpoint so its applier re-seeds", runDemote},
	{"verify", "prove the standby equals the log in scope (keyspace digests), with no access to the primary", runVerify},
	{"sandbox", "run two embedded etcds, embedded NATS, the pipeline and a workload, then check consistency", runSandbox},
	{"version", "print the version", runVersion},
}

// run executes the command line args (without the program name) and returns
// the exit status. It never calls os.Exit.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(rest) > 0 {
			// "etcdsync help apply" is "etcdsync apply -h".
			return run(ctx, []string{rest[0], "-h"}, stdout, stderr)
		}
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			return exitStatus(ctx, name, c.run(ctx, rest, stdout, stderr), stderr)
		}
	}
	fmt.Fprintf(stderr, "etcdsync: unknown command %q\nRun 'etcdsync -h' for usage.\n", name)
	return exitUsage
}

// errDrift is returned by a command that has already reported drift.
var errDrift = errors.New("drift")

// exitStatus reports err on stderr and maps it to an exit status.
func exitStatus(ctx context.Context, cmd string, err error, stderr io.Writer) int {
	var ue *usageError
	var ae *auditError
	var se *statusError
	var re *unreachableError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.Is(err, errDrift):
		return exitFailure
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "etcdsync %s: %s\nRun 'etcdsync %s -h' for usage.\n", cmd, ue.msg, cmd)
		return exitUsage
	case errors.As(err, &ae):
		fmt.Fprintf(stderr, "etcdsync %s: could not audit: %v\n", cmd, ae.err)
		return exitUnavailable
	case errors.As(err, &se):
		fmt.Fprintf(stderr, "etcdsync %s: could not read status: %v\n", cmd, se.err)
		return exitUnavailable
	case errors.As(err, &re) && !(ctx.Err() != nil && errors.Is(err, context.Canceled)):
		fmt.Fprintf(stderr, "etcdsync %s: %v\n", cmd, err)
		return exitUnavailable
	case errors.Is(err, errLagging):
		return exitFailure
	case errors.Is(err, errUnverified):
		return exitUnavailable
	case errors.Is(err, errStreamNotChecked):
		fmt.Fprintf(stderr, "etcdsync %s: %v\n", cmd, err)
		return exitUnavailable
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		// Interrupted during startup: a clean shutdown.
		return exitOK
	}
	fmt.Fprintf(stderr, "etcdsync %s: %v\n", cmd, err)
	return exitFailure
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "etcdsync keeps a standby etcd a near-real-time copy of a primary etcd through a NATS JetStream log.\n\n")
	fmt.Fprintf(w, "Usage: etcdsync <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.about)
	}
	fmt.Fprintf(w, "\nRun 'etcdsync <command> -h' for the flags of a command. Every flag is also read from\n")
	fmt.Fprintf(w, "ETCDSYNC_<FLAG> (e.g. --etcd-endpoints from ETCDSYNC_ETCD_ENDPOINTS); the command line wins.\n")
	fmt.Fprintf(w, "Exit status (every command): 0 success or clean shutdown, 1 failure (drift, lagging, refused),\n")
	fmt.Fprintf(w, "2 bad usage (a flag or ETCDSYNC_ variable), 3 unavailable (a server unreachable; audit, status: could not check).\n")
}

func runVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	f := newFlagSet("version", "", "Prints the version of etcdsync.")
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	v, rev := version, ""
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	fmt.Fprintf(stdout, "etcdsync %s", v)
	if rev != "" {
		fmt.Fprintf(stdout, " (%s)", rev)
	}
	fmt.Fprintf(stdout, " %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
