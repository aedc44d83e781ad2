package control

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
)

// bundleWith is the shipped bundle with files added or replaced.
func bundleWith(files map[string]string) *unumv1.PolicyBundle {
	b := policy.Builtin()
	out := map[string][]byte{}
	for n, d := range b.Files {
		out[n] = d
	}
	for n, d := range files {
		if d == "" {
			delete(out, n)
			continue
		}
		out[n] = []byte(d)
	}
	return &unumv1.PolicyBundle{Files: out}
}

func policyClient(t *testing.T, path string) unumv1.PolicyClient {
	return unumv1.NewPolicyClient(conn(t, path))
}

// waitServing waits until this control node serves revision rev.
func waitServing(t *testing.T, rev int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		e := h.srv.cfg.Policy.Engine()
		return e != nil && e.Revision() == rev && h.srv.cfg.Policy.Fresh(time.Now()) == nil
	}, 10*time.Second, 10*time.Millisecond, "revision %d never served", rev)
}

func latestRevision(t *testing.T) int64 {
	t.Helper()
	r, err := policyClient(t, "/user/admin").Get(ctxT(t), &unumv1.GetPolicyRequest{})
	require.NoError(t, err)
	return r.GetRevision()
}

// restoreBuiltin applies the shipped bundle again, so that later tests
// (sharing the harness) see the default policy.
func restoreBuiltin(t *testing.T) {
	t.Helper()
	resp, err := policyClient(t, "/user/admin").Apply(context.Background(), &unumv1.ApplyPolicyRequest{Bundle: bundleWith(nil), Message: "test cleanup"})
	require.NoError(t, err)
	waitServing(t, resp.GetRevision())
}

const sandboxGrant = `package unum.authz

import rego.v1

# Viewers may register and delete workloads in the sandbox namespace.
grants contains "viewers may register in sandbox" if {
	role == "viewer"
	input.action in {"id.register", "id.delete"}
	input.resource.namespace == "sandbox"
}
`

const viewerBinding = `{"bindings": {"spiffe://unum.test/user/pol-viewer": "viewer"}}`

