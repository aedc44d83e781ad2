package control

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/rpc"
)

// credEnv serves the Credentials service of a control server (the
// harness's, or one sharing its state with another audit log) on its own
// mutual-TLS listener, decided by the harness's decider, with a real
// keyring whose keys its verifier trusts.
type credEnv struct {
	t        *testing.T
	keyring  *delegation.Keyring
	issuer   *delegation.Issuer
	verifier *delegation.Verifier
	addr     string
}

func newCredEnv(t *testing.T, s *Server) *credEnv {
	t.Helper()
	kr, err := delegation.NewKeyring(time.Now())
	require.NoError(t, err)
	iss, err := delegation.NewIssuer(h.td, kr, nil)
	require.NoError(t, err)
	jwks, err := kr.PublicJWKS()
	require.NoError(t, err)
	keys, err := delegation.ParsePublicKeys(map[string][]byte{"node-1": jwks})
	require.NoError(t, err)
	ver, err := delegation.NewVerifier(delegation.VerifierConfig{TrustDomain: h.td, Keys: keys, Revocations: h.srv.Revocations()})
	require.NoError(t, err)
	e := &credEnv{t: t, keyring: kr, issuer: iss, verifier: ver}
	e.addr = e.serve(s, func() *delegation.Issuer { return iss })
	return e
}

// serve starts an API listener with s's Credentials service minting with
// issuer, and returns its address.
func (e *credEnv) serve(s *Server, issuer func() *delegation.Issuer) string {
	e.t.Helper()
	nodeID := spiffeid.RequireFromPath(h.td, "/node/node-1")
	creds, err := h.creds(nodeID)
	require.NoError(e.t, err)
	api := rpc.NewServer(creds, rpc.ServerConfig{Authorizer: &rpc.PolicyAuthorizer{Decider: h.decider, Roles: h.srv, Entries: h.srv},
		Revocations: h.srv.Revocations(), Log: s.cfg.Log, Credentials: e.verifier, Audience: []spiffeid.ID{identity.APIID(h.td), nodeID}})
	unumv1.RegisterCredentialsServer(api, &CredentialService{S: s, Issuer: issuer, Verifier: e.verifier, Log: h.events})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(e.t, err)
	go api.Serve(lis)
	e.t.Cleanup(api.Stop)
	return lis.Addr().String()
}

// client is the Credentials service at addr as principal path.
func (e *credEnv) client(addr, path string) unumv1.CredentialsClient {
	e.t.Helper()
	creds, err := h.creds(spiffeid.RequireFromPath(h.td, path))
	require.NoError(e.t, err)
	cc, err := rpc.Dial(creds, []string{addr})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { cc.Close() })
	return unumv1.NewCredentialsClient(cc)
}

// inspect verifies tok as an operator would (signature, chain, time,
// revocation; not the holder).
func (e *credEnv) inspect(tok string) *delegation.Credential {
	e.t.Helper()
	c, err := e.verifier.Verify(delegation.Presentation{Token: tok, Inspect: true})
	require.NoError(e.t, err)
	return c
}

func tdID(path string) string { return spiffeid.RequireFromPath(h.td, path).String() }

func apiAudience() []string { return []string{identity.APIID(h.td).String()} }

