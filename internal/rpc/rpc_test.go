package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/policy"
)

// testAuthorizer is the real policy authorizer with the shipped bundle as
// revision 1, confirmed current (freshness bound of an hour: tests are not
// about staleness unless they say so).
func testAuthorizer(t testing.TB, roles RoleSource) *PolicyAuthorizer {
	t.Helper()
	e, err := policy.NewEngine(context.Background(), policy.Builtin(), 1)
	require.NoError(t, err)
	v := policy.NewView(time.Hour)
	v.Set(e)
	v.Observe(1, time.Now())
	return &PolicyAuthorizer{Decider: policy.NewDecider(policy.DeciderConfig{Node: "test", View: v, Log: policy.NewRing(1000)}), Roles: roles}
}

// TestPolicyAuthorizer: the shipped policy, reached through the method
// routes, keeps the foundation's rules: viewers read, operators also manage
// entries, admins do everything, nodes act as nodes, workloads ask who
// they are, and nothing else.
func TestPolicyAuthorizer(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	caller := func(path string) Caller {
		return Caller{Principal: identity.Classify(spiffeid.RequireFromPath(td, path))}
	}
	mint := &unumv1.MintX509SVIDRequest{SpiffeId: "spiffe://unum.test/ns/web/job/api"}
	entry := &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/web/job/api"}
	a := testAuthorizer(t, fixedRoles{"vera": RoleViewer, "otto": RoleOperator, "ada": RoleAdmin, "olga": RoleOperator, "vic": RoleViewer})
	for _, tc := range []struct {
		who, method string
		msg         any
		allow       bool
	}{
		{"/user/admin", "/unum.v1.Cluster/CreateJoinToken", nil, true},
		{"/user/admin", "/unum.v1.Cluster/CreateJoinToken", &unumv1.CreateJoinTokenRequest{Name: "c2", Roles: []string{"compute", "control"}}, true},
		{"/user/admin", "/unum.v1.Identity/CreateEntry", entry, true},
		{"/user/admin", "/unum.v1.Policy/Apply", nil, true},
		// A method without a route is denied to everyone, the admin too.
		{"/user/admin", "/unum.v1.Anything/New", nil, false},
		{"/user/bob", "/unum.v1.Cluster/CreateJoinToken", nil, false},
		{"/user/bob", "/unum.v1.Identity/WhoAmI", nil, true},
		{"/node/n1", "/unum.v1.Identity/MintX509SVID", mint, true},
		// Nodes mint workload identities only.
		{"/node/n1", "/unum.v1.Identity/MintX509SVID", &unumv1.MintX509SVIDRequest{SpiffeId: "spiffe://unum.test/user/admin"}, false},
		{"/node/n1", "/unum.v1.Identity/MintJWTSVID", &unumv1.MintJWTSVIDRequest{SpiffeId: "spiffe://unum.test/node/n2"}, false},
		{"/node/n1", "/unum.v1.Identity/SyncAgent", nil, true},
		{"/node/n1", "/unum.v1.Cluster/Heartbeat", nil, true},
		{"/node/n1", "/unum.v1.Policy/Watch", nil, true},
		{"/node/n1", "/unum.v1.Identity/CreateEntry", entry, false},
		{"/node/n1", "/unum.v1.Cluster/CreateJoinToken", nil, false},
		{"/node/n1", "/unum.v1.Cluster/ListNodes", nil, false},
		{"/node/n1", "/unum.v1.Policy/Apply", nil, false},
		{"/ns/a/job/b", "/unum.v1.Identity/WhoAmI", nil, true},
		{"/ns/a/job/b", "/unum.v1.Identity/MintX509SVID", mint, false},
		{"/ns/a/job/b", "/unum.v1.Policy/Apply", nil, false},
		{"/ns/a/job/b", "/unum.v1.Policy/Watch", nil, false},
		{"/ns/admin/job/x", "/unum.v1.Cluster/CreateJoinToken", nil, false},
		{"/system/ca", "/unum.v1.Cluster/CreateJoinToken", nil, false},
		{"/weird/path/x", "/unum.v1.Identity/WhoAmI", nil, false},
		{"/node/admin/x", "/unum.v1.Identity/MintX509SVID", mint, false},
		// Roles: viewers read, operators also manage entries, admins all.
		{"/user/vera", "/unum.v1.Cluster/ListNodes", nil, true},
		{"/user/vera", "/unum.v1.Identity/ListEntries", nil, true},
		{"/user/vera", "/unum.v1.Policy/Status", nil, true},
		{"/user/vera", "/unum.v1.Identity/CreateEntry", entry, false},
		{"/user/vera", "/unum.v1.Users/RenewUser", nil, true},
		{"/user/vera", "/unum.v1.Policy/Apply", nil, false},
		{"/user/otto", "/unum.v1.Identity/CreateEntry", entry, true},
		{"/user/otto", "/unum.v1.Identity/DeleteEntry", &unumv1.DeleteEntryRequest{Id: "e1"}, true},
		{"/user/otto", "/unum.v1.Cluster/CreateJoinToken", nil, false},
		{"/user/otto", "/unum.v1.Users/AddUser", nil, false},
		{"/user/otto", "/unum.v1.Policy/Rollback", nil, false},
		{"/user/otto", "/unum.v1.Anything/New", nil, false},
		{"/user/ada", "/unum.v1.Users/AddUser", nil, true},
		{"/user/ada", "/unum.v1.Cluster/RemoveNode", nil, true},
		{"/node/n1", "/unum.v1.Users/RenewUser", nil, false},
		{"/node/n1", "/unum.v1.Identity/WatchRevocations", nil, true},
		// The CA: only admins change it; a node may only ask for an
		// intermediate (the handler then requires a control node).
		{"/user/admin", "/unum.v1.CA/Rotate", nil, true},
		{"/user/olga", "/unum.v1.CA/Rotate", nil, false},
		{"/user/vic", "/unum.v1.CA/ExportRoot", nil, false},
		{"/user/vic", "/unum.v1.CA/Status", nil, true},
		{"/node/n1", "/unum.v1.CA/Rotate", nil, false},
		{"/node/n1", "/unum.v1.CA/ImportRoot", nil, false},
		{"/node/n1", "/unum.v1.CA/SignIntermediate", nil, true},
		{"/user/olga", "/unum.v1.CA/SignIntermediate", nil, false},
		{"/ns/a/job/b", "/unum.v1.CA/SignIntermediate", nil, false},
		{"/ns/a/job/b", "/unum.v1.CA/Status", nil, false},
	} {
		d, err := a.Authorize(context.Background(), Request{Caller: caller(tc.who), Method: tc.method, Message: tc.msg})
		require.NoError(t, err)
		require.Equal(t, tc.allow, d.Allow, "%s %s: %s", tc.who, tc.method, d.Reason())
		require.NotEmpty(t, d.Reasons)
		if _, routed := routes[tc.method]; routed {
			require.NotEmpty(t, d.ID)
		}
	}
	// Privileged marks what a stale revocation or policy view refuses.
	for method, want := range map[string]bool{
		"/unum.v1.Identity/WhoAmI": false, "/unum.v1.Cluster/Heartbeat": false, "/unum.v1.Cluster/Status": false,
		"/unum.v1.Identity/CreateEntry": true, "/unum.v1.Users/RenewUser": true, "/unum.v1.Policy/Apply": true,
		"/unum.v1.CA/Rotate": true, "/unum.v1.CA/ExportRoot": true, "/unum.v1.CA/ConfirmExportRoot": true,
		"/unum.v1.CA/ImportRoot": true, "/unum.v1.CA/SignIntermediate": true,
	} {
		d, err := a.Authorize(context.Background(), Request{Caller: caller("/user/admin"), Method: method, Message: entry})
		require.NoError(t, err)
		require.Equal(t, want, d.Privileged, method)
	}
	d, err := a.Authorize(context.Background(), Request{Caller: caller("/node/n1"), Method: "/unum.v1.Identity/MintX509SVID", Message: mint})
	require.NoError(t, err)
	require.True(t, d.Privileged)
}

