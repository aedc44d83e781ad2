package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunAuthz runs the authz benchmark with a tiny window: it checks the
// report's shape and that every decision got its expected answer, never a
// performance target.
func TestRunAuthz(t *testing.T) {
	var progress bytes.Buffer
	rep, err := RunAuthz(testCtx(t), Options{Duration: 80 * time.Millisecond, Concurrency: 2, Progress: &progress})
	require.NoError(t, err, progress.String())
	require.Equal(t, "authz", rep.Component)
	require.Equal(t, "local", rep.Mode)
	require.Zero(t, rep.Filesystem)
	require.Equal(t, 2, rep.Settings.Concurrency)
	require.Equal(t, "1000", rep.Settings.Extra["bindings"])
	require.Contains(t, progress.String(), "round 4/4")

	require.Len(t, rep.Results, 3)
	require.Equal(t, ResultAuthzUnum, rep.Results[0].Name)
	require.Equal(t, ResultAuthzUncached, rep.Results[1].Name)
	require.Equal(t, ResultAuthzRaw, rep.Results[2].Name)
	requireMeasured(t, rep.Results[0], true, true)
	requireMeasured(t, rep.Results[1], true, true)
	requireMeasured(t, rep.Results[2], true, false)
	for _, r := range rep.Results {
		require.Equal(t, 2, r.Clients)
		require.Contains(t, rep.Settings.Windows, r.Name)
		require.LessOrEqual(t, r.P50us, r.P90us, r.Name)
		require.LessOrEqual(t, r.P90us, r.P99us, r.Name)
		require.LessOrEqual(t, r.P99us, r.MaxUs, r.Name)
	}
	unum, raw := rep.Results[0], rep.Results[2]
	require.Equal(t, unum.P99us <= 50, *unum.Met)

	require.Len(t, rep.Comparisons, 2)
	require.Equal(t, ComparisonAuthzUncached, rep.Comparisons[1].Name)
	c := rep.Comparisons[0]
	require.Equal(t, ComparisonAuthz, c.Name)
	require.Equal(t, ResultAuthzUnum, c.Of)
	require.Equal(t, ResultAuthzRaw, c.Over)
	require.InDelta(t, unum.P50us/raw.P50us, c.P50, 0.006)
	require.InDelta(t, raw.OpsPerSec/unum.OpsPerSec, c.PerOp, 0.006)
	require.NotNil(t, c.Met)
	require.Equal(t, unum.P50us/raw.P50us <= 1.2 && raw.OpsPerSec/unum.OpsPerSec <= 1.2, *c.Met,
		"met is judged on the unrounded ratios (p50 %v, time/op %v)", unum.P50us/raw.P50us, raw.OpsPerSec/unum.OpsPerSec)

	t.Run("table", func(t *testing.T) {
		var b bytes.Buffer
		tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
		require.NoError(t, rep.Table(tw))
		require.NoError(t, tw.Flush())
		out := b.String()
		require.Regexp(t, `(?m)^filesystem: +none \(in memory\)$`, out)
		require.Regexp(t, `(?m)^authz_decide_unum .*p99 <= 50µs +(met|NOT MET)$`, out)
		require.Regexp(t, `(?m)^authz_unum_over_raw_opa +authz_decide_unum +authz_decide_raw_opa +[0-9.]+x +[0-9.]+x +[0-9.]+x +<= 1.2x \(p50, time/op\) +(met|NOT MET)$`, out)
	})
	t.Run("json", func(t *testing.T) {
		data, err := json.Marshal(rep)
		require.NoError(t, err)
		var doc map[string]any
		require.NoError(t, json.Unmarshal(data, &doc))
		require.NotContains(t, doc, "filesystem")
		require.Len(t, doc["comparisons"], 2)
		res := doc["results"].([]any)[0].(map[string]any)
		for _, k := range []string{"p50_us", "p90_us", "p99_us", "max_us", "target", "met"} {
			require.Contains(t, res, k)
		}
	})
}

func TestRunAuthzRefusesCluster(t *testing.T) {
	_, err := RunAuthz(testCtx(t), Options{Cluster: &ClusterTarget{ConfigPath: "x"}})
	require.ErrorContains(t, err, "in this process")
}

func TestCompare(t *testing.T) {
	of := Result{Name: "a", P50us: 110, P99us: 300, OpsPerSec: 1000}
	for _, tc := range []struct {
		name       string
		over       Result
		p50, perOp float64
		met        bool
	}{
		{"equal", Result{Name: "b", P50us: 110, P99us: 300, OpsPerSec: 1000}, 1, 1, true},
		{"within", Result{Name: "b", P50us: 100, P99us: 100, OpsPerSec: 1150}, 1.1, 1.15, true},
		{"p50 over", Result{Name: "b", P50us: 90, P99us: 300, OpsPerSec: 1000}, 1.22, 1, false},
		{"throughput over", Result{Name: "b", P50us: 110, P99us: 300, OpsPerSec: 1250}, 1, 1.25, false},
		{"faster than the reference", Result{Name: "b", P50us: 200, P99us: 600, OpsPerSec: 500}, 0.55, 0.5, true},
		{"nothing to compare", Result{Name: "b"}, 0, 0, false},
		{"so much faster the ratio rounds to 0", Result{Name: "b", P50us: 100000, P99us: 300000, OpsPerSec: 1}, 0, 0, true},
		{"rounds to the limit but is over it", Result{Name: "b", P50us: 91.6, P99us: 300, OpsPerSec: 1000}, 1.2, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := compare("x", of, tc.over, 1.2)
			require.Equal(t, "a", c.Of)
			require.Equal(t, "b", c.Over)
			require.Equal(t, tc.p50, c.P50)
			require.Equal(t, tc.perOp, c.PerOp)
			require.Equal(t, tc.met, *c.Met)
		})
	}
}

var errMerge = errors.New("merge")

func TestMergeSamples(t *testing.T) {
	a := sample{ops: 2, elapsed: time.Second, cpu: time.Second, latencies: []time.Duration{1, 5}}
	b := sample{ops: 3, errs: 1, firstErr: errMerge, elapsed: 2 * time.Second, latencies: []time.Duration{2, 3, 9}}
	m := mergeSamples([]sample{a, b})
	require.Equal(t, int64(5), m.ops)
	require.Equal(t, int64(1), m.errs)
	require.ErrorIs(t, m.firstErr, errMerge)
	require.Equal(t, 3*time.Second, m.elapsed)
	require.Equal(t, time.Second, m.cpu)
	require.Equal(t, []time.Duration{1, 2, 3, 5, 9}, m.latencies)
}
