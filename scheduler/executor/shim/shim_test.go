package shim

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	ok := Spec{TaskID: "t", UID: 2147000000, GID: 2147000000, Dir: "/tmp", Command: "sleep",
		Env: []string{"A=b"}, CgroupProcs: []string{"/sys/fs/cgroup/memory/x/cgroup.procs"}}
	require.NoError(t, ok.Validate())
	for name, mut := range map[string]func(*Spec){
		"uid 0":   func(s *Spec) { s.UID = 0 },
		"gid 0":   func(s *Spec) { s.GID = 0 },
		"uid -1":  func(s *Spec) { s.UID = ^uint32(0) },
		"rel dir": func(s *Spec) { s.Dir = "work" },
		"no cmd":  func(s *Spec) { s.Command = "" },
		"procs":   func(s *Spec) { s.CgroupProcs = []string{"/etc/passwd"} },
		"env":     func(s *Spec) { s.Env = []string{"novalue"} },
		"env key": func(s *Spec) { s.Env = []string{"=x"} },
		"env nul": func(s *Spec) { s.Env = []string{"A=b\x00c"} },
	} {
		s := ok
		mut(&s)
		require.Error(t, s.Validate(), name)
	}
}

func TestLookPath(t *testing.T) {
	d := t.TempDir()
	exe := filepath.Join(d, "tool")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(d, "data"), nil, 0o644))
	p, err := lookPath("tool", []string{"PATH=/nonexistent:" + d})
	require.NoError(t, err)
	require.Equal(t, exe, p)
	_, err = lookPath("data", []string{"PATH=" + d})
	require.ErrorContains(t, err, `command "data" not found`)
	p, err = lookPath("./rel/x", nil)
	require.NoError(t, err)
	require.Equal(t, "./rel/x", p, "a path with a slash is used as given, relative to the work dir")
	p, err = lookPath("sh", nil)
	require.NoError(t, err)
	require.Contains(t, []string{"/usr/bin/sh", "/bin/sh"}, p, "the default PATH")
}
