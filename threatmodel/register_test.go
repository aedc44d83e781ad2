package threatmodel

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRegisterValid(t *testing.T) {
	threats := Register()
	require.NoError(t, Validate(threats))
	require.NotEmpty(t, threats)

	sorted := append([]Threat(nil), threats...)
	sortByID(sorted)
	require.Equal(t, sorted, threats, "Register must return threats sorted by ID")

	// Each call builds a fresh register: mutating one result cannot leak.
	threats[0].Title = "mutated"
	threats[0].Tests[0] = "mutated"
	again := Register()
	require.NotEqual(t, "mutated", again[0].Title)
	require.NotEqual(t, "mutated", again[0].Tests[0])
}

// TestRegisterTestsExist holds the register to its word: every test a threat
// names must exist in the named package.
func TestRegisterTestsExist(t *testing.T) {
	root := moduleRoot(t)
	missing, err := missingTests(root, Register())
	require.NoError(t, err)
	if len(missing) > 0 {
		t.Fatalf("the threat register names %d test(s) that do not exist:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
}

func TestMissingTests(t *testing.T) {
	root := t.TempDir()
	write := func(rel, src string) {
		p := filepath.Join(root, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(src), 0o644))
	}
	write("a/b/x_test.go", `package b
import "testing"
func TestPresent(t *testing.T) {}
func TestWrongParam(b *testing.B) {}
func TestTwoParams(t *testing.T, x int) {}
func TestReturns(t *testing.T) error { return nil }
type s struct{}
func (s) TestMethod(t *testing.T) {}
`)
	write("a/b/y_test.go", `package b_test
import tt "testing"
func TestAliased(t *tt.T) {}
`)
	write("a/b/z.go", `package b
import "testing"
func TestNotInTestFile(t *testing.T) {}
`)
	write("c/broken_test.go", `package c
func TestX(t *testing.T) {`)

	tests := []struct {
		name        string
		refs        []string
		wantMissing []string
		wantErr     string
	}{
		{"present", []string{"a/b.TestPresent"}, nil, ""},
		{"aliased import", []string{"a/b.TestAliased"}, nil, ""},
		{"subtest checks its parent", []string{"a/b.TestPresent/case_one", "a/b.TestAbsent/x"}, []string{"a/b.TestAbsent/x"}, ""},
		{"absent", []string{"a/b.TestAbsent"}, []string{"a/b.TestAbsent"}, ""},
		{"not a test signature", []string{"a/b.TestWrongParam", "a/b.TestTwoParams", "a/b.TestReturns"},
			[]string{"a/b.TestWrongParam", "a/b.TestTwoParams", "a/b.TestReturns"}, ""},
		{"method is not a test", []string{"a/b.TestMethod"}, []string{"a/b.TestMethod"}, ""},
		{"only _test.go files count", []string{"a/b.TestNotInTestFile"}, []string{"a/b.TestNotInTestFile"}, ""},
		{"no such package", []string{"nope.TestX"}, []string{"nope.TestX"}, ""},
		{"unparsable test file", []string{"c.TestX"}, nil, "c/broken_test.go"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			missing, err := missingTests(root, []Threat{{ID: "T-001", Tests: tt.refs}})
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Len(t, missing, len(tt.wantMissing))
			for i, ref := range tt.wantMissing {
				require.True(t, strings.HasPrefix(missing[i], "T-001: "+ref+" "), "got %q, want it to name %s", missing[i], ref)
			}
		})
	}
}

// moduleRoot walks up from the package directory to the directory holding
// go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "no go.mod above the test's directory")
		dir = parent
	}
}

// missingTests returns, for every test reference in threats whose test
// function is not declared in the _test.go files of its package directory
// under root, a line "T-NNN: ref (why)". A subtest reference only needs its
// top-level test. A test file that does not parse is an error, not a miss.
func missingTests(root string, threats []Threat) ([]string, error) {
	declared := map[string]map[string]bool{} // package dir -> test funcs
	var missing []string
	for _, th := range threats {
		for _, raw := range th.Tests {
			ref, err := ParseTestRef(raw)
			if err != nil {
				return nil, err
			}
			funcs, ok := declared[ref.Package]
			if !ok {
				funcs, err = testFuncs(filepath.Join(root, filepath.FromSlash(ref.Package)))
				if err != nil {
					return nil, err
				}
				declared[ref.Package] = funcs
			}
			if !funcs[ref.Func] {
				missing = append(missing, fmt.Sprintf("%s: %s (no func %s(t *testing.T) in %s/*_test.go)", th.ID, raw, ref.Func, ref.Package))
			}
		}
	}
	return missing, nil
}

// testFuncs returns the names of the top-level functions of the form
// func TestX(t *testing.T) declared in dir's _test.go files. A missing
// directory has none.
func testFuncs(dir string) (map[string]bool, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return nil, fmt.Errorf("listing tests in %s: %w", dir, err)
	}
	funcs := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", name, err)
		}
		testing := testingImportName(f)
		if testing == "" {
			continue
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if ok && fn.Recv == nil && fn.Type.TypeParams == nil && takesOnlyTestingT(fn.Type, testing) {
				funcs[fn.Name.Name] = true
			}
		}
	}
	return funcs, nil
}

// testingImportName is the name file f uses for package testing, or "".
func testingImportName(f *ast.File) string {
	for _, imp := range f.Imports {
		if path, _ := strconv.Unquote(imp.Path.Value); path != "testing" {
			continue
		}
		if imp.Name != nil {
			return imp.Name.Name
		}
		return "testing"
	}
	return ""
}

func takesOnlyTestingT(ft *ast.FuncType, testing string) bool {
	if ft.Results != nil && len(ft.Results.List) > 0 {
		return false
	}
	if ft.Params == nil || len(ft.Params.List) != 1 || len(ft.Params.List[0].Names) > 1 {
		return false
	}
	star, ok := ft.Params.List[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	sel, ok := star.X.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == testing && sel.Sel.Name == "T"
}
