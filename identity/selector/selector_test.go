package selector

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Selector
		wantErr string
	}{
		{name: "uid", in: "unix:uid:1000", want: Selector{TypeUID, "1000"}},
		{name: "uid zero", in: "unix:uid:0", want: Selector{TypeUID, "0"}},
		{name: "uid max", in: "unix:uid:4294967295", want: Selector{TypeUID, "4294967295"}},
		{name: "gid", in: "unix:gid:27", want: Selector{TypeGID, "27"}},
		{name: "path", in: "unix:path:/usr/bin/env", want: Selector{TypePath, "/usr/bin/env"}},
		{name: "path with colon", in: "unix:path:/opt/a:b", want: Selector{TypePath, "/opt/a:b"}},
		{name: "sha256 lower", in: "unix:sha256:" + digest, want: Selector{TypeSHA256, digest}},
		{name: "sha256 upper is normalised", in: "unix:sha256:" + strings.ToUpper(digest), want: Selector{TypeSHA256, digest}},
		{name: "task", in: "unum:task:web-0-7f3a", want: Selector{TypeTask, "web-0-7f3a"}},
		{name: "task one char", in: "unum:task:0", want: Selector{TypeTask, "0"}},
		{name: "task max length", in: "unum:task:" + strings.Repeat("a", 64), want: Selector{TypeTask, strings.Repeat("a", 64)}},

		{name: "empty", in: "", wantErr: `must start with "unix:" or "unum:"`},
		{name: "other family", in: "k8s:ns:default", wantErr: `must start with "unix:" or "unum:"`},
		{name: "task under unix", in: "unix:task:web", wantErr: `type "task" belongs to family "unum"`},
		{name: "uid under unum", in: "unum:uid:1", wantErr: `type "uid" belongs to family "unix"`},
		{name: "unum no value", in: "unum:task", wantErr: "want unum:TYPE:VALUE"},
		{name: "unum unknown type", in: "unum:job:web", wantErr: `unknown type "job"`},
		{name: "task empty", in: "unum:task:", wantErr: "empty task id"},
		{name: "task too long", in: "unum:task:" + strings.Repeat("a", 65), wantErr: "limit is 64"},
		{name: "task upper case", in: "unum:task:Web", wantErr: "want [a-z0-9][a-z0-9-]*"},
		{name: "task leading dash", in: "unum:task:-web", wantErr: "want [a-z0-9]"},
		{name: "task slash", in: "unum:task:a/b", wantErr: "want [a-z0-9]"},
		{name: "task dotdot", in: "unum:task:..", wantErr: "want [a-z0-9]"},
		{name: "task dot", in: "unum:task:a.b", wantErr: "want [a-z0-9]"},
		{name: "task space", in: "unum:task:a b", wantErr: "want [a-z0-9]"},
		{name: "task NUL", in: "unum:task:a\x00", wantErr: "want [a-z0-9]"},
		{name: "no value", in: "unix:uid", wantErr: "want unix:TYPE:VALUE"},
		{name: "no type", in: "unix::1", wantErr: "missing type"},
		{name: "unknown type", in: "unix:user:root", wantErr: `unknown type "user"`},
		{name: "uid empty", in: "unix:uid:", wantErr: "empty id"},
		{name: "uid negative", in: "unix:uid:-1", wantErr: "not a decimal number"},
		{name: "uid plus", in: "unix:uid:+1", wantErr: "not a decimal number"},
		{name: "uid leading zero", in: "unix:uid:01", wantErr: "leading zero"},
		{name: "uid too big", in: "unix:uid:4294967296", wantErr: "out of the uint32 range"},
		{name: "uid hex", in: "unix:uid:0x10", wantErr: "not a decimal number"},
		{name: "uid space", in: "unix:uid: 1", wantErr: "not a decimal number"},
		{name: "gid name", in: "unix:gid:wheel", wantErr: "not a decimal number"},
		{name: "path relative", in: "unix:path:bin/sh", wantErr: "not absolute"},
		{name: "path empty", in: "unix:path:", wantErr: "empty path"},
		{name: "path dotdot", in: "unix:path:/usr/../bin/sh", wantErr: "not clean"},
		{name: "path trailing slash", in: "unix:path:/usr/bin/", wantErr: "not clean"},
		{name: "path double slash", in: "unix:path://bin/sh", wantErr: "not clean"},
		{name: "path NUL", in: "unix:path:/bin/sh\x00x", wantErr: "NUL"},
		{name: "sha256 short", in: "unix:sha256:abc", wantErr: "want 64 hex digits"},
		{name: "sha256 long", in: "unix:sha256:" + digest + "0", wantErr: "want 64 hex digits"},
		{name: "sha256 not hex", in: "unix:sha256:" + strings.Repeat("g", 64), wantErr: "not a hex digit"},
		{name: "too long", in: "unix:path:/" + strings.Repeat("a", 5000), wantErr: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			again, err := Parse(got.String())
			require.NoError(t, err)
			require.Equal(t, got, again)
		})
	}
}

