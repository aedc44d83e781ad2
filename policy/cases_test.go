package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A bundle case is a folder below testdata/bundles: the bundle's files
// (*.rego, data.json) and an expect.txt, one directive a line, # comments:
//
//	base: builtin       start from the shipped bundle, the folder's files on top
//	drop: FILE          leave FILE of the shipped bundle out
//	stage: STAGE        the first stage that refuses the bundle: load, compile,
//	                    test, guard; ok when none does
//	problem: WHERE MSG  a problem of that stage: WHERE is FILE:LINE:, FILE: or
//	                    nothing; MSG a substring of its message
//	count: N            the stage reports exactly N problems
//	eval: SUBJECT ACTION RESOURCE => OUTCOME...
//	                    when an engine compiles, what Eval returns. SUBJECT is
//	                    a SPIFFE path (user/NAME[@ROLE], node/NAME,
//	                    ns/NS/job/NAME, system/NAME); OUTCOME is allow or
//	                    deny, privileged or unprivileged, or nodecision
//	                    (ErrNoDecision)
//
// The stages run in the order an apply runs them: load (Validate), compile
// (NewEngine), test (Bundle.Test), guard (Guard).
type bundleCase struct {
	name     string
	bundle   *Bundle
	loadErr  error // from loading the bundle, when it failed there
	stage    string
	problems []wantProblem
	count    int // -1 when not checked
	evals    []wantEval
}

type wantProblem struct {
	file string
	line int
	msg  string
	text string // the directive, for failure messages
}

func (w wantProblem) matches(p Problem) bool {
	return (w.file == "" || w.file == p.File) && (w.line == 0 || w.line == p.Line) && strings.Contains(p.Msg, w.msg)
}

type wantEval struct {
	in                         Input
	allow, privileged, noDecis bool
	text                       string
}

var problemRe = regexp.MustCompile(`^(\S+\.(?:rego|json))(?::(\d+))?: (.*)$`)

func readCase(t *testing.T, dir string) bundleCase {
	t.Helper()
	c := bundleCase{name: filepath.Base(dir), count: -1}
	f, err := os.Open(filepath.Join(dir, "expect.txt"))
	require.NoError(t, err)
	defer f.Close()
	base := false
	var drop []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, ": ")
		require.True(t, ok, "%s/expect.txt:%d: want KEY: VALUE", c.name, n)
		switch key {
		case "base":
			require.Equal(t, "builtin", val, "%s/expect.txt:%d", c.name, n)
			base = true
		case "drop":
			drop = append(drop, val)
		case "count":
			c.count, err = strconv.Atoi(val)
			require.NoError(t, err, "%s/expect.txt:%d", c.name, n)
		case "stage":
			c.stage = val
		case "problem":
			w := wantProblem{msg: val, text: val}
			if m := problemRe.FindStringSubmatch(val); m != nil {
				w.file, w.msg = m[1], m[3]
				if m[2] != "" {
					w.line, _ = strconv.Atoi(m[2])
				}
			}
			c.problems = append(c.problems, w)
		case "eval":
			c.evals = append(c.evals, parseEval(t, val))
		default:
			t.Fatalf("%s/expect.txt:%d: unknown directive %q", c.name, n, key)
		}
	}
	require.NoError(t, sc.Err())
	require.Contains(t, []string{"load", "compile", "test", "guard", "ok"}, c.stage, "%s/expect.txt: stage", c.name)
	require.True(t, base || len(drop) == 0, "%s/expect.txt: drop needs base", c.name)
	if !base {
		c.bundle, c.loadErr = LoadDir(dir)
		return c
	}
	// The folder alone need not be a bundle (the shipped case has no file
	// of its own): its files go on top of the shipped ones.
	b := Builtin()
	for _, name := range drop {
		require.Contains(t, b.Files, name, "drop: %s", name)
		delete(b.Files, name)
	}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".rego") || e.Name() == "data.json" {
			b.Files[e.Name()], err = os.ReadFile(filepath.Join(dir, e.Name()))
			require.NoError(t, err)
		}
	}
	c.bundle, c.loadErr = b, b.Validate()
	return c
}