// TestPolicyLifecycle: apply, serve, deny with an explainable id, history,
// an unchanged re-apply, rollback, and what-if checks, on a real etcd.
func TestPolicyLifecycle(t *testing.T) {
	admin := policyClient(t, "/user/admin")
	ctx := ctxT(t)
	start := latestRevision(t)
	t.Cleanup(func() { restoreBuiltin(t) })

	applied, err := admin.Apply(ctx, &unumv1.ApplyPolicyRequest{Bundle: bundleWith(map[string]string{"sandbox.rego": sandboxGrant, "data.json": viewerBinding}), Message: "sandbox"})
	require.NoError(t, err)
	require.Equal(t, start+1, applied.GetRevision())
	require.Positive(t, applied.GetTestsPassed())
	waitServing(t, applied.GetRevision())

	viewer := unumv1.NewIdentityClient(conn(t, "/user/pol-viewer"))
	toy, err := viewer.CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/sandbox/job/toy", Node: "node-1", Selectors: []string{"unix:uid:4242"}})
	require.NoError(t, err, "the applied bundle lets viewers register in sandbox")
	// Deletion is decided on the namespace of the entry it deletes.
	prod, err := unumv1.NewIdentityClient(conn(t, "/user/admin")).CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/prod/job/keep", Node: "node-1", Selectors: []string{"unix:uid:4244"}})
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, ok := h.srv.EntrySPIFFEID(prod.GetId()); return ok }, 5*time.Second, 10*time.Millisecond)
	_, err = viewer.DeleteEntry(ctx, &unumv1.DeleteEntryRequest{Id: prod.GetId()})
	requireCode(t, err, codes.PermissionDenied, "to id.delete id/prod/job/keep")
	require.Eventually(t, func() bool { _, ok := h.srv.EntrySPIFFEID(toy.GetId()); return ok }, 5*time.Second, 10*time.Millisecond)
	_, err = viewer.DeleteEntry(ctx, &unumv1.DeleteEntryRequest{Id: toy.GetId()})
	require.NoError(t, err, "a sandbox entry may be deleted by the sandbox grant")
	_, err = unumv1.NewIdentityClient(conn(t, "/user/admin")).DeleteEntry(ctx, &unumv1.DeleteEntryRequest{Id: prod.GetId()})
	require.NoError(t, err)
	_, err = viewer.CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/prod/job/toy", Node: "node-1", Selectors: []string{"unix:uid:4242"}})
	requireCode(t, err, codes.PermissionDenied, "no rule allows spiffe://unum.test/user/pol-viewer to id.register id/prod/job/toy")
	denial, ok := rpc.DenialOf(err)
	require.True(t, ok)
	require.Equal(t, applied.GetRevision(), denial.Revision)
	require.Equal(t, "id.register", denial.Action)

	// Explain: the recorded input, the result and the rules that fired.
	ex, err := admin.Explain(ctx, &unumv1.ExplainPolicyRequest{DecisionId: denial.DecisionID})
	require.NoError(t, err)
	require.False(t, ex.GetAllow())
	require.True(t, ex.GetPrivileged())
	require.Equal(t, applied.GetRevision(), ex.GetRevision())
	require.Contains(t, ex.GetInputJson(), `"namespace":"prod"`)
	require.NotEmpty(t, ex.GetFired())
	var rules []string
	for _, f := range ex.GetFired() {
		rules = append(rules, f.GetRule())
	}
	require.Contains(t, rules, "data.unum.authz.reasons")
	_, err = admin.Explain(ctx, &unumv1.ExplainPolicyRequest{DecisionId: "node-9.0011223344556677"})
	requireCode(t, err, codes.FailedPrecondition, "made on node node-9")
	_, err = admin.Explain(ctx, &unumv1.ExplainPolicyRequest{DecisionId: "nonsense"})
	requireCode(t, err, codes.InvalidArgument, "want NODE.HEX")

	// The same bundle again stores nothing.
	again, err := admin.Apply(ctx, &unumv1.ApplyPolicyRequest{Bundle: bundleWith(map[string]string{"sandbox.rego": sandboxGrant, "data.json": viewerBinding})})
	require.NoError(t, err)
	require.True(t, again.GetUnchanged())
	require.Equal(t, applied.GetRevision(), again.GetRevision())

	hist, err := admin.History(ctx, &unumv1.PolicyHistoryRequest{Limit: 2})
	require.NoError(t, err)
	require.Len(t, hist.GetRevisions(), 2)
	require.Equal(t, applied.GetRevision(), hist.GetRevisions()[0].GetRevision())
	require.Equal(t, "spiffe://unum.test/user/admin", hist.GetRevisions()[0].GetAuthor())
	require.Equal(t, "sandbox", hist.GetRevisions()[0].GetMessage())
	require.Equal(t, start, hist.GetRevisions()[1].GetRevision())

	// What-if, against the live revision.
	chk, err := admin.Check(ctx, &unumv1.CheckPolicyRequest{SpiffeId: "spiffe://unum.test/user/pol-viewer", Action: "id.register", Resource: "id/sandbox/job/x"})
	require.NoError(t, err)
	require.True(t, chk.GetAllow())
	require.Equal(t, []string{"viewers may register in sandbox"}, chk.GetReasons())
	chk, err = admin.Check(ctx, &unumv1.CheckPolicyRequest{SpiffeId: "spiffe://unum.test/ns/web/job/api", Action: "policy.apply", Resource: "policy/-/bundle"})
	require.NoError(t, err)
	require.False(t, chk.GetAllow())
	require.True(t, chk.GetPrivileged())
	for _, bad := range []*unumv1.CheckPolicyRequest{
		{SpiffeId: "spiffe://other.test/user/x", Action: "node.ls", Resource: "node/-/*"},
		{SpiffeId: "spiffe://unum.test/user/x", Action: "ls", Resource: "node/-/*"},
		{SpiffeId: "spiffe://unum.test/user/x", Action: "node.ls", Resource: "node"},
	} {
		_, err := admin.Check(ctx, bad)
		requireCode(t, err, codes.InvalidArgument, "")
	}

	// Rollback stores the old bundle as a new revision.
	rb, err := admin.Rollback(ctx, &unumv1.RollbackPolicyRequest{Revision: start})
	require.NoError(t, err)
	require.Equal(t, applied.GetRevision()+1, rb.GetRevision())
	waitServing(t, rb.GetRevision())
	got, err := admin.Get(ctx, &unumv1.GetPolicyRequest{})
	require.NoError(t, err)
	require.Equal(t, start, got.GetRestoresRevision())
	_, err = viewer.CreateEntry(ctx, &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/sandbox/job/toy2", Node: "node-1", Selectors: []string{"unix:uid:4243"}})
	requireCode(t, err, codes.PermissionDenied, "denied by policy") // after rollback the sandbox grant is gone
	_, err = admin.Rollback(ctx, &unumv1.RollbackPolicyRequest{Revision: 99999})
	requireCode(t, err, codes.NotFound, "policy revision 99999 does not exist")
	_, err = admin.Get(ctx, &unumv1.GetPolicyRequest{Revision: 99999})
	requireCode(t, err, codes.NotFound, "does not exist")
}

