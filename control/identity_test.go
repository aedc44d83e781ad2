package control

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
)

func register(t *testing.T, id, node string, sels ...string) *unumv1.Entry {
	t.Helper()
	e, err := unumv1.NewIdentityClient(conn(t, "/user/admin")).CreateEntry(ctxT(t), &unumv1.CreateEntryRequest{SpiffeId: id, Node: node, AllNodes: node == "", Selectors: sels})
	require.NoError(t, err)
	return e
}

func csrFor(t *testing.T, id string) []byte {
	t.Helper()
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	csr, err := ca.CreateCSR(key, spiffeid.RequireFromString(id))
	require.NoError(t, err)
	return csr
}

func TestCreateEntryValidation(t *testing.T) {
	ic := unumv1.NewIdentityClient(conn(t, "/user/admin"))
	for name, tc := range map[string]struct {
		req  *unumv1.CreateEntryRequest
		code codes.Code
		msg  string
	}{
		"user id":            {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/user/admin", Node: "node-1", Selectors: []string{"unix:uid:0"}}, codes.InvalidArgument, "not a workload id"},
		"node id":            {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/node/node-1", Node: "node-1", Selectors: []string{"unix:uid:0"}}, codes.InvalidArgument, "not a workload id"},
		"system id":          {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/system/ca", Node: "node-1", Selectors: []string{"unix:uid:0"}}, codes.InvalidArgument, "not a workload id"},
		"other trust domain": {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://evil.test/ns/a/job/b", Node: "node-1", Selectors: []string{"unix:uid:0"}}, codes.InvalidArgument, "not in trust domain"},
		"unknown node":       {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/a/job/b", Node: "nope", Selectors: []string{"unix:uid:0"}}, codes.NotFound, "unknown node"},
		"no node":            {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/a/job/b", Selectors: []string{"unix:uid:0"}}, codes.InvalidArgument, "--node"},
		"both node and all":  {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/a/job/b", Node: "node-1", AllNodes: true, Selectors: []string{"unix:uid:0"}}, codes.InvalidArgument, "not both"},
		"task selector":      {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/a/job/b", Node: "node-1", Selectors: []string{"unum:task:abc123"}}, codes.InvalidArgument, "task selectors are the scheduler's"},
		"path alone":         {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/a/job/b", Node: "node-1", Selectors: []string{"unix:path:/bin/sh"}}, codes.InvalidArgument, "unix:uid, unix:gid or unum:task"},
		"bad selector":       {&unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/a/job/b", Node: "node-1", Selectors: []string{"k8s:ns:x"}}, codes.InvalidArgument, "selector"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ic.CreateEntry(ctxT(t), tc.req)
			requireCode(t, err, tc.code, tc.msg)
		})
	}
	t.Run("only admins register", func(t *testing.T) {
		for _, p := range []string{"/node/node-1", "/ns/a/job/b", "/user/bob"} {
			_, err := unumv1.NewIdentityClient(conn(t, p)).CreateEntry(ctxT(t), &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/a/job/b", Node: "node-1", Selectors: []string{"unix:uid:0"}})
			requireCode(t, err, codes.PermissionDenied, "denied by policy (decision node-1.")
		}
	})
}

// TestMintRequiresEntry: the CA signs a workload SVID only for an entry of
// the calling node, confirmed by a linearizable read.
func TestMintRequiresEntry(t *testing.T) {
	mine := register(t, "spiffe://unum.test/ns/mint/job/a", "node-1", "unix:uid:1000")
	all := register(t, "spiffe://unum.test/ns/mint/job/all", "", "unix:uid:1000")
	// An entry for another node (misuse-a joined in TestJoinMisuse may not
	// exist when this test runs alone, so make one).
	tok := mintToken(t, "mint-other")
	_, err := enrollClient(t, ca.Fingerprint(h.root)).Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
	require.NoError(t, err)
	theirs := register(t, "spiffe://unum.test/ns/mint/job/b", "mint-other", "unix:uid:1000")

	node1 := unumv1.NewIdentityClient(conn(t, "/node/node-1"))
	t.Run("own entry", func(t *testing.T) {
		resp, err := node1.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: mine.GetId(), SpiffeId: mine.GetSpiffeId(), Csr: csrFor(t, mine.GetSpiffeId())})
		require.NoError(t, err)
		var chain []*x509.Certificate
		for _, d := range resp.GetChain() {
			c, err := x509.ParseCertificate(d)
			require.NoError(t, err)
			chain = append(chain, c)
		}
		id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(h.td, []*x509.Certificate{h.root}))
		require.NoError(t, err)
		require.Equal(t, mine.GetSpiffeId(), id.String())
		require.WithinDuration(t, time.Now().Add(time.Hour), chain[0].NotAfter, 2*time.Minute)
	})
	t.Run("all-nodes entry", func(t *testing.T) {
		_, err := node1.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: all.GetId(), SpiffeId: all.GetSpiffeId(), Csr: csrFor(t, all.GetSpiffeId())})
		require.NoError(t, err)
	})
	t.Run("another node's entry", func(t *testing.T) {
		_, err := node1.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: theirs.GetId(), SpiffeId: theirs.GetSpiffeId(), Csr: csrFor(t, theirs.GetSpiffeId())})
		requireCode(t, err, codes.PermissionDenied, "does not apply to node node-1")
	})
	t.Run("id differs from entry", func(t *testing.T) {
		other := "spiffe://unum.test/ns/mint/job/zzz"
		_, err := node1.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: mine.GetId(), SpiffeId: other, Csr: csrFor(t, other)})
		requireCode(t, err, codes.PermissionDenied, "is for")
	})
	t.Run("no such entry", func(t *testing.T) {
		_, err := node1.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: "0000", SpiffeId: mine.GetSpiffeId(), Csr: csrFor(t, mine.GetSpiffeId())})
		requireCode(t, err, codes.PermissionDenied, "no registration entry")
	})
	t.Run("deleted entry", func(t *testing.T) {
		gone := register(t, "spiffe://unum.test/ns/mint/job/gone", "node-1", "unix:uid:1000")
		_, err := unumv1.NewIdentityClient(conn(t, "/user/admin")).DeleteEntry(ctxT(t), &unumv1.DeleteEntryRequest{Id: gone.GetId()})
		require.NoError(t, err)
		_, err = node1.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: gone.GetId(), SpiffeId: gone.GetSpiffeId(), Csr: csrFor(t, gone.GetSpiffeId())})
		requireCode(t, err, codes.PermissionDenied, "no registration entry")
	})
	t.Run("csr for another id", func(t *testing.T) {
		_, err := node1.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: mine.GetId(), SpiffeId: mine.GetSpiffeId(), Csr: csrFor(t, "spiffe://unum.test/ns/mint/job/zzz")})
		requireCode(t, err, codes.InvalidArgument, "csr")
	})
	t.Run("workloads and users cannot mint", func(t *testing.T) {
		for _, p := range []string{"/ns/mint/job/a", "/user/bob"} {
			_, err := unumv1.NewIdentityClient(conn(t, p)).MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: mine.GetId(), SpiffeId: mine.GetSpiffeId(), Csr: csrFor(t, mine.GetSpiffeId())})
			requireCode(t, err, codes.PermissionDenied, "denied by policy (decision node-1.")
		}
	})
	t.Run("jwt", func(t *testing.T) {
		resp, err := node1.MintJWTSVID(ctxT(t), &unumv1.MintJWTSVIDRequest{EntryId: mine.GetId(), SpiffeId: mine.GetSpiffeId(), Audience: []string{"db"}})
		require.NoError(t, err)
		require.NotEmpty(t, resp.GetToken())
		_, err = node1.MintJWTSVID(ctxT(t), &unumv1.MintJWTSVIDRequest{EntryId: theirs.GetId(), SpiffeId: theirs.GetSpiffeId(), Audience: []string{"db"}})
		requireCode(t, err, codes.PermissionDenied, "does not apply")
		_, err = node1.MintJWTSVID(ctxT(t), &unumv1.MintJWTSVIDRequest{EntryId: mine.GetId(), SpiffeId: mine.GetSpiffeId()})
		requireCode(t, err, codes.InvalidArgument, "audience")
	})
}

