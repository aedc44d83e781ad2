package rpc

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"sync"
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
	"github.com/unumos/unum/policy"
)

// The principals of the delegation tests and their own rights under the
// shipped policy: alice a viewer and otto an operator (user roles); the
// services a (viewer) and b (operator) by bindings in the bundle's data;
// c has no rights at all.
const (
	dAlice = "/user/alice"
	dOtto  = "/user/otto"
	dSvcA  = "/ns/shop/job/a"
	dSvcB  = "/ns/shop/job/b"
	dSvcC  = "/ns/shop/job/c"
)

// delegEnv is a real API server over mutual TLS that verifies delegated
// credentials with a real Verifier and decides with a real Decider on the
// shipped bundle (plus bindings), and an Issuer whose keys that Verifier
// trusts.
type delegEnv struct {
	t         *testing.T
	p         *pki
	keyring   *delegation.Keyring
	issuer    *delegation.Issuer
	revs      *revocation.View
	decisions *policy.Ring
	probe     *probe
	addr      string
}

type delegConfig struct {
	// extra are bundle files added to the shipped bundle.
	extra map[string]string
	// noVerifier serves without a credential Verifier.
	noVerifier bool
	// audit and refusals are the server's recorders.
	audit, refusals audit.Recorder
	// revs is the revocation view (default: loaded, nothing revoked,
	// bound of an hour).
	revs *revocation.View
}

func newDelegEnv(t *testing.T, cfg delegConfig) *delegEnv {
	t.Helper()
	p := newPKI(t, "unum.test")
	b := policy.Builtin()
	bindings, err := json.Marshal(map[string]map[string]string{"bindings": {
		spiffeid.RequireFromPath(p.td, dSvcA).String(): RoleViewer,
		spiffeid.RequireFromPath(p.td, dSvcB).String(): RoleOperator,
	}})
	require.NoError(t, err)
	b.Files["data.json"] = bindings
	for name, src := range cfg.extra {
		b.Files[name] = []byte(src)
	}
	eng, err := policy.NewEngine(context.Background(), b, 1)
	require.NoError(t, err)
	view := policy.NewView(time.Hour)
	view.Set(eng)
	view.Observe(1, time.Now())
	ring := policy.NewRing(1000)
	authz := &PolicyAuthorizer{
		Decider: policy.NewDecider(policy.DeciderConfig{Node: "n1", View: view, Log: ring}),
		Roles:   fixedRoles{"alice": RoleViewer, "otto": RoleOperator},
	}
	revs := cfg.revs
	if revs == nil {
		revs = revocation.NewView(time.Hour, nil)
		revoke(revs, time.Now(), revocation.Window{})
	}
	kr, err := delegation.NewKeyring(time.Now())
	require.NoError(t, err)
	iss, err := delegation.NewIssuer(p.td, kr, nil)
	require.NoError(t, err)
	jwks, err := kr.PublicJWKS()
	require.NoError(t, err)
	keys, err := delegation.ParsePublicKeys(map[string][]byte{"n1": jwks})
	require.NoError(t, err)
	ver, err := delegation.NewVerifier(delegation.VerifierConfig{TrustDomain: p.td, Keys: keys, Revocations: revs})
	require.NoError(t, err)
	sc := ServerConfig{Authorizer: authz, Revocations: revs, Log: nilLogger(), Audit: cfg.audit, Refusals: cfg.refusals,
		Credentials: ver, Audience: []spiffeid.ID{identity.APIID(p.td), spiffeid.RequireFromPath(p.td, "/node/n1")}}
	if cfg.noVerifier {
		sc.Credentials = nil
	}
	srv := NewServer(p.creds(t, "/node/n1"), sc)
	pr := &probe{}
	unumv1.RegisterClusterServer(srv, pr)
	unumv1.RegisterAuditServer(srv, auditProbe{})
	unumv1.RegisterIdentityServer(srv, whoAmI{})
	// Credentials calls that pass the interceptor reach no handler here
	// (Unimplemented): what is tested is how they are decided.
	unumv1.RegisterCredentialsServer(srv, unumv1.UnimplementedCredentialsServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return &delegEnv{t: t, p: p, keyring: kr, issuer: iss, revs: revs, decisions: ring, probe: pr, addr: lis.Addr().String()}
}

func (e *delegEnv) id(path string) spiffeid.ID { return spiffeid.RequireFromPath(e.p.td, path) }

// dial connects as a fresh certificate of path.
func (e *delegEnv) dial(path string) *clientConns { return e.dialCreds(e.p.creds(e.t, path)) }

func (e *delegEnv) dialCreds(c *Credentials) *clientConns {
	cc, err := Dial(c, []string{e.addr})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { cc.Close() })
	return &clientConns{cluster: unumv1.NewClusterClient(cc), identity: unumv1.NewIdentityClient(cc), audit: unumv1.NewAuditClient(cc)}
}

