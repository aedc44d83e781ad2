package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
)

// shortWindow keeps the end-to-end tests to a few seconds: they check the
// shape of a report, never a performance target.
const shortWindow = 300 * time.Millisecond

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, left, "the benchmark left files behind in %s", dir)
}

// requireMeasured checks what every result of a completed run has.
func requireMeasured(t *testing.T, r Result, withLatency, withTarget bool) {
	t.Helper()
	require.NotEmpty(t, r.Description, r.Name)
	require.Positive(t, r.Clients, r.Name)
	require.Positive(t, r.Ops, r.Name)
	require.Zero(t, r.Errors, "%s: %s", r.Name, r.FirstError)
	require.Positive(t, r.OpsPerSec, r.Name)
	require.Positive(t, r.Seconds, r.Name)
	require.Positive(t, r.CPUusPerOp, r.Name)
	require.GreaterOrEqual(t, r.ProcessCPUCores, 0.0, r.Name)
	if withLatency {
		require.Positive(t, r.P50us, r.Name)
		require.LessOrEqual(t, r.P50us, r.P99us, r.Name)
	} else {
		require.Zero(t, r.P50us, r.Name)
		require.Zero(t, r.P99us, r.Name)
	}
	if withTarget {
		require.NotEmpty(t, r.Target, r.Name)
		require.NotNil(t, r.Met, r.Name)
	} else {
		require.Empty(t, r.Target, r.Name)
		require.Nil(t, r.Met, r.Name)
	}
}

func requireMachine(t *testing.T, rep Report) {
	t.Helper()
	require.NotEmpty(t, rep.Filesystem.Path)
	require.NotEmpty(t, rep.Filesystem.Type)
	require.NotEmpty(t, rep.Filesystem.StatfsType)
	s := rep.Settings
	require.Positive(t, s.GOMAXPROCS)
	require.Positive(t, s.NumCPU)
	require.True(t, strings.HasPrefix(s.GoVersion, "go"), s.GoVersion)
	require.True(t, strings.HasPrefix(s.Kernel, "Linux "), s.Kernel)
	require.NotEmpty(t, s.LoadAverageStart)
	require.NotEmpty(t, s.LoadAverageEnd)
}

