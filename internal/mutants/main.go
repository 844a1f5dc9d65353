// Command mutants proves that the test suite guards what it claims: each
// mutant deletes or breaks one mechanism, and the test named beside it must
// then fail. A mutant whose test still passes has survived, and the run
// fails.
//
// Mutants are described in the *.txt files of this directory:
//
//	=== mutant NAME
//	file: path/from/the/repository/root.go
//	module: deploy            (optional: run the test inside this module)
//	test: ./pkg -run 'TestX$'
//	why: the guarantee the test guards
//	--- find
//	exact lines that occur exactly once in the file
//	--- replace
//	their replacement
//
// A block ends at the next "=== mutant" line or at the end of the file;
// lines starting with '#' are comments (inside find/replace only at their
// end, where they separate blocks). The source tree
// is never modified: the mutated file reaches the compiler through
// `go test -overlay` (and GOFLAGS=-overlay=..., so that a test that builds
// the binary with `go build` builds the mutant). A mutant that does not compile, or whose find text is
// missing or ambiguous, is an error (the description is stale), not a kill.
//
// Usage, from the repository root:
//
//	go run ./internal/mutants [-run REGEXP] [-quick] [-list] [-timeout D]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// mutant is one described source edit and the test that must catch it.
type mutant struct {
	name    string
	file    string
	module  string
	test    []string
	why     string
	find    string
	replace string
	origin  string // description file and line, for errors
}

func main() {
	run := flag.String("run", "", "run only mutants whose name matches `REGEXP`")
	list := flag.Bool("list", false, "list the mutants and exit")
	timeout := flag.Duration("timeout", 15*time.Minute, "bound on one mutant's test run")
	check := flag.Bool("check", false, "only check that every mutant still applies (its find text occurs exactly once), running no test")
	quick := flag.Bool("quick", false, "run only the mutants whose tests are package tests of this module (not internal/e2e, not another module): the fast part, for make test")
	flag.Parse()
	if err := mainErr(*run, *list, *check, *quick, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "mutants:", err)
		os.Exit(1)
	}
}

func mainErr(run string, list, check, quick bool, timeout time.Duration) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	var filter *regexp.Regexp
	if run != "" {
		if filter, err = regexp.Compile(run); err != nil {
			return fmt.Errorf("parse -run: %w", err)
		}
	}
	descs, err := filepath.Glob(filepath.Join(root, "internal", "mutants", "*.txt"))
	if err != nil {
		return err
	}
	sort.Strings(descs)
	var all []mutant
	for _, d := range descs {
		ms, err := parseFile(d)
		if err != nil {
			return err
		}
		all = append(all, ms...)
	}
	seen := map[string]string{}
	var selected []mutant
	for _, m := range all {
		if prev, dup := seen[m.name]; dup {
			return fmt.Errorf("%s: mutant %q already defined at %s", m.origin, m.name, prev)
		}
		seen[m.name] = m.origin
		if (filter == nil || filter.MatchString(m.name)) && (!quick || m.quick()) {
			selected = append(selected, m)
		}
	}
	if list {
		for _, m := range selected {
			fmt.Printf("%-40s %s\n", m.name, m.why)
		}
		return nil
	}
	if len(selected) == 0 {
		return errors.New("no mutant selected")
	}
	if check {
		var stale []string
		for _, m := range selected {
			if err := m.applies(root); err != nil {
				fmt.Println(err)
				stale = append(stale, m.name)
			}
		}
		fmt.Printf("%d mutants checked, %d stale\n", len(selected), len(stale))
		if len(stale) > 0 {
			return fmt.Errorf("stale mutants %q", stale)
		}
		return nil
	}

	tmp, err := os.MkdirTemp("", "etcdsync-mutants-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var survived, broken []string
	began := time.Now()
	for i, m := range selected {
		start := time.Now()
		verdict, detail := runOne(root, tmp, m, timeout)
		fmt.Printf("[%d/%d] %-40s %-8s %5.1fs  %s\n", i+1, len(selected), m.name, verdict, time.Since(start).Seconds(), m.why)
		switch verdict {
		case "SURVIVED":
			survived = append(survived, m.name)
		case "ERROR":
			broken = append(broken, m.name)
			fmt.Println(indent(detail))
		}
	}
	fmt.Printf("%d mutants: %d killed, %d survived, %d errors in %s\n",
		len(selected), len(selected)-len(survived)-len(broken), len(survived), len(broken), time.Since(began).Round(time.Second))
	if len(survived)+len(broken) > 0 {
		return fmt.Errorf("survived %q, errors %q", survived, broken)
	}
	return nil
}

// quick reports whether m's test is a package test of this module, which
// runs in seconds, rather than an end-to-end or another module's test.
func (m mutant) quick() bool {
	return m.module == "" && len(m.test) > 0 && !strings.Contains(m.test[0], "internal/e2e") && !strings.Contains(m.test[0], "cmd/etcdsync")
}

// applies reports whether m's find text occurs exactly once in its file.
func (m mutant) applies(root string) error {
	src, err := os.ReadFile(filepath.Join(root, m.file))
	if err != nil {
		return fmt.Errorf("%s: mutant %q: %w", m.origin, m.name, err)
	}
	if n := strings.Count(string(src), m.find); n != 1 {
		return fmt.Errorf("%s: mutant %q: find text occurs %d times in %s, want once (stale mutant)", m.origin, m.name, n, m.file)
	}
	return nil
}

