package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBackupCLIRefusals: the backup commands refuse bad input before they
// touch anything: usage errors exit 2, an existing backup is never
// overwritten, and a file that is no backup is refused with nothing written.
func TestBackupCLIRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"backup", "create"},
		{"backup", "restore", "x.tar"},
		{"backup", "restore", "x.tar", "--data-dir", filepath.Join(dir, "n")},
		{"backup", "frobnicate"},
	} {
		r := unum(t, []string{"UNUM_CONFIG="}, args...)
		require.Equal(t, 2, r.code, "unum %v: %s", args, r.stderr)
	}

	existing := filepath.Join(dir, "existing.tar")
	require.NoError(t, os.WriteFile(existing, []byte("keep me"), 0o600))
	r := unum(t, []string{"UNUM_CONFIG=" + filepath.Join(dir, "none.yaml")}, "backup", "create", existing)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "refusing to overwrite")
	got, err := os.ReadFile(existing)
	require.NoError(t, err)
	require.Equal(t, "keep me", string(got))

	kek := filepath.Join(dir, "kek")
	r = unum(t, nil, "init", "--trust-domain", "cli.test", "--data-dir", filepath.Join(dir, "n1"), "--kek-file", kek)
	require.Equal(t, 0, r.code, r.stderr)
	bogus := filepath.Join(dir, "bogus.tar")
	require.NoError(t, os.WriteFile(bogus, []byte("not a backup"), 0o600))
	target := filepath.Join(dir, "restored")
	r = unum(t, nil, "backup", "restore", bogus, "--data-dir", target, "--kek-file", kek)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "backup archive refused")
	_, err = os.Stat(target)
	require.True(t, os.IsNotExist(err), "a refused restore created %s", target)
}

// TestBackupCLIRoundTrip: `unum backup create` against a running cluster,
// then `unum backup restore` on new addresses and a node started on the
// result: the restored control plane answers with the admin config the
// restore wrote.
func TestBackupCLIRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	d := startDev(t, 1)
	file := filepath.Join(d.dir, "b.tar")
	r := unum(t, d.env, "backup", "create", file, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		File        string `json:"file"`
		Size        int64  `json:"size"`
		SHA256      string `json:"sha256"`
		TrustDomain string `json:"trust_domain"`
		Node        string `json:"node"`
		Members     []struct {
			Name string `json:"name"`
		} `json:"members"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	require.Equal(t, hex.EncodeToString(sum[:]), out.SHA256)
	require.EqualValues(t, len(data), out.Size)
	require.Equal(t, "node-1", out.Node)
	fi, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	_, err = os.Stat(file + ".tmp")
	require.True(t, os.IsNotExist(err))
	r = unum(t, d.env, "backup", "create", file)
	require.Equal(t, 1, r.code)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	api := l.Addr().String()
	l.Close()
	restored := filepath.Join(d.dir, "restored")
	kek := filepath.Join(d.dir, "kek")
	// Other ports: API + 1..3 may be taken; pick each.
	r = unum(t, nil, "backup", "restore", file, "--data-dir", restored, "--kek-file", kek, "--trust-domain", out.TrustDomain,
		"--listen", api, "--enroll-listen", freeAddr(t), "--etcd-client-listen", freeAddr(t), "--etcd-peer-listen", freeAddr(t),
		"--etcd-heartbeat", "250ms", "--etcd-election", "2500ms")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "revocations made after the backup are lost")

	// The metrics port too: API + 4 may be taken by then.
	cmd := exec.Command(unumBin, "node", "--data-dir", restored, "--kek-file", kek, "--metrics-listen", freeAddr(t), "--etcd-heartbeat", "250ms", "--etcd-election", "2500ms")
	logf, err := os.Create(filepath.Join(d.dir, "restored.log"))
	require.NoError(t, err)
	cmd.Stderr = logf
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	env := []string{"UNUM_CONFIG=" + filepath.Join(restored, "admin.yaml")}
	deadline := time.Now().Add(60 * time.Second)
	for {
		r = unum(t, env, "node", "ls", "-o", "json")
		if r.code == 0 && strings.Contains(r.stdout, api) {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(d.dir, "restored.log"))
			t.Fatalf("restored node does not answer: %s %s\n%s", r.stdout, r.stderr, log)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}