// TestEveryMethodHasARoute: every RPC of the API (the enrolment listener's
// token-authenticated methods aside) maps to an action of the form
// noun.verb, so no method ships unmediated.
func TestEveryMethodHasARoute(t *testing.T) {
	services := unumv1.File_api_unum_v1_unum_proto.Services()
	n := 0
	for i := 0; i < services.Len(); i++ {
		svc := services.Get(i)
		if svc.Name() == "Enrollment" {
			continue
		}
		for j := 0; j < svc.Methods().Len(); j++ {
			full := "/" + string(svc.FullName()) + "/" + string(svc.Methods().Get(j).Name())
			rt, ok := routes[full]
			require.True(t, ok, "%s has no route to a policy action", full)
			require.True(t, policy.ValidAction(rt.action), "%s: action %q", full, rt.action)
			n++
		}
	}
	require.Len(t, routes, n, "routes name a method the API does not have")
}

type fixedRoles map[string]string

func (r fixedRoles) UserRole(name string) (string, bool) {
	role, ok := r[name]
	return role, ok
}

type pki struct {
	td   spiffeid.TrustDomain
	root *x509.Certificate
	auth *ca.Authority
}

func newPKI(t *testing.T, td string) *pki {
	t.Helper()
	p := &pki{td: spiffeid.RequireTrustDomainFromString(td)}
	rootKey, err := ca.GenerateKey()
	require.NoError(t, err)
	p.root, err = ca.NewRoot(p.td, rootKey, time.Now(), time.Hour)
	require.NoError(t, err)
	interKey, err := ca.GenerateKey()
	require.NoError(t, err)
	inter, err := ca.NewIntermediate(p.td, "n1", interKey.Public(), p.root, rootKey, time.Now(), time.Hour)
	require.NoError(t, err)
	p.auth, err = ca.New(p.td, inter, interKey, nil, time.Now)
	require.NoError(t, err)
	return p
}