// TestSyncAgentDeliversEntries: a node's sync stream carries its entries
// and only its entries, and a new entry arrives without polling.
func TestSyncAgentDeliversEntries(t *testing.T) {
	ctx := ctxT(t)
	stream, err := unumv1.NewIdentityClient(conn(t, "/node/node-1")).SyncAgent(ctx, &unumv1.SyncAgentRequest{})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	require.NotEmpty(t, first.GetRoots())
	require.NotEmpty(t, first.GetJwtKeys())
	e := register(t, "spiffe://unum.test/ns/sync/job/new", "node-1", "unix:uid:42")
	for {
		// The watch must deliver the change, well before the stream's
		// periodic resend (15 s) could.
		var resp *unumv1.SyncAgentResponse
		recvd := make(chan error, 1)
		go func() {
			var err error
			resp, err = stream.Recv()
			recvd <- err
		}()
		var err error
		select {
		case err = <-recvd:
		case <-time.After(3 * time.Second):
			t.Fatal("the new entry did not reach the sync stream within 3s")
		}
		require.NoError(t, err)
		found := false
		for _, got := range resp.GetEntries() {
			require.True(t, got.GetAllNodes() || got.GetNode() == "node-1", "entry of another node leaked: %v", got)
			if got.GetId() == e.GetId() {
				found = true
			}
		}
		if found {
			return
		}
	}
}

