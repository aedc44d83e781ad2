package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/unumos/unum/identity/delegation"
)

// LimitsQuery is where a bundle sets the bounds of delegated credentials:
//
//	package unum.delegation
//	max_depth := 3            # actors in a chain, 1..16 (default 4)
//	max_ttl_seconds := 1800   # longest lifetime, 1..86400 (default 3600)
//
// Both are optional; other rules in the package are ignored. They must not
// depend on input: they are evaluated once per revision, when it is
// compiled, and a bundle whose values are out of range or of the wrong type
// is refused at apply.
const LimitsQuery = "data.unum.delegation"

// DelegationLimits are a revision's bounds on delegated credentials.
type DelegationLimits struct {
	MaxDepth int
	MaxTTL   time.Duration
}

// DefaultDelegationLimits apply when a bundle sets none.
var DefaultDelegationLimits = DelegationLimits{MaxDepth: delegation.DefaultMaxDepth, MaxTTL: delegation.DefaultMaxTTL}

// evalLimits reads a compiled bundle's delegation limits.
func evalLimits(ctx context.Context, c *compiled) (DelegationLimits, error) {
	lim := DefaultDelegationLimits
	rs, err := rego.New(
		rego.Query(LimitsQuery),
		rego.Compiler(c.compiler),
		rego.Store(inmem.NewFromObject(c.data)),
		rego.StrictBuiltinErrors(true),
	).Eval(ctx)
	if err != nil {
		return lim, bundleErr("compile", Problem{Msg: fmt.Sprintf("%s: %v", LimitsQuery, err)})
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return lim, nil
	}
	obj, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return lim, bundleErr("compile", Problem{Msg: LimitsQuery + " is not an object"})
	}
	num := func(key string, lo, hi int64) (int64, bool, error) {
		v, ok := obj[key]
		if !ok {
			return 0, false, nil
		}
		n, ok := v.(json.Number)
		if !ok {
			return 0, false, fmt.Errorf("%s.%s is %T, want an integer", LimitsQuery, key, v)
		}
		i, err := n.Int64()
		if err != nil || i < lo || i > hi {
			return 0, false, fmt.Errorf("%s.%s is %s, want an integer from %d to %d", LimitsQuery, key, n, lo, hi)
		}
		return i, true, nil
	}
	if d, ok, err := num("max_depth", 1, delegation.MaxDepth); err != nil {
		return lim, bundleErr("compile", Problem{Msg: err.Error()})
	} else if ok {
		lim.MaxDepth = int(d)
	}
	if t, ok, err := num("max_ttl_seconds", 1, int64(delegation.MaxTTL/time.Second)); err != nil {
		return lim, bundleErr("compile", Problem{Msg: err.Error()})
	} else if ok {
		lim.MaxTTL = time.Duration(t) * time.Second
	}
	return lim, nil
}