func (p *pki) creds(t *testing.T, path string) *Credentials {
	t.Helper()
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	id := spiffeid.RequireFromPath(p.td, path)
	chain, err := p.auth.SignX509SVIDForKey(key.Public(), id, time.Hour)
	require.NoError(t, err)
	c, err := NewCredentials(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, []*x509.Certificate{p.root})
	require.NoError(t, err)
	return c
}

// whoAmI is a minimal Identity service that echoes the verified caller.
type whoAmI struct {
	unumv1.UnimplementedIdentityServer
}

func (whoAmI) WhoAmI(ctx context.Context, _ *unumv1.WhoAmIRequest) (*unumv1.WhoAmIResponse, error) {
	c, ok := CallerFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no caller")
	}
	return &unumv1.WhoAmIResponse{SpiffeId: c.ID.String(), Kind: string(c.Kind)}, nil
}

func (whoAmI) SyncAgent(_ *unumv1.SyncAgentRequest, s unumv1.Identity_SyncAgentServer) error {
	c, _ := CallerFromContext(s.Context())
	return s.Send(&unumv1.SyncAgentResponse{ControlAddresses: []string{c.ID.String()}})
}

func serve(t *testing.T, creds *Credentials) string {
	t.Helper()
	srv := NewServer(creds, ServerConfig{Authorizer: testAuthorizer(t, nil), Log: nilLogger()})
	unumv1.RegisterIdentityServer(srv, whoAmI{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestInterceptorOverMutualTLS: the interceptor sees the verified caller on
// unary and streaming calls, and denials carry PermissionDenied.
func TestInterceptorOverMutualTLS(t *testing.T) {
	p := newPKI(t, "unum.test")
	addr := serve(t, p.creds(t, "/node/n1"))

	dial := func(c *Credentials) unumv1.IdentityClient {
		cc, err := Dial(c, []string{addr})
		require.NoError(t, err)
		t.Cleanup(func() { cc.Close() })
		return unumv1.NewIdentityClient(cc)
	}
	resp, err := dial(p.creds(t, "/ns/a/job/b")).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/ns/a/job/b", resp.GetSpiffeId())
	require.Equal(t, "workload", resp.GetKind())

	stream, err := dial(p.creds(t, "/node/n2")).SyncAgent(ctx5(t), &unumv1.SyncAgentRequest{})
	require.NoError(t, err)
	got, err := stream.Recv()
	require.NoError(t, err)
	require.Equal(t, []string{"spiffe://unum.test/node/n2"}, got.GetControlAddresses())

	stream, err = dial(p.creds(t, "/ns/a/job/b")).SyncAgent(ctx5(t), &unumv1.SyncAgentRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.PermissionDenied, status.Code(err), "a workload must not open the agent sync stream")
	require.Contains(t, err.Error(), "denied by policy")

	_, err = dial(p.creds(t, "/node/n2")).CreateEntry(ctx5(t), &unumv1.CreateEntryRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
}

// TestForeignAndMissingCertificatesRefused: a client of another CA, or
// with no certificate, never reaches a handler.
func TestForeignAndMissingCertificatesRefused(t *testing.T) {
	p := newPKI(t, "unum.test")
	addr := serve(t, p.creds(t, "/node/n1"))

	// Same trust domain name, another CA: the handshake fails.
	evil := newPKI(t, "unum.test")
	evilCreds := evil.creds(t, "/user/admin")
	evilCreds.SetRoots([]*x509.Certificate{evil.root, p.root}) // even trusting the real server
	cc, err := Dial(evilCreds, []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	_, err = unumv1.NewIdentityClient(cc).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Error(t, err)
	require.Equal(t, codes.Unavailable, status.Code(err), err.Error())

	// No client certificate at all.
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ClientTLSNoCert(p.root))))
	require.NoError(t, err)
	defer plain.Close()
	_, err = unumv1.NewIdentityClient(plain).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Error(t, err)
}

// TestClientRefusesNonNodeServer: a client only talks to a node's SVID.
func TestClientRefusesNonNodeServer(t *testing.T) {
	p := newPKI(t, "unum.test")
	addr := serve(t, p.creds(t, "/ns/a/job/impostor"))
	cc, err := Dial(p.creds(t, "/user/admin"), []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	_, err = unumv1.NewIdentityClient(cc).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "is not a node")
}

// TestClientRefusesComputeNodeServer: a node SVID issued by another node's
// intermediate (what every compute node holds) does not pass for a control
// node, so a compromised compute node cannot pose as the control plane.
func TestClientRefusesComputeNodeServer(t *testing.T) {
	p := newPKI(t, "unum.test")
	addr := serve(t, p.creds(t, "/node/compute-7"))
	cc, err := Dial(p.creds(t, "/user/admin"), []string{addr})
	require.NoError(t, err)
	defer cc.Close()
	_, err = unumv1.NewIdentityClient(cc).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "is not a control node")
}

func TestVerifyPinned(t *testing.T) {
	p := newPKI(t, "unum.test")
	node := p.creds(t, "/node/n1")
	svid, _ := node.GetX509SVID()
	raw := [][]byte{svid.Certificates[0].Raw, svid.Certificates[1].Raw, p.root.Raw}
	fp := ca.Fingerprint(p.root)
	require.NoError(t, verifyPinned(raw, fp))
	require.ErrorIs(t, verifyPinned(raw[:2], fp), ErrCAFingerprintMismatch, "no root in the chain")
	other := newPKI(t, "unum.test")
	require.ErrorIs(t, verifyPinned(raw, ca.Fingerprint(other.root)), ErrCAFingerprintMismatch)
	// The pinned root is present but the leaf was issued by another CA.
	evil := other.creds(t, "/node/n1")
	es, _ := evil.GetX509SVID()
	require.Error(t, verifyPinned([][]byte{es.Certificates[0].Raw, es.Certificates[1].Raw, p.root.Raw}, fp))
	// A workload cannot pose as an enrolment server.
	wl := p.creds(t, "/ns/a/job/b")
	ws, _ := wl.GetX509SVID()
	require.ErrorContains(t, verifyPinned([][]byte{ws.Certificates[0].Raw, ws.Certificates[1].Raw, p.root.Raw}, fp), "not a node")
	// A compute node (SVID from another node's intermediate) cannot take tokens.
	cn := p.creds(t, "/node/compute-7")
	cs, _ := cn.GetX509SVID()
	require.ErrorContains(t, verifyPinned([][]byte{cs.Certificates[0].Raw, cs.Certificates[1].Raw, p.root.Raw}, fp), "not a control node")
	require.Error(t, verifyPinned(nil, fp))
	require.Error(t, verifyPinned([][]byte{[]byte("junk"), p.root.Raw}, fp))
}

func FuzzVerifyPinned(f *testing.F) {
	f.Add([]byte("junk"), []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		_ = verifyPinned([][]byte{a, b}, "sha256:00")
	})
}

