package backup

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/internal/seal"
)

func newKEK(t testing.TB) *seal.KEK {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kek")
	require.NoError(t, seal.CreateKEKFile(p))
	k, err := seal.LoadKEK(p)
	require.NoError(t, err)
	return k
}

var testFiles = map[string][]byte{
	Bundle:           []byte("bundle"),
	RootCert:         []byte("root cert"),
	RootKey:          []byte("sealed root key"),
	IntermediateCert: []byte("intermediate cert"),
	IntermediateKey:  []byte("sealed intermediate key"),
	JWTKey:           []byte("sealed jwt key"),
}

func testManifest() Manifest {
	return Manifest{TrustDomain: "backup.test", CreatedAt: time.Unix(1700000000, 0).UTC(), Node: Node{Name: "node-1"}, EtcdRevision: 42}
}

// archive builds a valid archive whose snapshot is snap.
func archive(t testing.TB, k Sealer, snap []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, time.Unix(1700000000, 0))
	for _, name := range Files {
		require.NoError(t, w.AddFile(name, testFiles[name]))
	}
	_, err := w.AddSnapshot(bytes.NewReader(snap))
	require.NoError(t, err)
	_, err = w.Finish(testManifest(), k)
	require.NoError(t, err)
	return buf.Bytes()
}

type member struct {
	hdr  *tar.Header
	data []byte
}

func members(t testing.TB, a []byte) []member {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(a))
	var out []member
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		out = append(out, member{hdr, data})
	}
}

func retar(t testing.TB, ms []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		h := *m.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(m.data))
		}
		require.NoError(t, tw.WriteHeader(&h))
		_, err := tw.Write(m.data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func extract(t testing.TB, a []byte, k Opener) (*Manifest, string, error) {
	t.Helper()
	dir := t.TempDir()
	m, err := Extract(bytes.NewReader(a), dir, k)
	return m, dir, err
}

func TestRoundTrip(t *testing.T) {
	k := newKEK(t)
	snap := make([]byte, ChunkSize+1000) // two chunks
	_, _ = rand.Read(snap)
	a := archive(t, k, snap)

	m, dir, err := extract(t, a, k)
	require.NoError(t, err)
	require.Equal(t, "backup.test", m.TrustDomain)
	require.Equal(t, "node-1", m.Node.Name)
	require.EqualValues(t, len(snap), m.SnapshotSize())
	require.Len(t, m.Members, len(Files)+2)
	got, err := os.ReadFile(filepath.Join(dir, SnapshotFile))
	require.NoError(t, err)
	require.Equal(t, snap, got)
	for name, want := range testFiles {
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, want, got, name)
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	}

	v, err := Verify(bytes.NewReader(a))
	require.NoError(t, err)
	require.Equal(t, m, v)

	// The manifest is the last member but one, the tag the last.
	ms := members(t, a)
	require.Equal(t, ManifestName, ms[len(ms)-2].hdr.Name)
	require.Equal(t, TagName, ms[len(ms)-1].hdr.Name)
}