func TestParseErrorNamesSelector(t *testing.T) {
	_, err := Parse("unix:uid:abc")
	require.ErrorContains(t, err, `selector "unix:uid:abc"`)
}

func TestValidateSet(t *testing.T) {
	m := MustParse
	tests := []struct {
		name    string
		set     []Selector
		wantErr string
	}{
		{name: "uid", set: []Selector{m("unix:uid:1000")}},
		{name: "gid", set: []Selector{m("unix:gid:100")}},
		{name: "two gids", set: []Selector{m("unix:gid:100"), m("unix:gid:101")}},
		{name: "uid and path", set: []Selector{m("unix:uid:1000"), m("unix:path:/bin/app")}},
		{name: "gid and sha256", set: []Selector{m("unix:gid:100"), m("unix:sha256:" + digest)}},
		{name: "everything", set: []Selector{m("unix:uid:1"), m("unix:gid:2"), m("unix:path:/bin/app"), m("unix:sha256:" + digest)}},
		{name: "task alone", set: []Selector{m("unum:task:web-0")}},
		{name: "task and uid", set: []Selector{m("unum:task:web-0"), m("unix:uid:1000")}},
		{name: "task and path", set: []Selector{m("unum:task:web-0"), m("unix:path:/bin/app")}},
		{name: "task and everything", set: []Selector{m("unum:task:web-0"), m("unix:uid:1"), m("unix:gid:2"), m("unix:sha256:" + digest)}},

		{name: "empty", set: nil, wantErr: "empty"},
		{name: "path alone", set: []Selector{m("unix:path:/bin/app")}, wantErr: "needs a unix:uid, unix:gid or unum:task"},
		{name: "sha256 alone", set: []Selector{m("unix:sha256:" + digest)}, wantErr: "needs a unix:uid, unix:gid or unum:task"},
		{name: "path and sha256", set: []Selector{m("unix:path:/bin/app"), m("unix:sha256:" + digest)}, wantErr: "needs a unix:uid, unix:gid or unum:task"},
		{name: "two tasks", set: []Selector{m("unum:task:a"), m("unum:task:b")}, wantErr: "can never both match"},
		{name: "duplicate task", set: []Selector{m("unum:task:a"), m("unum:task:a")}, wantErr: "appears twice"},
		{name: "hand built invalid task", set: []Selector{{Type: TypeTask, Value: "../etc"}}, wantErr: "want [a-z0-9]"},
		{name: "hand built empty task", set: []Selector{{Type: TypeTask, Value: ""}}, wantErr: "empty task id"},
		{name: "duplicate", set: []Selector{m("unix:gid:1"), m("unix:gid:1")}, wantErr: "appears twice"},
		{name: "duplicate uid", set: []Selector{m("unix:uid:1"), m("unix:uid:1")}, wantErr: "appears twice"},
		{name: "two uids", set: []Selector{m("unix:uid:1"), m("unix:uid:2")}, wantErr: "can never both match"},
		{name: "two paths", set: []Selector{m("unix:uid:1"), m("unix:path:/a"), m("unix:path:/b")}, wantErr: "can never both match"},
		{name: "hand built invalid", set: []Selector{{Type: TypeUID, Value: "-1"}}, wantErr: "not a decimal number"},
		{name: "hand built unknown type", set: []Selector{{Type: "pid", Value: "1"}}, wantErr: "unknown type"},
		{name: "hand built uppercase digest", set: []Selector{m("unix:uid:1"), {Type: TypeSHA256, Value: strings.ToUpper(digest)}}, wantErr: "not canonical"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSet(tt.set)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestMatch(t *testing.T) {
	m := MustParse
	hashed := 0
	proc := Process{
		PID:  42,
		UID:  1000,
		GIDs: []uint32{100, 27},
		Path: "/bin/app",
		SHA256: func() (string, error) {
			hashed++
			return digest, nil
		},
	}
	inTask := proc
	inTask.Task = "web-0"
	tests := []struct {
		name       string
		set        []Selector
		proc       Process
		want       bool
		wantErr    string
		wantHashes int
	}{
		{name: "uid", set: []Selector{m("unix:uid:1000")}, proc: proc, want: true},
		{name: "uid mismatch", set: []Selector{m("unix:uid:0")}, proc: proc},
		{name: "primary gid", set: []Selector{m("unix:gid:100")}, proc: proc, want: true},
		{name: "supplementary gid", set: []Selector{m("unix:gid:27")}, proc: proc, want: true},
		{name: "both gids", set: []Selector{m("unix:gid:27"), m("unix:gid:100")}, proc: proc, want: true},
		{name: "one gid missing", set: []Selector{m("unix:gid:27"), m("unix:gid:5")}, proc: proc},
		{name: "uid and path", set: []Selector{m("unix:uid:1000"), m("unix:path:/bin/app")}, proc: proc, want: true},
		{name: "path mismatch", set: []Selector{m("unix:uid:1000"), m("unix:path:/bin/other")}, proc: proc},
		{name: "digest", set: []Selector{m("unix:sha256:" + digest), m("unix:uid:1000")}, proc: proc, want: true, wantHashes: 1},
		{name: "digest mismatch", set: []Selector{m("unix:uid:1000"), m("unix:sha256:" + strings.Repeat("0", 64))}, proc: proc, wantHashes: 1},
		{name: "digest not computed when uid mismatches", set: []Selector{m("unix:sha256:" + digest), m("unix:uid:1")}, proc: proc},
		{name: "task", set: []Selector{m("unum:task:web-0")}, proc: inTask, want: true},
		{name: "task and uid", set: []Selector{m("unum:task:web-0"), m("unix:uid:1000")}, proc: inTask, want: true},
		{name: "task but other uid", set: []Selector{m("unum:task:web-0"), m("unix:uid:0")}, proc: inTask},
		{name: "other task", set: []Selector{m("unum:task:web-1")}, proc: inTask},
		{name: "task prefix is not the task", set: []Selector{m("unum:task:web")}, proc: inTask},
		{name: "not in a task", set: []Selector{m("unum:task:web-0")}, proc: proc},
		{name: "task and digest", set: []Selector{m("unum:task:web-0"), m("unix:sha256:" + digest)}, proc: inTask, want: true, wantHashes: 1},
		{name: "digest not computed when task mismatches", set: []Selector{m("unix:sha256:" + digest), m("unum:task:web-1")}, proc: inTask},
		{name: "invalid set is an error", set: nil, proc: proc, wantErr: "empty"},
		{name: "digest without hasher", set: []Selector{m("unix:uid:1000"), m("unix:sha256:" + digest)}, proc: Process{UID: 1000}, wantErr: "no executable digest"},
		{name: "hash failure", set: []Selector{m("unix:uid:1000"), m("unix:sha256:" + digest)},
			proc: Process{UID: 1000, SHA256: func() (string, error) { return "", errors.New("boom") }}, wantErr: "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hashed = 0
			got, err := Match(tt.set, tt.proc)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.False(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.wantHashes, hashed)
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"unix:uid:0", "unix:uid:4294967295", "unix:gid:27", "unix:path:/usr/bin/env",
		"unix:path:/a:b", "unix:sha256:" + digest, "unix:sha256:" + strings.ToUpper(digest),
		"unix:uid:01", "unix:path:/a/../b", "unix:path:/a\x00", "unix::", "", "unix:uid:-0",
		"unum:task:web-0", "unum:task:-a", "unum:task:A", "unix:task:a", "unum:uid:1", "unum::",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		out := sel.String()
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) ok but Parse(String()=%q) failed: %v", s, out, err)
		}
		if again != sel {
			t.Fatalf("round trip changed %q: %#v != %#v", s, sel, again)
		}
		if again.String() != out {
			t.Fatalf("String not stable: %q != %q", again.String(), out)
		}
		if err := ValidateSet([]Selector{sel, MustParse("unix:uid:1")}); err != nil && sel.Type != TypeUID {
			t.Fatalf("parsed selector %q rejected by ValidateSet: %v", out, err)
		}
		if sel.Type == TypeTask {
			// A task id is a cgroup directory name: it must never be able
			// to name another directory or be empty.
			if sel.Value == "" || sel.Value == "." || sel.Value == ".." || strings.ContainsAny(sel.Value, "/\x00") {
				t.Fatalf("task selector %q has a value that is not a plain directory name", out)
			}
			if err := ValidateSet([]Selector{sel}); err != nil {
				t.Fatalf("task selector %q rejected alone: %v", out, err)
			}
			if !strings.HasPrefix(out, "unum:task:") {
				t.Fatalf("task selector spelled %q", out)
			}
		} else if !strings.HasPrefix(out, "unix:") {
			t.Fatalf("unix selector spelled %q", out)
		}
	})
}
