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
	"github.com/unumos/unum/enforcement"
	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/threatmodel"
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

// TestEnforcerRestartReconciles: an agent that dies leaves its programs
// and maps pinned; the next run adopts them and reports what the kernel
// really does until its first sync, which then wins whatever the pinned
// maps held: a node-wide audit-only flag switched off while no agent ran
// is switched off in the kernel (not silently kept), and rules withdrawn
// meanwhile are deleted.
func TestEnforcerRestartReconciles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loads BPF programs and makes cgroups: needs root; CI runs as root")
	}
	if caps := kernel.Probe(); !caps.CgroupBPF {
		t.Skipf("kernel lacks cgroup BPF: %s", caps.Reason)
	}
	n, log := newComputeNode(t, "restart")
	c := n.compute
	pinDir := filepath.Join(bpfPinRoot, cgroupName("restart", n.l.Dir))
	t.Cleanup(func() { require.NoError(t, kernel.Remove(pinDir)) })

	web := "spiffe://unum.test/ns/shop/job/web"
	sync := func(e *enforcer, auditOnly bool, rules ...string) {
		e.applySync(&unumv1.SyncAgentResponse{AllocationsLoaded: true, NetworkLoaded: true, AuditOnly: auditOnly, Revision: 1,
			Network: []*unumv1.NetworkIdentity{{Number: 5, SpiffeId: web, Rules: rules}}})
	}
	kernelState := func(e *enforcer) (bool, []string) {
		st, err := e.k.Stats()
		require.NoError(t, err)
		got, err := e.k.Rules()
		require.NoError(t, err)
		var rs []string
		for _, r := range got[5] {
			rs = append(rs, r.String())
		}
		return st.NodeAuditOnly, rs
	}

	first := n.startEnforcement(c)
	require.NotNil(t, first.k, first.reason)
	sync(first, true, "tcp 10.0.0.1/32:443", "tcp 10.0.0.2/32:443")
	auditOnly, rules := kernelState(first)
	require.True(t, auditOnly)
	require.Equal(t, []string{"tcp 10.0.0.1/32:443", "tcp 10.0.0.2/32:443"}, rules)
	first.close(false) // the agent dies: the pins stay

	second := n.startEnforcement(c)
	require.NotNil(t, second.k, second.reason)
	require.Equal(t, "audit-only", second.mode(), "until its first sync the node reports what the kernel does")
	sync(second, false, "tcp 10.0.0.1/32:443")
	auditOnly, rules = kernelState(second)
	require.False(t, auditOnly, "the cluster left audit-only while no agent ran: the kernel must follow")
	require.Equal(t, []string{"tcp 10.0.0.1/32:443"}, rules, "a rule withdrawn while no agent ran stayed")
	second.noteMode() // what the record loop does on the change
	require.Equal(t, "enforce", second.mode())
	second.close(false)

	var modes []string
	require.NoError(t, log.Scan(context.Background(), 0, func(_ uint64, raw []byte) bool {
		e, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		if e.Action == audit.ActionEnforcementMode {
			var d EnforcementModeDetails
			require.NoError(t, json.Unmarshal(e.Details, &d))
			modes = append(modes, d.Mode)
		}
		return true
	}))
	require.Equal(t, []string{"enforce", "audit-only", "enforce"}, modes, "every mode the node took is recorded")
}

// TestSyscallAuditCanBeTurnedOff: an operator who will not pay the syscall
// audit layer's machine-wide cost (unum node --syscall-audit=false) gets a
// node without it that says so in its reason, never silently; turned back
// on, the layer is there.
func TestSyscallAuditCanBeTurnedOff(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loads BPF programs and makes cgroups: needs root; CI runs as root")
	}
	caps := kernel.Probe()
	if !caps.CgroupBPF {
		t.Skipf("kernel lacks cgroup BPF: %s", caps.Reason)
	}
	n, _ := newComputeNode(t, "sysoff")
	pinDir := filepath.Join(bpfPinRoot, cgroupName("sysoff", n.l.Dir))
	t.Cleanup(func() { require.NoError(t, kernel.Remove(pinDir)) })

	n.o.NoSyscallAudit = true
	off := n.startEnforcement(n.compute)
	require.NotNil(t, off.k, off.reason)
	require.NotContains(t, off.layers, enforcement.LayerSyscallAudit)
	require.Contains(t, off.reason, "bpf-syscall-audit off (unum node --syscall-audit=false)")
	require.Equal(t, "enforce", off.mode(), "the network layer is unaffected")
	off.close(false)

	if !caps.SyscallAudit {
		t.Skip(threatmodel.KernelLacks("bpf-syscall-audit") + caps.SyscallReason)
	}
	n.o.NoSyscallAudit = false
	on := n.startEnforcement(n.compute)
	require.NotNil(t, on.k, on.reason)
	require.Contains(t, on.layers, enforcement.LayerSyscallAudit)
	require.NotContains(t, on.reason, "bpf-syscall-audit")
	on.close(false)
}
