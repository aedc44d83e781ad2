package kbench

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/enforcement/kernel"
	"github.com/unumos/unum/scheduler/cgroup"
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
	base := map[string]float64{}
	for _, r := range rep.Results {
		got = append(got, string(r.Config))
		require.Positive(t, r.NsPerConnect)
		require.Len(t, r.Rounds, 3)
		if r.Config == ConfigNone {
			base[r.Proto] = r.NsPerConnect
		}
	}
	want := []string{"none", "none", "bpf", "bpf", "bpf", "bpf"}
	if !strings.HasPrefix(rep.Iptables, "not measured") {
		want = append(want, "iptables", "iptables")
	}
	require.Equal(t, want, got)
	require.Len(t, base, 2, "a baseline per protocol")
	for _, r := range rep.Results {
		require.Equal(t, r.NsPerConnect-base[r.Proto], r.AddedNs, "%s %s %d", r.Config, r.Proto, r.Entries)
		t.Logf("%-8s %s %6d entries: %6.0f ns/connect, %+6.0f ns", r.Config, r.Proto, r.Entries, r.NsPerConnect, r.AddedNs)
	}
	t.Logf("kernel %s; iptables: %s", rep.Kernel, rep.Iptables)
	own, err := os.ReadFile("/proc/self/cgroup")
	require.NoError(t, err)
	require.NotContains(t, string(own), "unum-bench", "the process is back in its own cgroup")
	l, err := cgroup.DetectHost()
	require.NoError(t, err)
	for _, dir := range []string{"/sys/fs/bpf", l.V2.Mount} {
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		for _, e := range ents {
			require.False(t, strings.HasPrefix(e.Name(), "unum-bench-"), "left behind: %s/%s", dir, e.Name())
		}
	}
}

// TestMedian: the middle value, or the mean of the middle two, whatever
// the order; the input is left as it was.
func TestMedian(t *testing.T) {
	xs := []float64{5, 1, 4, 2}
	require.Equal(t, 3.0, median(xs))
	require.Equal(t, []float64{5, 1, 4, 2}, xs)
	require.Equal(t, 4.0, median([]float64{9, 4, 1}))
	require.Equal(t, 7*time.Nanosecond, median([]time.Duration{9, 7, 1}))
	require.Equal(t, 5*time.Nanosecond, median([]time.Duration{9, 1, 2, 9}))
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
