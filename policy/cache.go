package policy

import (
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// decisionCacheSize bounds each engine's decision cache (entries per
// generation; two generations are kept).
const decisionCacheSize = 1 << 15

// decisionCache remembers an engine's results by input, for bundles whose
// decision is a pure function of the input minus its context: they read
// neither input.context (node, time, request id) nor a nondeterministic
// builtin (time.now_ns, rand, http.send, ...). The engine is immutable, so a
// cached result is exactly what evaluating again would give; a new revision
// is a new engine with an empty cache. Two generations: when the newer one
// is full it becomes the older one, so a working set that fits stays warm
// and memory stays bounded. Safe for concurrent use.
type decisionCache struct {
	mu       sync.Mutex
	cur, old map[string]Result
	max      int
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{cur: make(map[string]Result), max: max}
}

func (c *decisionCache) get(key string) (Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.cur[key]; ok {
		return r, true
	}
	if r, ok := c.old[key]; ok {
		c.putLocked(key, r)
		return r, true
	}
	return Result{}, false
}

func (c *decisionCache) put(key string, r Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(key, r)
}

func (c *decisionCache) putLocked(key string, r Result) {
	if len(c.cur) >= c.max {
		c.old, c.cur = c.cur, make(map[string]Result, c.max)
	}
	c.cur[key] = r
}

// cacheKey is in without its context, each field length-prefixed so no
// two inputs share a key.
func cacheKey(in *Input) string {
	var b strings.Builder
	field := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	field(in.Subject.ID)
	field(in.Subject.Kind)
	field(in.Subject.Namespace)
	field(in.Subject.Name)
	keys := make([]string, 0, len(in.Subject.Attributes))
	for k := range in.Subject.Attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	field(strconv.Itoa(len(keys)))
	for _, k := range keys {
		field(k)
		field(in.Subject.Attributes[k])
	}
	field(in.Action)
	field(in.Resource.Kind)
	field(in.Resource.Namespace)
	field(in.Resource.Name)
	field(strconv.Itoa(len(in.Delegation)))
	for _, a := range in.Delegation {
		field(a.ID)
		field(a.Kind)
		field(a.Namespace)
		field(a.Name)
	}
	if c := in.Credential; c != nil {
		field("credential")
		field(c.Subject)
		field(c.Holder)
		field(strconv.Itoa(len(c.Scopes)))
		for _, s := range c.Scopes {
			field(s)
		}
		field(strconv.Itoa(len(c.Audience)))
		for _, a := range c.Audience {
			field(a)
		}
		field(strconv.FormatInt(c.TTLSeconds, 10))
	}
	return b.String()
}

// maxCacheKey bounds what one cached decision may hold: inputs with
// longer keys are evaluated every time.
const maxCacheKey = 1024

// cacheable reports whether the policy modules' decision can depend only
// on the input minus its context: no module reads input.context, the
// whole input, or input under a key it computes (input[k]); and none calls
// or names (as in `with f as rand.intn`) a nondeterministic builtin. The
// modules are the engine's, test files excluded (they are not in it).
func cacheable(modules map[string]*ast.Module) bool {
	ok := true
	nondeterministic := func(name string) bool {
		bi, found := ast.BuiltinMap[name]
		return found && bi.Nondeterministic
	}
	for _, m := range modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if r[0].Equal(ast.InputRootDocument) {
				if len(r) == 1 {
					ok = false // the whole input, context included
				} else if key, isString := r[1].Value.(ast.String); !isString || key == "context" {
					ok = false
				}
			}
			if nondeterministic(r.String()) {
				ok = false
			}
			return !ok
		})
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() && nondeterministic(e.Operator().String()) {
				ok = false
			}
			return !ok
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, isCall := t.Value.(ast.Call); isCall && len(call) > 0 && nondeterministic(call[0].String()) {
				ok = false
			}
			return !ok
		})
		if !ok {
			return false
		}
	}
	return ok
}