type countingEnrollment struct {
	unumv1.UnimplementedEnrollmentServer
}

func (countingEnrollment) Join(context.Context, *unumv1.JoinRequest) (*unumv1.JoinResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "join token is unknown to this cluster")
}

// TestEnrollmentListenerRateLimited: an unauthenticated peer hammering the
// enrolment listener is slowed down before it reaches the handler.
func TestEnrollmentListenerRateLimited(t *testing.T) {
	p := newPKI(t, "unum.test")
	srv := NewEnrollmentServer(p.creds(t, "/node/n1"), nilLogger())
	unumv1.RegisterEnrollmentServer(srv, countingEnrollment{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := DialEnrollment(lis.Addr().String(), ca.Fingerprint(p.root))
	require.NoError(t, err)
	defer cc.Close()
	c := unumv1.NewEnrollmentClient(cc)
	limited := 0
	for i := 0; i < enrollBurst+10; i++ {
		_, err := c.Join(ctx5(t), &unumv1.JoinRequest{Token: "x"})
		switch status.Code(err) {
		case codes.ResourceExhausted:
			limited++
		case codes.PermissionDenied:
		default:
			t.Fatalf("unexpected: %v", err)
		}
	}
	require.Positive(t, limited)
	// Oversized requests are refused outright.
	_, err = c.Join(ctx5(t), &unumv1.JoinRequest{Token: string(make([]byte, enrollMaxMessage+1))})
	require.Error(t, err)
}

func TestLimiterKey(t *testing.T) {
	require.Equal(t, "10.1.2.3", limiterKey("10.1.2.3"))
	require.Equal(t, limiterKey("2001:db8:1:2::1"), limiterKey("2001:db8:1:2:ffff::9"))
	require.NotEqual(t, limiterKey("2001:db8:1:2::1"), limiterKey("2001:db8:1:3::1"))
}

// TestResumedSessionsReverify: a client whose CA the server stops trusting
// cannot get back in by resuming an earlier TLS session, which would skip
// certificate verification (and later revocation checks) altogether.
func TestResumedSessionsReverify(t *testing.T) {
	p := newPKI(t, "unum.test")
	serverCreds := p.creds(t, "/node/n1")
	addr := serve(t, serverCreds)
	client := ClientTLS(p.creds(t, "/user/admin"))
	client.NextProtos = []string{"h2"}
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)

	// talk completes a handshake and reads the server's first HTTP/2 frame:
	// in TLS 1.3 the server's verdict on the client certificate, and any
	// session ticket, arrive only after the handshake.
	talk := func() (tls.ConnectionState, error) {
		conn, err := tls.Dial("tcp", addr, client)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
		if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")); err != nil {
			return conn.ConnectionState(), err
		}
		var b [1]byte
		_, err = conn.Read(b[:])
		return conn.ConnectionState(), err
	}
	st, err := talk()
	require.NoError(t, err)
	require.False(t, st.DidResume)

	// The server now trusts another CA only.
	serverCreds.SetRoots([]*x509.Certificate{newPKI(t, "unum.test").root})
	st, err = talk()
	require.Error(t, err, "a client of a CA the server no longer trusts got in")
	require.False(t, st.DidResume, "the session was resumed without verifying the client again")
}