type clientConns struct {
	cluster  unumv1.ClusterClient
	identity unumv1.IdentityClient
	audit    unumv1.AuditClient
}

func (c *clientConns) status(ctx context.Context) error {
	_, err := c.cluster.Status(ctx, &unumv1.StatusRequest{})
	return err
}

// chain mints a credential for the unum API with scopes from the first
// principal through every following one, each hop the exchange of the
// previous credential by its holder: chain(s, alice, a, b) is alice's
// credential to a, exchanged by a for one held by b.
func (e *delegEnv) chain(scopes []string, principals ...string) (string, *delegation.Credential) {
	e.t.Helper()
	sc, err := delegation.ParseScopes(scopes)
	require.NoError(e.t, err)
	var c *delegation.Credential
	for i := 1; i < len(principals); i++ {
		r := delegation.Request{Caller: e.id(principals[i-1]), Holder: e.id(principals[i]), Parent: c}
		if c == nil {
			r.Audience, r.Scopes = []spiffeid.ID{identity.APIID(e.p.td)}, sc
		}
		c, err = e.issuer.Plan(r)
		require.NoError(e.t, err)
	}
	tok, err := e.issuer.Sign(c)
	require.NoError(e.t, err)
	return tok, c
}

// record is the decision a denial names, from the decision log.
func (e *delegEnv) record(err error) *policy.Record {
	e.t.Helper()
	d, ok := DenialOf(err)
	require.True(e.t, ok, "not a policy denial: %v", err)
	rec, ok := e.decisions.Get(d.DecisionID)
	require.True(e.t, ok, "decision %s not in the log", d.DecisionID)
	return rec
}

func principalIDs(rs []policy.PrincipalResult) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func actorIDs(as []policy.Actor) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.ID
	}
	return out
}

// probe is a Cluster service whose Status remembers the decision and the
// credential its interceptor passed on.
type probe struct {
	unumv1.UnimplementedClusterServer
	mu   sync.Mutex
	d    Decision
	cred *delegation.Credential
}

func (p *probe) Status(ctx context.Context, _ *unumv1.StatusRequest) (*unumv1.StatusResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.d, _ = DecisionFromContext(ctx)
	p.cred, _ = CredentialFromContext(ctx)
	return &unumv1.StatusResponse{}, nil
}

func (p *probe) last() (Decision, *delegation.Credential) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.d, p.cred
}

// auditProbe is an Audit service whose Query sends one batch and then
// follows until the call ends, as `unum audit query --follow` does.
type auditProbe struct {
	unumv1.UnimplementedAuditServer
}

func (auditProbe) Query(_ *unumv1.AuditQueryRequest, s unumv1.Audit_QueryServer) error {
	if err := s.Send(&unumv1.AuditEventBatch{}); err != nil {
		return err
	}
	<-s.Context().Done()
	return s.Context().Err()
}