// runOne applies m through an overlay and runs its test. The verdict is
// KILLED (the test failed), SURVIVED (it passed) or ERROR.
func runOne(root, tmp string, m mutant, timeout time.Duration) (verdict, detail string) {
	path := filepath.Join(root, m.file)
	src, err := os.ReadFile(path)
	if err != nil {
		return "ERROR", err.Error()
	}
	switch n := strings.Count(string(src), m.find); n {
	case 1:
	case 0:
		return "ERROR", fmt.Sprintf("%s: find text not in %s (stale mutant)", m.origin, m.file)
	default:
		return "ERROR", fmt.Sprintf("%s: find text occurs %d times in %s (make it unique)", m.origin, n, m.file)
	}
	mutated := strings.Replace(string(src), m.find, m.replace, 1)
	mfile := filepath.Join(tmp, m.name+".go")
	if err := os.WriteFile(mfile, []byte(mutated), 0o644); err != nil {
		return "ERROR", err.Error()
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {path: mfile}})
	ofile := filepath.Join(tmp, m.name+".json")
	if err := os.WriteFile(ofile, overlay, 0o644); err != nil {
		return "ERROR", err.Error()
	}

	dir := root
	if m.module != "" {
		dir = filepath.Join(root, m.module)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Vet is off: a mutant may leave an unused result that vet would flag,
	// and what is measured is whether the tests notice.
	args := append([]string{"test", "-count=1", "-vet=off", "-overlay", ofile}, m.test...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	// Tests that build the binary themselves (go build in a test) see the
	// mutant too.
	cmd.Env = append(os.Environ(), "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -overlay="+ofile))
	out, err := cmd.CombinedOutput()
	switch {
	case ctx.Err() != nil:
		return "KILLED", "timed out" // a hang is a caught mutant too
	case err == nil:
		return "SURVIVED", ""
	case bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")) ||
		!bytes.Contains(out, []byte("FAIL")):
		return "ERROR", fmt.Sprintf("%s: mutant does not build or the test did not run:\n%s", m.origin, tail(out, 40))
	}
	return "KILLED", ""
}

// parseFile reads the mutants described in one file.
func parseFile(path string) ([]mutant, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		out     []mutant
		cur     *mutant
		section string // "", "find" or "replace"
		find    []string
		replace []string
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		// Blank and '#' lines at the end of a section separate blocks; Go
		// source never starts a line with '#'.
		cur.find = strings.Join(trimTrailing(find), "\n")
		cur.replace = strings.Join(trimTrailing(replace), "\n")
		switch {
		case cur.file == "":
			return fmt.Errorf("%s: mutant %q: no file", cur.origin, cur.name)
		case len(cur.test) == 0:
			return fmt.Errorf("%s: mutant %q: no test", cur.origin, cur.name)
		case strings.TrimSpace(cur.find) == "":
			return fmt.Errorf("%s: mutant %q: empty find", cur.origin, cur.name)
		case cur.find == cur.replace:
			return fmt.Errorf("%s: mutant %q: replace equals find", cur.origin, cur.name)
		}
		out = append(out, *cur)
		return nil
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	base := filepath.Base(path)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "=== mutant "); ok {
			if err := finish(); err != nil {
				return nil, err
			}
			cur = &mutant{name: strings.TrimSpace(name), origin: fmt.Sprintf("%s:%d", base, n)}
			section, find, replace = "", nil, nil
			continue
		}
		switch {
		case line == "--- find" && cur != nil:
			section = "find"
			continue
		case line == "--- replace" && cur != nil && section == "find":
			section = "replace"
			continue
		}
		switch section {
		case "find":
			find = append(find, line)
			continue
		case "replace":
			replace = append(replace, line)
			continue
		}
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("%s:%d: %q before the first \"=== mutant\"", base, n, line)
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want \"key: value\", got %q", base, n, line)
		}
		val = strings.TrimSpace(val)
		switch key {
		case "file":
			cur.file = val
		case "module":
			cur.module = val
		case "why":
			cur.why = val
		case "test":
			args, err := splitArgs(val)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", base, n, err)
			}
			cur.test = args
		default:
			return nil, fmt.Errorf("%s:%d: unknown key %q", base, n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// A replace section runs to the end of the block: drop the blank lines
	// that separate blocks.
	if err := finish(); err != nil {
		return nil, err
	}
	return out, nil
}

// trimTrailing drops the blank and '#' lines that end a section.
func trimTrailing(lines []string) []string {
	for len(lines) > 0 {
		last := strings.TrimSpace(lines[len(lines)-1])
		if last != "" && !strings.HasPrefix(last, "#") {
			break
		}
		lines = lines[:len(lines)-1]
	}
	return lines
}

// splitArgs splits a test line into arguments, honouring single quotes.
func splitArgs(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted = !quoted
			in = true
		case r == ' ' && !quoted:
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unbalanced quote in %q", s)
	}
	if in {
		args = append(args, cur.String())
	}
	return args, nil
}

// repoRoot is the directory holding go.mod, from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "internal", "mutants")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the etcdsync repository")
		}
		dir = parent
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