func TestRunSVIDLocal(t *testing.T) {
	tmp := t.TempDir()
	var progress bytes.Buffer
	rep, err := RunSVID(testCtx(t), Options{Duration: shortWindow, Concurrency: 4, TempDir: tmp, Progress: &progress})
	require.NoError(t, err, progress.String())
	requireEmptyDir(t, tmp)

	require.Equal(t, "local", rep.Mode)
	require.Equal(t, "svid", rep.Component)
	requireMachine(t, rep)
	require.True(t, strings.HasPrefix(rep.Filesystem.Path, tmp) || strings.Contains(rep.Filesystem.Path, "unum-bench-"), rep.Filesystem.Path)
	require.Equal(t, 4, rep.Settings.Concurrency)
	require.Equal(t, svidTrustDomain, rep.Settings.Extra["trust_domain"])

	names := make([]string, 0, len(rep.Results))
	for _, r := range rep.Results {
		names = append(names, r.Name)
		require.Contains(t, rep.Settings.Windows, r.Name)
	}
	require.Equal(t, []string{ResultIssuanceE2E, ResultCoreSingle, ResultCoreParallel, ResultFetchX509, ResultPropagation}, names)
	requireMeasured(t, rep.Results[0], true, true)
	require.Equal(t, 4, rep.Results[0].Clients)
	requireMeasured(t, rep.Results[1], false, false)
	require.Equal(t, 1, rep.Results[1].Clients)
	requireMeasured(t, rep.Results[2], false, false)
	require.Equal(t, rep.Settings.GOMAXPROCS, rep.Results[2].Clients)
	requireMeasured(t, rep.Results[3], true, true)
	require.Equal(t, 1, rep.Results[3].Clients)
	requireMeasured(t, rep.Results[4], true, true)
	require.Contains(t, progress.String(), "stopping the node")

	t.Run("json", func(t *testing.T) {
		data, err := json.Marshal(rep)
		require.NoError(t, err)
		var doc struct {
			Component  string                     `json:"component"`
			Filesystem map[string]any             `json:"filesystem"`
			Settings   map[string]json.RawMessage `json:"settings"`
			Results    []map[string]any           `json:"results"`
		}
		require.NoError(t, json.Unmarshal(data, &doc))
		require.Equal(t, "svid", doc.Component)
		require.Contains(t, doc.Filesystem, "type")
		require.Contains(t, doc.Filesystem, "path")
		for _, k := range []string{"concurrency", "gomaxprocs", "go_version", "kernel", "windows"} {
			require.Contains(t, doc.Settings, k)
		}
		e2e := doc.Results[0]
		for _, k := range []string{"name", "ops_per_sec", "p50_us", "p99_us", "target", "met"} {
			require.Contains(t, e2e, k)
		}
		require.Equal(t, ResultIssuanceE2E, e2e["name"])
		require.NotContains(t, doc.Results[1], "met", "the bare core has no target")
	})

	t.Run("table", func(t *testing.T) {
		var b bytes.Buffer
		tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
		require.NoError(t, rep.Table(tw))
		require.NoError(t, tw.Flush())
		out := b.String()
		for _, r := range rep.Results {
			require.Contains(t, out, r.Name)
		}
		require.Contains(t, out, ">= 3000/s")
		require.Contains(t, out, "p99 <= 2ms")
		require.Regexp(t, `(?m)^x509_svid_issuance_e2e .*(met|NOT MET)$`, out)
		require.Contains(t, out, rep.Filesystem.Type)
	})
}

// TestRunSVIDCluster measures a running cluster the way --cluster does: a
// node started here stands in for it, and the entry the benchmark
// registers is gone afterwards.
func TestRunSVIDCluster(t *testing.T) {
	ctx := testCtx(t)
	tmp := t.TempDir()
	ln, err := startLocalNode(ctx, tmp, slog.New(slog.DiscardHandler), func(string, ...any) {})
	require.NoError(t, err)
	defer func() { require.NoError(t, ln.stop()) }()

	rep, err := RunSVID(ctx, Options{
		Duration:    shortWindow,
		Concurrency: 3,
		Cluster:     &ClusterTarget{ConfigPath: ln.layout.Admin(), Socket: "unix://" + ln.layout.Socket(), Node: svidNodeName},
	})
	require.NoError(t, err)
	require.Equal(t, "cluster", rep.Mode)
	require.Equal(t, "svid", rep.Component)
	requireMachine(t, rep)
	require.Equal(t, svidNodeName, rep.Settings.Extra["node"])
	require.Len(t, rep.Results, 2)
	require.Equal(t, ResultFetchX509, rep.Results[0].Name)
	requireMeasured(t, rep.Results[0], true, true)
	require.Equal(t, ResultFetchJWTFresh, rep.Results[1].Name)
	requireMeasured(t, rep.Results[1], true, false)
	require.Equal(t, 3, rep.Results[1].Clients)

	t.Run("entry deleted", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := unumv1.NewIdentityClient(ln.admin).ListEntries(cctx, &unumv1.ListEntriesRequest{})
		require.NoError(t, err)
		require.Empty(t, resp.GetEntries())
	})
}

func TestRunSVIDClusterRefusesMissingTarget(t *testing.T) {
	_, err := RunSVID(testCtx(t), Options{Cluster: &ClusterTarget{ConfigPath: "/nonexistent"}})
	require.ErrorContains(t, err, "socket")
}

