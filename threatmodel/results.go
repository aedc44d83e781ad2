package threatmodel

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Module is the module path the register's test references are relative
// to; `go test -json` names packages by their full import path.
const Module = "github.com/unumos/unum"

// Outcome is what happened to one test in one `go test -json` run.
type Outcome string

const (
	Passed  Outcome = "pass"
	Failed  Outcome = "fail"
	Skipped Outcome = "skip"
	// Unfinished tests started and never ended: their package panicked or
	// timed out.
	Unfinished Outcome = "unfinished"
)

// TestResult is one test's end in one run, with what it printed (for a
// skip: why it skipped).
type TestResult struct {
	Outcome Outcome
	Output  string
}

// Results holds the outcomes of one or more `go test -json` runs, keyed by
// "pkgpath.TestName[/subtest]" relative to Module (the form of Tests). A
// test that ran in several runs (the plain run and the race run) has one
// result per run.
type Results struct {
	Tests map[string][]TestResult
	// Packages maps a package (relative to Module, "." for the root) to
	// "pass", "fail" or "skip" (no test files) in each run it was in.
	Packages map[string][]Outcome
}

// testEvent is a line of `go test -json` (cmd/test2json's TestEvent).
type testEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// maxOutput bounds what is kept of one test's output: enough for a skip
// reason or the end of a failure, never the whole log of a chatty test.
const maxOutput = 16 << 10

// ReadResults reads one `go test -json` stream into r (which may already
// hold other runs). Lines that are not JSON events (a build error printed
// by the go command) are ignored, as the go command prints them to stderr
// anyway; a stream with no event at all is an error, so an empty or wrong
// file is not mistaken for a run where nothing was tested.
func (r *Results) ReadResults(in io.Reader) error {
	if r.Tests == nil {
		r.Tests = map[string][]TestResult{}
	}
	if r.Packages == nil {
		r.Packages = map[string][]Outcome{}
	}
	type key struct{ pkg, test string }
	output := map[key]*strings.Builder{}
	ended := map[key]bool{}
	events := 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var ev testEvent
		if err := json.Unmarshal(line, &ev); err != nil || ev.Action == "" {
			continue
		}
		events++
		pkg, ok := relativePackage(ev.Package)
		if !ok {
			continue
		}
		if ev.Test == "" {
			switch ev.Action {
			case "pass", "fail", "skip":
				r.Packages[pkg] = append(r.Packages[pkg], Outcome(ev.Action))
			}
			continue
		}
		k := key{pkg, ev.Test}
		switch ev.Action {
		case "run":
			output[k] = &strings.Builder{}
			ended[k] = false
		case "output":
			if b := output[k]; b != nil {
				b.WriteString(ev.Output)
				if b.Len() > 2*maxOutput {
					// Keep the end: a skip's reason and a failure's
					// last words are there.
					tail := b.String()[b.Len()-maxOutput:]
					b.Reset()
					b.WriteString(tail)
				}
			}
		case "pass", "fail", "skip":
			out := ""
			if b := output[k]; b != nil {
				out = lastBytes(b.String(), maxOutput)
			}
			name := pkg + "." + ev.Test
			r.Tests[name] = append(r.Tests[name], TestResult{Outcome: Outcome(ev.Action), Output: out})
			ended[k] = true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading go test -json output: %w", err)
	}
	if events == 0 {
		return errors.New("no go test -json events in the results (was the file written by go test -json?)")
	}
	for k, done := range ended {
		if !done {
			name := k.pkg + "." + k.test
			r.Tests[name] = append(r.Tests[name], TestResult{Outcome: Unfinished, Output: lastBytes(output[k].String(), maxOutput)})
		}
	}
	return nil
}

func relativePackage(importPath string) (string, bool) {
	if importPath == Module {
		return ".", true
	}
	rest, ok := strings.CutPrefix(importPath, Module+"/")
	return rest, ok && rest != ""
}

// Problem is a mitigated threat whose proof did not hold in the run.
type Problem struct {
	Threat string // "T-042"
	Test   string // the reference
	Why    string
}

