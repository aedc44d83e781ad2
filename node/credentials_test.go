package node

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/internal/seal"
)

// TestCredKeyringSurvivesRestart: a control node's credential keyring is
// made once, sealed under the KEK (0600), and opened again after a restart
// with the same keys, so credentials minted before it still verify; a
// rotated keyring is saved with both keys. With another KEK the node
// refuses to start, names the file and why, and leaves the keyring as it
// was (it never silently makes a new one, which would orphan every live
// credential).
func TestCredKeyringSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	l := Layout{Dir: dir}
	require.NoError(t, os.MkdirAll(l.Keys(), 0o700))
	kekPath := filepath.Join(dir, "kek")
	require.NoError(t, seal.CreateKEKFile(kekPath))
	kek, err := seal.LoadKEK(kekPath)
	require.NoError(t, err)

	n := &node{l: l, log: quietLog()}
	k1, err := n.loadCredKeyring(kek, time.Now())
	require.NoError(t, err)
	fi, err := os.Stat(l.CredKeyring())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	jwks1, err := k1.PublicJWKS()
	require.NoError(t, err)

	td := spiffeid.RequireTrustDomainFromString("unum.test")
	iss, err := delegation.NewIssuer(td, k1, nil)
	require.NoError(t, err)
	sc, err := delegation.ParseScopes([]string{"cluster.status:cluster/-/status"})
	require.NoError(t, err)
	c, err := iss.Plan(delegation.Request{Caller: spiffeid.RequireFromPath(td, "/user/alice"), Audience: []spiffeid.ID{identity.APIID(td)}, Scopes: sc})
	require.NoError(t, err)
	tok, err := iss.Sign(c)
	require.NoError(t, err)

	// Restart: a new node, the KEK read again from its file.
	kek, err = seal.LoadKEK(kekPath)
	require.NoError(t, err)
	n = &node{l: l, log: quietLog()}
	k2, err := n.loadCredKeyring(kek, time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, k1.Primary(), k2.Primary(), "the same signing key, not a new one")
	jwks2, err := k2.PublicJWKS()
	require.NoError(t, err)
	require.JSONEq(t, string(jwks1), string(jwks2), "the same kid and key published")
	keys, err := delegation.ParsePublicKeys(map[string][]byte{"node-1": jwks2})
	require.NoError(t, err)
	_, err = delegation.Parse(tok, td, keys)
	require.NoError(t, err, "a credential minted before the restart verifies after it")

	// Rotated and saved: both keys come back, the new one primary.
	k3, err := k2.Rotate(time.Now())
	require.NoError(t, err)
	require.NoError(t, n.saveCredKeyring(kek, k3))
	k4, err := (&node{l: l, log: quietLog()}).loadCredKeyring(kek, time.Now())
	require.NoError(t, err)
	require.Equal(t, k3.Primary(), k4.Primary())
	require.Len(t, k4.Keys(), 2)
	require.NotEqual(t, k1.Primary().ID, k4.Primary().ID)

	// Another KEK: refused with the file named, and the keyring untouched.
	before, err := os.ReadFile(l.CredKeyring())
	require.NoError(t, err)
	otherPath := filepath.Join(dir, "other-kek")
	require.NoError(t, seal.CreateKEKFile(otherPath))
	other, err := seal.LoadKEK(otherPath)
	require.NoError(t, err)
	_, err = (&node{l: l, log: quietLog()}).loadCredKeyring(other, time.Now())
	require.Error(t, err)
	require.Contains(t, err.Error(), l.CredKeyring())
	require.Contains(t, err.Error(), "cannot open it with this key-encryption key")
	after, err := os.ReadFile(l.CredKeyring())
	require.NoError(t, err)
	require.Equal(t, before, after, "a keyring that does not open is left alone")

	// A keyring readable by others is refused, not used.
	require.NoError(t, os.Chmod(l.CredKeyring(), 0o644))
	_, err = (&node{l: l, log: quietLog()}).loadCredKeyring(kek, time.Now())
	require.Error(t, err)
	require.Contains(t, err.Error(), "credential keyring")
}

