package policy

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBundleDigest(t *testing.T) {
	b := Builtin()
	d := b.Digest()
	require.Len(t, d, 64)

	// Built from the same files in another order: same digest.
	names := b.names()
	rev := &Bundle{Files: map[string][]byte{}}
	for i := len(names) - 1; i >= 0; i-- {
		rev.Files[names[i]] = append([]byte(nil), b.Files[names[i]]...)
	}
	require.Equal(t, d, rev.Digest())
	require.True(t, b.Equal(rev))

	for _, tc := range []struct {
		name   string
		change func(files map[string][]byte)
	}{
		{"rename", func(f map[string][]byte) { f["policy.rego"] = f["authz.rego"]; delete(f, "authz.rego") }},
		{"move into a folder", func(f map[string][]byte) { f["unum/data.json"] = f["data.json"]; delete(f, "data.json") }},
		{"one byte", func(f map[string][]byte) { f["data.json"] = []byte(`{"bindings":{} }`) }},
		{"extra empty file", func(f map[string][]byte) { f["empty.rego"] = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &Bundle{Files: maps.Clone(b.Files)}
			tc.change(o.Files)
			require.NotEqual(t, d, o.Digest())
			require.False(t, b.Equal(o))
		})
	}

	t.Run("name and content do not run together", func(t *testing.T) {
		// Concatenated, both are "x.regoab".
		a := &Bundle{Files: map[string][]byte{"x.rego": []byte("ab")}}
		o := &Bundle{Files: map[string][]byte{"x.regoa": []byte("b")}}
		require.NotEqual(t, a.Digest(), o.Digest())
	})
}

func TestBundleJSONRoundTrip(t *testing.T) {
	b := Builtin()
	b.Files["sub/dir/data.json"] = []byte("{\"note\": \"caf\u00e9 \\u00e9\"}\n")
	data, err := json.Marshal(b)
	require.NoError(t, err)

	var shape map[string]map[string]string
	require.NoError(t, json.Unmarshal(data, &shape))
	require.Equal(t, []string{"files"}, sortedKeys(shape))
	require.Equal(t, string(b.Files["authz.rego"]), shape["files"]["authz.rego"])

	var back Bundle
	require.NoError(t, json.Unmarshal(data, &back))
	require.True(t, b.Equal(&back))
	require.Equal(t, b.Digest(), back.Digest())

	require.Error(t, back.UnmarshalJSON([]byte(`{"files": ["authz.rego"]}`)))
}

// A bundle is stored and served as JSON text; bytes that are not UTF-8
// would come back changed, with another digest, so they are refused at load.
func TestBundleRefusesNonUTF8(t *testing.T) {
	for name, files := range map[string]map[string][]byte{
		"data":      {"data.json": []byte("{\"bindings\": {\"spiffe://unum.test/user/caf\xe9\": \"admin\"}}")},
		"rego":      {"x.rego": []byte("package x\n# caf\xe9\n")},
		"file name": {"caf\xe9.rego": []byte("package x\n")},
	} {
		t.Run(name, func(t *testing.T) {
			b := Builtin()
			maps.Copy(b.Files, files)
			err := b.Validate()
			var be *BundleError
			require.True(t, errors.As(err, &be), "%v", err)
			require.Equal(t, "load", be.Stage)
			require.Len(t, be.Problems, 1)
			require.Contains(t, be.Problems[0].Msg, "UTF-8")
		})
	}
}

func TestWriteDirLoadDir(t *testing.T) {
	b := Builtin()
	b.Files["extra/data.json"] = []byte(`{"x": 1}`)
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "new", "bundle")} {
		require.NoError(t, b.WriteDir(dir))
		got, err := LoadDir(dir)
		require.NoError(t, err)
		require.True(t, b.Equal(got))
		require.Equal(t, b.Digest(), got.Digest())

		// The folder is no longer empty: writing again is refused, and
		// nothing in it changes.
		before, err := os.ReadFile(filepath.Join(dir, "authz.rego"))
		require.NoError(t, err)
		o := &Bundle{Files: map[string][]byte{"authz.rego": []byte("package other\n")}}
		err = o.WriteDir(dir)
		require.ErrorContains(t, err, "not empty")
		after, err := os.ReadFile(filepath.Join(dir, "authz.rego"))
		require.NoError(t, err)
		require.Equal(t, before, after)
	}

	t.Run("any entry makes a folder non-empty", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, ".hidden"), nil, 0o600))
		require.ErrorContains(t, Builtin().WriteDir(dir), "not empty")
	})
}

// A bundle comes to `unum policy get --out DIR` from a server: its file
// names must not write outside DIR.
func TestWriteDirStaysInside(t *testing.T) {
	for _, name := range []string{"../escape.rego", "a/../../escape.rego", "/escape.rego", "./a/../../escape.rego"} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "bundle")
			b := Builtin()
			b.Files[name] = []byte("package escape\n")
			require.Error(t, b.WriteDir(dir))
			_, err := os.Stat(filepath.Join(parent, "escape.rego"))
			require.True(t, os.IsNotExist(err), "a file was written outside the bundle folder")
			_, err = os.Stat("/escape.rego")
			require.True(t, os.IsNotExist(err))
		})
	}
}

func TestLoadDirIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Builtin().WriteDir(dir))
	for name, data := range map[string]string{
		"README.md":           "# notes",
		"authz.rego~":         "editor backup",
		".git/objects/x.rego": "package hidden",
		"expect.txt":          "stage: ok",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(data), 0o644))
	}
	require.NoError(t, os.Symlink(filepath.Join(dir, "authz.rego"), filepath.Join(dir, "link.rego")))
	got, err := LoadDir(dir)
	require.NoError(t, err)
	require.True(t, Builtin().Equal(got), "loaded %v", sortedKeys(got.Files))

	_, err = LoadDir(filepath.Join(dir, "README.md"))
	require.ErrorContains(t, err, "not a folder")
	_, err = LoadDir(filepath.Join(dir, "missing"))
	require.Error(t, err)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
