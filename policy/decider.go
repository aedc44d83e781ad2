package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Decision is a decision as made by a Decider.
type Decision struct {
	// ID names the decision for `unum policy explain`: NODE.HEX, so any
	// client can tell which node holds it.
	ID       string
	Revision int64
	Result
	// Limits are the deciding revision's bounds on delegated credentials.
	Limits DelegationLimits
}

// Shadow is a candidate bundle evaluated beside the live one on real
// traffic until Until, without effect: its answers are only recorded.
type Shadow struct {
	ID     string
	Engine *Engine
	Until  time.Time
}

// DeciderConfig configures a Decider.
type DeciderConfig struct {
	// Node is the node's name, in every decision's context and id.
	Node string
	View *View
	Log  DecisionLog
	// Now is the clock (time.Now when nil): the only clock a decision
	// reads.
	Now func() time.Time
}

// Decider makes a node's decisions: it fills the input's context, evaluates
// the served revision (and a shadow candidate, when one runs), enforces
// the freshness bound for privileged actions and hands every decision to the
// DecisionLog. Safe for concurrent use.
type Decider struct {
	cfg    DeciderConfig
	shadow atomic.Pointer[Shadow]
}

// NewDecider returns a Decider; cfg must not be modified afterwards.
func NewDecider(cfg DeciderConfig) *Decider {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Decider{cfg: cfg}
}

// SetShadow starts (s non-nil) or stops shadowing a candidate bundle.
func (d *Decider) SetShadow(s *Shadow) { d.shadow.Store(s) }

// CurrentShadow is the running shadow, nil when none.
func (d *Decider) CurrentShadow() *Shadow { return d.shadow.Load() }

// NewDecisionID returns a fresh decision id for node.
func NewDecisionID(node string) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return node + "." + hex.EncodeToString(b[:])
}

// DecisionNode is the node a decision id was made on.
func DecisionNode(id string) (string, error) {
	node, rest, ok := strings.Cut(id, ".")
	if !ok || node == "" || len(rest) != 16 {
		return "", fmt.Errorf("decision id %q: want NODE.HEX (as printed with a denial)", id)
	}
	if _, err := hex.DecodeString(rest); err != nil {
		return "", fmt.Errorf("decision id %q: want NODE.HEX (as printed with a denial)", id)
	}
	return node, nil
}

// ErrUnrecorded means the decision log could not record a decision: the
// action is refused (fail closed), before it runs.
var ErrUnrecorded = errors.New("decision not recorded")

// Decide decides in; digest (sha256:HEX of the request, "" when there is
// no message) is recorded with the decision, never shown to the policy.
// The returned error is non-nil when the decision could not be made
// soundly: no policy loaded (ErrNoPolicy), a privileged action on a stale
// view (ErrStale), an engine failure, or a decision log that could not
// record it (ErrUnrecorded). The caller refuses the action then; the
// Decision still carries an id and reasons.
func (d *Decider) Decide(ctx context.Context, in Input, digest string) (Decision, error) {
	return d.decide(ctx, in, digest, nil, nil)
}

// DecideChain decides a delegated call. in.Subject is the credential's
// original subject and in.Delegation its principals, subject first and the
// presenting caller last; principals are their subjects as the policy sees
// them (attributes included), in the same order. Every principal is
// evaluated as input.subject (with the same delegation list) and the call
// is allowed only when every one is: the effective right is the
// intersection. Privileged when any evaluation says so. creds are the
// credential's jti and its ancestors', recorded with the decision (a
// credential's uses are found by them). Errors are as for Decide.
func (d *Decider) DecideChain(ctx context.Context, in Input, principals []Subject, digest string, creds []string) (Decision, error) {
	if len(principals) == 0 {
		principals = []Subject{in.Subject}
	}
	return d.decide(ctx, in, digest, principals, creds)
}