// TestDelegateRefusedPlanRecorded: a mint the policy allowed but the
// delegation rules refuse (a lifetime over the policy's maximum, a scope
// wider than the credential exchanged) fails with the reason and is
// recorded as a refused cred.mint, naming the credential presented.
func TestDelegateRefusedPlanRecorded(t *testing.T) {
	e := newCredEnv(t, h.srv)
	const bob, svcA, svcB = "/user/plan-bob", "/ns/shop/job/plan-a", "/ns/shop/job/plan-b"
	bc := e.client(e.addr, bob)

	_, err := bc.Delegate(ctxT(t), &unumv1.DelegateRequest{To: tdID(svcA), Scopes: []string{"cluster.status:cluster/-/status"},
		Audience: apiAudience(), TtlSeconds: int64((2 * time.Hour) / time.Second)})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "longer than the policy allows (1h0m0s)")
	evs := h.findEvents(t, audit.ActionCredMint, func(ev *audit.Event) bool { return ev.Subject == tdID(bob) })
	require.Len(t, evs, 1)
	require.Equal(t, audit.Deny, evs[0].Outcome)
	require.Contains(t, evs[0].Reasons[0], "longer than the policy allows")
	require.Equal(t, "cred/shop/job/plan-a", evs[0].Resource)
	require.NotEmpty(t, evs[0].DecisionID, "the refusal names the decision that let the call through")

	// bob delegates to a, allowing it to pass on part of what it got.
	resp, err := bc.Delegate(ctxT(t), &unumv1.DelegateRequest{To: tdID(svcA), Audience: apiAudience(),
		Scopes: []string{"cluster.status:cluster/-/status", "cred.delegate:cred/shop/*"}})
	require.NoError(t, err)
	parent := e.inspect(resp.GetToken())

	// a asks for more than it holds.
	ac := e.client(e.addr, svcA)
	_, err = ac.Delegate(rpc.WithDelegation(ctxT(t), resp.GetToken()), &unumv1.DelegateRequest{To: tdID(svcB), Scopes: []string{"node.ls:node/-/*"}})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "not within the scopes it was delegated from")
	evs = h.findEvents(t, audit.ActionCredMint, func(ev *audit.Event) bool { return ev.Subject == tdID(bob) && ev.Outcome == audit.Deny })
	require.Len(t, evs, 2)
	ev := evs[1]
	require.Contains(t, ev.Reasons[0], "node.ls:node/-/*")
	require.Equal(t, parent.JTIs(), ev.Creds, "the refusal names the credential a presented")
	require.Equal(t, []string{tdID(svcA)}, ev.Chain)
	require.Equal(t, "cred/shop/job/plan-b", ev.Resource)

	// Within what it holds, and it gets a narrower one.
	resp, err = ac.Delegate(rpc.WithDelegation(ctxT(t), resp.GetToken()), &unumv1.DelegateRequest{To: tdID(svcB), Scopes: []string{"cluster.status:cluster/-/status"}})
	require.NoError(t, err)
	child := e.inspect(resp.GetToken())
	require.Equal(t, tdID(bob), child.Subject.String())
	require.Equal(t, []string{child.ID, parent.ID}, child.JTIs())
}

// TestDelegateNotRecordedNotIssued: when the audit log cannot record the
// issuance (here a real log, closed), Delegate fails Unavailable and
// returns no token: a credential nobody could find in the log does not
// exist.
func TestDelegateNotRecordedNotIssued(t *testing.T) {
	signer, err := newAuditSigner("node-1")
	require.NoError(t, err)
	closed, err := audit.Open(audit.Config{Dir: filepath.Join(t.TempDir(), "audit"), Node: "node-1", Signer: signer, Logger: h.srv.cfg.Log})
	require.NoError(t, err)
	require.NoError(t, closed.Close())
	cfg := h.srv.cfg
	cfg.Audit = closed
	// The same control state; only its event log differs (the decisions
	// still go to the harness's log, so the call is decided and allowed).
	s := &Server{cfg: cfg, cache: h.srv.cache, reader: h.srv.reader, revocations: h.srv.revocations}
	e := newCredEnv(t, s)
	resp, err := e.client(e.addr, "/user/unrecorded").Delegate(ctxT(t), &unumv1.DelegateRequest{
		To: tdID("/ns/shop/job/a"), Scopes: []string{"cluster.status:cluster/-/status"}, Audience: apiAudience()})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "could not be recorded, so nothing was issued")
	require.Empty(t, resp.GetToken())

	// Control: the same request against the harness server, whose log
	// records, is issued.
	e = newCredEnv(t, h.srv)
	resp, err = e.client(e.addr, "/user/unrecorded").Delegate(ctxT(t), &unumv1.DelegateRequest{
		To: tdID("/ns/shop/job/a"), Scopes: []string{"cluster.status:cluster/-/status"}, Audience: apiAudience()})
	require.NoError(t, err)
	require.NotEmpty(t, resp.GetToken())
	require.NotEmpty(t, resp.GetEventId())
}

