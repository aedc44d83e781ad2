package bench

import (
	"bytes"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/stretchr/testify/require"
)

// TestRunCred runs the cred benchmark briefly: it checks the report's
// shape, that the mints were recorded (the run reads them back) and that
// revocation was measured on a control node and a compute node, never a
// performance target.
func TestRunCred(t *testing.T) {
	tmp := t.TempDir()
	var progress bytes.Buffer
	rep, err := RunCred(testCtx(t), Options{Duration: shortWindow, Concurrency: 4, TempDir: tmp, Progress: &progress})
	require.NoError(t, err, progress.String())
	requireEmptyDir(t, tmp)

	require.Equal(t, "cred", rep.Component)
	require.Equal(t, "local", rep.Mode)
	requireMachine(t, rep)
	require.Equal(t, 4, rep.Settings.Concurrency)
	require.Equal(t, "4 of 4 (each client's last mint: issuance record with inclusion proof, and its decision)", rep.Settings.Extra["issuance_records_checked"])

	names := make([]string, 0, len(rep.Results))
	for _, r := range rep.Results {
		names = append(names, r.Name)
		require.Contains(t, rep.Settings.Windows, r.Name)
	}
	require.Equal(t, []string{ResultCredMint, ResultCredVerifyWarm, ResultCredVerifyCold, ResultCredRevocation}, names)

	mint, warm, cold, rev := rep.Results[0], rep.Results[1], rep.Results[2], rep.Results[3]
	requireMeasured(t, mint, true, true)
	require.Equal(t, 4, mint.Clients)
	require.Equal(t, ">= 5000/s", mint.Target)

	for _, v := range []Result{warm, cold} {
		requireMeasured(t, v, false, true)
		require.Equal(t, rep.Settings.GOMAXPROCS, v.Clients)
		require.Zero(t, v.Ops%credVerifyBatch, "%s counts every verification of its batches", v.Name)
	}
	// The signature cache is what makes a warm verification cheap: a cold
	// one checks an ES256 signature each time (about 100 µs here).
	require.Greater(t, warm.OpsPerSec, 3*cold.OpsPerSec, "warm %v/s, cold %v/s", warm.OpsPerSec, cold.OpsPerSec)

	require.Equal(t, int64(credRevocations), rev.Ops)
	require.Zero(t, rev.Errors)
	require.Positive(t, rev.P50us)
	require.LessOrEqual(t, rev.P50us, rev.MaxUs)
	require.Equal(t, "max <= 2s", rev.Target)
	require.NotNil(t, rev.Met)
	require.Contains(t, rev.Description, "node-1 (compute+control)")
	require.Contains(t, rev.Description, credComputeNode+" (compute)")
	require.Contains(t, progress.String(), "joining "+credComputeNode+" as a compute node")
	require.Contains(t, progress.String(), "stopping the cluster")

	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	require.NoError(t, rep.Table(tw))
	require.NoError(t, tw.Flush())
	out := b.String()
	for _, r := range rep.Results {
		require.Regexp(t, `(?m)^`+r.Name+` .*(met|NOT MET)$`, out)
	}
	require.True(t, strings.Contains(out, "every signature checked"), out)
}

func TestRunCredRefusesCluster(t *testing.T) {
	_, err := RunCred(testCtx(t), Options{Cluster: &ClusterTarget{ConfigPath: "/nonexistent"}})
	require.ErrorContains(t, err, "does not apply")
}