func TestWhoAmI(t *testing.T) {
	for path, kind := range map[string]string{"/user/admin": "user", "/node/node-1": "node", "/ns/a/job/b": "workload", "/user/bob": "user"} {
		resp, err := unumv1.NewIdentityClient(conn(t, path)).WhoAmI(ctxT(t), &unumv1.WhoAmIRequest{})
		require.NoError(t, err)
		require.Equal(t, "spiffe://unum.test"+path, resp.GetSpiffeId())
		require.Equal(t, kind, resp.GetKind())
		require.NotZero(t, resp.GetExpiresAtUnix())
	}
}

// TestNodeOperationsNeedMembership: renewal and heartbeats are for member
// nodes only, and a node renews only its own identity.
func TestNodeOperationsNeedMembership(t *testing.T) {
	ghost := unumv1.NewIdentityClient(conn(t, "/node/ghost"))
	_, err := ghost.RenewNodeSVID(ctxT(t), &unumv1.RenewNodeSVIDRequest{Csr: csrFor(t, "spiffe://unum.test/node/ghost")})
	requireCode(t, err, codes.PermissionDenied, "not a member")
	_, err = unumv1.NewClusterClient(conn(t, "/node/ghost")).Heartbeat(ctxT(t), &unumv1.HeartbeatRequest{AgentReady: true})
	requireCode(t, err, codes.PermissionDenied, "not a member")
	e := register(t, "spiffe://unum.test/ns/ghost/job/a", "", "unix:uid:1")
	_, err = ghost.MintX509SVID(ctxT(t), &unumv1.MintX509SVIDRequest{EntryId: e.GetId(), SpiffeId: e.GetSpiffeId(), Csr: csrFor(t, e.GetSpiffeId())})
	requireCode(t, err, codes.PermissionDenied, "not a member")

	node1 := unumv1.NewIdentityClient(conn(t, "/node/node-1"))
	_, err = node1.RenewNodeSVID(ctxT(t), &unumv1.RenewNodeSVIDRequest{Csr: csrFor(t, "spiffe://unum.test/node/other")})
	requireCode(t, err, codes.InvalidArgument, "csr")
	_, err = node1.RenewNodeSVID(ctxT(t), &unumv1.RenewNodeSVIDRequest{Csr: csrFor(t, "spiffe://unum.test/user/admin")})
	requireCode(t, err, codes.InvalidArgument, "csr")
	resp, err := node1.RenewNodeSVID(ctxT(t), &unumv1.RenewNodeSVIDRequest{Csr: csrFor(t, "spiffe://unum.test/node/node-1")})
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(resp.GetChain()[0])
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/node/node-1", leaf.URIs[0].String())
}