// TestImpersonationIsItsOwnAction: minting on someone else's behalf is
// cred.impersonate, which no grant of cred.delegate covers; the admin may,
// and stays in the chain as the issuer.
func TestImpersonationIsItsOwnAction(t *testing.T) {
	e := newCredEnv(t, h.srv)
	const bob, alice, svcA = "/user/imp-bob", "/user/imp-alice", "/ns/shop/job/imp-a"
	req := &unumv1.DelegateRequest{To: tdID(svcA), Scopes: []string{"cluster.status:cluster/-/status"}, Audience: apiAudience()}
	bc := e.client(e.addr, bob)
	_, err := bc.Delegate(ctxT(t), req)
	require.NoError(t, err, "bob may delegate his own authority")

	imp := &unumv1.DelegateRequest{To: req.To, Scopes: req.Scopes, Audience: req.Audience, OnBehalfOf: tdID(alice)}
	_, err = bc.Delegate(ctxT(t), imp)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	d, ok := rpc.DenialOf(err)
	require.True(t, ok)
	require.Equal(t, "cred.impersonate", d.Action)

	resp, err := e.client(e.addr, "/user/admin").Delegate(ctxT(t), imp)
	require.NoError(t, err)
	c := e.inspect(resp.GetToken())
	require.Equal(t, tdID(alice), c.Subject.String())
	require.Equal(t, []string{tdID("/user/admin"), tdID(svcA)}, []string{c.Chain[0].Actor.String(), c.Chain[1].Actor.String()},
		"the real issuer stays in the chain")
	evs := h.findEvents(t, audit.ActionCredMint, func(ev *audit.Event) bool { return slices.Contains(ev.Creds, c.ID) })
	require.Len(t, evs, 1)
	require.Equal(t, audit.Allow, evs[0].Outcome)
	require.Equal(t, tdID(alice), evs[0].Subject)
	require.Equal(t, []string{tdID("/user/admin"), tdID(svcA)}, evs[0].Chain)
	require.True(t, evs[0].Privileged)
}

