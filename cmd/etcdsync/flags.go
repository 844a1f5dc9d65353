package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// envPrefix starts the environment variable of every flag:
// --etcd-endpoints is also read from ETCDSYNC_ETCD_ENDPOINTS.
const envPrefix = "ETCDSYNC_"

// envName returns the environment variable read for the flag name.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// errHelp is returned after -h printed a usage; the exit status is 0.
var errHelp = errors.New("help requested")

// usageError is a bad command line or environment: exit status 2.
type usageError struct {
	cmd string
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// flagSet is a flag.FlagSet of one subcommand whose flags also read
// ETCDSYNC_* environment variables, and whose usage lists them in the order
// they were defined.
type flagSet struct {
	cmd      string
	synopsis string
	about    string
	fs       *flag.FlagSet
	order    []string
	// lookupEnv reads the environment; os.LookupEnv unless a test sets it.
	lookupEnv func(string) (string, bool)
	// environ lists the environment; os.Environ unless a test sets it.
	environ func() []string
}

// newFlagSet returns the flags of subcommand cmd. synopsis is the usage line
// after "etcdsync <cmd>", about a paragraph describing the subcommand.
func newFlagSet(cmd, synopsis, about string) *flagSet {
	fs := flag.NewFlagSet("etcdsync "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{cmd: cmd, synopsis: synopsis, about: about, fs: fs, lookupEnv: os.LookupEnv, environ: os.Environ}
}

func (f *flagSet) add(v flag.Value, name, usage string) {
	f.fs.Var(v, name, usage)
	f.order = append(f.order, name)
}

// String defines a string flag.
func (f *flagSet) String(p *string, name, def, usage string) {
	*p = def
	f.add((*stringValue)(p), name, usage)
}

// List defines a comma-separated list flag. It may be repeated; the values
// add up. A list given on the command line replaces the environment's, and
// either replaces the default.
func (f *flagSet) List(p *[]string, name string, def []string, usage string) {
	*p = append([]string(nil), def...)
	f.add(&listValue{p: p}, name, usage)
}

// Duration defines a duration flag ("1h30m", "500ms", "7d", "2w", "0").
func (f *flagSet) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	f.add((*durationValue)(p), name, usage)
}

// Int defines an integer flag.
func (f *flagSet) Int(p *int, name string, def int, usage string) {
	*p = def
	f.add((*intValue)(p), name, usage)
}

// Bytes defines a byte size flag: a plain number of bytes or a number with
// a unit: IEC (KiB, MiB, GiB, TiB; KB, MB, GB, TB) or a Kubernetes quantity
// (Ki, Mi, Gi, Ti; k, M, G, T).
func (f *flagSet) Bytes(p *int64, name string, def int64, usage string) {
	*p = def
	f.add((*bytesValue)(p), name, usage)
}

// Float defines a floating point flag.
func (f *flagSet) Float(p *float64, name string, def float64, usage string) {
	*p = def
	f.add((*floatValue)(p), name, usage)
}

// Bool defines a boolean flag.
func (f *flagSet) Bool(p *bool, name string, def bool, usage string) {
	*p = def
	f.add((*boolValue)(p), name, usage)
}

// parse reads the environment, then args; the command line wins. An empty
// environment variable counts as unset. On -h it prints the usage to stdout
// and returns errHelp; a bad value, an unknown flag or a positional argument
// returns a *usageError.
func (f *flagSet) parse(args []string, stdout io.Writer) error {
	if err := f.checkEnv(); err != nil {
		return err
	}
	for _, name := range f.order {
		env := envName(name)
		v, ok := f.lookupEnv(env)
		if !ok || v == "" {
			continue
		}
		if err := f.fs.Set(name, v); err != nil {
			return usageErrorf(f.cmd, "invalid value %q in $%s: %v", v, env, err)
		}
	}
	// The command line replaces lists taken from the environment.
	for _, name := range f.order {
		if l, ok := f.fs.Lookup(name).Value.(*listValue); ok {
			l.fresh = false
		}
	}
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.usage(stdout)
			return errHelp
		}
		return &usageError{cmd: f.cmd, msg: err.Error()}
	}
	if f.fs.NArg() > 0 {
		return usageErrorf(f.cmd, "unexpected argument %q (flags start with --)", f.fs.Arg(0))
	}
	return nil
}