// TestPolicyBadBundles: every malformed bundle is refused with the file,
// line and reason, and the live revision is untouched.
func TestPolicyBadBundles(t *testing.T) {
	admin := policyClient(t, "/user/admin")
	before := latestRevision(t)
	huge := strings.Repeat("# padding\n", policy.MaxBundleBytes/10+1)
	for _, tc := range []struct {
		name  string
		files map[string]string
		code  codes.Code
		want  string
	}{
		{"malformed rego", map[string]string{"bad.rego": "package unum.authz\n\nallow if {\n"}, codes.InvalidArgument, "bad.rego:"},
		{"unknown input field", map[string]string{"typo.rego": "package unum.authz\n\nimport rego.v1\n\ngrants contains \"x\" if input.subject.roles == \"admin\"\n"}, codes.InvalidArgument, "typo.rego:5: undefined ref: input.subject.roles"},
		{"failing test", map[string]string{"fail_test.rego": "package unum.authz_test\n\nimport rego.v1\n\ntest_fails if false\n"}, codes.FailedPrecondition, "fail_test.rego:5"},
		{"too big", map[string]string{"big.rego": "package unum.extra\n" + huge}, codes.InvalidArgument, "at most 1048576 allowed"},
		{"bad data", map[string]string{"data.json": "[1,2]"}, codes.InvalidArgument, "data.json: data.json must hold a JSON object"},
		{"no decision", map[string]string{"authz.rego": "package unum.other\n", "authz_test.rego": ""}, codes.InvalidArgument, "does not define data.unum.authz.decision"},
		{"lockout: admin may not apply", map[string]string{"lock.rego": "package unum.authz\n\nimport rego.v1\n\ndenies contains \"frozen\" if input.action == \"policy.apply\"\n", "authz_test.rego": ""}, codes.FailedPrecondition, "lockout: spiffe://unum.test/user/admin may not policy.apply"},
		{"lockout: nodes may not renew", map[string]string{"lock.rego": "package unum.authz\n\nimport rego.v1\n\ndenies contains \"no renewals\" if input.action == \"node.renew\"\n", "authz_test.rego": ""}, codes.FailedPrecondition, "may not node.renew"},
		// Keyed on a real member's name, or on the deciding node: the guard
		// probes as the actual members, not only a synthetic node.
		{"lockout: one real node may not heartbeat", map[string]string{"lock.rego": "package unum.authz\n\nimport rego.v1\n\ndenies contains \"node-1 frozen\" if input.subject.name == \"node-1\"\n", "authz_test.rego": ""}, codes.FailedPrecondition, "lockout: spiffe://unum.test/node/node-1 may not node.heartbeat"},
		{"lockout: admin frozen on one node", map[string]string{"lock.rego": "package unum.authz\n\nimport rego.v1\n\ndenies contains \"frozen here\" if {\n\tinput.context.node == \"node-1\"\n\tinput.action == \"policy.apply\"\n}\n", "authz_test.rego": ""}, codes.FailedPrecondition, "may not policy.apply policy/-/bundle on node node-1"},
		{"lockout: admin by role attribute", map[string]string{"lock.rego": "package unum.authz\n\nimport rego.v1\n\ndenies contains \"no admins\" if input.subject.attributes.role == \"admin\"\n", "authz_test.rego": ""}, codes.FailedPrecondition, "lockout: spiffe://unum.test/user/admin may not policy.apply"},
		{"privilege floor", map[string]string{"authz.rego": strings.Replace(string(policy.Builtin().Files["authz.rego"]), `"policy.apply", `, "", 1), "authz_test.rego": ""}, codes.FailedPrecondition, "marks policy.apply unprivileged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: bundleWith(tc.files)})
			requireCode(t, err, tc.code, tc.want)
			require.Equal(t, before, latestRevision(t), "nothing applied")
		})
	}
	_, err := admin.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{})
	requireCode(t, err, codes.InvalidArgument, "policy bundle is empty")
}