// TestRevokeCredentials: Revoke takes exactly one of jti, subject and
// holder, well formed and of this trust domain, and writes one revocation
// under the credential key, kept until every credential it can refuse has
// expired; the verifier then refuses what it names.
func TestRevokeCredentials(t *testing.T) {
	e := newCredEnv(t, h.srv)
	admin := e.client(e.addr, "/user/admin")
	jti := delegation.NewJTI()
	for _, tc := range []struct {
		name string
		req  *unumv1.RevokeCredentialsRequest
		want string
	}{
		{"nothing", &unumv1.RevokeCredentialsRequest{}, "exactly one of jti, subject and holder"},
		{"two", &unumv1.RevokeCredentialsRequest{Jti: jti, Subject: tdID("/user/x")}, "exactly one of jti, subject and holder"},
		{"three", &unumv1.RevokeCredentialsRequest{Jti: jti, Subject: tdID("/user/x"), Holder: tdID("/user/y")}, "exactly one"},
		{"upper-case jti", &unumv1.RevokeCredentialsRequest{Jti: strings.ToUpper(jti)}, "32 lowercase hex digits"},
		{"short jti", &unumv1.RevokeCredentialsRequest{Jti: jti[:31]}, "32 lowercase hex digits"},
		{"foreign subject", &unumv1.RevokeCredentialsRequest{Subject: "spiffe://other.test/user/x"}, `not in trust domain "unum.test"`},
		{"foreign holder", &unumv1.RevokeCredentialsRequest{Holder: "spiffe://other.test/ns/a/job/b"}, `not in trust domain "unum.test"`},
		{"not an id", &unumv1.RevokeCredentialsRequest{Holder: "alice"}, "holder"},
	} {
		_, err := admin.Revoke(ctxT(t), tc.req)
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%s: %v", tc.name, err)
		require.Contains(t, err.Error(), tc.want, tc.name)
	}

	// A user without a role may not revoke.
	_, err := e.client(e.addr, "/user/rev-nobody").Revoke(ctxT(t), &unumv1.RevokeCredentialsRequest{Jti: jti})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	holder := spiffeid.RequireFromPath(h.td, "/ns/shop/job/rev-held")
	subject := spiffeid.RequireFromPath(h.td, "/user/rev-subject")
	for _, tc := range []struct {
		req *unumv1.RevokeCredentialsRequest
		key string
	}{
		{&unumv1.RevokeCredentialsRequest{Jti: jti, Reason: "laptop stolen"}, delegation.RevocationKeyJTI(jti)},
		{&unumv1.RevokeCredentialsRequest{Subject: subject.String()}, delegation.RevocationKeySubject(subject)},
		{&unumv1.RevokeCredentialsRequest{Holder: holder.String()}, delegation.RevocationKeyHolder(holder)},
	} {
		before := time.Now()
		resp, err := admin.Revoke(ctxT(t), tc.req)
		require.NoError(t, err, tc.key)
		require.Len(t, resp.GetRevocations(), 1)
		require.Equal(t, tc.key, resp.GetRevocations()[0].GetSpiffeId())
		got, err := h.etcd.Client().Get(ctxT(t), revocationKey(tc.key))
		require.NoError(t, err)
		require.Len(t, got.Kvs, 1, tc.key)
		rec, err := decode[revocationRecord](got.Kvs[0].Value)
		require.NoError(t, err)
		require.Equal(t, tc.key, rec.ID)
		require.Equal(t, tdID("/user/admin"), rec.RevokedBy)
		// Every credential issued up to now (and the clock skew) is
		// refused; the record outlives the longest of them.
		require.False(t, rec.Before.Before(before.Add(revocation.ClockSkewAllowance).Truncate(time.Second)), "before %s", rec.Before)
		require.WithinDuration(t, time.Now().Add(revocation.ClockSkewAllowance), rec.Before, 5*time.Second)
		require.Equal(t, rec.Before.Add(delegation.MaxTTL+delegation.Leeway+time.Hour), rec.Expires)
		if tc.req.GetReason() != "" {
			require.Equal(t, tc.req.GetReason(), rec.Reason)
		}
		evs := h.findEvents(t, audit.ActionCredRevoke, func(ev *audit.Event) bool { return ev.Resource == "cred/-/"+tc.key })
		require.Len(t, evs, 1, tc.key)
		require.Equal(t, tdID("/user/admin"), evs[0].Subject)
	}

	// Revoking again never shortens a revocation.
	got, err := h.etcd.Client().Get(ctxT(t), revocationKey(delegation.RevocationKeyJTI(jti)))
	require.NoError(t, err)
	first, err := decode[revocationRecord](got.Kvs[0].Value)
	require.NoError(t, err)
	_, err = admin.Revoke(ctxT(t), &unumv1.RevokeCredentialsRequest{Jti: jti})
	require.NoError(t, err)
	got, err = h.etcd.Client().Get(ctxT(t), revocationKey(delegation.RevocationKeyJTI(jti)))
	require.NoError(t, err)
	again, err := decode[revocationRecord](got.Kvs[0].Value)
	require.NoError(t, err)
	require.False(t, again.Before.Before(first.Before))
	require.False(t, again.Expires.Before(first.Expires))
}

