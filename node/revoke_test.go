package node

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/rpc"
)

// fetchID waits until the agent at socket serves id (among the SVIDs
// other tests registered for this uid) and returns it.
func fetchID(t *testing.T, socket, id string) *x509svid.SVID {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		svids, _ := workloadapi.FetchX509SVIDs(ctxT(t, 5*time.Second), workloadapi.WithAddr(socket))
		for _, s := range svids {
			if s.ID.String() == id {
				return s
			}
		}
		require.True(t, time.Now().Before(deadline), "agent never served %s", id)
		time.Sleep(100 * time.Millisecond)
	}
}

// apiOf is the API address of a running test node.
func apiOf(t *testing.T, name string) string {
	t.Helper()
	cfg, err := loadConfig(Layout{Dir: cl.nodes[name].dir})
	require.NoError(t, err)
	return cfg.APIListen
}

// dialAs opens a connection to addr presenting svid.
func dialAs(t *testing.T, svid *x509svid.SVID, addr string) *grpc.ClientConn {
	t.Helper()
	creds, err := rpc.NewCredentials(svid, cl.roots(t))
	require.NoError(t, err)
	// Any member of the trust domain: compute nodes serve the API too.
	tlsCfg := tlsconfig.MTLSClientConfig(creds, creds, tlsconfig.AuthorizeMemberOf(creds.TrustDomain()))
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (c *cluster) roots(t *testing.T) []*x509.Certificate {
	t.Helper()
	creds, err := Layout{Dir: c.nodes["node-1"].dir}.Credentials()
	require.NoError(t, err)
	return creds.Roots()
}

// requireRefusedWithin polls WhoAmI on cc until it is refused as revoked,
// and fails if that takes longer than within.
func requireRefusedWithin(t *testing.T, cc *grpc.ClientConn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := unumv1.NewIdentityClient(cc).WhoAmI(ctx, &unumv1.WhoAmIRequest{})
		cancel()
		if err != nil {
			require.Equal(t, codes.Unauthenticated, status.Code(err), err.Error())
			require.Contains(t, err.Error(), "certificate revoked")
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("still accepted %s after the revocation", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDeletedEntryRevoked: deleting a registration entry stops its live
// SVID from working on every unum server within 2 s (a control node fed by
// etcd, a compute node fed by the revocation stream), over connections
// that were already open, and the agent stops serving it.
func TestDeletedEntryRevoked(t *testing.T) {
	id := "spiffe://unum.test/ns/rev/job/victim"
	e := register(t, id, "node-2", uidSelector())
	svid := fetchID(t, socketOf("node-2"), id)

	conns := map[string]*grpc.ClientConn{}
	for _, n := range []string{"node-1", "node-2"} {
		cc := dialAs(t, svid, apiOf(t, n))
		who, err := unumv1.NewIdentityClient(cc).WhoAmI(ctxT(t, 10*time.Second), &unumv1.WhoAmIRequest{})
		require.NoError(t, err, n)
		require.Equal(t, id, who.GetSpiffeId())
		conns[n] = cc
	}

	admin, err := cl.adminConn()
	require.NoError(t, err)
	defer admin.Close()
	_, err = unumv1.NewIdentityClient(admin).DeleteEntry(ctxT(t, 10*time.Second), &unumv1.DeleteEntryRequest{Id: e.GetId()})
	require.NoError(t, err)
	for n, cc := range conns {
		took := requireRefusedWithin(t, cc, 2*time.Second)
		t.Logf("%s refused the deleted entry's SVID after %s", n, took)
	}

	// The agent no longer serves the identity (other tests' entries for
	// this uid may still be served).
	deadline := time.Now().Add(10 * time.Second)
	for {
		svids, _ := workloadapi.FetchX509SVIDs(ctxT(t, 5*time.Second), workloadapi.WithAddr(socketOf("node-2")))
		if !hasID(svids, id) {
			break
		}
		require.True(t, time.Now().Before(deadline), "agent still serves a deleted entry")
		time.Sleep(100 * time.Millisecond)
	}

	// Registered again, the identity gets a working SVID (issued after the
	// revocation's Before).
	register(t, id, "node-2", uidSelector())
	fresh := fetchID(t, socketOf("node-2"), id)
	who, err := unumv1.NewIdentityClient(dialAs(t, fresh, apiOf(t, "node-1"))).WhoAmI(ctxT(t, 10*time.Second), &unumv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, id, who.GetSpiffeId())
}

// TestRemoveComputeNode: a compute node removed with `node rm` stops, its
// certificate is refused, its registrations are gone, and a node that is
// down is only removed with --force. The name can join again later.
func TestRemoveComputeNode(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	for _, name := range []string{"node-rm-live", "node-rm-dead"} {
		tok, err := cl.joinToken(ctx, name, "compute")
		require.NoError(t, err)
		p, err := freePorts()
		require.NoError(t, err)
		require.NoError(t, cl.start(name, Options{DataDir: filepath.Join(cl.base, name), Ports: p, JoinAddr: cl.enroll, Token: tok}))
		require.NoError(t, cl.waitReady(ctx, name))
	}
	register(t, "spiffe://unum.test/ns/rm/job/a", "node-rm-live", uidSelector())
	workload := dialAs(t, fetchID(t, socketOf("node-rm-live"), "spiffe://unum.test/ns/rm/job/a"), apiOf(t, "node-1"))
	_, err := unumv1.NewIdentityClient(workload).WhoAmI(ctx, &unumv1.WhoAmIRequest{})
	require.NoError(t, err)
	liveCreds, err := Layout{Dir: cl.nodes["node-rm-live"].dir}.Credentials()
	require.NoError(t, err)
	liveSVID, err := liveCreds.GetX509SVID()
	require.NoError(t, err)
	stolen := dialAs(t, liveSVID, apiOf(t, "node-1"))
	_, err = unumv1.NewIdentityClient(stolen).WhoAmI(ctx, &unumv1.WhoAmIRequest{})
	require.NoError(t, err)

	admin, err := cl.adminConn()
	require.NoError(t, err)
	defer admin.Close()
	cluster := unumv1.NewClusterClient(admin)

	resp, err := cluster.RemoveNode(ctx, &unumv1.RemoveNodeRequest{Name: "node-rm-live"})
	require.NoError(t, err)
	require.Equal(t, int32(1), resp.GetDeletedEntries())
	require.False(t, resp.GetRemovedEtcdMember())
	// The node stops on its own, saying why.
	select {
	case err := <-cl.nodes["node-rm-live"].done:
		require.ErrorContains(t, err, "removed from the cluster")
		delete(cl.nodes, "node-rm-live")
	case <-time.After(30 * time.Second):
		t.Fatal("removed node still running")
	}
	// Attack: its certificate (say, stolen) is refused, and so are the
	// workload SVIDs minted for it.
	requireRefusedWithin(t, stolen, 2*time.Second)
	requireRefusedWithin(t, workload, 2*time.Second)
	entries, err := unumv1.NewIdentityClient(admin).ListEntries(ctx, &unumv1.ListEntriesRequest{})
	require.NoError(t, err)
	for _, e := range entries.GetEntries() {
		require.NotEqual(t, "node-rm-live", e.GetNode(), "registration of a removed node kept")
	}

	// A node that is down: refused without --force, removed with it.
	require.NoError(t, cl.stop("node-rm-dead"))
	for deadline := time.Now().Add(30 * time.Second); ; {
		nodes, err := cluster.ListNodes(ctx, &unumv1.ListNodesRequest{})
		require.NoError(t, err)
		quiet := false
		for _, n := range nodes.GetNodes() {
			if n.GetName() == "node-rm-dead" {
				quiet = time.Since(time.Unix(n.GetLastSeenUnix(), 0)) > 12*time.Second
			}
		}
		if quiet {
			break
		}
		require.True(t, time.Now().Before(deadline), "stopped node still seen")
		time.Sleep(500 * time.Millisecond)
	}
	_, err = cluster.RemoveNode(ctx, &unumv1.RemoveNodeRequest{Name: "node-rm-dead"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "--force")
	_, err = cluster.RemoveNode(ctx, &unumv1.RemoveNodeRequest{Name: "node-rm-dead", Force: true})
	require.NoError(t, err)
	_, err = cluster.RemoveNode(ctx, &unumv1.RemoveNodeRequest{Name: "node-rm-dead", Force: true})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "already removed")
	// A name this cluster never knew (say, a node that joined after the
	// backup it was restored from): revoked only with --force.
	_, err = cluster.RemoveNode(ctx, &unumv1.RemoveNodeRequest{Name: "node-unknown"})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	resp, err = cluster.RemoveNode(ctx, &unumv1.RemoveNodeRequest{Name: "node-unknown", Force: true})
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/node/node-unknown", resp.GetRevokedSpiffeId())
	_, err = cluster.RemoveNode(ctx, &unumv1.RemoveNodeRequest{Name: "node-1"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)

	// The name can join again with a new token; its new identity works.
	tok, err := cl.joinToken(ctx, "node-rm-live", "compute")
	require.NoError(t, err)
	p, err := freePorts()
	require.NoError(t, err)
	require.NoError(t, cl.start("node-rm-live", Options{DataDir: filepath.Join(cl.base, "node-rm-live-2"), Ports: p, JoinAddr: cl.enroll, Token: tok}))
	require.NoError(t, cl.waitReady(ctx, "node-rm-live"))
	require.NoError(t, cl.stop("node-rm-live"))
}
