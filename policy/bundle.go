package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/unumos/unum/policy/builtin"
)

// Limits on a bundle. The whole bundle is stored as one etcd value (whose
// default request limit is 1.5 MiB) and compiled on every node.
const (
	MaxBundleBytes = 1 << 20
	MaxBundleFiles = 256
)

// Bundle is a policy as applied: Rego modules (tests included, *_test.rego)
// and data.json documents, by slash-separated path relative to the bundle
// root. A data.json in folder a/b is loaded at data.a.b.
type Bundle struct {
	Files map[string][]byte
}

// Problem is one thing wrong with a bundle, located where possible.
type Problem struct {
	File string
	Line int
	Msg  string
}

func (p Problem) String() string {
	switch {
	case p.File != "" && p.Line > 0:
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	case p.File != "":
		return p.File + ": " + p.Msg
	}
	return p.Msg
}

// BundleError lists every problem found; nothing is applied.
type BundleError struct {
	Stage    string // "load", "compile", "test", "guard"
	Problems []Problem
}

func (e *BundleError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy bundle refused (%s)", e.Stage)
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

func bundleErr(stage string, ps ...Problem) error { return &BundleError{Stage: stage, Problems: ps} }

// Builtin returns the shipped bundle (policy/builtin).
func Builtin() *Bundle {
	b, err := FromFS(builtin.FS, ".")
	if err != nil {
		panic("policy: shipped bundle does not load: " + err.Error())
	}
	return b
}

// LoadDir reads the bundle rooted at dir: every *.rego file and every
// data.json below it. Other files (a README, editor backups) are ignored;
// symlinks and hidden folders are not followed.
func LoadDir(dir string) (*Bundle, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("policy bundle: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("policy bundle: %s is not a folder", dir)
	}
	return FromFS(os.DirFS(dir), ".")
}

// FromFS reads a bundle from fsys below root.
func FromFS(fsys fs.FS, root string) (*Bundle, error) {
	b := &Bundle{Files: map[string][]byte{}}
	var total int
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && strings.HasPrefix(name, ".") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !(strings.HasSuffix(name, ".rego") || name == "data.json") {
			return nil
		}
		rel := strings.TrimPrefix(p, root+"/")
		if root == "." {
			rel = p
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		total += len(data)
		if total > MaxBundleBytes {
			return bundleErr("load", Problem{File: rel, Msg: fmt.Sprintf("bundle exceeds %d bytes", MaxBundleBytes)})
		}
		b.Files[rel] = data
		return nil
	})
	if err != nil {
		var be *BundleError
		if errors.As(err, &be) {
			return nil, be
		}
		return nil, fmt.Errorf("policy bundle: %w", err)
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return b, nil
}

// Validate checks the bundle's shape (sizes, names, data.json syntax). It
// does not compile it; Compile does.
func (b *Bundle) Validate() error {
	var ps []Problem
	var total int
	if len(b.Files) > MaxBundleFiles {
		ps = append(ps, Problem{Msg: fmt.Sprintf("bundle has %d files, at most %d allowed", len(b.Files), MaxBundleFiles)})
	}
	rego := 0
	for _, name := range b.names() {
		data := b.Files[name]
		total += len(data)
		clean := path.Clean(name)
		switch {
		case clean != name || strings.HasPrefix(name, "/") || strings.HasPrefix(name, "../") || name == "..":
			ps = append(ps, Problem{File: name, Msg: "file name must be a clean relative path"})
		case !utf8.ValidString(name) || !utf8.Valid(data):
			// The bundle is stored and served as JSON text, which would
			// replace invalid bytes and so change the bundle and its digest.
			ps = append(ps, Problem{File: strings.ToValidUTF8(name, "\ufffd"), Msg: "file name and content must be UTF-8 text"})
		case strings.HasSuffix(name, ".rego"):
			rego++
		case path.Base(name) == "data.json":
			var v any
			if err := util.UnmarshalJSON(data, &v); err != nil {
				ps = append(ps, Problem{File: name, Msg: "invalid JSON: " + err.Error()})
			} else if _, ok := v.(map[string]any); !ok {
				ps = append(ps, Problem{File: name, Msg: "data.json must hold a JSON object"})
			}
		default:
			ps = append(ps, Problem{File: name, Msg: "only .rego files and data.json belong in a bundle"})
		}
	}
	if total > MaxBundleBytes {
		ps = append(ps, Problem{Msg: fmt.Sprintf("bundle is %d bytes, at most %d allowed", total, MaxBundleBytes)})
	}
	if rego == 0 && len(ps) == 0 {
		ps = append(ps, Problem{Msg: "bundle has no .rego file"})
	}
	if len(ps) > 0 {
		return bundleErr("load", ps...)
	}
	return nil
}

func (b *Bundle) names() []string {
	names := make([]string, 0, len(b.Files))
	for n := range b.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Size is the bundle's total size in bytes.
func (b *Bundle) Size() int {
	n := 0
	for _, d := range b.Files {
		n += len(d)
	}
	return n
}

// Digest is the bundle's sha256, hex: over every file's name and content,
// in name order, each length-prefixed so no two bundles share a digest.
func (b *Bundle) Digest() string {
	h := sha256.New()
	for _, name := range b.names() {
		fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(b.Files[name]))
		h.Write(b.Files[name])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Equal reports whether a and b hold the same files.
func (b *Bundle) Equal(o *Bundle) bool {
	if len(b.Files) != len(o.Files) {
		return false
	}
	for n, d := range b.Files {
		if od, ok := o.Files[n]; !ok || !bytes.Equal(d, od) {
			return false
		}
	}
	return true
}

// inputSchemaJSON is the JSON schema of Input. Policies are type-checked
// against it, so a rule reading a field unum never sends
// (input.subject.roles, a typo) is refused at apply instead of silently
// never matching.
//
//go:embed input.schema.json
var inputSchemaJSON []byte

func schemaSet() (*ast.SchemaSet, error) {
	var schema any
	if err := util.UnmarshalJSON(inputSchemaJSON, &schema); err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	ss := ast.NewSchemaSet()
	ss.Put(ast.SchemaRootRef, schema)
	return ss, nil
}

// compiled is a parsed and compiled bundle.
type compiled struct {
	modules  map[string]*ast.Module
	compiler *ast.Compiler
	data     map[string]any
}

// parse parses every module and data document.
func (b *Bundle) parse() (map[string]*ast.Module, map[string]any, error) {
	if err := b.Validate(); err != nil {
		return nil, nil, err
	}
	var ps []Problem
	modules := map[string]*ast.Module{}
	data := map[string]any{}
	for _, name := range b.names() {
		src := b.Files[name]
		if strings.HasSuffix(name, ".rego") {
			m, err := ast.ParseModuleWithOpts(name, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				ps = append(ps, astProblems(err)...)
				continue
			}
			modules[name] = m
			continue
		}
		var doc map[string]any
		if err := util.UnmarshalJSON(src, &doc); err != nil {
			ps = append(ps, Problem{File: name, Msg: err.Error()})
			continue
		}
		if err := mergeData(data, path.Dir(name), doc); err != nil {
			ps = append(ps, Problem{File: name, Msg: err.Error()})
		}
	}
	if len(ps) > 0 {
		return nil, nil, bundleErr("compile", ps...)
	}
	return modules, data, nil
}

func mergeData(root map[string]any, dir string, doc map[string]any) error {
	at := root
	if dir != "." {
		for _, seg := range strings.Split(dir, "/") {
			next, ok := at[seg]
			if !ok {
				m := map[string]any{}
				at[seg] = m
				at = m
				continue
			}
			m, ok := next.(map[string]any)
			if !ok {
				return fmt.Errorf("data.%s is defined twice", strings.ReplaceAll(dir, "/", "."))
			}
			at = m
		}
	}
	for k, v := range doc {
		if _, dup := at[k]; dup {
			return fmt.Errorf("data key %q is defined twice", k)
		}
		at[k] = v
	}
	return nil
}

// compile parses and compiles the bundle with the input schema.
func (b *Bundle) compile() (*compiled, error) { return b.compileModules(true) }

// compileModules compiles the bundle's modules, its *_test.rego files only
// when withTests: an engine is built without them (tests run in Test), so
// nothing in a test file can take part in a decision.
func (b *Bundle) compileModules(withTests bool) (*compiled, error) {
	modules, data, err := b.parse()
	if err != nil {
		return nil, err
	}
	if !withTests {
		for name := range modules {
			if strings.HasSuffix(name, "_test.rego") {
				delete(modules, name)
			}
		}
	}
	ss, err := schemaSet()
	if err != nil {
		return nil, err
	}
	c := ast.NewCompiler().WithSchemas(ss).WithDefaultRegoVersion(ast.RegoV1)
	c.Compile(modules)
	if c.Failed() {
		return nil, bundleErr("compile", astProblems(c.Errors)...)
	}
	if len(c.GetRulesExact(decisionRef)) == 0 && len(c.GetRules(decisionRef)) == 0 {
		return nil, bundleErr("compile", Problem{Msg: "bundle does not define " + DecisionQuery})
	}
	return &compiled{modules: modules, compiler: c, data: data}, nil
}

func astProblems(err error) []Problem {
	var errs ast.Errors
	if !errors.As(err, &errs) {
		var one *ast.Error
		if errors.As(err, &one) {
			errs = ast.Errors{one}
		} else {
			return []Problem{{Msg: err.Error()}}
		}
	}
	ps := make([]Problem, 0, len(errs))
	for _, e := range errs {
		p := Problem{Msg: e.Message}
		if e.Location != nil {
			p.File, p.Line = e.Location.File, e.Location.Row
		}
		ps = append(ps, p)
	}
	return ps
}

// TestReport is the outcome of a bundle's Rego tests.
type TestReport struct {
	Passed, Failed int
	// Failures are the failing or erroring tests, at file:line.
	Failures []Problem
	// Coverage is the percentage of policy lines (tests excluded) the tests
	// evaluated, and NotCovered the lines they did not, at file:line.
	Coverage   float64
	NotCovered []Problem
	Duration   time.Duration
}

// Test runs the bundle's Rego unit tests (rules named test_*) with OPA's
// tester and reports failures and coverage. A bundle with failing tests is
// refused by Apply.
func (b *Bundle) Test(ctx context.Context) (*TestReport, error) {
	c, err := b.compile()
	if err != nil {
		return nil, err
	}
	store := inmem.NewFromObject(c.data)
	cov := cover.New()
	ss, _ := schemaSet()
	runner := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithSchemas(ss).WithDefaultRegoVersion(ast.RegoV1)).
		SetStore(store).
		SetCoverageQueryTracer(cov).
		SetTimeout(30 * time.Second).
		SetModules(c.modules)
	start := time.Now()
	txn, err := store.NewTransaction(ctx, storage.TransactionParams{})
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return nil, bundleErr("test", astProblems(err)...)
	}
	rep := &TestReport{}
	for r := range ch {
		if r.Pass() {
			rep.Passed++
			continue
		}
		rep.Failed++
		p := Problem{Msg: r.Package + "." + r.Name + ": " + outcome(r)}
		if r.Location != nil {
			p.File, p.Line = r.Location.File, r.Location.Row
		}
		rep.Failures = append(rep.Failures, p)
	}
	rep.Duration = time.Since(start)
	sort.Slice(rep.Failures, func(i, j int) bool { return rep.Failures[i].String() < rep.Failures[j].String() })
	policyOnly := map[string]*ast.Module{}
	for n, m := range c.modules {
		if !strings.HasSuffix(n, "_test.rego") {
			policyOnly[n] = m
		}
	}
	cr := cov.Report(policyOnly)
	rep.Coverage = cr.Coverage
	files := make([]string, 0, len(cr.Files))
	for f := range cr.Files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		for _, rg := range cr.Files[f].NotCovered {
			rep.NotCovered = append(rep.NotCovered, Problem{File: f, Line: rg.Start.Row, Msg: "not covered"})
		}
	}
	return rep, nil
}

