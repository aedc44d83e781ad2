package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/clientconfig"
)

type caStatusJSON struct {
	Roots []struct {
		Fingerprint string `json:"fingerprint"`
		State       string `json:"state"`
		KeyOnline   bool   `json:"key_online"`
	} `json:"roots"`
	Intermediates []struct {
		Fingerprint string `json:"fingerprint"`
		Node        string `json:"node"`
		Issuer      string `json:"issuer_fingerprint"`
	} `json:"intermediates"`
	Rotation string `json:"rotation"`
	Phase    string `json:"phase"`
}

// TestCACommands: `unum ca status`, an intermediates-only `ca rotate
// --wait`, and the export-root / import-root round trip, with the real
// binary against `unum dev`.
func TestCACommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node process")
	}
	d := startDev(t, 1)
	status := func() caStatusJSON {
		t.Helper()
		r := unum(t, d.env, "ca", "status", "-o", "json")
		require.Equal(t, 0, r.code, "ca status: %s %s", r.stdout, r.stderr)
		var st caStatusJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
		return st
	}
	before := status()
	require.Len(t, before.Roots, 1)
	require.True(t, before.Roots[0].KeyOnline)
	require.Len(t, before.Intermediates, 1)

	r := unum(t, d.env, "ca", "rotate", "--wait", "-o", "json")
	require.Equal(t, 0, r.code, "ca rotate: %s %s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "phase done")
	after := status()
	require.Equal(t, "done", after.Phase)
	require.Equal(t, before.Roots[0].Fingerprint, after.Roots[0].Fingerprint, "no --root: the root stays")
	require.NotEqual(t, before.Intermediates[0].Fingerprint, after.Intermediates[0].Fingerprint, "the intermediate was not replaced")
	require.Equal(t, after.Roots[0].Fingerprint, after.Intermediates[0].Issuer)

	// People log in and renew after the rotation: the enrolment listener
	// serves the new intermediate's chain, so the token must pin the current
	// bundle, and the certificate comes from the new intermediate.
	r = unum(t, d.env, "node", "ls", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var nodes struct {
		Nodes []struct {
			EnrollmentAddress string `json:"enrollment_address"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &nodes))
	r = unum(t, d.env, "user", "add", "rot", "--role", "viewer")
	require.Equal(t, 0, r.code, r.stderr)
	xdg := t.TempDir()
	person := []string{"UNUM_CONFIG=", "XDG_CONFIG_HOME=" + xdg, "UNUM_LOGIN_TOKEN=" + strings.TrimSpace(r.stdout)}
	r = unum(t, person, "login", "--addr", nodes.Nodes[0].EnrollmentAddress)
	require.Equal(t, 0, r.code, "login after rotation: %s", r.stderr)
	r = unum(t, person, "login", "--renew")
	require.Equal(t, 0, r.code, "renew after rotation: %s", r.stderr)
	r = unum(t, person, "id", "show", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "spiffe://unum.local/user/rot")
	cfg, err := clientconfig.Load(filepath.Join(xdg, "unum", "config.yaml"))
	require.NoError(t, err)
	svid, err := cfg.SVID()
	require.NoError(t, err)
	require.Equal(t, after.Intermediates[0].Fingerprint, ca.Fingerprint(svid.Certificates[1]), "renewed from the old intermediate")

	out := filepath.Join(t.TempDir(), "root.pem")
	r = unum(t, d.env, "ca", "export-root", "--out", out)
	require.Equal(t, 0, r.code, "export-root: %s %s", r.stdout, r.stderr)
	info, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	require.False(t, status().Roots[0].KeyOnline)
	// Never overwrites, and there is nothing left to export anyway.
	r = unum(t, d.env, "ca", "export-root", "--out", out)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "already exists")
	r = unum(t, d.env, "ca", "rotate")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "import-root")

	r = unum(t, d.env, "ca", "import-root", out)
	require.Equal(t, 0, r.code, "import-root: %s %s", r.stdout, r.stderr)
	require.True(t, status().Roots[0].KeyOnline)
}