// TestCorruptArchivesRefused: every kind of damage or tampering is refused
// with a clear error, and Verify (no KEK) catches what hashes can catch.
func TestCorruptArchivesRefused(t *testing.T) {
	k := newKEK(t)
	snap := bytes.Repeat([]byte("etcd"), 1000)
	good := archive(t, k, snap)
	edit := func(f func([]member) []member) []byte { return retar(t, f(members(t, good))) }
	find := func(ms []member, name string) int {
		for i, m := range ms {
			if m.hdr.Name == name {
				return i
			}
		}
		t.Fatalf("no member %s", name)
		return -1
	}
	otherManifest := func() []byte {
		var buf bytes.Buffer
		w := NewWriter(&buf, time.Now())
		for _, name := range Files {
			require.NoError(t, w.AddFile(name, testFiles[name]))
		}
		_, err := w.AddSnapshot(bytes.NewReader(snap))
		require.NoError(t, err)
		m := testManifest()
		m.TrustDomain = "evil.test"
		_, err = w.Finish(m, newKEK(t))
		require.NoError(t, err)
		ms := members(t, buf.Bytes())
		return ms[find(ms, ManifestName)].data
	}()

	for _, tc := range []struct {
		name    string
		archive []byte
		want    string
		// noKEK: Verify, without the KEK, also refuses it.
		noKEK bool
	}{
		{"member hash mismatch", edit(func(ms []member) []member {
			i := find(ms, IntermediateKey)
			ms[i].data = append([]byte(nil), ms[i].data...)
			ms[i].data[0] ^= 1
			return ms
		}), "does not match the manifest", true},
		{"snapshot byte flipped", edit(func(ms []member) []member {
			i := find(ms, "etcd/snapshot.db.000000")
			ms[i].data = append([]byte(nil), ms[i].data...)
			ms[i].data[100] ^= 0x80
			return ms
		}), "etcd/snapshot.db.000000 does not match", true},
		{"truncated in a member", good[:len(good)/2], "truncated", true},
		{"truncated before the tag", edit(func(ms []member) []member { return ms[:len(ms)-1] }), "no manifest.tag", true},
		{"no manifest", edit(func(ms []member) []member { return ms[:len(ms)-2] }), "no manifest.json", true},
		{"member missing", edit(func(ms []member) []member {
			i := find(ms, RootKey)
			return append(ms[:i], ms[i+1:]...)
		}), "ca/root.key.sealed is listed in the manifest but missing", true},
		{"unlisted member", edit(func(ms []member) []member {
			extra := member{&tar.Header{Name: "etcd/snapshot.db.000001", Typeflag: tar.TypeReg, Mode: 0o600}, []byte("more")}
			i := find(ms, ManifestName)
			return append(ms[:i], append([]member{extra}, ms[i:]...)...)
		}), "not listed in the manifest", true},
		{"unknown member", edit(func(ms []member) []member {
			return append([]member{{&tar.Header{Name: "../../etc/passwd", Typeflag: tar.TypeReg, Mode: 0o600}, []byte("x")}}, ms...)
		}), "unknown member", true},
		{"duplicate member", edit(func(ms []member) []member { return append([]member{ms[0]}, ms...) }), "appears twice", true},
		{"symlink", edit(func(ms []member) []member {
			return append([]member{{&tar.Header{Name: Bundle, Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}, nil}}, ms[1:]...)
		}), "not a regular file", true},
		{"data after the tag", edit(func(ms []member) []member { return append(ms, ms[0]) }), "after manifest.tag", true},
		{"chunks out of order", edit(func(ms []member) []member {
			i := find(ms, "etcd/snapshot.db.000000")
			ms[i].hdr.Name = "etcd/snapshot.db.000001"
			return ms
		}), "out of order", true},
		{"manifest rewritten (other trust domain)", edit(func(ms []member) []member {
			ms[find(ms, ManifestName)].data = otherManifest
			return ms
		}), "altered after it was sealed", false},
		{"tag from another KEK", edit(func(ms []member) []member {
			other := archive(t, newKEK(t), snap)
			oms := members(t, other)
			ms[find(ms, TagName)].data = oms[find(oms, TagName)].data
			return ms
		}), "does not open under this KEK", false},
		{"not a tar file", []byte("hello, this is not an archive at all"), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dir, err := extract(t, tc.archive, k)
			require.ErrorIs(t, err, ErrCorrupt)
			require.Contains(t, err.Error(), tc.want)
			// Nothing escaped the staging folder.
			_, serr := os.Stat(filepath.Join(filepath.Dir(dir), "etc"))
			require.True(t, os.IsNotExist(serr))
			_, verr := Verify(bytes.NewReader(tc.archive))
			if tc.noKEK {
				require.ErrorIs(t, verr, ErrCorrupt)
			} else {
				require.NoError(t, verr, "without the KEK a consistent forgery passes Verify: only the tag catches it")
			}
		})
	}
}

func TestWriterRefusesUnknownFiles(t *testing.T) {
	w := NewWriter(io.Discard, time.Now())
	require.Error(t, w.AddFile("keys/node.key", []byte("plain key")))
	require.Error(t, w.AddFile("../x", nil))
	require.NoError(t, w.AddFile(Bundle, []byte("b")))
	require.Error(t, w.AddFile(Bundle, []byte("b")))
	// A manifest without the required CA files is not written.
	_, err := w.Finish(testManifest(), newKEK(t))
	require.ErrorContains(t, err, "cannot rebuild a control node")
}

// FuzzExtract: arbitrary bytes never panic, never write outside the
// staging folder, and pass only when the tag and every hash check out.
func FuzzExtract(f *testing.F) {
	k := newKEK(f)
	good := archive(f, k, []byte("snapshot"))
	f.Add(good)
	f.Add(good[:len(good)-700])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "stage")
		require.NoError(t, os.Mkdir(dir, 0o700))
		m, err := Extract(bytes.NewReader(data), dir, k)
		if err == nil {
			require.NoError(t, m.validate())
		}
		entries, _ := os.ReadDir(parent)
		require.Len(t, entries, 1)
		_, _ = Verify(bytes.NewReader(data))
	})
}
