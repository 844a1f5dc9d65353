package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
)

// applyPrintRules prints the scope an applier with cfg would replicate,
// where it comes from (origins: flagOrigins of the scope flags) and where
// the applier records it.
func applyPrintRules(w io.Writer, cfg applier.Config, origins []string) error {
	rec, err := applier.NewScopeRecord(cfg.Scope, "", false)
	if err != nil {
		return err
	}
	var b strings.Builder
	if len(origins) == 0 {
		b.WriteString("# scope in force: the defaults (no scope option given)\n")
	} else {
		fmt.Fprintf(&b, "# scope in force: these options, defaults otherwise: %s\n", strings.Join(origins, ", "))
	}
	fmt.Fprintf(&b, "# preset version %s; the applier records this scope at %s when it starts, with the\n", rec.PresetVersion, cfg.ScopeRecordKey())
	b.WriteString("# publisher's prefix from the first snapshot; `etcdsync audit` compares that scope by default\n")
	if cfg.Scope.Mode != keyspace.ModeRaw {
		b.WriteString("# keys under the prefix that do not parse as Kubernetes keys are counted in etcdsync_applier_unparsed_keys_total;\n" +
			"# `etcdsync audit` reports how many it compared and names the first\n")
	}
	b.WriteString(rec.Rules)
	_, err = io.WriteString(w, b.String())
	return err
}

// parenthesized returns " (s)", or "" for an empty s.
func parenthesized(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// scopeFlagNames returns the flags that choose a scope: the scope flags and
// --prefix.
func scopeFlagNames() []string {
	f := newFlagSet("scope", "", "")
	var s scopeFlags
	s.register(f, nil)
	return append(f.order, "prefix")
}

// flagOrigins says which of the flags names were given and where:
// "--name (command line)" or "--name ($ETCDSYNC_NAME)", in names' order.
// f has parsed args.
func flagOrigins(f *flagSet, args, names []string) []string {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	onCommandLine := map[string]bool{}
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") {
			onCommandLine[name] = true
		}
	}
	var out []string
	for _, n := range names {
		switch {
		case !set[n]:
		case onCommandLine[n]:
			out = append(out, "--"+n+" (command line)")
		default:
			out = append(out, "--"+n+" ($"+envName(n)+")")
		}
	}
	return out
}