// TestDelegatedCallDecidedForEveryPrincipal: a delegated call is decided
// once for the credential's subject and once for every actor, each as
// input.subject with the same input.delegation (subject first, the
// presenting holder last), and recorded with the credential's jtis and
// each principal's answer; one principal without the right refuses it
// (the intersection), whatever the others may do.
func TestDelegatedCallDecidedForEveryPrincipal(t *testing.T) {
	e := newDelegEnv(t, delegConfig{})
	tok, c := e.chain([]string{"cluster.status:cluster/-/status"}, dAlice, dSvcA, dSvcB)
	b := e.dial(dSvcB)
	require.NoError(t, b.status(WithDelegation(ctx5(t), tok)))

	d, cred := e.probe.last()
	require.NotNil(t, cred, "the handler sees the verified credential")
	require.Equal(t, c.ID, cred.ID)
	rec, ok := e.decisions.Get(d.ID)
	require.True(t, ok)
	want := []string{e.id(dAlice).String(), e.id(dSvcA).String(), e.id(dSvcB).String()}
	require.Equal(t, want[0], rec.Input.Subject.ID, "decided as the original subject")
	require.Equal(t, want, actorIDs(rec.Input.Delegation), "input.delegation is subject first, holder last")
	require.Equal(t, want, principalIDs(rec.Principals), "one evaluation per principal")
	for _, p := range rec.Principals {
		require.True(t, p.Allow, "%s: %v", p.ID, p.Reasons)
	}
	require.Equal(t, c.JTIs(), rec.Creds)
	require.Len(t, rec.Creds, 2, "the credential's jti and its parent's")

	// c may do nothing: a chain through c is refused although alice and b
	// may both read the cluster's status.
	tok, c = e.chain([]string{"cluster.status:cluster/-/status"}, dAlice, dSvcC, dSvcB)
	err := b.status(WithDelegation(ctx5(t), tok))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), e.id(dSvcC).String())
	rec = e.record(err)
	require.Equal(t, want[0], rec.Input.Subject.ID)
	require.Equal(t, c.JTIs(), rec.Creds)
	got := map[string]bool{}
	for _, p := range rec.Principals {
		got[p.ID] = p.Allow
	}
	require.Equal(t, map[string]bool{want[0]: true, e.id(dSvcC).String(): false, want[2]: true}, got)
	require.False(t, rec.Result.Allow)
}

// TestConfusedDeputyHolderRightsNotUsed: b may register identities in
// shop on its own; acting for alice it may not, whether the credential's
// scopes do not reach that far (refused before the policy is asked) or
// alice herself lacks the right (refused by the intersection). The
// caller's own rights are never used instead.
func TestConfusedDeputyHolderRightsNotUsed(t *testing.T) {
	e := newDelegEnv(t, delegConfig{})
	b := e.dial(dSvcB)
	entry := &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/shop/job/x"}
	_, err := b.identity.CreateEntry(ctx5(t), entry)
	require.Equal(t, codes.Unimplemented, status.Code(err), "b's own right lets the call through to the handler: %v", err)

	// Outside the credential's scopes.
	tok, c := e.chain([]string{"cluster.status:cluster/-/status"}, dAlice, dSvcB)
	_, err = b.identity.CreateEntry(WithDelegation(ctx5(t), tok), entry)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "does not allow id.register")
	rec := e.record(err)
	require.Empty(t, rec.Principals, "refused on the scope, without evaluating anyone's rights")
	require.Equal(t, c.JTIs(), rec.Creds)
	require.Equal(t, e.id(dAlice).String(), rec.Input.Subject.ID)

	// Within the scopes, but alice may not register identities.
	tok, _ = e.chain([]string{"id.register:id/shop/*"}, dAlice, dSvcB)
	_, err = b.identity.CreateEntry(WithDelegation(ctx5(t), tok), entry)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), e.id(dAlice).String()+": no rule allows")
	rec = e.record(err)
	require.Equal(t, []string{e.id(dAlice).String(), e.id(dSvcB).String()}, principalIDs(rec.Principals))
	require.False(t, rec.Principals[0].Allow)
	require.True(t, rec.Principals[1].Allow, "b alone would have been allowed")

	// Control: otto, an operator, may; so the refusals above are alice's.
	tok, _ = e.chain([]string{"id.register:id/shop/*"}, dOtto, dSvcB)
	_, err = b.identity.CreateEntry(WithDelegation(ctx5(t), tok), entry)
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}

