package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/threatmodel"
)

// TestThreatModelDocIsCurrent fails when docs/THREATMODEL.md is not what
// `unum threatmodel -o md` renders from the register and the shipped
// policy: the published threat model may not drift from the code.
func TestThreatModelDocIsCurrent(t *testing.T) {
	doc, err := ShippedThreatModel(context.Background())
	require.NoError(t, err)
	want := doc.Markdown()
	got, err := os.ReadFile(filepath.Join("..", "..", "docs", "THREATMODEL.md"))
	require.NoError(t, err)
	if string(got) != want {
		t.Fatalf("docs/THREATMODEL.md is stale: regenerate it with `make threatmodel` (./bin/unum threatmodel -o md > docs/THREATMODEL.md)")
	}
}

func TestThreatModelCommand(t *testing.T) {
	code, md, stderr := runCLI(t, "", "threatmodel")
	require.Equal(t, ExitOK, code, stderr)
	require.True(t, strings.HasPrefix(md, "# unum threat model\n"))

	code, js, stderr := runCLI(t, "", "threatmodel", "-o", "json")
	require.Equal(t, ExitOK, code, stderr)
	var doc threatmodel.Document
	require.NoError(t, json.Unmarshal([]byte(js), &doc))
	require.Len(t, doc.Threats, len(threatmodel.Register()))
	require.Equal(t, shippedSource, doc.Source)
	// The privileged actions come from evaluating the shipped policy: the
	// fixed set is there, granted to the break-glass admin, and an
	// unprivileged action is not.
	byAction := map[string]threatmodel.PrivilegedAction{}
	for _, a := range doc.PrivilegedActions {
		byAction[a.Action] = a
	}
	require.True(t, byAction["policy.apply"].Fixed)
	require.Equal(t, []string{"user/admin", "role admin"}, byAction["policy.apply"].GrantedTo)
	require.Contains(t, byAction["id.register"].GrantedTo, "role operator")
	require.NotContains(t, byAction["id.register"].GrantedTo, "any workload")
	require.Contains(t, byAction["node.renew"].GrantedTo, "any node (on itself)")
	require.Contains(t, byAction, "job.run", "privileged by the shipped policy, not by the fixed set")
	require.False(t, byAction["job.run"].Fixed)
	require.NotContains(t, byAction, "id.show")
	require.NotContains(t, byAction, "audit.read")

	code, _, stderr = runCLI(t, "", "threatmodel", "-o", "yaml")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, `-o "yaml": want md or json`)
	code, _, _ = runCLI(t, "", "threatmodel", "extra")
	require.Equal(t, ExitUsage, code)
}

func TestThreatModelCheckCommand(t *testing.T) {
	// Without results it says so and skips.
	code, out, stderr := runCLI(t, "", "threatmodel", "check")
	require.Equal(t, ExitOK, code, stderr)
	require.Contains(t, out, "no --results file")
	require.Contains(t, out, "skipping")

	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.json")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	code, _, stderr = runCLI(t, "", "threatmodel", "check", "--results", empty)
	require.Equal(t, ExitError, code)
	require.Contains(t, stderr, "empty.json: no go test -json events")

	code, _, stderr = runCLI(t, "", "threatmodel", "check", "--results", filepath.Join(dir, "missing.json"))
	require.Equal(t, ExitError, code)
	require.Contains(t, stderr, "missing.json")

	// A run where one mitigated threat's test failed and another's skipped.
	reg := threatmodel.Register()
	var failed, skipped string
	for _, th := range reg {
		if th.Status == threatmodel.Mitigated && th.Kernel == nil {
			if failed == "" {
				failed = th.Tests[0]
			} else if skipped == "" && th.Tests[0] != failed {
				skipped = th.Tests[0]
				break
			}
		}
	}
	var lines []string
	for _, th := range reg {
		for _, ref := range th.Tests {
			action := "pass"
			switch ref {
			case failed:
				action = "fail"
			case skipped:
				action = "skip"
			}
			lines = append(lines, jsonEvent(t, "run", ref), jsonEvent(t, action, ref))
		}
	}
	run := filepath.Join(dir, "run.json")
	require.NoError(t, os.WriteFile(run, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	code, _, stderr = runCLI(t, "", "threatmodel", "check", "--results", run)
	require.Equal(t, ExitError, code)
	require.Contains(t, stderr, failed+": failed")
	require.Contains(t, stderr, skipped+": skipped")
	require.Contains(t, stderr, "--- FAIL: "+failed)
	require.Contains(t, stderr, "did not pass")

	// The same run with everything passing (and the kernel-dependent
	// tests skipping as their probe would, fallbacks passing) is clean.
	lines = lines[:0]
	for _, th := range reg {
		for _, ref := range th.Tests {
			if th.Kernel != nil && slices.Contains(th.Kernel.Tests, ref) {
				lines = append(lines, jsonEvent(t, "run", ref), jsonOutput(t, ref, threatmodel.KernelLacks(th.Kernel.Feature)+"probe said no\n"), jsonEvent(t, "skip", ref))
				continue
			}
			lines = append(lines, jsonEvent(t, "run", ref), jsonEvent(t, "pass", ref))
		}
	}
	require.NoError(t, os.WriteFile(run, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	code, out, stderr = runCLI(t, "", "threatmodel", "check", "--results", run)
	require.Equal(t, ExitOK, code, stderr)
	require.Contains(t, out, "mitigated threats passed")
}

func splitRef(t *testing.T, ref string) (pkg, test string) {
	r, err := threatmodel.ParseTestRef(ref)
	require.NoError(t, err)
	test = r.Func
	if r.Subtest != "" {
		test += "/" + r.Subtest
	}
	return threatmodel.Module + "/" + r.Package, test
}

func jsonEvent(t *testing.T, action, ref string) string {
	pkg, test := splitRef(t, ref)
	b, err := json.Marshal(map[string]string{"Action": action, "Package": pkg, "Test": test})
	require.NoError(t, err)
	return string(b)
}

func jsonOutput(t *testing.T, ref, output string) string {
	pkg, test := splitRef(t, ref)
	b, err := json.Marshal(map[string]string{"Action": "output", "Package": pkg, "Test": test, "Output": output})
	require.NoError(t, err)
	return string(b)
}