// TestListCredentials: List reads this node's issuance records back from
// its audit log: live credentials only (not expired ones, not refused
// mints), filtered by subject, each marked when revoked.
func TestListCredentials(t *testing.T) {
	e := newCredEnv(t, h.srv)
	const bob, carol, svcA = "/user/list-bob", "/user/list-carol", "/ns/shop/job/list-a"
	req := &unumv1.DelegateRequest{To: tdID(svcA), Scopes: []string{"cluster.status:cluster/-/status"}, Audience: apiAudience()}
	bc := e.client(e.addr, bob)
	live, err := bc.Delegate(ctxT(t), req)
	require.NoError(t, err)
	revoked, err := bc.Delegate(ctxT(t), req)
	require.NoError(t, err)
	other, err := e.client(e.addr, carol).Delegate(ctxT(t), req)
	require.NoError(t, err)
	// One minted (and recorded) two hours ago for an hour: expired.
	minted := time.Now().Add(-2 * time.Hour)
	old, err := delegation.NewIssuer(h.td, e.keyring, func() time.Time { return minted })
	require.NoError(t, err)
	oldAddr := e.serve(h.srv, func() *delegation.Issuer { return old })
	expired, err := e.client(oldAddr, bob).Delegate(ctxT(t), &unumv1.DelegateRequest{To: req.To, Scopes: req.Scopes, Audience: req.Audience, TtlSeconds: 3600})
	require.NoError(t, err)
	require.Less(t, expired.GetExpiresUnix(), time.Now().Unix())
	// And one refused.
	_, err = bc.Delegate(ctxT(t), &unumv1.DelegateRequest{To: req.To, Scopes: req.Scopes, Audience: req.Audience, TtlSeconds: 1 << 20})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

	admin := e.client(e.addr, "/user/admin")
	_, err = admin.Revoke(ctxT(t), &unumv1.RevokeCredentialsRequest{Jti: revoked.GetJti()})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		set, _, _ := h.srv.Revocations().Snapshot()
		_, ok := set.Lookup(delegation.RevocationKeyJTI(revoked.GetJti()))
		return ok
	}, 10*time.Second, 10*time.Millisecond)

	resp, err := admin.List(ctxT(t), &unumv1.ListCredentialsRequest{Subject: tdID(bob)})
	require.NoError(t, err)
	require.Equal(t, "node-1", resp.GetNode())
	byJTI := map[string]*unumv1.CredentialRecord{}
	for _, r := range resp.GetCredentials() {
		require.Equal(t, tdID(bob), r.GetSubject(), "filtered by subject")
		byJTI[r.GetJti()] = r
	}
	require.Len(t, byJTI, 2, "live ones only: %v", byJTI)
	require.Contains(t, byJTI, live.GetJti())
	require.Contains(t, byJTI, revoked.GetJti())
	require.NotContains(t, byJTI, expired.GetJti())
	require.Empty(t, byJTI[live.GetJti()].GetRevoked())
	require.Contains(t, byJTI[revoked.GetJti()].GetRevoked(), "credential revoked")
	r := byJTI[live.GetJti()]
	require.Equal(t, []string{tdID(bob), tdID(svcA)}, []string{r.GetSubject(), r.GetChain()[0]})
	require.Equal(t, live.GetEventId(), r.GetEventId())
	require.NotEmpty(t, r.GetDecisionId())
	require.Equal(t, live.GetExpiresUnix(), r.GetExpiresUnix())

	resp, err = admin.List(ctxT(t), &unumv1.ListCredentialsRequest{})
	require.NoError(t, err)
	var all []string
	for _, r := range resp.GetCredentials() {
		all = append(all, r.GetJti())
	}
	require.Contains(t, all, other.GetJti())
	require.Contains(t, all, live.GetJti())
	require.NotContains(t, all, expired.GetJti())

	// Listing who holds what is an operator's.
	_, err = bc.List(ctxT(t), &unumv1.ListCredentialsRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
}

