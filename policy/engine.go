package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// DecisionQuery is the one entrypoint every bundle defines.
const DecisionQuery = "data.unum.authz.decision"

var decisionRef = ast.MustParseRef(DecisionQuery)

// Result is what the policy decided.
type Result struct {
	Allow bool `json:"allow"`
	// Privileged is the bundle's answer or'ed with MinimumPrivileged.
	Privileged bool     `json:"privileged"`
	Reasons    []string `json:"reasons"`
}

// Engine is one compiled bundle revision, with its decision query prepared
// once. It is immutable and safe for concurrent use.
type Engine struct {
	revision int64
	digest   string
	bundle   *Bundle
	c        *compiled
	pq       rego.PreparedEvalQuery
	// netq is NetworkQuery, prepared once like the decision.
	netq rego.PreparedEvalQuery
	// cache holds results by input when the bundle's decision depends on
	// nothing else (see cacheable); nil otherwise.
	cache *decisionCache
	// limits bound delegated credentials (LimitsQuery).
	limits DelegationLimits
}

// EngineOption configures NewEngine.
type EngineOption func(*engineOptions)

type engineOptions struct{ noCache bool }

// WithoutDecisionCache evaluates every decision (benchmarks of the cold
// path; tests of evaluation itself).
func WithoutDecisionCache() EngineOption { return func(o *engineOptions) { o.noCache = true } }

// ErrNoDecision is returned when a bundle's decision is missing or not of
// the form {allow: bool, privileged: bool, reasons: [string]}. The caller
// denies.
var ErrNoDecision = errors.New("policy produced no well-formed decision")

// NewEngine compiles b (type-checked against the input schema) as revision
// rev and prepares its decision and network queries; a malformed
// data.network_egress refuses the bundle here.
func NewEngine(ctx context.Context, b *Bundle, rev int64, opts ...EngineOption) (*Engine, error) {
	var o engineOptions
	for _, f := range opts {
		f(&o)
	}
	// The engine is built from the policy modules alone (every file is
	// still parsed); test files are compiled by Test, which apply runs.
	c, err := b.compileModules(false)
	if err != nil {
		return nil, err
	}
	pq, err := rego.New(
		rego.Query(DecisionQuery),
		rego.Compiler(c.compiler),
		rego.Store(inmem.NewFromObject(c.data)),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, bundleErr("compile", astProblems(err)...)
	}
	netq, err := prepareNetwork(ctx, c)
	if err != nil {
		return nil, err
	}
	limits, err := evalLimits(ctx, c)
	if err != nil {
		return nil, err
	}
	e := &Engine{revision: rev, digest: b.Digest(), bundle: b, c: c, pq: pq, netq: netq, limits: limits}
	if !o.noCache && cacheable(c.modules) {
		e.cache = newDecisionCache(decisionCacheSize)
	}
	return e, nil
}

// Cached reports whether the engine caches decisions (its bundle's decision
// is a pure function of the input minus its context).
func (e *Engine) Cached() bool { return e.cache != nil }

// Limits are the revision's bounds on delegated credentials.
func (e *Engine) Limits() DelegationLimits { return e.limits }

// Revision is the bundle revision the engine evaluates.
func (e *Engine) Revision() int64 { return e.revision }

// Digest is the bundle's sha256.
func (e *Engine) Digest() string { return e.digest }

// Bundle is the bundle the engine was compiled from (do not modify).
func (e *Engine) Bundle() *Bundle { return e.bundle }

// Eval evaluates the decision for in. It reads no clock: in.Context.Time is
// both input.context.time and what time.now_ns() returns. An error (a
// builtin failing, a malformed decision) must be treated as a denial.
func (e *Engine) Eval(ctx context.Context, in *Input) (Result, error) {
	var key string
	if e.cache != nil {
		if key = cacheKey(in); len(key) > maxCacheKey {
			key = "" // too large to keep: evaluated every time
		} else if r, ok := e.cache.get(key); ok {
			return r, nil
		}
	}
	r, err := e.evalBundle(ctx, in)
	if err != nil {
		// Errors are not cached: a deadline or cancellation is not the
		// policy's answer.
		return Result{}, err
	}
	if MinimumPrivileged(in.Action) {
		r.Privileged = true
	}
	if e.cache != nil && key != "" {
		// Reasons are shared by every hit: clip them so that no caller's
		// append writes into the cached array.
		r.Reasons = slices.Clip(r.Reasons)
		e.cache.put(key, r)
	}
	return r, nil
}

