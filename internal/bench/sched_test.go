package bench

import (
	"bytes"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunSched runs the sched benchmark on a tiny cluster with a tiny
// window: it checks the report's shape and the packing figure (exact on a
// uniform workload), never the throughput target.
func TestRunSched(t *testing.T) {
	var progress bytes.Buffer
	rep, err := RunSched(testCtx(t), Options{Duration: 40 * time.Millisecond, SchedNodes: 200, SchedTasks: 2000, Progress: &progress})
	require.NoError(t, err, progress.String())
	require.Equal(t, "sched", rep.Component)
	require.Equal(t, "local", rep.Mode)
	require.Zero(t, rep.Filesystem)
	require.Equal(t, "200", rep.Settings.Extra["nodes"])
	require.Equal(t, "2000", rep.Settings.Extra["tasks"])
	require.Contains(t, progress.String(), "warm-up")

	require.Len(t, rep.Results, 3)
	mixed, uniform, packing := rep.Results[0], rep.Results[1], rep.Results[2]
	require.Equal(t, ResultSchedMixed, mixed.Name)
	require.Equal(t, ResultSchedUniform, uniform.Name)
	require.Equal(t, ResultSchedPacking, packing.Name)
	requireMeasured(t, mixed, false, true)
	requireMeasured(t, uniform, false, false)
	require.Equal(t, mixed.OpsPerSec >= 20_000, *mixed.Met)
	for _, r := range []Result{mixed, uniform} {
		require.Contains(t, rep.Settings.Windows, r.Name)
		require.Equal(t, 1, r.Clients)
	}

	// 2,000 uniform tasks, 16 to a node: exactly 125 nodes, the bound.
	require.Equal(t, int64(125), packing.Ops)
	require.Equal(t, "125", rep.Settings.Extra["uniform_lower_bound"])
	require.NotNil(t, packing.Met)
	require.True(t, *packing.Met, packing.Description)

	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	require.NoError(t, rep.Table(tw))
	require.NoError(t, tw.Flush())
	require.Regexp(t, `(?m)^sched_place_mixed .*>= 20000 placements/s +(met|NOT MET)$`, b.String())
	require.Regexp(t, `(?m)^sched_uniform_nodes_used .*<= 1.05x lower bound \(125\) +met$`, b.String())
}

func TestRunSchedRefusesCluster(t *testing.T) {
	_, err := RunSched(testCtx(t), Options{Cluster: &ClusterTarget{ConfigPath: "x"}})
	require.ErrorContains(t, err, "in this process")
}