func TestRunners(t *testing.T) {
	require.Contains(t, Runners(), "svid")
	require.Contains(t, Runners(), "revocation")
	require.Contains(t, Runners(), "authz")
	require.Contains(t, Runners(), "cred")
	require.Equal(t, []string{"audit", "authz", "cred", "enforce", "revocation", "sched", "svid"}, Components())
}

func TestMeasure(t *testing.T) {
	var calls atomic.Int64
	boom := errors.New("boom")
	s := measure(context.Background(), 3, 50*time.Millisecond, true, func(context.Context, int) error {
		if calls.Add(1)%4 == 0 {
			return boom
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	require.Equal(t, calls.Load(), s.ops+s.errs)
	require.Positive(t, s.ops)
	require.Positive(t, s.errs)
	require.ErrorIs(t, s.firstErr, boom)
	require.Len(t, s.latencies, int(s.ops))
	require.IsNonDecreasing(t, s.latencies)
	require.GreaterOrEqual(t, s.elapsed, 50*time.Millisecond)

	r, err := s.result("x", "d", 3, true)
	require.NoError(t, err)
	require.Equal(t, "boom", r.FirstError)
	require.LessOrEqual(t, r.P50us, r.P99us)
	require.GreaterOrEqual(t, r.P50us, 1000.0)

	t.Run("nothing succeeded", func(t *testing.T) {
		s := measure(context.Background(), 1, 10*time.Millisecond, true, func(context.Context, int) error { return boom })
		_, err := s.result("x", "d", 1, true)
		require.ErrorIs(t, err, boom)
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s := measure(ctx, 2, time.Hour, false, func(context.Context, int) error { return nil })
		require.Zero(t, s.ops)
	})
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of odd", ms(1, 2, 3), 0.5, 2 * time.Millisecond},
		{"median of even is the lower", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 100", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"p100", ms(1, 2, 3), 1, 3 * time.Millisecond},
		{"tiny p is the first", ms(1, 2, 3), 0.0001, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, percentile(tc.sorted, tc.p))
		})
	}
}

func TestMountFor(t *testing.T) {
	const mountinfo = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 27 0:26 / /tmp rw,nosuid - tmpfs tmpfs rw,size=1024k
31 30 0:27 / /tmp/my\040dir rw - xfs /dev/sdb\0401 rw
32 27 0:28 / /tmpx rw - btrfs /dev/sdc rw
33 30 0:29 / /tmp rw,noexec - overlay overlay rw
garbage line
`
	for _, tc := range []struct {
		path      string
		wantPoint string
		wantType  string
		wantSrc   string
	}{
		{"/", "/", "ext4", "/dev/vda"},
		{"/var/lib/unum", "/", "ext4", "/dev/vda"},
		{"/tmp/x", "/tmp", "overlay", "overlay"}, // the topmost of stacked mounts
		{"/tmp", "/tmp", "overlay", "overlay"},
		{"/tmp/my dir/a", "/tmp/my dir", "xfs", "/dev/sdb 1"},
		{"/tmpx/a", "/tmpx", "btrfs", "/dev/sdc"},
		{"/tmpxy", "/", "ext4", "/dev/vda"}, // a prefix of the name is not a parent
	} {
		t.Run(tc.path, func(t *testing.T) {
			m, ok := mountFor(mountinfo, tc.path)
			require.True(t, ok)
			require.Equal(t, tc.wantPoint, m.point)
			require.Equal(t, tc.wantType, m.fstype)
			require.Equal(t, tc.wantSrc, m.source)
		})
	}
	_, ok := mountFor("nonsense\n", "/a")
	require.False(t, ok)
}

func TestDescribeFilesystem(t *testing.T) {
	fs, err := DescribeFilesystem(t.TempDir())
	require.NoError(t, err)
	require.NotEmpty(t, fs.Type)
	require.NotEmpty(t, fs.StatfsType)
	require.NotEmpty(t, fs.MountPoint)

	_, err = DescribeFilesystem("/nonexistent/unum-bench")
	require.Error(t, err)
}
