package cgroup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func readPair(t *testing.T, name string) ([]byte, []byte) {
	t.Helper()
	mi, err := os.ReadFile(filepath.Join("testdata", name+".mountinfo"))
	require.NoError(t, err)
	cg, err := os.ReadFile(filepath.Join("testdata", name+".cgroup"))
	require.NoError(t, err)
	return mi, cg
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Layout
		err  error
	}{
		{
			// The development machine: v2 for grouping at /sys/fs/cgroup/unified,
			// v1 controllers each mounted alone, the process in a v1 memory group.
			name: "hybrid",
			want: Layout{
				V2: V2Mount{Mount: "/sys/fs/cgroup/unified", Own: "/sys/fs/cgroup/unified", Root: "/"},
				V1: []V1Mount{
					{Mount: "/sys/fs/cgroup/blkio", Controllers: []string{"blkio"}, Own: "/sys/fs/cgroup/blkio"},
					{Mount: "/sys/fs/cgroup/cpu", Controllers: []string{"cpu"}, Own: "/sys/fs/cgroup/cpu"},
					{Mount: "/sys/fs/cgroup/cpuacct", Controllers: []string{"cpuacct"}, Own: "/sys/fs/cgroup/cpuacct"},
					{Mount: "/sys/fs/cgroup/cpuset", Controllers: []string{"cpuset"}, Own: "/sys/fs/cgroup/cpuset"},
					{Mount: "/sys/fs/cgroup/devices", Controllers: []string{"devices"}, Own: "/sys/fs/cgroup/devices"},
					{Mount: "/sys/fs/cgroup/freezer", Controllers: []string{"freezer"}, Own: "/sys/fs/cgroup/freezer"},
					{Mount: "/sys/fs/cgroup/memory", Controllers: []string{"memory"},
						Own: "/sys/fs/cgroup/memory/process_api/1673c647f428efeb583293f901cf17e4"},
					{Mount: "/sys/fs/cgroup/pids", Controllers: []string{"pids"}, Own: "/sys/fs/cgroup/pids"},
				},
			},
		},
		{
			name: "v2",
			want: Layout{V2: V2Mount{Mount: "/sys/fs/cgroup", Own: "/sys/fs/cgroup/system.slice/unum.service", Root: "/"}},
		},
		{name: "v1", err: ErrNoV2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mi, cg := readPair(t, tc.name)
			got, err := Detect(mi, cg)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDetectCoMountedAndBindRoot(t *testing.T) {
	// cpu and cpuacct co-mounted; a container whose v2 mount root is its own
	// subtree (no cgroup namespace): the own path is mapped below the mount.
	mi := []byte("1 0 0:1 / / rw - ext4 /dev/vda rw\n" +
		"2 1 0:2 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n" +
		"3 1 0:3 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n")
	cg := []byte("2:cpu,cpuacct:/a/b\n0::/kubepods/pod1/c\n")
	l, err := Detect(mi, cg)
	require.NoError(t, err)
	require.Equal(t, "/sys/fs/cgroup/c", l.V2.Own)
	v1, ok := l.V1For("cpuacct")
	require.True(t, ok)
	require.Equal(t, "/sys/fs/cgroup/cpu,cpuacct/a/b", v1.Own)
	v1cpu, _ := l.V1For("cpu")
	require.Equal(t, v1, v1cpu)
	_, ok = l.V1For("memory")
	require.False(t, ok)
}

func TestDetectErrors(t *testing.T) {
	for name, tc := range map[string]struct{ mi, cg, want string }{
		"no separator":     {mi: "1 0 0:1 / / rw ext4 /dev/vda rw\n", cg: "0::/\n", want: "no separator"},
		"short":            {mi: "1 0 - cgroup2 x\n", cg: "0::/\n", want: "too few fields"},
		"bad cgroup line":  {mi: "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", cg: "garbage\n", want: "ID:CONTROLLERS:PATH"},
		"v2 not in cgroup": {mi: "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", cg: "4:memory:/\n", want: "no 0:: line"},
		"v1 not in cgroup": {
			mi:   "1 0 0:1 / /u rw - cgroup2 cgroup2 rw\n2 0 0:2 / /m rw - cgroup cgroup rw,memory\n",
			cg:   "0::/\n",
			want: "memory mounted at /m but not listed",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Detect([]byte(tc.mi), []byte(tc.cg))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestUnescapeOctal(t *testing.T) {
}

func FuzzDetect(f *testing.F) {
	for _, n := range []string{"hybrid", "v2", "v1"} {
		mi, _ := os.ReadFile(filepath.Join("testdata", n+".mountinfo"))
		cg, _ := os.ReadFile(filepath.Join("testdata", n+".cgroup"))
		f.Add(mi, cg)
	}
	f.Fuzz(func(t *testing.T, mi, cg []byte) {
		l, err := Detect(mi, cg)
		if err == nil && (l.V2.Mount == "" || !filepath.IsAbs(l.V2.Own)) {
			t.Fatalf("layout without v2: %+v", l)
		}
	})
}
