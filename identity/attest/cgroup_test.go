package attest

import (
	"net"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/selector"
)

// hybrid is /proc/PID/cgroup on this kind of host: v1 controllers, a named
// v1 hierarchy and the v2 line in the middle of them.
const hybrid = "12:pids:/unum/web-0\n" +
	"11:memory:/process_api/216cef9d/unum-node1/web-0\n" +
	"10:cpu,cpuacct:/unum/web-0\n" +
	"9:name=systemd:/\n" +
	"8:blkio:/\n" +
	"7:freezer:/\n" +
	"6:devices:/\n" +
	"5:cpuset:/\n" +
	"4:net_cls,net_prio:/\n" +
	"3:perf_event:/\n" +
	"2:hugetlb:/\n" +
	"1:rdma:/\n" +
	"0::/unum-node1/web-0\n"

func TestTaskFromCgroupFile(t *testing.T) {
	const root = "/unum-node1"
	tests := []struct {
		name    string
		in      string
		root    string // default root
		want    string
		wantErr string
	}{
		{name: "hybrid", in: hybrid, want: "web-0"},
		{name: "pure v2", in: "0::/unum-node1/web-0\n", want: "web-0"},
		{name: "descendant of the task group", in: "0::/unum-node1/web-0/worker/a\n", want: "web-0"},
		{name: "deep root", in: "0::/a/b/unum-node1/db-3\n", root: "/a/b/unum-node1", want: "db-3"},
		{name: "colon in a v1 path", in: "4:memory:/a:b\n0::/unum-node1/web-0\n", want: "web-0"},
		{name: "v1 paths under the root do not count", in: "4:memory:/unum-node1/web-0\n0::/\n"},
		{name: "v1 only host", in: "4:memory:/unum-node1/web-0\n1:name=systemd:/unum-node1/web-0\n"},
		{name: "empty file", in: ""},
		{name: "v2 root", in: "0::/\n"},
		{name: "task root itself", in: "0::/unum-node1\n"},
		{name: "sibling of the root with the root as prefix", in: "0::/unum-node1x/web-0\n"},
		{name: "sibling of the root sharing a prefix", in: "0::/unum-node10/web-0\n"},
		{name: "above the root", in: "0::/unum-node0/web-0\n"},
		{name: "not a task id", in: "0::/unum-node1/Web_0\n"},
		{name: "task id too long", in: "0::/unum-node1/" + strings.Repeat("a", 65) + "\n"},
		{name: "dot in name", in: "0::/unum-node1/web.0\n"},
		{name: "space in name", in: "0::/unum-node1/web 0\n"},
		{name: "octal escape is taken literally", in: "0::/unum-node1/web\\0400\n"},
		{name: "deleted task group", in: "0::/unum-node1/web-0 (deleted)\n"},
		{name: "deleted descendant", in: "0::/unum-node1/web-0/sub (deleted)\n"},
		{name: "outside the cgroup namespace", in: "0::/../../unum-node1/web-0\n"},
		{name: "not clean", in: "0::/unum-node1/./web-0\n"},
		{name: "dotdot inside", in: "0::/unum-node1/web-0/../db-1\n"},
		{name: "relative", in: "0::unum-node1/web-0\n"},
		{name: "empty path", in: "0::\n"},
		{name: "v1 hierarchy numbered 0 with a controller", in: "0:memory:/unum-node1/web-0\n"},

		{name: "two v2 lines", in: "0::/unum-node1/web-0\n0::/unum-node1/db-1\n", wantErr: "more than one"},
		{name: "unterminated", in: "0::/unum-node1/web-0", wantErr: "not terminated"},
		{name: "no colon", in: "garbage\n0::/unum-node1/web-0\n", wantErr: "malformed"},
		{name: "one colon", in: "0:/unum-node1/web-0\n", wantErr: "malformed"},
		{name: "empty line", in: "\n0::/unum-node1/web-0\n", wantErr: "malformed"},
		{name: "non-numeric id", in: "x::/unum-node1/web-0\n", wantErr: "malformed"},
		{name: "negative id", in: "-1::/unum-node1/web-0\n", wantErr: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := root
			if tt.root != "" {
				r = tt.root
			}
			got, err := taskFromCgroupFile(tt.in, r)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Empty(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestCheckTaskCgroupRoot(t *testing.T) {
	for _, ok := range []string{"/unum", "/process_api/216cef9d/unum-node1", "/a b"} {
		require.NoError(t, CheckTaskCgroupRoot(ok), ok)
	}
	for in, want := range map[string]string{
		"":                              "empty",
		"/":                             "must not be the cgroup v2 root",
		"unum":                          "not absolute",
		"/unum/":                        "not clean",
		"/unum/../other":                "not clean",
		"/un\x00um":                     "NUL",
		"/un\num":                       "newline",
		"/" + strings.Repeat("a", 5000): "PATH_MAX",
	} {
		require.ErrorContains(t, CheckTaskCgroupRoot(in), want, "%q", in)
	}
}

// An invalid task root is a configuration mistake: the credentials then
// identify no one, rather than attesting without the task fact.
func TestInvalidTaskRootFailsClosed(t *testing.T) {
	h := newHarness(t, true)
	h.creds = Credentials(WithTaskCgroups("relative/root")).(*transportCreds)
	client, err := net.Dial("unix", h.sock)
	require.NoError(t, err)
	defer client.Close()
	raw, err := h.ln.Accept()
	require.NoError(t, err)
	defer raw.Close()
	_, _, err = h.creds.ServerHandshake(raw)
	require.ErrorContains(t, err, "WithTaskCgroups")
	require.ErrorContains(t, err, "not absolute")
}

func FuzzTaskFromCgroupFile(f *testing.F) {
	for _, s := range []string{
		hybrid, "0::/r/t\n", "0::/r/t/u\n", "0::/r\n", "0::/r/t (deleted)\n", "0::/../r/t\n",
		"1:name=systemd:/r/t\n", "0::/r/t\n0::/r/u\n", "0::/r/T\n", "0::/r//t\n", "",
	} {
		f.Add(s, "/r")
	}
	f.Add("0::/a/b/c\n", "/a/b")
	f.Fuzz(func(t *testing.T, content, root string) {
		if CheckTaskCgroupRoot(root) != nil {
			return
		}
		task, err := taskFromCgroupFile(content, root)
		if err != nil {
			if task != "" {
				t.Fatalf("error %v with task %q", err, task)
			}
			return
		}
		if task == "" {
			return
		}
		if err := selector.CheckTaskID(task); err != nil {
			t.Fatalf("task %q from %q is not a task id: %v", task, content, err)
		}
		// The task must come from exactly one v2 line that names ROOT/TASK
		// or a clean path below it.
		var v2 []string
		for _, line := range strings.Split(content, "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				v2 = append(v2, p)
			}
		}
		if len(v2) != 1 {
			t.Fatalf("task %q from %d v2 lines in %q", task, len(v2), content)
		}
		p, dir := v2[0], path.Join(root, task)
		if path.Clean(p) != p || (p != dir && !strings.HasPrefix(p, dir+"/")) || strings.HasSuffix(p, deletedSuffix) {
			t.Fatalf("task %q from v2 path %q under root %q", task, p, root)
		}
	})
}