// TestChainLongerThanPolicyMaxDepthRefused: a bundle that bounds chains
// to one actor refuses a credential exchanged once (two actors), however
// valid its signature and scopes, and still accepts a direct one.
func TestChainLongerThanPolicyMaxDepthRefused(t *testing.T) {
	e := newDelegEnv(t, delegConfig{extra: map[string]string{"limits.rego": "package unum.delegation\n\nmax_depth := 1\n"}})
	b := e.dial(dSvcB)
	scopes := []string{"cluster.status:cluster/-/status"}
	tok, c := e.chain(scopes, dAlice, dSvcA, dSvcB)
	err := b.status(WithDelegation(ctx5(t), tok))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "chain has 2 actors; the policy allows 1")
	require.Equal(t, c.JTIs(), e.record(err).Creds)

	tok, _ = e.chain(scopes, dAlice, dSvcB)
	require.NoError(t, b.status(WithDelegation(ctx5(t), tok)))
}

// TestTwoCredentialsInOneCallRefused: a call presenting two credentials
// (to be decided on whichever the server reads) is refused outright, even
// when each alone would be accepted.
func TestTwoCredentialsInOneCallRefused(t *testing.T) {
	e := newDelegEnv(t, delegConfig{})
	b := e.dial(dSvcB)
	scopes := []string{"cluster.status:cluster/-/status"}
	tok1, _ := e.chain(scopes, dAlice, dSvcB)
	tok2, _ := e.chain(scopes, dOtto, dSvcB)
	require.NoError(t, b.status(WithDelegation(ctx5(t), tok1)))
	err := b.status(WithDelegation(WithDelegation(ctx5(t), tok1), tok2))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "2 credentials presented, at most one")
	err = b.status(WithDelegation(WithDelegation(ctx5(t), tok1), tok1))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "the same one twice: %v", err)
}

// TestServerWithoutVerifierRefusesCredential: a server that cannot verify
// credentials refuses a call presenting one, rather than deciding it on
// the caller's own rights (which would allow it here).
func TestServerWithoutVerifierRefusesCredential(t *testing.T) {
	e := newDelegEnv(t, delegConfig{noVerifier: true})
	b := e.dial(dSvcB)
	require.NoError(t, b.status(ctx5(t)), "b may read the status on its own")
	tok, _ := e.chain([]string{"cluster.status:cluster/-/status"}, dAlice, dSvcB)
	err := b.status(WithDelegation(ctx5(t), tok))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "does not accept delegated credentials")
}

// TestReplayByNonHolderRefused: a credential held by b, replayed by a
// (which may read the status itself) or by a certificate of another
// trust-domain member, is refused: only its holder's mTLS connection
// presents it.
func TestReplayByNonHolderRefused(t *testing.T) {
	e := newDelegEnv(t, delegConfig{})
	tok, _ := e.chain([]string{"cluster.status:cluster/-/status"}, dAlice, dSvcA, dSvcB)
	a := e.dial(dSvcA)
	require.NoError(t, a.status(ctx5(t)), "a may read the status on its own")
	for _, thief := range []*clientConns{a, e.dial(dAlice), e.dial("/node/n2")} {
		err := thief.status(WithDelegation(ctx5(t), tok))
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "someone other than its holder")
	}
	require.NoError(t, e.dial(dSvcB).status(WithDelegation(ctx5(t), tok)), "its holder, another connection")
}