// TestPolicyFloorSurvivesForce: a bundle forced past the guard that calls
// policy.apply unprivileged still gets privileged decisions for it: the
// minimum privileged set is fixed in code.
func TestPolicyFloorSurvivesForce(t *testing.T) {
	admin := policyClient(t, "/user/admin")
	t.Cleanup(func() { restoreBuiltin(t) })
	unpriv := strings.Replace(string(policy.Builtin().Files["authz.rego"]), `"policy.apply", `, "", 1)
	resp, err := admin.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: bundleWith(map[string]string{"authz.rego": unpriv, "authz_test.rego": ""}), Force: true, Message: "forced"})
	require.NoError(t, err)
	require.NotEmpty(t, resp.GetForced())
	waitServing(t, resp.GetRevision())
	chk, err := admin.Check(ctxT(t), &unumv1.CheckPolicyRequest{SpiffeId: "spiffe://unum.test/user/admin", Action: "policy.apply", Resource: "policy/-/bundle"})
	require.NoError(t, err)
	require.True(t, chk.GetPrivileged(), "the floor holds whatever the bundle says")
	hist, err := admin.History(ctxT(t), &unumv1.PolicyHistoryRequest{Limit: 1})
	require.NoError(t, err)
	require.True(t, hist.GetRevisions()[0].GetForced())
}

// TestPolicyNotForWorkloadsOrNodes: a workload or a node cannot apply,
// roll back or shadow policy, and is told so with a decision id.
func TestPolicyNotForWorkloadsOrNodes(t *testing.T) {
	before := latestRevision(t)
	for _, who := range []string{"/ns/web/job/api", "/node/node-1", "/ns/admin/job/admin"} {
		c := policyClient(t, who)
		_, err := c.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: bundleWith(nil), Message: "takeover"})
		requireCode(t, err, codes.PermissionDenied, "to policy.apply policy/-/bundle")
		d, ok := rpc.DenialOf(err)
		require.True(t, ok)
		require.NotEmpty(t, d.DecisionID)
		_, err = c.Rollback(ctxT(t), &unumv1.RollbackPolicyRequest{Revision: 1})
		requireCode(t, err, codes.PermissionDenied, "policy.rollback")
		_, err = c.StartShadow(ctxT(t), &unumv1.StartShadowRequest{Bundle: bundleWith(nil)})
		requireCode(t, err, codes.PermissionDenied, "policy.shadow")
	}
	require.Equal(t, before, latestRevision(t))
}

