package node

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/enforcement/kernel"
)

// TestDegradedEnforcementIsReported: a compute node on a kernel without
// cgroup BPF (simulated at the probe, the true external boundary) runs
// degraded and never silently: it says so in its heartbeat and in its
// audit log with the reason, and, enforcement being required, it receives
// no tasks.
func TestDegradedEnforcementIsReported(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a compute node needs root for its task cgroups; CI runs as root")
	}
	ctx := context.Background()
	// Task uids must reach the node's task folder.
	require.NoError(t, os.Chmod(cl.base, 0o711))
	tok, err := cl.joinToken(ctx, "node-nobpf", "compute")
	require.NoError(t, err)
	p, err := freePorts()
	require.NoError(t, err)
	noBPF := func() kernel.Capabilities {
		return kernel.Capabilities{Reason: "simulated kernel without cgroup BPF"}
	}
	require.NoError(t, cl.start("node-nobpf", Options{DataDir: filepath.Join(cl.base, "nobpf"), Ports: p, JoinAddr: cl.enroll, Token: tok, KernelProbe: noBPF}))
	t.Cleanup(func() {
		_ = cl.stop("node-nobpf")
		cc, err := cl.adminConn()
		if err == nil {
			_, _ = unumv1.NewClusterClient(cc).RemoveNode(context.Background(), &unumv1.RemoveNodeRequest{Name: "node-nobpf", Force: true})
			cc.Close()
		}
	})
	require.NoError(t, cl.waitReady(ctx, "node-nobpf"))
	cc, err := cl.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	var node *unumv1.Node
	require.Eventually(t, func() bool {
		resp, err := unumv1.NewClusterClient(cc).ListNodes(ctx, &unumv1.ListNodesRequest{})
		if err != nil {
			return false
		}
		for _, n := range resp.GetNodes() {
			if n.GetName() == "node-nobpf" && n.GetEnforcement() != "" && n.GetCapacity() != nil {
				node = n
				return true
			}
		}
		return false
	}, 30*time.Second, 200*time.Millisecond)
	require.Equal(t, "degraded", node.GetEnforcement())
	require.Contains(t, node.GetUnschedulable(), "enforcement is required and the node is degraded")
	st, err := unumv1.NewEnforcementClient(cc).Status(ctx, &unumv1.EnforcementStatusRequest{})
	require.NoError(t, err)
	found := false
	for _, n := range st.GetNodes() {
		if n.GetNode() == "node-nobpf" {
			found = true
			require.Equal(t, "degraded", n.GetMode())
			require.Contains(t, n.GetReason(), "simulated kernel without cgroup BPF")
			require.NotContains(t, n.GetLayers(), "bpf-cgroup-net")
		}
	}
	require.True(t, found)

	rn := cl.nodes["node-nobpf"]
	var events []*audit.Event
	require.NoError(t, rn.node.Load().audit.Scan(ctx, 0, func(_ uint64, raw []byte) bool {
		e, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		if e.Action == audit.ActionEnforcementMode {
			events = append(events, e)
		}
		return true
	}))
	require.NotEmpty(t, events, "the degraded mode was not audited")
	var d EnforcementModeDetails
	require.NoError(t, json.Unmarshal(events[0].Details, &d))
	require.Equal(t, "degraded", d.Mode)
	require.Contains(t, d.Reason, "simulated kernel without cgroup BPF")
}
