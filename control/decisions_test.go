package control

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/policy"
)

func decisionRecord() *policy.Record {
	return &policy.Record{
		ID: "node-1.0123456789abcdef", Time: time.Date(2026, 11, 26, 3, 0, 0, 5, time.UTC), Revision: 7, Digest: "sha256:bundle",
		Input: policy.Input{
			Subject:  policy.Subject{ID: "spiffe://unum.test/user/alice", Kind: "user", Name: "alice", Attributes: map[string]string{"role": "operator"}},
			Action:   "id.register",
			Resource: policy.Resource{Kind: "id", Namespace: "web", Name: "job/api"},
			// A delegated call: the subject first, then the actor.
			Delegation: []policy.Actor{
				{ID: "spiffe://unum.test/user/alice", Kind: "user", Name: "alice"},
				{ID: "spiffe://unum.test/ns/web/job/ci", Kind: "workload", Namespace: "web", Name: "job/ci"},
			},
			Context: policy.Context{Node: "node-1", Time: time.Date(2026, 11, 26, 3, 0, 0, 5, time.UTC), RequestID: "r1"},
		},
		Result:        policy.Result{Allow: true, Privileged: true, Reasons: []string{"operators register workloads"}},
		RequestDigest: "sha256:request",
		Creds:         []string{"0123456789abcdef0123456789abcdef"},
		Principals: []policy.PrincipalResult{
			{ID: "spiffe://unum.test/user/alice", Result: policy.Result{Allow: true, Reasons: []string{"operators register workloads"}}},
			{ID: "spiffe://unum.test/ns/web/job/ci", Result: policy.Result{Allow: true, Reasons: []string{"a binding"}}},
		},
	}
}

// What explain reads back is what was decided, through the event's
// canonical encoding (the bytes the log stores).
func TestDecisionEventRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*policy.Record)
		outcome audit.Outcome
	}{
		{"allow", func(*policy.Record) {}, audit.Allow},
		{"deny", func(r *policy.Record) { r.Result.Allow, r.Result.Reasons = false, []string{"no grant"} }, audit.Deny},
		{"error", func(r *policy.Record) {
			r.Result.Allow, r.Err = false, "policy view is stale"
			r.Result.Reasons = []string{"policy view is stale"}
		}, audit.Error},
		{"shadow", func(r *policy.Record) {
			r.Shadow = &policy.ShadowResult{ShadowID: "sh1", Result: policy.Result{Reasons: []string{"frozen"}}, Live: r.Result}
		}, audit.Allow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := decisionRecord()
			tc.edit(r)
			e := DecisionEvent(r)
			require.Equal(t, audit.KindAuthz, e.Kind)
			require.Equal(t, "id.register", e.Action)
			require.Equal(t, "spiffe://unum.test/user/alice", e.Subject)
			require.Equal(t, "id/web/job/api", e.Resource)
			require.Equal(t, []string{"spiffe://unum.test/ns/web/job/ci"}, e.Chain, "the actors, not the subject")
			require.Equal(t, []string{"0123456789abcdef0123456789abcdef"}, e.Creds)
			require.Equal(t, tc.outcome, e.Outcome)
			require.Equal(t, "sha256:request", e.RequestDigest)
			require.Equal(t, r.ID, e.DecisionID)
			require.EqualValues(t, 7, e.PolicyRevision)

			// As the log stores and serves it.
			e.V, e.ID, e.Node = audit.Version, "node-1:3", "node-1"
			raw, err := e.Encode()
			require.NoError(t, err)
			got, err := audit.DecodeEvent(raw)
			require.NoError(t, err)
			back, err := DecisionFromEvent(got)
			require.NoError(t, err)
			require.Equal(t, r.ID, back.ID)
			require.True(t, r.Time.Equal(back.Time))
			require.Equal(t, r.Revision, back.Revision)
			require.Equal(t, r.Digest, back.Digest)
			require.Equal(t, r.Input.Subject, back.Input.Subject)
			require.Equal(t, r.Input.Action, back.Input.Action)
			require.Equal(t, r.Input.Resource, back.Input.Resource)
			require.Equal(t, r.Input.Delegation, back.Input.Delegation)
			require.True(t, r.Input.Context.Time.Equal(back.Input.Context.Time))
			require.Equal(t, r.Result, back.Result)
			require.Equal(t, r.Err, back.Err)
			require.Equal(t, r.Shadow, back.Shadow)
			require.Equal(t, r.RequestDigest, back.RequestDigest)
			require.Equal(t, r.Creds, back.Creds)
			require.Equal(t, r.Principals, back.Principals)
		})
	}
}

// A bundle's reasons cannot make a decision's event too large to record
// (which would refuse every call it decides).
func TestDecisionEventBoundsReasons(t *testing.T) {
	r := decisionRecord()
	long := make([]string, 1000)
	for i := range long {
		long[i] = strings.Repeat("x", 10_000)
	}
	r.Result.Reasons = long
	r.Shadow = &policy.ShadowResult{ShadowID: "sh1", Result: policy.Result{Reasons: long}, Live: policy.Result{Reasons: long}}
	e := DecisionEvent(r)
	e.V, e.ID, e.Node = audit.Version, "node-1:3", "node-1"
	raw, err := e.Encode()
	require.NoError(t, err)
	require.Less(t, len(raw), audit.MaxEventSize)
	require.Len(t, e.Reasons, maxEventReasons+1)
	require.Contains(t, e.Reasons[maxEventReasons], "984 more reasons")
	require.Len(t, r.Result.Reasons, 1000, "the record itself is not modified")
}

func TestDecisionFromEventRefusesOtherKinds(t *testing.T) {
	_, err := DecisionFromEvent(&audit.Event{ID: "n:1", Kind: audit.KindToken})
	require.ErrorContains(t, err, "not a decision")
}