// isSet reports whether the flag name was given, on the command line or in
// its environment variable (after parse).
func (f *flagSet) isSet(name string) bool {
	set := false
	f.fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// testEnvPrefix starts the ETCDSYNC_ variables of the test suites
// (ETCDSYNC_TEST_LOG), which are no flag's.
const testEnvPrefix = envPrefix + "TEST_"

// knownEnv returns the environment variable of every flag of every
// command: a pod's environment may serve several commands (the auditor's
// also serves status and promote).
func knownEnv() map[string]bool {
	sets := []*flagSet{
		publishFlags(&publishOptions{}), applyFlags(&applyOptions{}), auditFlags(&auditOptions{}),
		statusFlags(&statusOptions{}), promoteFlags(&promoteOptions{}), demoteFlags(&demoteOptions{}),
		streamsFlags(&streamsOptions{}), sandboxFlags(&sandboxOptions{}),
	}
	known := map[string]bool{}
	for _, s := range sets {
		for _, name := range s.order {
			known[envName(name)] = true
		}
	}
	return known
}

// checkEnv returns a *usageError for a set ETCDSYNC_ variable that is no
// command's flag, naming the closest known one (a misspelt variable would
// otherwise be ignored: ETCDSYNC_EXCLUDE_NAMESPACES replicated everything).
func (f *flagSet) checkEnv() error {
	var known map[string]bool
	for _, kv := range f.environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || strings.HasPrefix(name, testEnvPrefix) {
			continue
		}
		if known == nil {
			known = knownEnv()
		}
		if known[name] {
			continue
		}
		best, bestD := "", -1
		for k := range known {
			if d := editDistance(name, k); bestD < 0 || d < bestD || (d == bestD && k < best) {
				best, bestD = k, d
			}
		}
		return usageErrorf(f.cmd, "unknown environment variable $%s (did you mean $%s?); every ETCDSYNC_ variable must be a flag's", name, best)
	}
	return nil
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// usage prints the synopsis and every flag with its environment variable
// and default.
func (f *flagSet) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: etcdsync %s %s\n\n", f.cmd, f.synopsis)
	if f.about != "" {
		fmt.Fprintf(w, "%s\n\n", f.about)
	}
	fmt.Fprintf(w, "Flags (each is also read from the environment variable shown; the command line wins):\n")
	for _, name := range f.order {
		fl := f.fs.Lookup(name)
		arg, usage := flag.UnquoteUsage(fl)
		if _, ok := fl.Value.(*boolValue); ok {
			arg = ""
		}
		line := "  --" + name
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n        %s\n        [$%s", line, strings.ReplaceAll(usage, "\n", "\n        "), envName(name))
		if def := fl.DefValue; def != "" && def != "false" && def != "0" && def != "0s" {
			fmt.Fprintf(w, ", default %s", def)
		}
		fmt.Fprintf(w, "]\n")
	}
}

type stringValue string

func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }
func (s *stringValue) String() string     { return string(*s) }

type listValue struct {
	p     *[]string
	fresh bool // set since the last source change: Set appends
}

func (l *listValue) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l *listValue) Set(v string) error {
	if !l.fresh {
		*l.p, l.fresh = nil, true
	}
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l.p = append(*l.p, item)
		}
	}
	return nil
}

type durationValue time.Duration

func (d *durationValue) Set(v string) error {
	if v == "0" {
		*d = 0
		return nil
	}
	x, err := parseDuration(v)
	if err != nil {
		return fmt.Errorf("not a duration (want e.g. 30s, 5m, 24h, 7d, 2w)")
	}
	if x < 0 {
		return fmt.Errorf("must not be negative")
	}
	*d = durationValue(x)
	return nil
}
func (d *durationValue) String() string { return time.Duration(*d).String() }

// durationUnits are the units parseDuration reads before time.ParseDuration's.
var durationUnits = []struct {
	suffix byte
	d      time.Duration
}{{'w', 7 * 24 * time.Hour}, {'d', 24 * time.Hour}}

// parseDuration is time.ParseDuration that also reads weeks and days in
// front: "2w", "7d", "1d12h", "1w2d3h30m".
func parseDuration(v string) (time.Duration, error) {
	var total time.Duration
	rest := v
	for _, u := range durationUnits {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i >= len(rest) || rest[i] != u.suffix {
			continue
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil || n > int64(math.MaxInt64/u.d) {
			return 0, fmt.Errorf("duration %q out of range", v)
		}
		total += time.Duration(n) * u.d
		rest = rest[i+1:]
	}
	if rest == "" {
		if total == 0 && v != "0d" && v != "0w" {
			return 0, fmt.Errorf("empty duration")
		}
		return total, nil
	}
	if rest != v && (rest[0] == '-' || rest[0] == '+') {
		return 0, fmt.Errorf("duration %q: a sign in the middle", v)
	}
	x, err := time.ParseDuration(rest)
	if err != nil {
		return 0, err
	}
	if x > 0 && total > math.MaxInt64-x {
		return 0, fmt.Errorf("duration %q out of range", v)
	}
	return total + x, nil
}

type intValue int

func (i *intValue) Set(v string) error {
	x, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("not an integer")
	}
	*i = intValue(x)
	return nil
}
func (i *intValue) String() string { return strconv.Itoa(int(*i)) }

type floatValue float64

func (f *floatValue) Set(v string) error {
	x, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return fmt.Errorf("not a number")
	}
	*f = floatValue(x)
	return nil
}
func (f *floatValue) String() string { return strconv.FormatFloat(float64(*f), 'g', -1, 64) }

type boolValue bool

func (b *boolValue) Set(v string) error {
	x, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("not a boolean (want true or false)")
	}
	*b = boolValue(x)
	return nil
}
func (b *boolValue) String() string   { return strconv.FormatBool(bool(*b)) }
func (b *boolValue) IsBoolFlag() bool { return true }

type bytesValue int64

// byteUnits are the IEC (KiB) and Kubernetes quantity (Ki, k, M) units,
// longest first.
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	{"B", 1},
}

func (b *bytesValue) Set(v string) error {
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	x, err := strconv.ParseInt(num, 10, 64)
	if err != nil || x < 0 || (x > 0 && mult > (1<<63-1)/x) {
		return fmt.Errorf("not a byte size (want e.g. 1048576, 512MiB, 512Mi, 10GiB, 10Gi, 1G)")
	}
	*b = bytesValue(x * mult)
	return nil
}
func (b *bytesValue) String() string { return strconv.FormatInt(int64(*b), 10) }