func outcome(r *tester.Result) string {
	switch {
	case r.Error != nil:
		return "error: " + r.Error.Error()
	case r.Fail:
		return "failed"
	case r.Skip:
		return "skipped"
	}
	return "failed"
}

// MarshalJSON writes the bundle as {"files": {name: content}}, content as
// text (Rego and JSON are text), for storage and the API.
func (b *Bundle) MarshalJSON() ([]byte, error) {
	files := make(map[string]string, len(b.Files))
	for n, d := range b.Files {
		files[n] = string(d)
	}
	return json.Marshal(struct {
		Files map[string]string `json:"files"`
	}{files})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (b *Bundle) UnmarshalJSON(data []byte) error {
	var v struct {
		Files map[string]string `json:"files"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	b.Files = make(map[string][]byte, len(v.Files))
	for n, d := range v.Files {
		b.Files[n] = []byte(d)
	}
	return nil
}

// WriteDir writes the bundle's files below dir (which must be empty or
// not exist), so it can be edited and applied again. A bundle that does not
// validate is refused: its names could point outside dir.
func (b *Bundle) WriteDir(dir string) error {
	if err := b.Validate(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("write bundle: %s is not empty", dir)
	}
	for _, name := range b.names() {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
		if err := os.WriteFile(p, b.Files[name], 0o644); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
	}
	return nil
}

// Data is the bundle's data documents merged into one tree, as the policy
// reads it under data (data.bindings, data.namespace_bindings, …).
func (b *Bundle) Data() (map[string]any, error) {
	_, data, err := b.parse()
	return data, err
}