// parseEval reads "SUBJECT ACTION RESOURCE => OUTCOME...".
func parseEval(t *testing.T, s string) wantEval {
	t.Helper()
	lhs, rhs, ok := strings.Cut(s, " => ")
	require.True(t, ok, "eval %q: want ... => OUTCOME", s)
	f := strings.Fields(lhs)
	require.Len(t, f, 3, "eval %q: want SUBJECT ACTION RESOURCE", s)
	res, err := ParseResource(f[2])
	require.NoError(t, err)
	w := wantEval{text: s, in: Input{
		Subject:    caseSubject(t, f[0]),
		Action:     f[1],
		Resource:   res,
		Delegation: []Actor{},
		Context:    Context{Node: "n1", Time: time.Unix(1_800_000_000, 0), RequestID: "case"},
	}}
	for _, o := range strings.Fields(rhs) {
		switch o {
		case "allow":
			w.allow = true
		case "deny", "unprivileged":
		case "privileged":
			w.privileged = true
		case "nodecision":
			w.noDecis = true
		default:
			t.Fatalf("eval %q: unknown outcome %q", s, o)
		}
	}
	return w
}

func caseSubject(t *testing.T, p string) Subject {
	t.Helper()
	p, role, _ := strings.Cut(p, "@")
	s := Subject{ID: "spiffe://unum.test/" + p, Attributes: map[string]string{}}
	if role != "" {
		s.Attributes["role"] = role
	}
	seg := strings.Split(p, "/")
	switch {
	case len(seg) == 2 && seg[0] == "user":
		s.Kind, s.Name = "user", seg[1]
	case len(seg) == 2 && seg[0] == "node":
		s.Kind, s.Name = "node", seg[1]
	case len(seg) == 2 && seg[0] == "system":
		s.Kind, s.Name = "system", seg[1]
	case len(seg) == 4 && seg[0] == "ns" && seg[2] == "job":
		s.Kind, s.Namespace, s.Name = "workload", seg[1], "job/"+seg[3]
	default:
		t.Fatalf("subject %q: want user/NAME, node/NAME, system/NAME or ns/NS/job/NAME", p)
	}
	return s
}

// runStages runs the stages of an apply on b and returns the first that
// refused it ("ok" when none did), its problems and the engine when one
// compiled.
func runStages(t *testing.T, loadErr error, b *Bundle) (string, []Problem, *Engine) {
	t.Helper()
	ctx := context.Background()
	asBundleErr := func(stage string, err error) []Problem {
		var be *BundleError
		require.True(t, errors.As(err, &be), "%s: %v is not a *BundleError", stage, err)
		require.Equal(t, stage, be.Stage, "%v", err)
		require.NotEmpty(t, be.Problems)
		return be.Problems
	}
	if loadErr != nil {
		return "load", asBundleErr("load", loadErr), nil
	}
	if err := b.Validate(); err != nil {
		return "load", asBundleErr("load", err), nil
	}
	e, err := NewEngine(ctx, b, 1)
	if err != nil {
		return "compile", asBundleErr("compile", err), nil
	}
	rep, err := b.Test(ctx)
	require.NoError(t, err, "the bundle compiled for the engine but not for its tests")
	if rep.Failed > 0 {
		require.Len(t, rep.Failures, rep.Failed)
		return "test", rep.Failures, e
	}
	if ps := Guard(ctx, e, testTD, time.Unix(1_800_000_000, 0), Cluster{}); len(ps) > 0 {
		return "guard", ps, e
	}
	return "ok", nil, e
}