// TestBoundCredentialFromAnotherCertificateRefused: a credential bound to
// the certificate its holder obtained it over (x5t#S256) is refused when
// presented over another certificate of the same SPIFFE ID (a stolen
// token and a certificate the thief got for that ID some other way).
func TestBoundCredentialFromAnotherCertificateRefused(t *testing.T) {
	e := newDelegEnv(t, delegConfig{})
	own := e.p.creds(t, dSvcB)
	svid, err := own.GetX509SVID()
	require.NoError(t, err)
	sc, err := delegation.ParseScopes([]string{"cluster.status:cluster/-/status"})
	require.NoError(t, err)
	c, err := e.issuer.Plan(delegation.Request{Caller: e.id(dSvcB), CallerCert: svid.Certificates[0],
		Audience: []spiffeid.ID{identity.APIID(e.p.td)}, Scopes: sc})
	require.NoError(t, err)
	require.NotEmpty(t, c.Thumbprint)
	tok, err := e.issuer.Sign(c)
	require.NoError(t, err)

	require.NoError(t, e.dialCreds(own).status(WithDelegation(ctx5(t), tok)))
	err = e.dial(dSvcB).status(WithDelegation(ctx5(t), tok))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "certificate other than the one it is bound to")
}

// TestRevokedCredentialRefused: revoking a credential's parent (or its
// subject) refuses it at the next call, although it is valid otherwise.
func TestRevokedCredentialRefused(t *testing.T) {
	e := newDelegEnv(t, delegConfig{})
	tok, c := e.chain([]string{"cluster.status:cluster/-/status"}, dAlice, dSvcA, dSvcB)
	b := e.dial(dSvcB)
	require.NoError(t, b.status(WithDelegation(ctx5(t), tok)))
	for _, key := range []string{delegation.RevocationKeyJTI(c.JTIs()[1]), delegation.RevocationKeySubject(c.Subject)} {
		revoke(e.revs, time.Now(), revocation.Window{}, key)
		err := b.status(WithDelegation(ctx5(t), tok))
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%s: %v", key, err)
		require.Contains(t, err.Error(), "credential revoked")
		revoke(e.revs, time.Now(), revocation.Window{})
		require.NoError(t, b.status(WithDelegation(ctx5(t), tok)))
	}
}

// TestRevokedCredentialCutsStream: a stream opened with a credential that
// is revoked while it runs (or that expires) ends, as a stream whose
// caller is revoked does: a follower of the audit log acting for otto
// stops following when otto's credential is revoked.
func TestRevokedCredentialCutsStream(t *testing.T) {
	e := newDelegEnv(t, delegConfig{})
	b := e.dial(dSvcB)
	tok, c := e.chain([]string{"audit.read:audit/-/events"}, dOtto, dSvcB)
	stream, err := b.audit.Query(WithDelegation(ctx5(t), tok), &unumv1.AuditQueryRequest{Follow: true})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)

	revoke(e.revs, time.Now(), revocation.Window{}, delegation.RevocationKeyJTI(c.ID))
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "credential revoked")

	// One that expires while the stream runs: minted ten minutes ago, so
	// that it is past its expiry and the leeway about three seconds from
	// now.
	revoke(e.revs, time.Now(), revocation.Window{})
	minted := time.Now().Add(-delegation.DefaultTTL)
	old, err := delegation.NewIssuer(e.p.td, e.keyring, func() time.Time { return minted })
	require.NoError(t, err)
	sc, err := delegation.ParseScopes([]string{"audit.read:audit/-/events"})
	require.NoError(t, err)
	c, err = old.Plan(delegation.Request{Caller: e.id(dOtto), Holder: e.id(dSvcB), Audience: []spiffeid.ID{identity.APIID(e.p.td)},
		Scopes: sc, TTL: delegation.DefaultTTL - delegation.Leeway + 3*time.Second})
	require.NoError(t, err)
	tok, err = old.Sign(c)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err = b.audit.Query(WithDelegation(ctx, tok), &unumv1.AuditQueryRequest{Follow: true})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err, "still valid when the stream opens")
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "credential expired")
	require.Less(t, time.Since(c.Expiry.Add(delegation.Leeway)), 2*time.Second, "cut when it expired")
}

