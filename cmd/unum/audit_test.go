package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/node"
)

// secretsIn collects the secrets a test must never find in an audit log:
// every private key PEM under dir (each base64 line of its body, so an
// escaped copy is found too).
func pemSecretsIn(t *testing.T, dir string) [][]byte {
	t.Helper()
	var out [][]byte
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.Contains(p, string(filepath.Separator)+"audit"+string(filepath.Separator)) || strings.Contains(p, "etcd"+string(filepath.Separator)+"member") {
			return nil // the logs themselves; etcd's data
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for rest := data; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if !strings.Contains(b.Type, "PRIVATE KEY") {
				continue
			}
			full := pem.EncodeToMemory(b)
			for _, line := range strings.Split(string(full), "\n") {
				if len(line) >= 32 && !strings.HasPrefix(line, "-----") {
					out = append(out, []byte(line))
				}
			}
		}
		return nil
	}))
	return out
}

// tokenSecrets are a token and its secret field.
func tokenSecrets(tok string) [][]byte {
	out := [][]byte{[]byte(tok)}
	if f := strings.Split(tok, "."); len(f) == 5 {
		out = append(out, []byte(f[3]))
	}
	return out
}

// TestAuditHoldsNoSecrets (T-061): a dev cluster runs joins, logins,
// token mints, refused tokens and a break-glass recovery; afterwards no
// event in any node's audit log holds a token, a token's secret or a
// private key, while the events of all of them are there.
func TestAuditHoldsNoSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	d := startDev(t, 2)
	admin := append([]string{"XDG_CONFIG_HOME=" + t.TempDir()}, d.env...)
	var secrets [][]byte

	// node-2 joined with a token unum dev handed it in its environment.
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", d.pid(t, "node-2")))
	require.NoError(t, err)
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("UNUM_JOIN_TOKEN=")); ok && len(v) > 0 {
			secrets = append(secrets, tokenSecrets(string(v))...)
		}
	}
	require.NotEmpty(t, secrets, "node-2's join token")

	r := unum(t, admin, "node", "join-token", "--name", "n9")
	require.Equal(t, 0, r.code, r.stderr)
	secrets = append(secrets, tokenSecrets(strings.TrimSpace(r.stdout))...)
	r = unum(t, admin, "user", "add", "alice", "--role", "viewer")
	require.Equal(t, 0, r.code, r.stderr)
	aliceTok := strings.TrimSpace(r.stdout)
	secrets = append(secrets, tokenSecrets(aliceTok)...)
	r = unum(t, admin, "user", "add", "bob", "--role", "operator")
	require.Equal(t, 0, r.code, r.stderr)
	secrets = append(secrets, tokenSecrets(strings.TrimSpace(r.stdout))...)
	r = unum(t, admin, "node", "ls", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	enroll := between(r.stdout, `"enrollment_address": "`, `"`)
	require.NotEmpty(t, enroll)

	xdg := t.TempDir()
	alice := []string{"UNUM_CONFIG=", "XDG_CONFIG_HOME=" + xdg}
	r = unum(t, append(alice, "UNUM_LOGIN_TOKEN="+aliceTok), "login", "--addr", enroll)
	require.Equal(t, 0, r.code, r.stderr)
	r = unum(t, alice, "login", "--renew")
	require.Equal(t, 0, r.code, r.stderr)
	// Refused: the used token again, and a forgery of it.
	r = unum(t, append(alice, "UNUM_LOGIN_TOKEN="+aliceTok), "login", "--addr", enroll, "--config", filepath.Join(t.TempDir(), "x.yaml"))
	require.Equal(t, 3, r.code, r.stderr)
	f := strings.Split(aliceTok, ".")
	f[3] = strings.Repeat("A", len(f[3]))
	forged := strings.Join(f, ".")
	secrets = append(secrets, []byte(forged))
	r = unum(t, append(alice, "UNUM_LOGIN_TOKEN="+forged), "login", "--addr", enroll, "--config", filepath.Join(t.TempDir(), "y.yaml"))
	require.Equal(t, 3, r.code, r.stderr)

	// Break-glass while the node runs: recorded through its inbox.
	recovered := filepath.Join(t.TempDir(), "recovered.yaml")
	r = unum(t, nil, "admin", "recover", "--data-dir", filepath.Join(d.dir, "node-1"), "--kek-file", filepath.Join(d.dir, "kek"), "--out", recovered, "--ttl", "10m")
	require.Equal(t, 0, r.code, r.stderr)

	// Stop the cluster cleanly: the logs are then ours to read.
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("unum dev did not stop on SIGTERM")
	}
	secrets = append(secrets, pemSecretsIn(t, d.dir)...)
	secrets = append(secrets, pemSecretsIn(t, xdg)...)
	secrets = append(secrets, pemSecretsIn(t, filepath.Dir(recovered))...)
	require.Greater(t, len(secrets), 10)

	actions := map[string]int{}
	for _, name := range []string{"node-1", "node-2"} {
		l := node.Layout{Dir: filepath.Join(d.dir, name)}
		signer, err := audit.LoadOrCreateSigner(name, l.AuditKey())
		require.NoError(t, err)
		log, err := audit.Open(audit.Config{Dir: l.AuditDir(), Node: name, Signer: signer})
		require.NoError(t, err)
		n := 0
		err = log.Scan(context.Background(), 0, func(i uint64, raw []byte) bool {
			n++
			for _, s := range secrets {
				if bytes.Contains(raw, s) {
					t.Errorf("%s entry %d holds a secret (%.12s…): %s", name, i, s, raw)
				}
			}
			e, err := audit.DecodeEvent(raw)
			require.NoError(t, err)
			if e.Kind != audit.KindAuthz {
				actions[e.Action]++
			}
			return true
		})
		require.NoError(t, err)
		require.NoError(t, log.Close())
		t.Logf("%s: %d events scanned", name, n)
	}
	t.Logf("events: %v", actions)
	// The log saw all of it: the scan was not of an empty log.
	require.GreaterOrEqual(t, actions[audit.ActionTokenMint], 4, "node-2's, n9's, alice's and bob's tokens")
	require.GreaterOrEqual(t, actions[audit.ActionTokenUse], 4, "node-2's join, alice's login, its replay and the forgery")
	require.GreaterOrEqual(t, actions[audit.ActionNodeJoin], 1)
	require.GreaterOrEqual(t, actions[audit.ActionSVIDIssue], 1)
	require.GreaterOrEqual(t, actions[audit.ActionSVIDRotate], 1)
	require.Equal(t, 1, actions[audit.ActionRecover])
	require.Equal(t, 2, actions[audit.ActionNodeLeave], "both nodes stopped cleanly")
	require.Positive(t, actions[audit.ActionAuthnMTLS])
}

func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	j := strings.Index(s, end)
	if j < 0 {
		return ""
	}
	return s[:j]
}