// TestPolicyShadow: a candidate runs beside the live policy and reports
// exactly the decisions it would change, nothing else; it changes none.
func TestPolicyShadow(t *testing.T) {
	admin := policyClient(t, "/user/admin")
	t.Cleanup(func() {
		_, _ = admin.StopShadow(context.Background(), &unumv1.StopShadowRequest{})
		restoreBuiltin(t)
	})
	applied, err := admin.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: bundleWith(map[string]string{"data.json": `{"bindings": {"spiffe://unum.test/user/shadow-viewer": "viewer"}}`})})
	require.NoError(t, err)
	waitServing(t, applied.GetRevision())
	candidate := bundleWith(map[string]string{
		"data.json":    `{"bindings": {"spiffe://unum.test/user/shadow-viewer": "viewer"}}`,
		"tighten.rego": "package unum.authz\n\nimport rego.v1\n\ndenies contains \"viewers no longer list nodes\" if {\n\trole == \"viewer\"\n\tinput.action == \"node.ls\"\n}\n",
	})
	sh, err := admin.StartShadow(ctxT(t), &unumv1.StartShadowRequest{Bundle: candidate, DurationSeconds: 60})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s := h.decider.CurrentShadow()
		return s != nil && s.ID == sh.GetShadowId()
	}, 10*time.Second, 10*time.Millisecond)

	viewerConn := conn(t, "/user/shadow-viewer")
	for i := 0; i < 3; i++ {
		_, err := unumv1.NewClusterClient(viewerConn).ListNodes(ctxT(t), &unumv1.ListNodesRequest{})
		require.NoError(t, err, "the shadow changes nothing")
		_, err = unumv1.NewIdentityClient(viewerConn).ListEntries(ctxT(t), &unumv1.ListEntriesRequest{})
		require.NoError(t, err)
		_, err = unumv1.NewClusterClient(conn(t, "/user/admin")).ListNodes(ctxT(t), &unumv1.ListNodesRequest{})
		require.NoError(t, err)
	}
	rep, err := admin.ShadowReport(ctxT(t), &unumv1.ShadowReportRequest{ShadowId: sh.GetShadowId()})
	require.NoError(t, err)
	require.Len(t, rep.GetChanges(), 3, "exactly the viewer's node listings change")
	for _, c := range rep.GetChanges() {
		require.Equal(t, "spiffe://unum.test/user/shadow-viewer", c.GetSubject())
		require.Equal(t, "node.ls", c.GetAction())
		require.True(t, c.GetLiveAllow())
		require.False(t, c.GetShadowAllow())
		require.Equal(t, []string{"viewers no longer list nodes"}, c.GetShadowReasons())
	}
	st, err := admin.Status(ctxT(t), &unumv1.PolicyStatusRequest{})
	require.NoError(t, err)
	require.Equal(t, sh.GetShadowId(), st.GetShadowId())

	// One shadow at a time, and stopping names the one to stop.
	_, err = admin.StartShadow(ctxT(t), &unumv1.StartShadowRequest{Bundle: candidate, DurationSeconds: 60})
	requireCode(t, err, codes.AlreadyExists, "shadow "+sh.GetShadowId())
	_, err = admin.StopShadow(ctxT(t), &unumv1.StopShadowRequest{ShadowId: "shadow-0000000000000000"})
	requireCode(t, err, codes.FailedPrecondition, "is not running")

	_, err = admin.StopShadow(ctxT(t), &unumv1.StopShadowRequest{ShadowId: sh.GetShadowId()})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return h.decider.CurrentShadow() == nil }, 10*time.Second, 10*time.Millisecond)
	_, err = admin.StartShadow(ctxT(t), &unumv1.StartShadowRequest{Bundle: bundleWith(map[string]string{"bad.rego": "package x\nallow if {"})})
	requireCode(t, err, codes.InvalidArgument, "bad.rego:")
}