// TestRefusedPresentationsRecorded: every credential refused is recorded
// in the audit log (cred.verify, deny) with the presenting caller, the
// reason, and the credential's jtis when its signature verified (so
// `unum audit query --cred JTI` finds a replay of it).
func TestRefusedPresentationsRecorded(t *testing.T) {
	log := openAuditLog(t)
	e := newDelegEnv(t, delegConfig{audit: log})
	tok, c := e.chain([]string{"cluster.status:cluster/-/status"}, dAlice, dSvcB)
	a := e.dial(dSvcA)
	err := a.status(WithDelegation(ctx5(t), tok))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	err = a.status(WithDelegation(ctx5(t), "not.a.credential"))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)

	evs := credVerifyEvents(t, log)
	require.Len(t, evs, 2)
	for _, ev := range evs {
		require.Equal(t, audit.KindCredential, ev.Kind)
		require.Equal(t, audit.Deny, ev.Outcome)
		require.Equal(t, e.id(dSvcA).String(), ev.Subject, "the presenting caller")
		require.Equal(t, "method/-//unum.v1.Cluster/Status", ev.Resource)
	}
	require.Contains(t, evs[0].Reasons[0], "someone other than its holder")
	require.Equal(t, c.JTIs(), evs[0].Creds, "a replayed credential is named")
	require.Contains(t, evs[1].Reasons[0], "malformed credential")
	require.Empty(t, evs[1].Creds, "nothing verified, nothing named")
}

// TestRefusedPresentationFloodSummarized: a caller presenting garbage in
// a loop costs the audit log the refusal limiter's burst and one summary
// that counts the rest, not one event per call.
func TestRefusedPresentationFloodSummarized(t *testing.T) {
	log := openAuditLog(t)
	lim := audit.NewLimiter(log, audit.LimiterConfig{Rate: 0.001, Burst: 3})
	e := newDelegEnv(t, delegConfig{audit: log, refusals: lim})
	a := e.dial(dSvcA)
	const flood = 40
	for i := 0; i < flood; i++ {
		err := a.status(WithDelegation(ctx5(t), "garbage"))
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	}
	require.Len(t, credVerifyEvents(t, log), 3, "the burst, then nothing one by one")
	require.NoError(t, lim.Flush(ctx5(t)))
	evs := credVerifyEvents(t, log)
	require.Len(t, evs, 4)
	var d audit.SuppressedDetails
	require.NoError(t, json.Unmarshal(evs[3].Details, &d))
	require.EqualValues(t, flood-3, d.Suppressed)
}

// TestDelegatedPrivilegedCallOnStaleViewRefused: a privileged call made
// with a credential is refused while the server's revocation view is
// stale (a revocation of that credential may be what it has not heard
// of); unprivileged delegated calls go on, and it recovers with the view.
func TestDelegatedPrivilegedCallOnStaleViewRefused(t *testing.T) {
	clock := &testClock{now: time.Now()}
	revs := revocation.NewView(10*time.Second, clock.Now)
	revoke(revs, clock.Now(), revocation.Window{})
	e := newDelegEnv(t, delegConfig{revs: revs})
	b := e.dial(dSvcB)
	tok, _ := e.chain([]string{"id.register:id/shop/*", "cluster.status:cluster/-/status"}, dOtto, dSvcB)
	entry := &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/shop/job/x"}
	_, err := b.identity.CreateEntry(WithDelegation(ctx5(t), tok), entry)
	require.Equal(t, codes.Unimplemented, status.Code(err), "fresh: through to the handler: %v", err)

	clock.Add(11 * time.Second)
	_, err = b.identity.CreateEntry(WithDelegation(ctx5(t), tok), entry)
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "revocation view is stale")
	require.NoError(t, b.status(WithDelegation(ctx5(t), tok)), "unprivileged delegated calls go on")

	revs.Touch(clock.Now())
	_, err = b.identity.CreateEntry(WithDelegation(ctx5(t), tok), entry)
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}

