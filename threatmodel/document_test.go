package threatmodel

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewDocument(t *testing.T) {
	a := validThreat()
	a.Capability, a.Crosses = NetworkPeer, []string{"enrolment", "offline"}
	b := validThreat()
	b.ID, b.Status, b.Reason, b.Tests = "T-002", Accepted, "dev only", nil
	b.Capability, b.Crosses = StolenDisk, []string{"node-disk"}
	c := validThreat()
	c.ID, c.Status, c.Tests = "T-003", Open, nil
	c.Capability, c.Crosses = NetworkPeer, []string{"enrolment"}

	d := NewDocument([]Threat{a, b, c}, "the shipped policy", nil)
	require.Equal(t, Summary{Threats: 3, Mitigated: 1, Accepted: 1, Open: 1}, d.Summary)
	groups := map[string][]string{}
	for _, bt := range d.TrustBoundaries {
		groups[bt.Name] = bt.Threats
	}
	require.Len(t, d.TrustBoundaries, len(TrustBoundaries()), "every boundary is listed, crossed or not")
	require.Equal(t, []string{"T-001", "T-003"}, groups["enrolment"])
	require.Equal(t, []string{"T-001"}, groups["offline"])
	require.Equal(t, []string{}, groups["workload-api"])
	require.Equal(t, []CapabilityGroup{
		{NetworkPeer, []string{"T-001", "T-003"}}, {CompromisedWorkload, []string{}}, {CompromisedNode, []string{}},
		{MaliciousInsider, []string{}}, {StolenDisk, []string{"T-002"}},
	}, d.Capabilities)

	// JSON is {"threats": [...], ...} with lists, never null.
	out, err := json.Marshal(NewDocument(nil, "x", nil))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(out), `{"threats":[],"source":"x"`), string(out))
	require.Contains(t, string(out), `"privileged_actions":[]`)
}

func TestDocumentMarkdown(t *testing.T) {
	th := validThreat()
	th.Capability, th.Crosses = CompromisedWorkload, []string{"workload-api"}
	th.Title, th.Mitigation = "a | b", "line one\nline two\r\nthree"
	th.Kernel = &KernelDependency{Feature: "bpf-lsm", Tests: []string{"x.TestLSM"}, Fallback: []string{"y.TestSeccomp"}}
	acc := validThreat()
	acc.ID, acc.Status, acc.Reason, acc.Tests = "T-002", Accepted, "dev\nonly", nil
	acc.Capability, acc.Crosses = StolenDisk, []string{"node-disk"}
	md := NewDocument([]Threat{th, acc}, "the shipped policy", []PrivilegedAction{
		{Action: "policy.apply", Fixed: true, GrantedTo: []string{"user/admin", "role a|b"}},
		{Action: "job.run"},
	}).Markdown()

	for _, want := range []string{
		"2 threats: 1 mitigated, 1 accepted, 0 open.",
		"| `policy.apply` | yes | user/admin, role a\\|b |\n",
		"| `job.run` |  | nobody |\n",
		"| [T-001](#t-001) | a \\| b | S | compromised-workload | mitigated |\n",
		"| **Workload API socket** (`workload-api`) | ",
		"| compromised-workload | T-001 |\n",
		"\n### T-001\n\n**a | b**\n",
		"- Mitigation: line one line two three\n",
		"- STRIDE: S; attacker: compromised-workload; crosses: workload-api\n",
		"- Kernel: needs bpf-lsm; `x.TestLSM` may skip when the probe says the kernel lacks it, and then `y.TestSeccomp` must pass\n",
		"- Status: accepted: dev only\n",
	} {
		require.Contains(t, md, want)
	}
	require.NotContains(t, md, "\r")
	// Deterministic: a staleness check compares bytes.
	require.Equal(t, md, NewDocument([]Threat{th, acc}, "the shipped policy", []PrivilegedAction{
		{Action: "policy.apply", Fixed: true, GrantedTo: []string{"user/admin", "role a|b"}},
		{Action: "job.run"},
	}).Markdown())
}
