package kbench

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/enforcement/kernel"
)

func requireBench(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: loads BPF programs, moves itself between cgroups")
	}
	if c := kernel.Probe(); !c.CgroupBPF {
		tb.Skipf("kernel lacks cgroup BPF: %s", c.Reason)
	}
}

// TestRunSmall runs a short bench end to end and checks its shape: every
// configuration measured, positive figures, everything it made removed.
func TestRunSmall(t *testing.T) {
	requireBench(t)
	rep, err := Run(t.Context(), Options{Entries: []int{0, 100}, Connects: 50, Rounds: 3, Iptables: true})
	require.NoError(t, err)
	var got []string
	for _, r := range rep.Results {
		got = append(got, string(r.Config))
		require.Positive(t, r.NsPerConnect)
		require.Len(t, r.Rounds, 3)
	}
	want := []string{"none", "none", "bpf", "bpf", "bpf", "bpf"}
	if !strings.HasPrefix(rep.Iptables, "not measured") {
		want = append(want, "iptables", "iptables")
	}
	require.Equal(t, want, got)
	var sb strings.Builder
	require.NoError(t, rep.WriteText(&sb))
	t.Log("\n" + sb.String())
	own, err := os.ReadFile("/proc/self/cgroup")
	require.NoError(t, err)
	require.NotContains(t, string(own), "unum-bench", "the process is back in its own cgroup")
	ents, err := os.ReadDir("/sys/fs/bpf")
	require.NoError(t, err)
	for _, e := range ents {
		require.False(t, strings.HasPrefix(e.Name(), "unum-bench-"), "left behind: %s", e.Name())
	}
}

// BenchmarkConnect reports ns/op for one connect() in each configuration
// (go test -bench Connect ./enforcement/kernel/kbench).
func BenchmarkConnect(b *testing.B) {
	requireBench(b)
	rep, err := Run(b.Context(), Options{Connects: max(b.N, 200), Rounds: 3, Iptables: true})
	require.NoError(b, err)
	for _, r := range rep.Results {
		b.ReportMetric(r.NsPerConnect, string(r.Config)+"-"+r.Proto+"-"+strconv.Itoa(r.Entries)+"-ns/connect")
	}
	b.ReportMetric(0, "ns/op")
}