func checkCase(t *testing.T, c bundleCase) {
	t.Helper()
	stage, got, e := runStages(t, c.loadErr, c.bundle)
	var all bytes.Buffer
	for _, p := range got {
		fmt.Fprintf(&all, "\n  %s", p)
	}
	require.Equal(t, c.stage, stage, "problems:%s", all.String())
	if stage == "ok" {
		require.Empty(t, c.problems, "an ok case lists no problems")
	} else {
		require.NotEmpty(t, c.problems, "a refused case names at least one expected problem")
	}
	if c.count >= 0 {
		require.Len(t, got, c.count, "problems:%s", all.String())
	}
	for _, w := range c.problems {
		found := false
		for _, p := range got {
			found = found || w.matches(p)
		}
		require.True(t, found, "no problem matches %q; got:%s", w.text, all.String())
	}
	if len(c.evals) > 0 {
		require.NotNil(t, e, "eval lines need a bundle that compiles")
	}
	for _, w := range c.evals {
		r, err := e.Eval(context.Background(), &w.in)
		if w.noDecis {
			require.ErrorIs(t, err, ErrNoDecision, w.text)
			continue
		}
		require.NoError(t, err, w.text)
		require.Equal(t, w.allow, r.Allow, "%s: reasons %v", w.text, r.Reasons)
		require.Equal(t, w.privileged, r.Privileged, w.text)
		require.NotEmpty(t, r.Reasons, w.text)
	}
}

// TestBundleCases runs every case in testdata/bundles, and the cases too
// large to commit, which are generated here.
func TestBundleCases(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "bundles", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			checkCase(t, readCase(t, dir))
		})
	}

	minimal := []byte("package unum.authz\n\nimport rego.v1\n\ndecision := {\"allow\": false, \"privileged\": false, \"reasons\": []}\n")
	t.Run("generated/over-max-bytes-dir", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "authz.rego"), minimal, 0o644))
		pad := append([]byte("package pad\n\n"), bytes.Repeat([]byte("# padding\n"), MaxBundleBytes/10)...)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "pad.rego"), pad, 0o644))
		_, err := LoadDir(dir)
		checkCase(t, bundleCase{loadErr: err, stage: "load", count: 1, problems: []wantProblem{
			{file: "pad.rego", msg: fmt.Sprintf("bundle exceeds %d bytes", MaxBundleBytes), text: "pad.rego: bundle exceeds"},
		}})
	})
	t.Run("generated/over-max-bytes-files", func(t *testing.T) {
		// A bundle that arrives over the API, not from a folder.
		b := &Bundle{Files: map[string][]byte{"authz.rego": minimal, "pad.rego": bytes.Repeat([]byte("#"), MaxBundleBytes)}}
		checkCase(t, bundleCase{bundle: b, stage: "load", count: 1, problems: []wantProblem{
			{msg: fmt.Sprintf("at most %d allowed", MaxBundleBytes), text: "at most MaxBundleBytes"},
		}})
	})
	t.Run("generated/exactly-max-bytes", func(t *testing.T) {
		b := &Bundle{Files: map[string][]byte{"authz.rego": minimal}}
		b.Files["pad.rego"] = append([]byte("package pad\n"), bytes.Repeat([]byte("#"), MaxBundleBytes-len(minimal)-len("package pad\n"))...)
		require.Equal(t, MaxBundleBytes, b.Size())
		require.NoError(t, b.Validate())
	})
	t.Run("generated/too-many-files", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "authz.rego"), minimal, 0o644))
		for i := range MaxBundleFiles {
			sub := filepath.Join(dir, fmt.Sprintf("p%03d", i))
			require.NoError(t, os.Mkdir(sub, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(sub, "data.json"), []byte(`{}`), 0o644))
		}
		_, err := LoadDir(dir)
		checkCase(t, bundleCase{loadErr: err, stage: "load", count: 1, problems: []wantProblem{
			{msg: fmt.Sprintf("bundle has %d files, at most %d allowed", MaxBundleFiles+1, MaxBundleFiles), text: "too many files"},
		}})
	})
}
