package threatmodel

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testdata/results.json is real `go test -json ./...` output of a module
// named like ours, with two packages: a (a pass, a failure, a plain skip,
// a kernel-feature skip, subtests) and b (a test that panics, so it and
// the tests after it never finish).
func readTestResults(t *testing.T) Results {
	t.Helper()
	f, err := os.Open("testdata/results.json")
	require.NoError(t, err)
	defer f.Close()
	var res Results
	require.NoError(t, res.ReadResults(f))
	return res
}

func TestReadResults(t *testing.T) {
	res := readTestResults(t)
	outcome := func(ref string) Outcome {
		runs := res.Tests[ref]
		require.Len(t, runs, 1, ref)
		return runs[0].Outcome
	}
	require.Equal(t, Passed, outcome("a.TestPass"))
	require.Equal(t, Failed, outcome("a.TestFail"))
	require.Contains(t, res.Tests["a.TestFail"][0].Output, "boom happened")
	require.Equal(t, Skipped, outcome("a.TestSkip"))
	require.Contains(t, res.Tests["a.TestSkip"][0].Output, "needs root")
	require.Equal(t, Passed, outcome("a.TestSub/one_case"))
	require.Equal(t, Skipped, outcome("a.TestSub/two"))
	require.Equal(t, Failed, outcome("b.TestPanics"))
	require.Empty(t, res.Tests["b.TestAfter"], "a test after a panic never ran")
	require.Equal(t, []Outcome{Failed}, res.Packages["a"])
	require.Equal(t, []Outcome{Failed}, res.Packages["b"])

	// A second run adds to the first: the race run after the plain one.
	f, err := os.Open("testdata/results.json")
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, res.ReadResults(f))
	require.Len(t, res.Tests["a.TestPass"], 2)
}

func TestReadResultsRefusesNonResults(t *testing.T) {
	for _, in := range []string{"", "ok  \tgithub.com/unumos/unum/a\t0.1s\n", "{}\n"} {
		var res Results
		require.ErrorContains(t, res.ReadResults(strings.NewReader(in)), "no go test -json events", "%q", in)
	}
}

func TestReadResultsUnfinished(t *testing.T) {
	// A package killed by its timeout: the test started and never ended.
	in := `{"Action":"start","Package":"github.com/unumos/unum/c"}
{"Action":"run","Package":"github.com/unumos/unum/c","Test":"TestSlow"}
{"Action":"output","Package":"github.com/unumos/unum/c","Test":"TestSlow","Output":"panic: test timed out after 1s\n"}
{"Action":"fail","Package":"github.com/unumos/unum/c"}
{"Action":"run","Package":"example.com/other","Test":"TestElsewhere"}
`
	var res Results
	require.NoError(t, res.ReadResults(strings.NewReader(in)))
	require.Equal(t, []TestResult{{Outcome: Unfinished, Output: "panic: test timed out after 1s\n"}}, res.Tests["c.TestSlow"])
	require.Len(t, res.Tests, 1, "tests of other modules are not ours")
}

func TestCheckResults(t *testing.T) {
	res := readTestResults(t)
	mitigated := func(tests ...string) Threat {
		th := validThreat()
		th.Tests = tests
		return th
	}
	lsm := func(tests []string, skipping, fallback []string) Threat {
		th := mitigated(tests...)
		th.Kernel = &KernelDependency{Feature: "bpf-lsm", Tests: skipping, Fallback: fallback}
		return th
	}
	tests := []struct {
		name   string
		threat Threat
		want   []string // one substring per problem, in order
	}{
		{"passed", mitigated("a.TestPass"), nil},
		{"passed subtest", mitigated("a.TestSub/one_case"), nil},
		{"failed", mitigated("a.TestFail"), []string{"a.TestFail: failed:\n    "}},
		{"skipped", mitigated("a.TestSkip"), []string{"a.TestSkip: skipped:\n    "}},
		{"skipped subtest", mitigated("a.TestSub/two"), []string{"a.TestSub/two: skipped"}},
		{"panicked", mitigated("b.TestPanics"), []string{"b.TestPanics: failed"}},
		{"never ran", mitigated("b.TestAfter", "nope.TestX"), []string{"b.TestAfter: did not run", "nope.TestX: did not run"}},
		{"kernel skip without the dependency", mitigated("a.TestKernel"), []string{"a.TestKernel: skipped"}},
		{"kernel skip with a passing fallback", lsm([]string{"a.TestKernel", "a.TestPass"}, []string{"a.TestKernel"}, []string{"a.TestPass"}), nil},
		{"kernel skip with a failing fallback", lsm([]string{"a.TestKernel", "a.TestFail"}, []string{"a.TestKernel"}, []string{"a.TestFail"}),
			[]string{"a.TestKernel: skipped (kernel lacks bpf-lsm) and its fallback a.TestFail failed", "a.TestFail: failed"}},
		{"kernel skip with a skipped fallback", lsm([]string{"a.TestKernel", "a.TestSkip"}, []string{"a.TestKernel"}, []string{"a.TestSkip"}),
			[]string{"its fallback a.TestSkip skipped", "a.TestSkip: skipped"}},
		{"another skip is not the probe's", lsm([]string{"a.TestSkip", "a.TestPass"}, []string{"a.TestSkip"}, []string{"a.TestPass"}),
			[]string{`a.TestSkip: skipped without the bpf-lsm probe saying "kernel lacks bpf-lsm:"`}},
		{"another feature's marker does not count", func() Threat {
			th := lsm([]string{"a.TestKernel", "a.TestPass"}, []string{"a.TestKernel"}, []string{"a.TestPass"})
			th.Kernel.Feature = "landlock"
			return th
		}(), []string{"without the landlock probe"}},
		{"a failing kernel test is a failure", lsm([]string{"a.TestFail", "a.TestPass"}, []string{"a.TestFail"}, []string{"a.TestPass"}),
			[]string{"a.TestFail: failed"}},
		{"open threats claim nothing", func() Threat { th := mitigated("a.TestFail"); th.Status = Open; return th }(), nil},
		{"accepted threats claim nothing", func() Threat { th := mitigated("a.TestFail"); th.Status, th.Reason = Accepted, "why"; return th }(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := CheckResults([]Threat{tt.threat}, res)
			require.Len(t, problems, len(tt.want), "%v", problems)
			for i, want := range tt.want {
				require.Contains(t, problems[i].String(), want)
				require.True(t, strings.HasPrefix(problems[i].String(), "T-001: "))
			}
		})
	}
}

