package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
	unumnode "github.com/unumos/unum/node"
)

// nodeClientConfig writes a client config holding a node's own SVID: what
// an attacker who took over that node holds.
func nodeClientConfig(t *testing.T, d *devCluster, node string) string {
	t.Helper()
	svid, roots := nodeSVID(t, d, node)
	admin, err := clientconfig.Load(filepath.Join(d.dir, "admin.yaml"))
	require.NoError(t, err)
	cfg, err := clientconfig.New(svid, roots, admin.Addresses)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), node+".yaml")
	require.NoError(t, cfg.Save(path))
	return path
}

func nodeSVID(t *testing.T, d *devCluster, node string) (*x509svid.SVID, []*x509.Certificate) {
	t.Helper()
	creds, err := unumnode.Layout{Dir: filepath.Join(d.dir, node)}.Credentials()
	require.NoError(t, err)
	svid, err := creds.GetX509SVID()
	require.NoError(t, err)
	return svid, creds.Roots()
}

// requireMintRefused asks node's own API, with node's own SVID, to mint an
// SVID for a registered entry of node: with no etcd quorum the linearizable
// read cannot complete, so the CA refuses instead of minting from a stale
// view.
func requireMintRefused(t *testing.T, d *devCluster, node string) {
	t.Helper()
	svid, roots := nodeSVID(t, d, node)
	creds, err := rpc.NewCredentials(svid, roots)
	require.NoError(t, err)
	api := nodeAPIAddress(t, d, node)
	cc, err := rpc.Dial(creds, []string{api})
	require.NoError(t, err)
	defer cc.Close()
	id := spiffeid.RequireFromString("spiffe://unum.local/ns/default/job/a")
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	csr, err := ca.CreateCSR(key, id)
	require.NoError(t, err)
	// The entry id does not matter: the read that would find it cannot
	// complete. A control node with quorum answers PermissionDenied for an
	// unknown entry instead, so Unavailable naming the quorum proves the
	// refusal came from the missing quorum, not from a timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = unumv1.NewIdentityClient(cc).MintX509SVID(ctx, &unumv1.MintX509SVIDRequest{EntryId: "any", SpiffeId: id.String(), Csr: csr})
	require.Error(t, err)
	require.Equal(t, codes.Unavailable, status.Code(err), err.Error())
	// Once the node's revocation view has aged past its bound (it cannot
	// hear from an etcd leader either), the interceptor refuses before the
	// read is even tried; both refusals say why.
	if !strings.Contains(err.Error(), "no etcd quorum") {
		require.Contains(t, err.Error(), "revocation view is stale")
	}
}

// requireStaleViewRefuses waits until node, cut off from the etcd majority,
// refuses a privileged admin action because its revocation view is stale
// (and says so, exit 1), while an unprivileged call still works.
func requireStaleViewRefuses(t *testing.T, d *devCluster, node string) {
	t.Helper()
	env := append([]string{"UNUM_ADDR=" + nodeAPIAddress(t, d, node)}, d.env...)
	deadline := time.Now().Add(40 * time.Second)
	for {
		r := unum(t, env, "id", "register", "--spiffe-id", "spiffe://unum.local/ns/default/job/stale", "--node", node, "--selector", "unix:uid:0")
		require.NotEqual(t, 0, r.code, "a control node without quorum registered an entry")
		// Cut off from the etcd majority, both the revocation and the
		// policy view stop being confirmed; whichever is checked first
		// refuses.
		if strings.Contains(r.stderr, "revocation view is stale") || strings.Contains(r.stderr, "policy view is stale") {
			require.Equal(t, 1, r.code, r.stderr)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never refused for a stale revocation or policy view: %s", r.stderr)
		}
		time.Sleep(time.Second)
	}
	r := unum(t, env, "id", "show")
	require.Equal(t, 0, r.code, "an unprivileged call must still work: %s", r.stderr)
}

// devPorts are the addresses unum dev gave each node (dev.json), by name.
func devPorts(t *testing.T, d *devCluster) map[string]unumnode.Ports {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(d.dir, "dev.json"))
	require.NoError(t, err)
	var st struct {
		Nodes []struct {
			Name  string         `json:"name"`
			Ports unumnode.Ports `json:"ports"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal(data, &st))
	out := map[string]unumnode.Ports{}
	for _, n := range st.Nodes {
		out[n.Name] = n.Ports
	}
	return out
}

func nodeAPIAddress(t *testing.T, d *devCluster, name string) string {
	t.Helper()
	p, ok := devPorts(t, d)[name]
	if !ok || p.API == "" {
		t.Fatalf("no node %s in dev.json", name)
	}
	return p.API
}