func (d *Decider) decide(ctx context.Context, in Input, digest string, principals []Subject, creds []string) (Decision, error) {
	in, dec, now := d.begin(in)
	rec := &Record{ID: dec.ID, Time: now, Input: in, RequestDigest: digest, Creds: creds}
	var err, evalErr error
	// bundleResult is the served bundle's own answer, before freshness:
	// what a shadow is compared with (a shadow judges the policy, not the
	// node's view).
	var bundleResult Result
	e := d.cfg.View.Engine()
	if e == nil {
		err = ErrNoPolicy
		dec.Limits = DefaultDelegationLimits
	} else {
		dec.Revision, rec.Digest, dec.Limits = e.revision, e.digest, e.limits
		dec.Result, rec.Principals, evalErr = evalChain(ctx, e, &in, principals)
		bundleResult, err = dec.Result, evalErr
		if err == nil && dec.Allow && dec.Privileged {
			err = d.cfg.View.Fresh(now)
		}
	}
	if err != nil {
		dec.Allow = false
		// Clip: the reasons may be a cached result's, shared.
		dec.Reasons = append(slices.Clip(dec.Reasons), err.Error())
		rec.Err = err.Error()
	}
	rec.Revision, rec.Result = dec.Revision, dec.Result
	if s := d.shadow.Load(); s != nil && e != nil && now.Before(s.Until) {
		sr, _, serr := evalChain(ctx, s.Engine, &in, principals)
		rec.Shadow = &ShadowResult{ShadowID: s.ID, Result: sr, Live: bundleResult}
		if serr != nil {
			rec.Shadow.Err = serr.Error()
		}
		if evalErr != nil {
			rec.Shadow.LiveErr = evalErr.Error()
		}
	}
	if d.cfg.Log != nil {
		// Complete record: an action whose decision cannot be recorded does
		// not run. The log decides what it cannot record: a log that may let
		// unprivileged actions through unrecorded (allow-and-alert) returns
		// nil for them.
		if lerr := d.cfg.Log.Record(ctx, rec); lerr != nil && err == nil {
			err = fmt.Errorf("%w: %w", ErrUnrecorded, lerr)
			dec.Allow = false
			dec.Reasons = append(slices.Clip(dec.Reasons), err.Error())
		}
	}
	return dec, err
}

// PrincipalResult is one principal's own answer in a delegated decision.
type PrincipalResult struct {
	ID string `json:"id"`
	// Attributes are the principal's attributes as decided on (a user's
	// role), so explain can evaluate it again.
	Attributes map[string]string `json:"attributes,omitempty"`
	Result
}

// evalChain evaluates in once, or once per principal (each as the subject)
// and intersects: allowed only when all allow, privileged when any is,
// the reasons of each prefixed with whose they are.
func evalChain(ctx context.Context, e *Engine, in *Input, principals []Subject) (Result, []PrincipalResult, error) {
	if principals == nil {
		r, err := e.Eval(ctx, in)
		return r, nil, err
	}
	out := Result{Allow: true}
	per := make([]PrincipalResult, 0, len(principals))
	for _, p := range principals {
		pin := *in
		pin.Subject = p
		if pin.Subject.Attributes == nil {
			pin.Subject.Attributes = map[string]string{}
		}
		r, err := e.Eval(ctx, &pin)
		if err != nil {
			return Result{}, per, fmt.Errorf("as %s: %w", p.ID, err)
		}
		per = append(per, PrincipalResult{ID: p.ID, Attributes: p.Attributes, Result: r})
		out.Allow = out.Allow && r.Allow
		out.Privileged = out.Privileged || r.Privileged
		for _, reason := range r.Reasons {
			out.Reasons = append(out.Reasons, p.ID+": "+reason)
		}
	}
	return out, per, nil
}

// begin gives a decision its id and fills in's context (node, time, request
// id defaulting to the decision id) and empty collections.
func (d *Decider) begin(in Input) (Input, Decision, time.Time) {
	now := d.cfg.Now()
	dec := Decision{ID: NewDecisionID(d.cfg.Node)}
	in.Context.Node, in.Context.Time = d.cfg.Node, now
	if in.Context.RequestID == "" {
		in.Context.RequestID = dec.ID
	}
	if in.Delegation == nil {
		in.Delegation = []Actor{}
	}
	if in.Subject.Attributes == nil {
		in.Subject.Attributes = map[string]string{}
	}
	return in, dec, now
}

// Refuse records a denial made without evaluating the policy (a method
// with no action, a request that cannot be described) so that it too has
// an id and a record; digest is as for Decide.
// creds are the presented credential's jtis, as for DecideChain.
func (d *Decider) Refuse(ctx context.Context, in Input, digest, reason string, creds ...string) Decision {
	in, dec, now := d.begin(in)
	dec.Reasons = []string{reason}
	dec.Limits = d.Limits()
	if d.cfg.Log != nil {
		// The call is refused whatever the log says.
		_ = d.cfg.Log.Record(ctx, &Record{ID: dec.ID, Time: now, Input: in, Result: dec.Result, Err: reason, RequestDigest: digest, Creds: creds})
	}
	return dec
}

// Limits are the served revision's bounds on delegated credentials (the
// defaults before a policy is loaded).
func (d *Decider) Limits() DelegationLimits {
	if e := d.cfg.View.Engine(); e != nil {
		return e.limits
	}
	return DefaultDelegationLimits
}