// TestPolicyUnloadableRevisionGoesStale: a latest revision this node
// cannot compile (a newer bundle on an older binary, or garbage written to
// the store) leaves the node serving the previous revision, and watch
// progress reports never confirm that one as current: the node stays
// stale, refusing privileged actions, until a loadable revision is stored.
func TestPolicyUnloadableRevisionGoesStale(t *testing.T) {
	ctx := ctxT(t)
	served := h.srv.cfg.Policy.Engine().Revision()
	bad := &policy.Bundle{Files: map[string][]byte{"authz.rego": []byte("package unum.authz\n\ndecision := {\n")}}
	next := served + 1
	_, err := h.etcd.Client().Txn(ctx).Then(
		clientv3.OpPut(policyMetaKey(next), mustJSON(PolicyMeta{Revision: next, Author: "test", SHA256: bad.Digest()})),
		clientv3.OpPut(policyBundleKey(next), string(encodeBundle(bad))),
		clientv3.OpPut(keyPolicyLatest, strconv.FormatInt(next, 10)),
	).Commit()
	require.NoError(t, err)
	t.Cleanup(func() { restoreBuiltin(t) })
	// Several progress reports (one a second) later, the node still knows
	// it is behind.
	time.Sleep(3 * time.Second)
	st := h.srv.cfg.Policy.Status(time.Now())
	require.Equal(t, served, st.Revision)
	require.Equal(t, next, st.Latest)
	require.ErrorIs(t, h.srv.cfg.Policy.Fresh(time.Now().Add(policy.DefaultStaleBound+time.Second)), policy.ErrStale)
}

// TestPolicyLargeBundleStores: a bundle just under the size limit is
// stored, however its text would grow as JSON (every < escapes to six
// bytes): the limit callers see is the one that holds.
func TestPolicyLargeBundleStores(t *testing.T) {
	admin := policyClient(t, "/user/admin")
	t.Cleanup(func() { restoreBuiltin(t) })
	base := bundleWith(nil)
	size := 0
	for _, d := range base.GetFiles() {
		size += len(d)
	}
	header := "package unum.extra\n# "
	pad := strings.Repeat("<", policy.MaxBundleBytes-size-len(header)-1)
	resp, err := admin.Apply(ctxT(t), &unumv1.ApplyPolicyRequest{Bundle: bundleWith(map[string]string{"big.rego": header + pad + "\n"})})
	require.NoError(t, err)
	got, err := admin.Get(ctxT(t), &unumv1.GetPolicyRequest{Revision: resp.GetRevision()})
	require.NoError(t, err)
	require.Len(t, got.GetBundle().GetFiles()["big.rego"], len(header)+len(pad)+1)
}

// TestPolicyWatchStreamsRoles: nodes without user records learn users'
// roles from the policy stream, on connect and when they change, so a
// user's role is the same subject attribute on every node.
func TestPolicyWatchStreamsRoles(t *testing.T) {
	ctx := ctxT(t)
	stream, err := policyClient(t, "/node/node-1").Watch(ctx, &unumv1.WatchPolicyRequest{})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	require.True(t, first.GetRolesSet())
	require.Equal(t, "admin", first.GetUserRoles()["admin"])
	require.NotNil(t, first.GetRevision(), "a node with no revision gets the bundle")
	require.Equal(t, h.srv.cfg.Policy.Engine().Digest(), first.GetRevision().GetSha256())

	addUser(t, "streamed-viewer", "viewer")
	for {
		msg, err := stream.Recv()
		require.NoError(t, err, "the stream ended before the new role arrived")
		require.Nil(t, msg.GetRevision(), "the bundle is sent once")
		if msg.GetRolesSet() && msg.GetUserRoles()["streamed-viewer"] == "viewer" {
			break
		}
	}
}

// TestJoinTokenRolesStrict: roles are read one per element, as the policy
// route reads them; a comma inside an element is refused, so a request the
// policy decided as a compute-node token cannot yield a control-node one.
func TestJoinTokenRolesStrict(t *testing.T) {
	cc := unumv1.NewClusterClient(conn(t, "/user/admin"))
	for _, roles := range [][]string{{"compute,control"}, {" control"}, {"compute", ""}} {
		_, err := cc.CreateJoinToken(ctxT(t), &unumv1.CreateJoinTokenRequest{Name: "strict-roles", Roles: roles})
		requireCode(t, err, codes.InvalidArgument, "roles")
	}
}