// evalBundle is the bundle's own answer, before MinimumPrivileged.
func (e *Engine) evalBundle(ctx context.Context, in *Input, opts ...rego.EvalOption) (Result, error) {
	opts = append(opts, rego.EvalParsedInput(in.Value()), rego.EvalTime(in.Context.Time))
	rs, err := e.pq.Eval(ctx, opts...)
	if err != nil {
		return Result{}, fmt.Errorf("policy revision %d: %w", e.revision, err)
	}
	r, err := resultFrom(rs)
	if err != nil {
		return Result{}, fmt.Errorf("policy revision %d: %w", e.revision, err)
	}
	return r, nil
}

func resultFrom(rs rego.ResultSet) (Result, error) {
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return Result{}, ErrNoDecision
	}
	obj, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return Result{}, fmt.Errorf("%w: decision is not an object", ErrNoDecision)
	}
	allow, ok := obj["allow"].(bool)
	if !ok {
		return Result{}, fmt.Errorf("%w: allow is not a boolean", ErrNoDecision)
	}
	priv, ok := obj["privileged"].(bool)
	if !ok {
		return Result{}, fmt.Errorf("%w: privileged is not a boolean", ErrNoDecision)
	}
	var reasons []string
	switch rv := obj["reasons"].(type) {
	case nil:
	case []any:
		for _, x := range rv {
			s, ok := x.(string)
			if !ok {
				return Result{}, fmt.Errorf("%w: a reason is not a string", ErrNoDecision)
			}
			reasons = append(reasons, s)
		}
	default:
		return Result{}, fmt.Errorf("%w: reasons is not a list", ErrNoDecision)
	}
	return Result{Allow: allow, Privileged: priv, Reasons: reasons}, nil
}

// FiredRule is a rule that evaluated successfully for a decision.
type FiredRule struct {
	Rule string `json:"rule"` // e.g. data.unum.authz.grants
	File string `json:"file"`
	Line int    `json:"line"`
}

// Explain evaluates in again with tracing and returns the result and the
// rules that fired (exited successfully), by file and line.
func (e *Engine) Explain(ctx context.Context, in *Input) (Result, []FiredRule, error) {
	tr := topdown.NewBufferTracer()
	r, err := e.evalBundle(ctx, in, rego.EvalQueryTracer(tr), rego.EvalRuleIndexing(false))
	if err != nil {
		return Result{}, nil, err
	}
	if MinimumPrivileged(in.Action) {
		r.Privileged = true
	}
	seen := map[FiredRule]bool{}
	var fired []FiredRule
	for _, ev := range *tr {
		if ev.Op != topdown.ExitOp {
			continue
		}
		rule, ok := ev.Node.(*ast.Rule)
		if !ok || rule.Location == nil || rule.Module == nil {
			continue
		}
		f := FiredRule{Rule: rule.Module.Package.Path.String() + "." + rule.Head.Ref().String(), File: rule.Location.File, Line: rule.Location.Row}
		if !seen[f] {
			seen[f] = true
			fired = append(fired, f)
		}
	}
	sort.Slice(fired, func(i, j int) bool {
		if fired[i].File != fired[j].File {
			return fired[i].File < fired[j].File
		}
		return fired[i].Line < fired[j].Line
	})
	return r, fired, nil
}

// EngineCache keeps the engines of recent revisions so that explaining an
// older decision does not recompile. Safe for concurrent use.
type EngineCache struct {
	mu      sync.Mutex
	engines map[int64]*Engine
	order   []int64
	max     int
}

// NewEngineCache holds up to max engines.
func NewEngineCache(max int) *EngineCache {
	return &EngineCache{engines: map[int64]*Engine{}, max: max}
}

// Get returns the engine of rev, if held.
func (c *EngineCache) Get(rev int64) (*Engine, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.engines[rev]
	return e, ok
}

// Put adds e, dropping the oldest beyond max.
func (c *EngineCache) Put(e *Engine) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.engines[e.revision]; ok {
		// Same number again: the store was restored from a backup and
		// the number reused; the engine put last wins.
		c.engines[e.revision] = e
		return
	}
	c.engines[e.revision] = e
	c.order = append(c.order, e.revision)
	for len(c.order) > c.max {
		delete(c.engines, c.order[0])
		c.order = c.order[1:]
	}
}
