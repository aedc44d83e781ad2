package control

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/policy"
)

// eventsSince returns the harness log's events from index from on.
func eventsSince(t *testing.T, from uint64) []*audit.Event {
	t.Helper()
	var out []*audit.Event
	require.NoError(t, h.audit.Scan(context.Background(), from, func(_ uint64, raw []byte) bool {
		e, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		out = append(out, e)
		return true
	}))
	return out
}

// byAction keeps the events of action that are not decisions (a decision
// carries the policy's action name, which some events share: user.add).
func byAction(es []*audit.Event, action string) []*audit.Event {
	var out []*audit.Event
	for _, e := range es {
		if e.Action == action && e.Kind != audit.KindAuthz {
			out = append(out, e)
		}
	}
	return out
}

func details[T any](t *testing.T, e *audit.Event) T {
	t.Helper()
	var d T
	require.NoError(t, json.Unmarshal(e.Details, &d))
	return d
}

// Every identity and credential change is recorded after it happens,
// names who did it and links to the decision that allowed it; tokens are
// named by id only.
func TestControlEventsRecorded(t *testing.T) {
	start := h.audit.Size()
	fp := ca.Fingerprint(h.root)
	admin := "spiffe://unum.test/user/admin"

	// A join token, a join, and its reuse.
	tok := mintToken(t, "ev-node")
	parsed, err := jointoken.Parse(tok)
	require.NoError(t, err)
	ec := enrollClient(t, fp)
	_, err = ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
	require.NoError(t, err)
	_, err = ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
	requireCode(t, err, codes.PermissionDenied, "already been used")

	// A user, their login; a registration entry made and deleted.
	utok := addUser(t, "ev-user", "viewer")
	uparsed, err := jointoken.Parse(utok)
	require.NoError(t, err)
	mustLogin(t, utok, 0)
	e := register(t, "spiffe://unum.test/ns/ev/job/api", "", "unix:uid:1")
	_, err = unumv1.NewIdentityClient(conn(t, "/user/admin")).DeleteEntry(ctxT(t), &unumv1.DeleteEntryRequest{Id: e.GetId()})
	require.NoError(t, err)
	_, err = usersClient(t, "/user/admin").RemoveUser(ctxT(t), &unumv1.RemoveUserRequest{Name: "ev-user"})
	require.NoError(t, err)

	got := eventsSince(t, start)

	mints := byAction(got, audit.ActionTokenMint)
	require.Len(t, mints, 2)
	md := details[TokenDetails](t, mints[0])
	require.Equal(t, parsed.ID, md.TokenID)
	require.Equal(t, "ev-node", md.Name)
	require.Equal(t, admin, mints[0].Subject)
	require.NotEmpty(t, mints[0].DecisionID, "linked to the decision that allowed it")
	require.Equal(t, uparsed.ID, details[TokenDetails](t, mints[1]).TokenID)

	uses := byAction(got, audit.ActionTokenUse)
	require.Len(t, uses, 3, "join, its refused reuse, login")
	require.Equal(t, audit.Allow, uses[0].Outcome)
	require.Equal(t, "node/-/ev-node", uses[0].Resource)
	require.Equal(t, audit.Deny, uses[1].Outcome)
	require.Contains(t, uses[1].Reasons[0], "already been used")
	require.Equal(t, parsed.ID, details[TokenDetails](t, uses[1]).TokenID)
	require.NotEmpty(t, details[TokenDetails](t, uses[1]).Peer)
	require.Equal(t, audit.Allow, uses[2].Outcome)

	joins := byAction(got, audit.ActionNodeJoin)
	require.Len(t, joins, 1)
	require.Equal(t, "spiffe://unum.test/node/ev-node", joins[0].Subject)
	jd := details[SVIDDetails](t, joins[0])
	require.Equal(t, parsed.ID, jd.TokenID)
	require.NotEmpty(t, jd.Serial)

	issued := byAction(got, audit.ActionSVIDIssue)
	require.Len(t, issued, 1, "the login's certificate")
	require.Equal(t, "spiffe://unum.test/user/ev-user", issued[0].Subject)

	require.Len(t, byAction(got, audit.ActionUserAdd), 1)
	require.Len(t, byAction(got, audit.ActionUserRemove), 1)
	creates := byAction(got, audit.ActionEntryCreate)
	require.Len(t, creates, 1)
	require.Equal(t, "id/ev/job/api", creates[0].Resource)
	require.Equal(t, e.GetId(), details[EntryDetails](t, creates[0]).EntryID)
	deletes := byAction(got, audit.ActionEntryDelete)
	require.Len(t, deletes, 1)
	require.True(t, details[EntryDetails](t, deletes[0]).Revoked)
	revs := byAction(got, audit.ActionRevoke)
	require.Len(t, revs, 2, "the entry's ID, the removed user")
	require.Equal(t, "spiffe://unum.test/ns/ev/job/api", details[RevocationDetails](t, revs[0]).SPIFFEID)
	require.Equal(t, "spiffe://unum.test/user/ev-user", details[RevocationDetails](t, revs[1]).SPIFFEID)

	// The decision ids of the events are the authz records before them.
	for _, ev := range append(creates, mints[0]) {
		_, raw, err := h.audit.FindDecision(ev.DecisionID)
		require.NoError(t, err)
		dec, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		require.Equal(t, audit.KindAuthz, dec.Kind)
		require.Equal(t, audit.Allow, dec.Outcome)
		require.NotEmpty(t, dec.RequestDigest)
	}

	// No token ever enters the log.
	require.NoError(t, h.audit.Scan(context.Background(), 0, func(_ uint64, raw []byte) bool {
		require.NotContains(t, string(raw), parsed.String())
		require.NotContains(t, string(raw), uparsed.String())
		require.NotContains(t, string(raw), string(parsed.Secret))
		return true
	}))
}