// openAuditLog is a real audit log in a temporary folder.
func openAuditLog(t *testing.T) *audit.Log {
	t.Helper()
	h, err := audit.NewSigningKeyset()
	require.NoError(t, err)
	s, err := audit.NewSigner("n1", h)
	require.NoError(t, err)
	l, err := audit.Open(audit.Config{Dir: filepath.Join(t.TempDir(), "audit"), Node: "n1", Signer: s, Logger: nilLogger(), CheckpointEvery: time.Hour})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

// credVerifyEvents are the log's cred.verify events, oldest first.
func credVerifyEvents(t *testing.T, l *audit.Log) []*audit.Event {
	t.Helper()
	var out []*audit.Event
	require.NoError(t, l.Scan(context.Background(), 0, func(_ uint64, raw []byte) bool {
		ev, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		if ev.Action == audit.ActionCredVerify {
			out = append(out, ev)
		}
		return true
	}))
	return out
}

// An exchange that names no scopes or audience gets the presented
// credential's: the policy must decide on those, not on an empty request
// (a rule refusing some scope cannot be passed by leaving it out).
func TestExchangeDecidedOnWhatWillBeSigned(t *testing.T) {
	e := newDelegEnv(t, delegConfig{extra: map[string]string{"noqueue.rego": `package unum.authz

import rego.v1

denies contains "queue scopes are not passed on" if {
	input.action == "cred.delegate"
	some s in input.credential.scopes
	startswith(s, "queue.")
}
`}})
	tok, c := e.chain([]string{"cluster.status:cluster/-/status", "queue.read:queue/shop/*", "cred.delegate:cred/shop/*"}, dOtto, dSvcB)
	cc, err := Dial(e.p.creds(t, dSvcB), []string{e.addr})
	require.NoError(t, err)
	defer cc.Close()
	creds := unumv1.NewCredentialsClient(cc)

	_, err = creds.Delegate(WithDelegation(ctx5(t), tok), &unumv1.DelegateRequest{To: e.id(dSvcA).String()})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	r := e.record(err)
	require.Equal(t, c.Subject.String(), r.Input.Credential.Subject, "an exchange keeps its subject")
	require.ElementsMatch(t, []string{"cluster.status:cluster/-/status", "cred.delegate:cred/shop/*", "queue.read:queue/shop/*"}, r.Input.Credential.Scopes)
	require.Equal(t, []string{identity.APIID(e.p.td).String()}, r.Input.Credential.Audience)
	require.Contains(t, err.Error(), "queue scopes are not passed on")

	// Naming narrower scopes passes the policy (and reaches the handler).
	_, err = creds.Delegate(WithDelegation(ctx5(t), tok), &unumv1.DelegateRequest{To: e.id(dSvcA).String(), Scopes: []string{"cluster.status:cluster/-/status"}})
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}

// Methods a caller makes only as itself refuse a presented credential, and
// every one of them is a routed method.
func TestSelfMethodsRefuseDelegation(t *testing.T) {
	for m := range withoutDelegation {
		_, ok := routes[m]
		require.True(t, ok, "%s is not a method", m)
	}
	e := newDelegEnv(t, delegConfig{})
	tok, _ := e.chain([]string{"*:*/*/*"}, dAlice, dSvcB)
	cc, err := Dial(e.p.creds(t, dSvcB), []string{e.addr})
	require.NoError(t, err)
	defer cc.Close()
	_, err = unumv1.NewClusterClient(cc).Heartbeat(WithDelegation(ctx5(t), tok), &unumv1.HeartbeatRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "cannot be used for Cluster.Heartbeat")
}
