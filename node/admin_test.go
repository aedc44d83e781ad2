package node

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
)

// TestRecoverAdmin: the break-glass path mints a working admin config of
// the asked lifetime from a control node's folder and KEK, and nothing
// without both.
func TestRecoverAdmin(t *testing.T) {
	dir1 := cl.nodes["node-1"].dir
	before := cl.nodes["node-1"].node.Load().audit.Size()
	cfg, err := RecoverAdmin(context.Background(), dir1, cl.kek, 10*time.Minute, "uid 0 (tester)")
	require.NoError(t, err)
	// Recorded by the running node (through its inbox) before it returned.
	e := findEvent(t, cl.nodes["node-1"].node.Load().audit, before, audit.ActionRecover)
	require.NotNil(t, e, "no recovery.admin event")
	require.Equal(t, audit.KindRecovery, e.Kind)
	require.Equal(t, "spiffe://unum.test/node/node-1", e.Subject)
	var d RecoveryDetails
	require.NoError(t, json.Unmarshal(e.Details, &d))
	require.Equal(t, "uid 0 (tester)", d.By)
	require.Equal(t, "spiffe://unum.test/user/admin", d.SPIFFEID)
	inbox, err := os.ReadDir(Layout{Dir: dir1}.AuditInbox())
	require.NoError(t, err)
	require.Empty(t, inbox, "the node removes what it recorded")
	svid, err := cfg.SVID()
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/user/admin", svid.ID.String())
	leaf := svid.Certificates[0]
	require.InDelta(t, (10 * time.Minute).Seconds(), leaf.NotAfter.Sub(leaf.NotBefore.Add(ca.ClockSkew)).Seconds(), 2)
	require.NotEmpty(t, cfg.Addresses)

	creds, err := cfg.Credentials()
	require.NoError(t, err)
	cc, err := rpc.Dial(creds, cfg.Addresses)
	require.NoError(t, err)
	defer cc.Close()
	ctx := ctxT(t, 20*time.Second)
	who, err := unumv1.NewIdentityClient(cc).WhoAmI(ctx, &unumv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/user/admin", who.GetSpiffeId())
	_, err = unumv1.NewUsersClient(cc).ListUsers(ctx, &unumv1.ListUsersRequest{})
	require.NoError(t, err, "the recovered admin administers")

	for name, tc := range map[string]struct {
		dir, kek string
		ttl      time.Duration
		want     string
	}{
		"ttl too short":      {dir1, cl.kek, 30 * time.Second, "must be between"},
		"ttl too long":       {dir1, cl.kek, 25 * time.Hour, "must be between"},
		"no such folder":     {filepath.Join(t.TempDir(), "nope"), cl.kek, time.Hour, "no such file"},
		"a compute node":     {cl.nodes["node-2"].dir, cl.kek, time.Hour, "not a control node"},
		"KEK inside the dir": {dir1, filepath.Join(dir1, "kek"), time.Hour, "inside the data folder"},
		"wrong KEK":          {dir1, otherKEK(t), time.Hour, "intermediate"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := RecoverAdmin(context.Background(), tc.dir, tc.kek, tc.ttl, "uid 0 (tester)")
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func otherKEK(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek")
	require.NoError(t, seal.CreateKEKFile(path))
	return path
}