func TestPolicyEventsRecorded(t *testing.T) {
	start := h.audit.Size()
	pc := unumv1.NewPolicyClient(conn(t, "/user/admin"))
	files := map[string][]byte{}
	for n, d := range policy.Builtin().Files {
		files[n] = d
	}
	files["ev.rego"] = []byte("package unum.authz\n\nimport rego.v1\n\n# events test\ngrants contains \"ev\" if input.action == \"ev.none\"\n")
	applied, err := pc.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{Files: files}, Message: "events"})
	require.NoError(t, err)
	rolled, err := pc.Rollback(ctxT(t), &unumv1.RollbackPolicyRequest{Revision: applied.GetRevision() - 1})
	require.NoError(t, err)
	sh, err := pc.StartShadow(ctxT(t), &unumv1.StartShadowRequest{Bundle: &unumv1.PolicyBundle{Files: files}, DurationSeconds: 60})
	require.NoError(t, err)
	_, err = pc.StopShadow(ctxT(t), &unumv1.StopShadowRequest{ShadowId: sh.GetShadowId()})
	require.NoError(t, err)

	got := eventsSince(t, start)
	ap := byAction(got, audit.ActionPolicyApply)
	require.Len(t, ap, 1)
	require.Equal(t, applied.GetRevision(), details[PolicyDetails](t, ap[0]).Revision)
	require.Equal(t, applied.GetSha256(), details[PolicyDetails](t, ap[0]).SHA256)
	rb := byAction(got, audit.ActionPolicyRollback)
	require.Len(t, rb, 1)
	require.Equal(t, rolled.GetRevision(), details[PolicyDetails](t, rb[0]).Revision)
	require.Equal(t, applied.GetRevision()-1, details[PolicyDetails](t, rb[0]).Restores)
	shadows := byAction(got, audit.ActionPolicyShadow)
	require.Len(t, shadows, 2)
	require.False(t, details[PolicyDetails](t, shadows[0]).Stopped)
	require.True(t, details[PolicyDetails](t, shadows[1]).Stopped)
	require.Equal(t, sh.GetShadowId(), details[PolicyDetails](t, shadows[1]).ShadowID)
}

