package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestUserLoginEndToEnd drives people through the real binary: an admin
// adds a user, the user logs in with the token (CA pinned by the token),
// works from the default config, renews, cannot replay the token, and is
// cut off by `user rm`. Then break-glass: the admin's own config is revoked
// and `unum admin recover` mints a working one from the control node's
// folder and KEK.
func TestUserLoginEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node process")
	}
	d := startDev(t, 1)
	admin := append([]string{"XDG_CONFIG_HOME=" + t.TempDir()}, d.env...)

	r := unum(t, admin, "node", "ls", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var nodes struct {
		Nodes []struct {
			EnrollmentAddress string `json:"enrollment_address"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &nodes))
	enroll := nodes.Nodes[0].EnrollmentAddress
	require.NotEmpty(t, enroll)

	r = unum(t, admin, "user", "add", "alice", "--role", "viewer", "--cert-ttl", "2h")
	require.Equal(t, 0, r.code, r.stderr)
	token := strings.TrimSpace(r.stdout)
	require.True(t, strings.HasPrefix(token, "unum1.user."), token)
	require.Contains(t, r.stderr, "unum login --addr "+enroll, "the hint names the enrolment address")

	// Alice's machine: no UNUM_CONFIG, her own XDG folder.
	xdg := t.TempDir()
	alice := []string{"UNUM_CONFIG=", "XDG_CONFIG_HOME=" + xdg, "UNUM_LOGIN_TOKEN="}
	cfgPath := filepath.Join(xdg, "unum", "config.yaml")

	r = unum(t, alice, "status")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "unum login", "without a config the CLI says how to get one")

	r = unum(t, append(alice, "UNUM_LOGIN_TOKEN="+token), "login", "--addr", enroll)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "spiffe://unum.local/user/alice (role viewer)")
	info, err := os.Stat(cfgPath)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	info, err = os.Stat(filepath.Dir(cfgPath))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())

	r = unum(t, alice, "id", "show", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"spiffe_id": "spiffe://unum.local/user/alice"`)
	r = unum(t, alice, "id", "list")
	require.Equal(t, 0, r.code, "viewers read: %s", r.stderr)
	r = unum(t, alice, "id", "register", "--spiffe-id", "spiffe://unum.local/ns/default/job/x", "--node", "node-1", "--selector", "unix:uid:1000")
	require.Equal(t, 3, r.code, "viewers may not register: %s", r.stderr)
	r = unum(t, alice, "user", "add", "mallory", "--role", "admin")
	require.Equal(t, 3, r.code, "viewers may not add users: %s", r.stderr)

	// Renewal: a new certificate and key in the same file.
	before, err := os.ReadFile(cfgPath)
	require.NoError(t, err)
	r = unum(t, alice, "login", "--renew", "--ttl", "30m")
	require.Equal(t, 0, r.code, r.stderr)
	after, err := os.ReadFile(cfgPath)
	require.NoError(t, err)
	require.NotEqual(t, string(before), string(after))
	r = unum(t, alice, "id", "show", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "user/alice")

	// Token replay (T-021): refused, and the config is not touched.
	r = unum(t, append(alice, "UNUM_LOGIN_TOKEN="+token), "login", "--addr", enroll, "--config", filepath.Join(t.TempDir(), "replay.yaml"))
	require.Equal(t, 3, r.code, r.stderr)
	require.Contains(t, r.stderr, "already been used")
	// A node join token is not a login token.
	r = unum(t, admin, "node", "join-token", "--name", "n9")
	require.Equal(t, 0, r.code, r.stderr)
	r = unum(t, append(alice, "UNUM_LOGIN_TOKEN="+strings.TrimSpace(r.stdout)), "login", "--addr", enroll, "--config", filepath.Join(t.TempDir(), "x.yaml"))
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "node token")

	r = unum(t, admin, "user", "ls", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"name": "alice"`)
	require.Contains(t, r.stdout, `"role": "viewer"`)
	for _, args := range [][]string{{"user", "add", "admin", "--role", "admin"}, {"user", "rm", "admin"}, {"user", "add", "Bad/Name", "--role", "viewer"}, {"user", "add", "carol"}} {
		r = unum(t, admin, args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
	}

	// Removal cuts alice off (T-020).
	r = unum(t, admin, "user", "rm", "alice")
	require.Equal(t, 0, r.code, r.stderr)
	require.Eventually(t, func() bool {
		r = unum(t, alice, "id", "show")
		return r.code == 1 && strings.Contains(r.stderr, "not authenticated") && strings.Contains(r.stderr, "user removed")
	}, 2*time.Second, 50*time.Millisecond, "last: %d %s", r.code, r.stderr)
	r = unum(t, alice, "login", "--renew")
	require.Equal(t, 1, r.code, r.stderr)

	// Break-glass (T-022): the admin config is revoked (stolen), then a
	// new one is minted on the control node.
	r = unum(t, admin, "user", "revoke", "admin")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "unum admin recover")
	require.Eventually(t, func() bool {
		r = unum(t, admin, "status")
		return r.code == 1 && strings.Contains(r.stderr, "not authenticated")
	}, 2*time.Second, 50*time.Millisecond, "the revoked admin config still works: %s", r.stderr)

	r = unum(t, nil, "admin", "recover", "--help")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "break-glass")
	require.Contains(t, r.stderr, "--kek-file")

	// A credential minted before the revocation's allowance ran out would
	// be born revoked: wait it out, as the revoke output says.
	time.Sleep(6 * time.Second)
	recovered := filepath.Join(t.TempDir(), "recovered.yaml")
	r = unum(t, nil, "admin", "recover", "--data-dir", filepath.Join(d.dir, "node-1"), "--kek-file", filepath.Join(d.dir, "kek"), "--out", recovered, "--ttl", "10m")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "BREAK-GLASS")
	require.Contains(t, r.stderr, "level=WARN")
	require.Contains(t, r.stderr, "uid ")
	r = unum(t, []string{"UNUM_CONFIG=" + recovered}, "user", "ls")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "admin")

	r = unum(t, nil, "admin", "recover", "--data-dir", filepath.Join(d.dir, "node-1"), "--kek-file", filepath.Join(d.dir, "kek"), "--ttl", "48h")
	require.Equal(t, 2, r.code, r.stderr)
}