// TestCredentialKeysPublished: the key sets control nodes publish are
// what Keys returns to anyone, and a set that is not a public JWK set is
// refused at publication.
func TestCredentialKeysPublished(t *testing.T) {
	e := newCredEnv(t, h.srv)
	const node = "ctl-keys"
	jwks, err := e.keyring.PublicJWKS()
	require.NoError(t, err)
	cli := h.etcd.Client()
	// Only a member publishes.
	require.ErrorContains(t, PublishCredentialKeys(ctxT(t), cli, node, jwks, time.Now()), "not a member")
	_, err = cli.Put(ctxT(t), nodeKey(node), mustJSON(NodeRecord{Name: node, SPIFFEID: tdID("/node/" + node), Roles: []string{"control"}}))
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = cli.Delete(context.Background(), prefixCredKeys+node)
		_, _ = cli.Delete(context.Background(), nodeKey(node))
	})
	require.NoError(t, PublishCredentialKeys(ctxT(t), cli, node, jwks, time.Now()))
	require.Error(t, PublishCredentialKeys(ctxT(t), cli, node, []byte(`{"keys": []}`), time.Now()))

	wl := e.client(e.addr, "/ns/shop/job/keys-reader")
	require.Eventually(t, func() bool {
		resp, err := wl.Keys(ctxT(t), &unumv1.CredentialKeysRequest{})
		require.NoError(t, err)
		for _, k := range resp.GetKeys() {
			if k.GetNode() == node {
				require.JSONEq(t, string(jwks), string(k.GetJwks()))
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)
	sets, _, loaded := h.srv.CredentialKeys()
	require.True(t, loaded)
	keys, err := delegation.ParsePublicKeys(map[string][]byte{node: sets[node]})
	require.NoError(t, err)
	// A token the keyring signed verifies with the published keys.
	sc, err := delegation.ParseScopes([]string{"cluster.status:cluster/-/status"})
	require.NoError(t, err)
	c, err := e.issuer.Plan(delegation.Request{Caller: spiffeid.RequireFromPath(h.td, "/user/k"), Audience: []spiffeid.ID{identity.APIID(h.td)}, Scopes: sc})
	require.NoError(t, err)
	tok, err := e.issuer.Sign(c)
	require.NoError(t, err)
	_, err = delegation.Parse(tok, h.td, keys)
	require.NoError(t, err)
}

// TestRemovedControlNodeCredentialKeysDeleted: removing a control node
// deletes its published credential keys, so what it signed stops
// verifying everywhere (it may have been removed for being compromised).
func TestRemovedControlNodeCredentialKeysDeleted(t *testing.T) {
	e := newCredEnv(t, h.srv)
	const name = "ctl-cred-gone"
	cli := h.etcd.Client()
	_, err := cli.Put(ctxT(t), nodeKey(name), mustJSON(NodeRecord{Name: name, SPIFFEID: tdID("/node/" + name), Roles: []string{"control"}}))
	require.NoError(t, err)
	jwks, err := e.keyring.PublicJWKS()
	require.NoError(t, err)
	require.NoError(t, PublishCredentialKeys(ctxT(t), cli, name, jwks, time.Now()))
	require.Eventually(t, func() bool { sets, _, _ := h.srv.CredentialKeys(); return sets[name] != nil }, 10*time.Second, 10*time.Millisecond)

	_, err = unumv1.NewClusterClient(conn(t, "/user/admin")).RemoveNode(ctxT(t), &unumv1.RemoveNodeRequest{Name: name, Force: true})
	require.NoError(t, err)
	got, err := cli.Get(ctxT(t), prefixCredKeys+name)
	require.NoError(t, err)
	require.Empty(t, got.Kvs, "the removed node's credential keys are deleted")
	require.Eventually(t, func() bool { sets, _, _ := h.srv.CredentialKeys(); return sets[name] == nil }, 10*time.Second, 10*time.Millisecond)

	// A publish racing the removal cannot bring them back.
	err = PublishCredentialKeys(ctxT(t), cli, name, jwks, time.Now())
	require.ErrorContains(t, err, "not a member")
	got, err = cli.Get(ctxT(t), prefixCredKeys+name)
	require.NoError(t, err)
	require.Empty(t, got.Kvs)

	// What it signed no longer verifies against the published keys.
	sets, _, _ := h.srv.CredentialKeys()
	keys, err := delegation.ParsePublicKeys(sets)
	require.NoError(t, err)
	iss, err := delegation.NewIssuer(h.td, e.keyring, nil)
	require.NoError(t, err)
	sc, err := delegation.ParseScopes([]string{"cluster.status:cluster/-/status"})
	require.NoError(t, err)
	c, err := iss.Plan(delegation.Request{Caller: spiffeid.RequireFromString(tdID("/user/admin")), Audience: []spiffeid.ID{identity.APIID(h.td)}, Scopes: sc})
	require.NoError(t, err)
	tok, err := iss.Sign(c)
	require.NoError(t, err)
	_, err = delegation.Parse(tok, h.td, keys)
	require.ErrorIs(t, err, delegation.ErrUnknownKey)
}