// TestJoinTokenRolesInResource: a token for a control node is a different
// resource than one for a compute node, so a bundle granting compute-node
// tokens does not grant control-node ones.
func TestJoinTokenRolesInResource(t *testing.T) {
	rt := routes["/unum.v1.Cluster/CreateJoinToken"]
	require.Equal(t, "node/-/w1", rt.resource(identity.Principal{}, &unumv1.CreateJoinTokenRequest{Name: "w1", Roles: []string{"compute"}}).String())
	require.Equal(t, "control-node/-/c1", rt.resource(identity.Principal{}, &unumv1.CreateJoinTokenRequest{Name: "c1", Roles: []string{"control", "compute"}}).String())
	// Smuggled control roles read as control, as the handler would read
	// (or refuse) them.
	for _, roles := range [][]string{{"compute,control"}, {" control"}, {"compute", "bogus"}, nil} {
		require.Equal(t, "control-node/-/c1", rt.resource(identity.Principal{}, &unumv1.CreateJoinTokenRequest{Name: "c1", Roles: roles}).String(), "%q", roles)
	}
}

// TestOversizedResourceRefused: a request naming a resource past
// policy.MaxResourceName is refused with a decision id, without asking the
// policy (or filling its cache).
func TestOversizedResourceRefused(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("unum.test")
	a := testAuthorizer(t, nil)
	caller := Caller{Principal: identity.Classify(spiffeid.RequireFromPath(td, "/user/admin"))}
	long := "spiffe://unum.test/x/" + strings.Repeat("a", policy.MaxResourceName)
	d, err := a.Authorize(context.Background(), Request{Caller: caller, Method: "/unum.v1.Identity/MintX509SVID", Message: &unumv1.MintX509SVIDRequest{SpiffeId: long}})
	require.NoError(t, err)
	require.False(t, d.Allow, "even the admin")
	require.NotEmpty(t, d.ID)
	require.Contains(t, d.Reason(), "invalid resource")
}

// TestDialNodeAuthorizesExactID: a client asking one node about its own
// decisions (explain, shadow reports) accepts exactly that node's
// identity; another node at the address, control node or not, is refused
// in the handshake, and only node identities may be asked at all.
func TestDialNodeAuthorizesExactID(t *testing.T) {
	p := newPKI(t, "unum.test")
	addr := serve(t, p.creds(t, "/node/n1"))
	client := p.creds(t, "/user/admin")
	ask := func(node string) error {
		cc, err := DialNode(client, spiffeid.RequireFromPath(p.td, node), addr)
		require.NoError(t, err)
		defer cc.Close()
		_, err = unumv1.NewIdentityClient(cc).WhoAmI(ctx5(t), &unumv1.WhoAmIRequest{})
		return err
	}
	require.NoError(t, ask("/node/n1"))
	err := ask("/node/n2")
	require.Error(t, err, "a node answering for another was accepted")
	require.Equal(t, codes.Unavailable, status.Code(err))
	_, err = DialNode(client, spiffeid.RequireFromPath(p.td, "/user/admin"), addr)
	require.ErrorContains(t, err, "not a node identity")
}
