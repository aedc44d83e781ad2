package control

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/policy"
)

// DecisionDetails are the details of an authz event: with the event's own
// fields, enough to explain the decision again (`unum policy explain`
// re-evaluates Input on the revision that decided).
type DecisionDetails struct {
	// Input is the whole policy input as decided.
	Input policy.Input `json:"input"`
	// BundleDigest is the deciding bundle's sha256 (revision numbers are
	// reused after a restore from backup).
	BundleDigest string `json:"bundle_digest,omitempty"`
	// Error says why the decision was not the policy's own (no policy, a
	// stale view, an engine failure, a request refused without asking it).
	Error  string               `json:"error,omitempty"`
	Shadow *policy.ShadowResult `json:"shadow,omitempty"`
	// Principals are each principal's own answer when the call was
	// delegated (the decision is their intersection).
	Principals []policy.PrincipalResult `json:"principals,omitempty"`
}

// Bounds on what a decision's event copies from a bundle's answers, so an
// event stays well under audit.MaxEventSize whatever reasons a bundle
// gives (three lists: the decision's, and a shadow's and its live answer).
const (
	maxEventReasons     = 16
	maxEventReasonBytes = 512
)

// DecisionEvent is the audit event of decision r: kind authz, the decided
// action, subject and resource, outcome allow or deny (error when the
// decision was not the policy's own: r.Err), and the details explain needs.
func DecisionEvent(r *policy.Record) audit.Event {
	outcome := audit.Deny
	switch {
	case r.Err != "":
		outcome = audit.Error
	case r.Result.Allow:
		outcome = audit.Allow
	}
	e := audit.Event{
		Time: r.Time, Kind: audit.KindAuthz, Action: r.Input.Action,
		Subject: r.Input.Subject.ID, Resource: r.Input.Resource.String(),
		Outcome: outcome, Privileged: r.Result.Privileged,
		DecisionID: r.ID, PolicyRevision: r.Revision,
		Reasons:       boundReasons(r.Result.Reasons),
		RequestDigest: r.RequestDigest,
		Creds:         r.Creds,
	}
	// The delegation list starts with the subject: the chain is the actors.
	for i, a := range r.Input.Delegation {
		if i > 0 {
			e.Chain = append(e.Chain, a.ID)
		}
	}
	d := DecisionDetails{Input: r.Input, BundleDigest: r.Digest, Error: r.Err, Principals: slices.Clone(r.Principals)}
	for i := range d.Principals {
		d.Principals[i].Reasons = boundReasons(d.Principals[i].Reasons)
	}
	if r.Shadow != nil {
		s := *r.Shadow
		s.Result.Reasons, s.Live.Reasons = boundReasons(s.Result.Reasons), boundReasons(s.Live.Reasons)
		d.Shadow = &s
	}
	return e.WithDetails(d)
}

func boundReasons(rs []string) []string {
	if len(rs) == 0 {
		return nil
	}
	out := make([]string, 0, min(len(rs), maxEventReasons))
	for i, r := range rs {
		if i == maxEventReasons {
			out = append(out, fmt.Sprintf("(%d more reasons not recorded)", len(rs)-i))
			break
		}
		out = append(out, audit.Clip(r, maxEventReasonBytes))
	}
	return out
}

// DecisionFromEvent reads back the decision an authz event recorded.
func DecisionFromEvent(e *audit.Event) (*policy.Record, error) {
	if e.Kind != audit.KindAuthz {
		return nil, fmt.Errorf("event %s is a %s event, not a decision", e.ID, e.Kind)
	}
	var d DecisionDetails
	if err := json.Unmarshal(e.Details, &d); err != nil {
		return nil, fmt.Errorf("event %s: decision details: %w", e.ID, err)
	}
	return &policy.Record{
		ID: e.DecisionID, Time: e.Time, Revision: e.PolicyRevision, Digest: d.BundleDigest,
		Input:         d.Input,
		Result:        policy.Result{Allow: e.Outcome == audit.Allow, Privileged: e.Privileged, Reasons: e.Reasons},
		Err:           d.Error,
		Shadow:        d.Shadow,
		RequestDigest: e.RequestDigest,
		Creds:         e.Creds,
		Principals:    d.Principals,
	}, nil
}