// A refused enrolment token is recorded without the token, and a malformed
// one without even an id.
func TestRefusedTokensRecordedWithoutSecrets(t *testing.T) {
	start := h.audit.Size()
	fp := ca.Fingerprint(h.root)
	tok, err := jointoken.New(jointoken.KindNode, fp, rand.Reader)
	require.NoError(t, err)
	_, err = enrollClient(t, fp).Join(ctxT(t), joinReq(tok.String(), makeCSR(t, csrOpts{})))
	requireCode(t, err, codes.PermissionDenied, "unknown")
	_, err = enrollClient(t, fp).Login(ctxT(t), &unumv1.LoginRequest{Token: "unum1.user.zz"})
	require.Error(t, err)
	uses := byAction(eventsSince(t, start), audit.ActionTokenUse)
	require.Len(t, uses, 2)
	require.Equal(t, tok.ID, details[TokenDetails](t, uses[0]).TokenID)
	require.Equal(t, audit.Deny, uses[0].Outcome)
	require.Empty(t, details[TokenDetails](t, uses[1]).TokenID)
	for _, e := range uses {
		raw, err := e.Encode()
		require.NoError(t, err)
		require.NotContains(t, string(raw), tok.String())
		require.NotContains(t, string(raw), "unum1.user.zz")
	}
}

// A bundle refused after the decision allowed the call (malformed, an
// overlong message, or refused by the lockout guard) is recorded as a
// deny of policy.apply or policy.rollback with the caller, why, and what
// was tried: an attempt to lock the cluster out leaves a trace (T-120).
func TestRefusedBundlesRecorded(t *testing.T) {
	start := h.audit.Size()
	pc := unumv1.NewPolicyClient(conn(t, "/user/admin"))
	admin := "spiffe://unum.test/user/admin"
	long := strings.Repeat("m", 3000)
	lockout := &unumv1.PolicyBundle{Files: map[string][]byte{"authz.rego": []byte("package unum.authz\n\nimport rego.v1\n\n" +
		`decision := {"allow": false, "privileged": true, "reasons": ["nobody"]}` + "\n")}}
	lockoutSHA := (&policy.Bundle{Files: lockout.GetFiles()}).Digest()

	_, err := pc.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{}, Message: "empty"})
	requireCode(t, err, codes.InvalidArgument, "policy bundle is empty")
	_, err = pc.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: lockout, Message: long})
	requireCode(t, err, codes.InvalidArgument, "message is longer than 1024 bytes")
	_, err = pc.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: lockout, Message: "lock them out"})
	requireCode(t, err, codes.FailedPrecondition, "lockout guard")
	_, err = pc.Rollback(ctxT(t), &unumv1.RollbackPolicyRequest{Revision: 1, Message: long})
	requireCode(t, err, codes.InvalidArgument, "message is longer than 1024 bytes")

	got := eventsSince(t, start)
	ap := byAction(got, audit.ActionPolicyApply)
	require.Len(t, ap, 3)
	for _, e := range ap {
		require.Equal(t, audit.Deny, e.Outcome)
		require.Equal(t, admin, e.Subject)
		require.Equal(t, "policy/-/bundle", e.Resource)
		require.NotEmpty(t, e.DecisionID, "linked to the decision that allowed the call")
	}
	require.Equal(t, []string{"policy bundle is empty: want .rego files and data.json"}, ap[0].Reasons)
	require.Equal(t, PolicyDetails{Message: "empty"}, details[PolicyDetails](t, ap[0]))
	require.Equal(t, []string{"message is longer than 1024 bytes"}, ap[1].Reasons)
	require.Equal(t, PolicyDetails{SHA256: lockoutSHA, Message: audit.Clip(long, maxEventString)}, details[PolicyDetails](t, ap[1]))
	require.Contains(t, ap[2].Reasons[0], "lockout guard")
	require.Contains(t, ap[2].Reasons[0], admin+" may not policy.apply")
	require.Equal(t, PolicyDetails{SHA256: lockoutSHA, Message: "lock them out"}, details[PolicyDetails](t, ap[2]))

	rb := byAction(got, audit.ActionPolicyRollback)
	require.Len(t, rb, 1)
	require.Equal(t, audit.Deny, rb[0].Outcome)
	require.Equal(t, admin, rb[0].Subject)
	require.Equal(t, []string{"message is longer than 1024 bytes"}, rb[0].Reasons)
	require.Equal(t, PolicyDetails{Message: audit.Clip(long, maxEventString), Restores: 1}, details[PolicyDetails](t, rb[0]))
}