func (p Problem) String() string { return p.Threat + ": " + p.Test + ": " + p.Why }

// CheckResults holds every mitigated threat to its tests in res. Each
// test must have run, and failed and skipped in no run (the plain run and
// the race run alike), nor may any of its subtests have skipped: a proof
// with a part skipped is not the proof the register names. The one excuse
// is a kernel feature's: when the threat's Kernel lists the test, its
// skips (its own or its subtests') are accepted if every one says
// KernelLacks(feature) and every Fallback test passed.
// Open and accepted threats are not checked: they claim no proof.
func CheckResults(threats []Threat, res Results) []Problem {
	var problems []Problem
	for _, th := range threats {
		if th.Status != Mitigated {
			continue
		}
		for _, ref := range th.Tests {
			var k *KernelDependency
			if th.Kernel != nil && slices.Contains(th.Kernel.Tests, ref) {
				k = th.Kernel
			}
			if why := testProblem(res, ref, k); why != "" {
				problems = append(problems, Problem{Threat: th.ID, Test: ref, Why: why})
			}
		}
	}
	return problems
}

// testProblem says why ref does not count as proven, or "" when it does.
// k, when set, may excuse skips.
func testProblem(res Results, ref string, k *KernelDependency) string {
	runs := res.Tests[ref]
	if len(runs) == 0 {
		return "did not run (no result for it in the results: is the name right, did its package build?)"
	}
	for _, r := range runs {
		switch r.Outcome {
		case Failed:
			return "failed" + excerpt(r.Output)
		case Unfinished:
			return "never finished (its package panicked or timed out)" + excerpt(r.Output)
		}
	}
	skip, out := firstSkip(res, ref)
	if skip == "" {
		return ""
	}
	if k == nil {
		return skip + excerpt(out)
	}
	marker := KernelLacks(k.Feature)
	for _, name := range append([]string{ref}, subtests(res, ref)...) {
		for _, r := range res.Tests[name] {
			if r.Outcome == Skipped && !skipSays(r.Output, marker) {
				return fmt.Sprintf("%s without the %s probe saying %q", skip, k.Feature, strings.TrimSpace(marker)) + excerpt(r.Output)
			}
		}
	}
	for _, fb := range k.Fallback {
		if why := testProblem(res, fb, nil); why != "" {
			return fmt.Sprintf("%s (kernel lacks %s) and its fallback %s %s", skip, k.Feature, fb, why)
		}
	}
	return ""
}

// firstSkip describes the first skip of ref or of one of its subtests in
// any run ("skipped", "passed, but its subtest X skipped") with that
// skip's output, or "" when none skipped.
func firstSkip(res Results, ref string) (what, output string) {
	for _, r := range res.Tests[ref] {
		if r.Outcome == Skipped {
			return "skipped", r.Output
		}
	}
	for _, name := range subtests(res, ref) {
		for _, r := range res.Tests[name] {
			if r.Outcome == Skipped {
				return "passed, but its subtest " + strings.TrimPrefix(name, ref+"/") + " skipped", r.Output
			}
		}
	}
	return "", ""
}

// subtests are the results' names below ref, sorted.
func subtests(res Results, ref string) []string {
	var out []string
	for name := range res.Tests {
		if strings.HasPrefix(name, ref+"/") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// skipSays reports whether a skip's output holds a message that starts
// with marker: a line "    file_test.go:12: kernel lacks …" (go test's
// form) or a line starting with it. A marker in the middle of a line (a
// reason quoting another's) does not count.
func skipSays(output, marker string) bool {
	for _, line := range strings.Split(output, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, ": "); i > 0 && strings.Contains(line[:i], ".go:") {
			line = line[i+2:]
		}
		if strings.HasPrefix(line, marker) {
			return true
		}
	}
	return false
}

func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// excerpt is the last lines of a test's output, for a problem's message.
func excerpt(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) > 6 {
		lines = lines[len(lines)-6:]
	}
	s := strings.TrimSpace(strings.Join(lines, "\n"))
	if s == "" {
		return ""
	}
	return ":\n    " + strings.ReplaceAll(s, "\n", "\n    ")
}
