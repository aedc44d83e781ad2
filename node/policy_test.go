package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/policy"
)

// TestComputeNodeFollowsPolicy: a node without etcd (node-2, compute)
// follows the policy stream, serves a new revision soon after apply,
// reports it in heartbeats, decides with it on its own API, and explains
// its own decisions.
func TestComputeNodeFollowsPolicy(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	cc, err := cl.adminConn()
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	pc := unumv1.NewPolicyClient(cc)

	files := map[string][]byte{}
	for n, d := range policy.Builtin().Files {
		files[n] = d
	}
	files["extra.rego"] = []byte("package unum.authz\n\nimport rego.v1\n\n# Control node node-1 may read node-2's policy decisions.\ngrants contains \"test grant\" if {\n\tinput.subject.name == \"node-1\"\n\tinput.action == \"policy.explain\"\n}\n")
	applied, err := pc.Apply(ctx, &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{Files: files}, Message: "compute follows"})
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := pc.Apply(context.Background(), &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{Files: policy.Builtin().Files}, Message: "restore"})
		require.NoError(t, err)
	})
	start := time.Now()
	require.Eventually(t, func() bool {
		st, err := pc.Status(ctx, &unumv1.PolicyStatusRequest{})
		if err != nil {
			return false
		}
		// Other tests leave stopped nodes in the member list: the two
		// nodes that run throughout are the ones to converge.
		serving := 0
		for _, n := range st.GetNodes() {
			if (n.GetName() == "node-1" || n.GetName() == "node-2") && n.GetRevision() == applied.GetRevision() {
				serving++
			}
		}
		return serving == 2 && st.GetLatestRevision() == applied.GetRevision()
	}, 20*time.Second, 50*time.Millisecond)
	t.Logf("node-1 and node-2 reported revision %d %s after apply", applied.GetRevision(), time.Since(start).Round(time.Millisecond))

	// A call node-2 decides: node-1's identity applying policy on node-2.
	svid, roots, err := Layout{Dir: cl.nodes["node-1"].dir}.loadSVID()
	require.NoError(t, err)
	creds, err := rpc.NewCredentials(svid, roots)
	require.NoError(t, err)
	// node-2's API address from its membership record (tests restart it
	// with options that leave the ports to its config).
	var n2 string
	nodes, err := unumv1.NewClusterClient(cc).ListNodes(ctx, &unumv1.ListNodesRequest{})
	require.NoError(t, err)
	for _, n := range nodes.GetNodes() {
		if n.GetName() == "node-2" {
			n2 = n.GetApiAddress()
		}
	}
	require.NotEmpty(t, n2)
	n2ID := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("unum.test"), "/node/node-2")
	asNode1, err := rpc.DialNode(creds, n2ID, n2)
	require.NoError(t, err)
	defer asNode1.Close()
	_, err = unumv1.NewPolicyClient(asNode1).Apply(ctx, &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{Files: files}})
	d, ok := rpc.DenialOf(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, applied.GetRevision(), d.Revision, "node-2 decided with the new revision")
	nodeOf, err := policy.DecisionNode(d.DecisionID)
	require.NoError(t, err)
	require.Equal(t, "node-2", nodeOf)

	// node-2 explains its decision (to node-1, by the new revision's grant).
	ex, err := unumv1.NewPolicyClient(asNode1).Explain(ctx, &unumv1.ExplainPolicyRequest{DecisionId: d.DecisionID})
	require.NoError(t, err)
	require.False(t, ex.GetAllow())
	require.Equal(t, "node-2", ex.GetNode())
	require.NotEmpty(t, ex.GetFired())
	// node-1 does not hold it; nor does node-2 serve the control methods.
	_, err = pc.Explain(ctx, &unumv1.ExplainPolicyRequest{DecisionId: d.DecisionID})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	adminCfgConn := asAdminTo(t, n2ID, n2)
	_, err = unumv1.NewPolicyClient(adminCfgConn).History(ctx, &unumv1.PolicyHistoryRequest{})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "not a control node")
}

func asAdminTo(t *testing.T, node spiffeid.ID, addr string) *grpc.ClientConn {
	t.Helper()
	cfg, err := clientconfig.Load(cl.admin)
	require.NoError(t, err)
	creds, err := cfg.Credentials()
	require.NoError(t, err)
	cc, err := rpc.DialNode(creds, node, addr)
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

// BenchmarkPolicyConvergence measures, on the test cluster (control node-1,
// compute node-2, which follows the policy stream), how long an apply takes
// and how long until both nodes report serving the new revision (reported
// by the heartbeat each node sends as soon as it serves a new revision).
// Target (policy issue): every node serves a new revision within 2 s.
//
//	go test -run '^$' -bench BenchmarkPolicyConvergence -benchtime 20x ./node/
func BenchmarkPolicyConvergence(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cc, err := cl.adminConn()
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	pc := unumv1.NewPolicyClient(cc)
	var applied, served, worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		files := map[string][]byte{}
		for n, d := range policy.Builtin().Files {
			files[n] = d
		}
		files["bench.rego"] = []byte(fmt.Sprintf("package unum.bench\n\n# iteration %d at %d\n", i, time.Now().UnixNano()))
		start := time.Now()
		resp, err := pc.Apply(ctx, &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{Files: files}, Message: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		applied += time.Since(start)
		for {
			st, err := pc.Status(ctx, &unumv1.PolicyStatusRequest{})
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, ns := range st.GetNodes() {
				if (ns.GetName() == "node-1" || ns.GetName() == "node-2") && ns.GetRevision() == resp.GetRevision() {
					n++
				}
			}
			if n == 2 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		served += took
		worst = max(worst, took)
	}
	b.StopTimer()
	b.ReportMetric(float64(applied.Milliseconds())/float64(b.N), "ms-to-applied")
	b.ReportMetric(float64(served.Milliseconds())/float64(b.N), "ms-to-served")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-worst-served")
	if _, err := pc.Apply(ctx, &unumv1.ApplyPolicyRequest{Bundle: &unumv1.PolicyBundle{Files: policy.Builtin().Files}, Message: "restore"}); err != nil {
		b.Fatal(err)
	}
}