func TestCheckResultsEveryRunCounts(t *testing.T) {
	// The plain run and the race run: a failure or a skip in either is
	// the run's, whatever the other did.
	res := Results{Tests: map[string][]TestResult{
		"a.TestFlaky":    {{Outcome: Passed}, {Outcome: Failed, Output: "race detected"}},
		"a.TestRaceSkip": {{Outcome: Passed}, {Outcome: Skipped, Output: "too slow under -race"}},
		"a.TestBoth":     {{Outcome: Passed}, {Outcome: Passed}},
	}}
	th := validThreat()
	th.Tests = []string{"a.TestFlaky", "a.TestRaceSkip", "a.TestBoth"}
	problems := CheckResults([]Threat{th}, res)
	require.Len(t, problems, 2)
	require.Contains(t, problems[0].String(), "a.TestFlaky: failed:\n    race detected")
	require.Contains(t, problems[1].String(), "a.TestRaceSkip: skipped:\n    too slow under -race")
}

func TestCheckResultsSubtests(t *testing.T) {
	// A parent passes when its subtests skip: the proof it names was not
	// made.
	res := Results{Tests: map[string][]TestResult{
		"a.TestP":            {{Outcome: Passed}},
		"a.TestP/root_only":  {{Outcome: Skipped, Output: "    x_test.go:9: needs root\n"}},
		"a.TestP/fine":       {{Outcome: Passed}},
		"a.TestPx":           {{Outcome: Passed}}, // not a subtest of TestP
		"a.TestK":            {{Outcome: Passed}},
		"a.TestK/lsm":        {{Outcome: Skipped, Output: "    x_test.go:9: kernel lacks bpf-lsm: probe said no\n"}},
		"a.TestQ":            {{Outcome: Passed}},
		"a.TestQ/quoted":     {{Outcome: Skipped, Output: "    x_test.go:9: BTF missing (kernel lacks bpf-lsm: is what we would say)\n"}},
		"a.TestFallback":     {{Outcome: Passed}},
		"a.TestPx/only_this": {{Outcome: Passed}},
	}}
	plain := validThreat()
	plain.Tests = []string{"a.TestP", "a.TestPx"}
	problems := CheckResults([]Threat{plain}, res)
	require.Len(t, problems, 1)
	require.Contains(t, problems[0].String(), "a.TestP: passed, but its subtest root_only skipped:\n    x_test.go:9: needs root")

	kernel := validThreat()
	kernel.Tests = []string{"a.TestK", "a.TestQ", "a.TestFallback"}
	kernel.Kernel = &KernelDependency{Feature: "bpf-lsm", Tests: []string{"a.TestK", "a.TestQ"}, Fallback: []string{"a.TestFallback"}}
	problems = CheckResults([]Threat{kernel}, res)
	require.Len(t, problems, 1, "a subtest's probe skip is excused; a marker quoted mid-line is not: %v", problems)
	require.Contains(t, problems[0].String(), `a.TestQ: passed, but its subtest quoted skipped without the bpf-lsm probe saying "kernel lacks bpf-lsm:"`)
}

func TestReadResultsKeepsTheEndOfLongOutput(t *testing.T) {
	var in strings.Builder
	in.WriteString(`{"Action":"run","Package":"github.com/unumos/unum/a","Test":"TestChatty"}` + "\n")
	for i := 0; i < 5000; i++ {
		in.WriteString(`{"Action":"output","Package":"github.com/unumos/unum/a","Test":"TestChatty","Output":"noise noise noise noise\n"}` + "\n")
	}
	in.WriteString(`{"Action":"output","Package":"github.com/unumos/unum/a","Test":"TestChatty","Output":"    a_test.go:1: kernel lacks bpf-lsm: no\n"}` + "\n")
	in.WriteString(`{"Action":"skip","Package":"github.com/unumos/unum/a","Test":"TestChatty"}` + "\n")
	var res Results
	require.NoError(t, res.ReadResults(strings.NewReader(in.String())))
	out := res.Tests["a.TestChatty"][0].Output
	require.LessOrEqual(t, len(out), maxOutput)
	require.True(t, strings.HasSuffix(out, "kernel lacks bpf-lsm: no\n"))
}