// TestCredKeysReachEveryNode: a control node signs only with keys it has
// published, and every node's verifier (the compute node through the agent
// sync stream) holds them.
func TestCredKeysReachEveryNode(t *testing.T) {
	ctl := cl.nodes["node-1"].node.Load()
	compute := cl.nodes["node-2"].node.Load()
	require.NotNil(t, ctl)
	require.NotNil(t, compute)
	deadline := time.Now().Add(20 * time.Second)
	for {
		iss := ctl.credIssuer.Load()
		ctlKeys, computeKeys := ctl.credVerifier.Keys().KeyIDs(), compute.credVerifier.Keys().KeyIDs()
		if iss != nil && len(ctlKeys) > 0 && slices.Equal(ctlKeys, computeKeys) {
			tokKID := iss.KeyID()
			require.Contains(t, ctlKeys, tokKID, "the issuer signs with a published key")
			break
		}
		require.True(t, time.Now().Before(deadline), "keys never reached every node: issuer %v, control %v, compute %v", iss != nil, ctlKeys, computeKeys)
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCredKeyringRotationPublishesBeforeUse drives the keyring step against
// the running control node's etcd and state cache: a keyring due for
// rotation is rotated and saved, its keys published (the old key kept, as
// verifiers need it until its tokens expire), and the issuer switches to
// the new primary only on a later step, once the cache shows the keys.
// It steps as node-2 (a member, whose key record it removes afterwards).
func TestCredKeyringRotationPublishesBeforeUse(t *testing.T) {
	n1 := cl.nodes["node-1"].node.Load()
	require.NotNil(t, n1)
	ctl := n1.ctl.Load()
	require.NotNil(t, ctl)
	cli := n1.obs.etcd.Client()
	const name, record = "node-2", "/unum/cred/keys/node-2"
	t.Cleanup(func() { _, _ = cli.Delete(context.Background(), record) })

	dir := t.TempDir()
	l := Layout{Dir: dir}
	require.NoError(t, os.MkdirAll(l.Keys(), 0o700))
	kekPath := filepath.Join(dir, "kek")
	require.NoError(t, seal.CreateKEKFile(kekPath))
	kek, err := seal.LoadKEK(kekPath)
	require.NoError(t, err)
	n := &node{l: l, log: quietLog(), cfg: &Config{Name: name}, td: n1.td}

	old, err := delegation.NewKeyring(time.Now().Add(-delegation.RotationPeriod - time.Hour))
	require.NoError(t, err)
	k := old
	var using *delegation.Keyring
	ctx := context.Background()
	require.NoError(t, n.credKeyringStep(ctx, kek, &k, &using, cli, ctl))
	require.NotSame(t, old, k, "rotated")
	require.NotEqual(t, old.PrimaryKID(), k.PrimaryKID())
	require.Len(t, k.Keys(), 2, "the old key verifies on")
	require.Nil(t, using, "not used before its keys are shown published")
	require.Nil(t, n.credIssuer.Load())
	saved, err := n.loadCredKeyring(kek, time.Now())
	require.NoError(t, err)
	require.Equal(t, k.Primary(), saved.Primary(), "saved before published")

	require.Eventually(t, func() bool {
		require.NoError(t, n.credKeyringStep(ctx, kek, &k, &using, cli, ctl))
		return using == k
	}, 10*time.Second, 20*time.Millisecond)
	iss := n.credIssuer.Load()
	require.NotNil(t, iss)
	require.Equal(t, k.PrimaryKID(), iss.KeyID())
	sets, _, _ := ctl.CredentialKeys()
	keys, err := delegation.ParsePublicKeys(map[string][]byte{name: sets[name]})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{old.PrimaryKID(), k.PrimaryKID()}, keys.KeyIDs())
}
