package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/rpc"
)

// The user names in these tests start with "u-": other tests of the
// package use unknown users (bob) on purpose.

func usersClient(t *testing.T, path string) unumv1.UsersClient {
	t.Helper()
	return unumv1.NewUsersClient(conn(t, path))
}

func addUser(t *testing.T, name, role string) string {
	t.Helper()
	resp, err := usersClient(t, "/user/admin").AddUser(ctxT(t), &unumv1.AddUserRequest{Name: name, Role: role})
	require.NoError(t, err)
	return resp.GetToken()
}

func bareUserCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	// Like `unum login`: no SAN, the server fixes the ID from the token.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	return key, csr
}

// session is a logged-in user: their key, chain and credentials.
type session struct {
	id    spiffeid.ID
	key   *ecdsa.PrivateKey
	chain []*x509.Certificate
	creds *rpc.Credentials
	resp  *unumv1.LoginResponse
}

func newSession(t *testing.T, id spiffeid.ID, key *ecdsa.PrivateKey, ders [][]byte) *session {
	t.Helper()
	var chain []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		require.NoError(t, err)
		chain = append(chain, c)
	}
	creds, err := rpc.NewCredentials(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, []*x509.Certificate{h.root})
	require.NoError(t, err)
	return &session{id: id, key: key, chain: chain, creds: creds}
}

func login(t *testing.T, token string, ttl time.Duration) (*session, error) {
	t.Helper()
	key, csr := bareUserCSR(t)
	resp, err := enrollClient(t, ca.Fingerprint(h.root)).Login(ctxT(t), &unumv1.LoginRequest{Token: token, Csr: csr, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		return nil, err
	}
	s := newSession(t, spiffeid.RequireFromPath(h.td, "/user/"+resp.GetName()), key, resp.GetSvidChain())
	s.resp = resp
	return s, nil
}

func mustLogin(t *testing.T, token string, ttl time.Duration) *session {
	t.Helper()
	s, err := login(t, token, ttl)
	require.NoError(t, err)
	return s
}

func (s *session) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := rpc.Dial(s.creds, []string{h.apiAddr})
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

func whoAmI(ctx context.Context, cc *grpc.ClientConn) (*unumv1.WhoAmIResponse, error) {
	return unumv1.NewIdentityClient(cc).WhoAmI(ctx, &unumv1.WhoAmIRequest{})
}

// waitRole waits until the watched state knows the user (the authorizer
// reads roles from it).
func waitRole(t *testing.T, name, role string) {
	t.Helper()
	require.Eventually(t, func() bool {
		r, ok := h.srv.UserRole(name)
		return ok && r == role
	}, 10*time.Second, 10*time.Millisecond)
}

func TestUserCertTTL(t *testing.T) {
	for name, tc := range map[string]struct {
		requested, user, want time.Duration
		err                   string
	}{
		"defaults":               {0, 0, DefaultUserCertTTL, ""},
		"the user's":             {0, time.Hour, time.Hour, ""},
		"shorter asked":          {10 * time.Minute, time.Hour, 10 * time.Minute, ""},
		"longer asked is capped": {2 * time.Hour, time.Hour, time.Hour, ""},
		"longer than default":    {24 * time.Hour, 0, DefaultUserCertTTL, ""},
		"the minimum":            {MinUserCertTTL, 0, MinUserCertTTL, ""},
		"below the minimum":      {MinUserCertTTL - time.Second, 0, 0, "at least 1m0s"},
		"negative":               {-time.Second, 0, 0, "negative"},
		"record above the cap":   {0, 30 * 24 * time.Hour, MaxUserCertTTL, ""},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := UserCertTTL(tc.requested, tc.user)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	require.Equal(t, MaxUserCertTTL+time.Second, secondsArg(1<<62, MaxUserCertTTL), "no overflow")
}

// TestLoginAndRenew: login gives a working certificate for
// spiffe://TD/user/NAME; renewal gives a new certificate for a new key and
// the same ID; lifetimes follow the user's record.
func TestLoginAndRenew(t *testing.T) {
	ac := usersClient(t, "/user/admin")
	added, err := ac.AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-alice", Role: "operator", CertTtlSeconds: 3600})
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/user/u-alice", added.GetUser().GetSpiffeId())
	require.Equal(t, int64(3600), added.GetUser().GetCertTtlSeconds())
	require.True(t, strings.HasPrefix(added.GetToken(), "unum1.user."), "user token kind")
	tok, err := jointoken.Parse(added.GetToken())
	require.NoError(t, err)
	require.Equal(t, ca.Fingerprint(h.root), tok.CAFingerprint, "the token pins the cluster's CA")

	s := mustLogin(t, added.GetToken(), 2*time.Hour) // asks for more than allowed
	require.Equal(t, "u-alice", s.resp.GetName())
	require.Equal(t, "operator", s.resp.GetRole())
	require.Equal(t, "unum.test", s.resp.GetTrustDomain())
	require.Contains(t, s.resp.GetControlAddresses(), h.apiAddr)
	require.Len(t, s.resp.GetRoots(), 1)
	require.Equal(t, h.root.Raw, s.resp.GetRoots()[0])
	leaf := s.chain[0]
	require.Equal(t, "spiffe://unum.test/user/u-alice", leaf.URIs[0].String())
	require.InDelta(t, time.Hour.Seconds(), leaf.NotAfter.Sub(leaf.NotBefore.Add(ca.ClockSkew)).Seconds(), 2, "capped at the user's lifetime")

	cc := s.dial(t)
	who, err := whoAmI(ctxT(t), cc)
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/user/u-alice", who.GetSpiffeId())
	require.Equal(t, string(identity.KindUser), who.GetKind())

	uc := unumv1.NewUsersClient(cc)
	t.Run("renew", func(t *testing.T) {
		key, err := ca.GenerateKey()
		require.NoError(t, err)
		csr, err := ca.CreateCSR(key, s.id)
		require.NoError(t, err)
		resp, err := uc.RenewUser(ctxT(t), &unumv1.RenewUserRequest{Csr: csr, TtlSeconds: 600})
		require.NoError(t, err)
		renewed := newSession(t, s.id, key, resp.GetChain())
		require.Equal(t, leaf.URIs[0].String(), renewed.chain[0].URIs[0].String())
		require.NotEqual(t, leaf.SerialNumber, renewed.chain[0].SerialNumber)
		require.False(t, leaf.PublicKey.(*ecdsa.PublicKey).Equal(renewed.chain[0].PublicKey), "a renewal certifies the new key")
		require.InDelta(t, (10 * time.Minute).Seconds(), renewed.chain[0].NotAfter.Sub(renewed.chain[0].NotBefore.Add(ca.ClockSkew)).Seconds(), 2)
		who, err := whoAmI(ctxT(t), renewed.dial(t))
		require.NoError(t, err)
		require.Equal(t, "spiffe://unum.test/user/u-alice", who.GetSpiffeId())
	})
	t.Run("renewal refuses the same key", func(t *testing.T) {
		csr, err := ca.CreateCSR(s.key, s.id)
		require.NoError(t, err)
		_, err = uc.RenewUser(ctxT(t), &unumv1.RenewUserRequest{Csr: csr})
		requireCode(t, err, codes.InvalidArgument, "new key")
	})
	t.Run("renewal cannot ask for another identity", func(t *testing.T) {
		for _, other := range []string{"/user/admin", "/user/u-other", "/node/node-1"} {
			key, _ := ca.GenerateKey()
			csr, err := ca.CreateCSR(key, spiffeid.RequireFromPath(h.td, other))
			require.NoError(t, err)
			_, err = uc.RenewUser(ctxT(t), &unumv1.RenewUserRequest{Csr: csr})
			requireCode(t, err, codes.InvalidArgument, "csr refused")
		}
	})
	t.Run("renewal cannot go below the minimum lifetime", func(t *testing.T) {
		key, _ := ca.GenerateKey()
		csr, err := ca.CreateCSR(key, s.id)
		require.NoError(t, err)
		_, err = uc.RenewUser(ctxT(t), &unumv1.RenewUserRequest{Csr: csr, TtlSeconds: 5})
		requireCode(t, err, codes.InvalidArgument, "at least 1m")
	})
	t.Run("only users renew user certificates", func(t *testing.T) {
		for _, p := range []string{"/node/node-1", "/ns/a/job/b"} {
			key, _ := ca.GenerateKey()
			csr, err := ca.CreateCSR(key, spiffeid.RequireFromPath(h.td, p))
			require.NoError(t, err)
			_, err = usersClient(t, p).RenewUser(ctxT(t), &unumv1.RenewUserRequest{Csr: csr})
			requireCode(t, err, codes.PermissionDenied, "denied by policy (decision node-1.")
		}
	})
	t.Run("the built-in admin renews", func(t *testing.T) {
		key, _ := ca.GenerateKey()
		csr, err := ca.CreateCSR(key, spiffeid.RequireFromPath(h.td, "/user/admin"))
		require.NoError(t, err)
		resp, err := usersClient(t, "/user/admin").RenewUser(ctxT(t), &unumv1.RenewUserRequest{Csr: csr})
		require.NoError(t, err)
		require.NotEmpty(t, resp.GetChain())
	})
}

// TestUserLoginMisuse is the attack test of user enrolment tokens (T-021):
// replay, concurrent use, tokens of the other kind, forged and expired
// tokens, and tokens that outlived their user.
func TestUserLoginMisuse(t *testing.T) {
	fp := ca.Fingerprint(h.root)
	ec := enrollClient(t, fp)

	t.Run("replay after use", func(t *testing.T) {
		tok := addUser(t, "u-replay", "viewer")
		mustLogin(t, tok, 0)
		_, err := login(t, tok, 0)
		requireCode(t, err, codes.PermissionDenied, "already been used")
	})

	t.Run("two concurrent uses: exactly one wins", func(t *testing.T) {
		tok := addUser(t, "u-race", "viewer")
		const n = 8
		csrs := make([][]byte, n)
		for i := range csrs {
			_, csrs[i] = bareUserCSR(t)
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = ec.Login(ctxT(t), &unumv1.LoginRequest{Token: tok, Csr: csrs[i]})
			}(i)
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			if err == nil {
				wins++
				continue
			}
			requireCode(t, err, codes.PermissionDenied, "already been used")
		}
		require.Equal(t, 1, wins)
	})

	t.Run("a node token cannot log in and is not consumed", func(t *testing.T) {
		nodeTok := mintToken(t, "u-node-tok")
		_, csr := bareUserCSR(t)
		_, err := ec.Login(ctxT(t), &unumv1.LoginRequest{Token: nodeTok, Csr: csr})
		requireCode(t, err, codes.InvalidArgument, "a node token cannot log in")
		// Even with the kind field rewritten, the record is not a user token.
		forged := strings.Replace(nodeTok, ".node.", ".user.", 1)
		_, err = ec.Login(ctxT(t), &unumv1.LoginRequest{Token: forged, Csr: csr})
		requireCode(t, err, codes.PermissionDenied, "unknown")
		_, err = ec.Join(ctxT(t), joinReq(nodeTok, makeCSR(t, csrOpts{})))
		require.NoError(t, err, "the node token still joins")
	})

	t.Run("a user token cannot join and is not consumed", func(t *testing.T) {
		tok := addUser(t, "u-join-tok", "viewer")
		_, err := ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
		requireCode(t, err, codes.InvalidArgument, "a user token cannot join")
		forged := strings.Replace(tok, ".user.", ".node.", 1)
		_, err = ec.Join(ctxT(t), joinReq(forged, makeCSR(t, csrOpts{})))
		requireCode(t, err, codes.PermissionDenied, "unknown")
		mustLogin(t, tok, 0)
	})

	t.Run("bad requests do not burn the token", func(t *testing.T) {
		tok := addUser(t, "u-badreq", "viewer")
		for name, o := range map[string]csrOpts{
			"another user":         {uris: []string{"spiffe://unum.test/user/u-alice"}},
			"the admin":            {uris: []string{"spiffe://unum.test/user/admin"}},
			"a node":               {uris: []string{"spiffe://unum.test/node/u-badreq"}},
			"another trust domain": {uris: []string{"spiffe://evil.test/user/u-badreq"}},
			"DNS SAN":              {dns: []string{"example.org"}},
			"CA:true":              {caTrue: true},
		} {
			_, err := ec.Login(ctxT(t), &unumv1.LoginRequest{Token: tok, Csr: makeCSR(t, o)})
			requireCode(t, err, codes.InvalidArgument, "csr refused")
			_ = name
		}
		_, csr := bareUserCSR(t)
		_, err := ec.Login(ctxT(t), &unumv1.LoginRequest{Token: tok, Csr: csr, TtlSeconds: 30})
		requireCode(t, err, codes.InvalidArgument, "at least 1m")
		_, err = ec.Login(ctxT(t), &unumv1.LoginRequest{Token: tok, Csr: csr, TtlSeconds: -1})
		requireCode(t, err, codes.InvalidArgument, "negative")
		_, err = ec.Login(ctxT(t), &unumv1.LoginRequest{Token: "unum1.user.zz", Csr: csr})
		requireCode(t, err, codes.InvalidArgument, "malformed")
		s := mustLogin(t, tok, 0)
		require.Equal(t, "spiffe://unum.test/user/u-badreq", s.chain[0].URIs[0].String())
	})

	t.Run("wrong secret and unknown token", func(t *testing.T) {
		good, err := jointoken.Parse(addUser(t, "u-secret", "viewer"))
		require.NoError(t, err)
		forged := good
		forged.Secret = make([]byte, len(good.Secret))
		_, err = login(t, forged.String(), 0)
		requireCode(t, err, codes.PermissionDenied, "invalid")
		unknown, err := jointoken.New(jointoken.KindUser, fp, rand.Reader)
		require.NoError(t, err)
		_, err = login(t, unknown.String(), 0)
		requireCode(t, err, codes.PermissionDenied, "unknown")
		mustLogin(t, good.String(), 0)
	})

	t.Run("expired token", func(t *testing.T) {
		tok, err := jointoken.New(jointoken.KindUser, fp, rand.Reader)
		require.NoError(t, err)
		rec := tok.Record("u-expired", nil, "spiffe://unum.test/user/admin", time.Now().Add(-time.Second))
		_, err = h.etcd.Client().Put(ctxT(t), userTokenKey(tok.ID), mustJSON(rec))
		require.NoError(t, err)
		_, err = login(t, tok.String(), 0)
		requireCode(t, err, codes.PermissionDenied, "expired")
	})

	t.Run("a removed user's pending token is gone", func(t *testing.T) {
		tok := addUser(t, "u-gone", "viewer")
		_, err := usersClient(t, "/user/admin").RemoveUser(ctxT(t), &unumv1.RemoveUserRequest{Name: "u-gone"})
		require.NoError(t, err)
		_, err = login(t, tok, 0)
		requireCode(t, err, codes.PermissionDenied, "unknown")
	})

	t.Run("a token older than its user's incarnation is refused", func(t *testing.T) {
		// A token record that survived its user (written before the user
		// of that name was added again) must not enrol the new user.
		tok, err := jointoken.New(jointoken.KindUser, fp, rand.Reader)
		require.NoError(t, err)
		rec := tok.Record("u-reborn", nil, "spiffe://unum.test/user/admin", time.Now().Add(time.Hour))
		_, err = h.etcd.Client().Put(ctxT(t), userTokenKey(tok.ID), mustJSON(rec))
		require.NoError(t, err)
		_, err = login(t, tok.String(), 0)
		requireCode(t, err, codes.PermissionDenied, "its user was removed")
		addUser(t, "u-reborn", "admin")
		_, err = login(t, tok.String(), 0)
		requireCode(t, err, codes.PermissionDenied, "its user was removed")
	})
}

// TestRemovedUserLiveConnectionRefused is the attack test of a stolen user
// certificate after `user rm` (T-020): a connection that already made a
// successful call is refused, with the reason, within 2 s of the removal;
// so are new connections and renewals. The user added again later logs in
// and works.
func TestRemovedUserLiveConnectionRefused(t *testing.T) {
	s := mustLogin(t, addUser(t, "u-mallory", "operator"), 0)
	waitRole(t, "u-mallory", "operator")
	cc := s.dial(t)
	_, err := whoAmI(ctxT(t), cc)
	require.NoError(t, err)
	_, err = unumv1.NewIdentityClient(cc).ListEntries(ctxT(t), &unumv1.ListEntriesRequest{})
	require.NoError(t, err)

	start := time.Now()
	_, err = usersClient(t, "/user/admin").RemoveUser(ctxT(t), &unumv1.RemoveUserRequest{Name: "u-mallory"})
	require.NoError(t, err)
	var refused error
	for time.Since(start) < 5*time.Second {
		if _, err := whoAmI(ctxT(t), cc); err != nil {
			refused = err
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	require.Error(t, refused, "the live connection still works 5 s after the removal")
	requireCode(t, refused, codes.Unauthenticated, "user removed")
	require.Less(t, elapsed, 2*time.Second, "refused only after %s", elapsed)
	t.Logf("live connection refused %s after RemoveUser was called", elapsed)

	_, err = whoAmI(ctxT(t), s.dial(t))
	requireCode(t, err, codes.Unauthenticated, "revoked")
	key, _ := ca.GenerateKey()
	csr, err := ca.CreateCSR(key, s.id)
	require.NoError(t, err)
	_, err = unumv1.NewUsersClient(cc).RenewUser(ctxT(t), &unumv1.RenewUserRequest{Csr: csr})
	requireCode(t, err, codes.Unauthenticated, "user removed")

	// Added again: the new certificate is not born revoked (Login waits
	// out the revocation's allowance) and works.
	again := mustLogin(t, addUser(t, "u-mallory", "viewer"), 0)
	waitRole(t, "u-mallory", "viewer")
	who, err := whoAmI(ctxT(t), again.dial(t))
	require.NoError(t, err)
	require.Equal(t, "spiffe://unum.test/user/u-mallory", who.GetSpiffeId())
	// The old certificate stays refused.
	_, err = whoAmI(ctxT(t), s.dial(t))
	requireCode(t, err, codes.Unauthenticated, "revoked")
}

// TestRevokeUser: revoking keeps the user; their certificates are refused;
// a reissued token logs them in again.
func TestRevokeUser(t *testing.T) {
	s := mustLogin(t, addUser(t, "u-lost-laptop", "viewer"), 0)
	cc := s.dial(t)
	_, err := whoAmI(ctxT(t), cc)
	require.NoError(t, err)
	ac := usersClient(t, "/user/admin")
	resp, err := ac.RevokeUser(ctxT(t), &unumv1.RevokeUserRequest{Name: "u-lost-laptop"})
	require.NoError(t, err)
	require.Greater(t, resp.GetBeforeUnixNano(), time.Now().UnixNano())
	require.Eventually(t, func() bool {
		_, err := whoAmI(ctxT(t), cc)
		return status.Code(err) == codes.Unauthenticated && strings.Contains(err.Error(), "user certificates revoked")
	}, 2*time.Second, 20*time.Millisecond)

	list, err := ac.ListUsers(ctxT(t), &unumv1.ListUsersRequest{})
	require.NoError(t, err)
	require.True(t, hasUser(list, "u-lost-laptop"), "revoking keeps the user")

	_, err = ac.AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-lost-laptop", Role: "viewer"})
	requireCode(t, err, codes.AlreadyExists, "--reissue-token")
	_, err = ac.AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-lost-laptop", Role: "admin", ReissueToken: true})
	requireCode(t, err, codes.FailedPrecondition, "keeps it")
	re, err := ac.AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-lost-laptop", ReissueToken: true})
	require.NoError(t, err)
	require.Equal(t, "viewer", re.GetUser().GetRole())
	again := mustLogin(t, re.GetToken(), 0)
	_, err = whoAmI(ctxT(t), again.dial(t))
	require.NoError(t, err)

	_, err = ac.RevokeUser(ctxT(t), &unumv1.RevokeUserRequest{Name: "u-nobody"})
	requireCode(t, err, codes.NotFound, "no user")
}

func hasUser(list *unumv1.ListUsersResponse, name string) bool {
	for _, u := range list.GetUsers() {
		if u.GetName() == name {
			return true
		}
	}
	return false
}

// TestUserRoles: roles come from the user's record, server side. A viewer
// reads but cannot register workloads; an operator can, but cannot manage
// users; an admin-role user can. Nothing a user sends changes their role.
func TestUserRoles(t *testing.T) {
	viewer := mustLogin(t, addUser(t, "u-viewer", "viewer"), 0)
	operator := mustLogin(t, addUser(t, "u-operator", "operator"), 0)
	admin := mustLogin(t, addUser(t, "u-admin2", "admin"), 0)
	waitRole(t, "u-viewer", "viewer")
	waitRole(t, "u-operator", "operator")
	waitRole(t, "u-admin2", "admin")
	entry := &unumv1.CreateEntryRequest{SpiffeId: "spiffe://unum.test/ns/roles/job/web", Node: "node-1", Selectors: []string{"unix:uid:1000"}}

	vc := viewer.dial(t)
	_, err := unumv1.NewIdentityClient(vc).ListEntries(ctxT(t), &unumv1.ListEntriesRequest{})
	require.NoError(t, err, "viewers read")
	_, err = unumv1.NewUsersClient(vc).ListUsers(ctxT(t), &unumv1.ListUsersRequest{})
	require.NoError(t, err, "viewers list users")
	_, err = unumv1.NewIdentityClient(vc).CreateEntry(ctxT(t), entry)
	requireCode(t, err, codes.PermissionDenied, "no rule allows spiffe://unum.test/user/u-viewer to id.register")

	oc := operator.dial(t)
	created, err := unumv1.NewIdentityClient(oc).CreateEntry(ctxT(t), entry)
	require.NoError(t, err, "operators register workloads")
	_, err = unumv1.NewIdentityClient(oc).DeleteEntry(ctxT(t), &unumv1.DeleteEntryRequest{Id: created.GetId()})
	require.NoError(t, err)
	for _, call := range []func() error{
		func() error {
			_, err := unumv1.NewUsersClient(oc).AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-sneaky", Role: "admin"})
			return err
		},
		// An operator cannot re-enrol themselves as an admin either.
		func() error {
			_, err := unumv1.NewUsersClient(oc).AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-operator", Role: "admin", ReissueToken: true})
			return err
		},
		func() error {
			_, err := unumv1.NewUsersClient(oc).RemoveUser(ctxT(t), &unumv1.RemoveUserRequest{Name: "u-viewer"})
			return err
		},
		func() error {
			_, err := unumv1.NewClusterClient(oc).CreateJoinToken(ctxT(t), &unumv1.CreateJoinTokenRequest{Name: "x", Roles: []string{"compute"}})
			return err
		},
	} {
		requireCode(t, call(), codes.PermissionDenied, "no rule allows spiffe://unum.test/user/u-operator")
	}
	// After renewing, the operator is still an operator: the role is not
	// in the request or the certificate.
	key, _ := ca.GenerateKey()
	csr, err := ca.CreateCSR(key, operator.id)
	require.NoError(t, err)
	rr, err := unumv1.NewUsersClient(oc).RenewUser(ctxT(t), &unumv1.RenewUserRequest{Csr: csr})
	require.NoError(t, err)
	renewed := newSession(t, operator.id, key, rr.GetChain())
	_, err = unumv1.NewUsersClient(renewed.dial(t)).AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-sneaky", Role: "admin"})
	requireCode(t, err, codes.PermissionDenied, "no rule allows spiffe://unum.test/user/u-operator")

	ac := admin.dial(t)
	_, err = unumv1.NewUsersClient(ac).AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-by-admin2", Role: "viewer"})
	require.NoError(t, err, "admin-role users manage users")
}

func TestAddUserValidation(t *testing.T) {
	ac := usersClient(t, "/user/admin")
	for name, tc := range map[string]struct {
		req  *unumv1.AddUserRequest
		code codes.Code
		msg  string
	}{
		"built-in admin":    {&unumv1.AddUserRequest{Name: "admin", Role: "admin"}, codes.InvalidArgument, "built-in user"},
		"empty name":        {&unumv1.AddUserRequest{Name: "", Role: "viewer"}, codes.InvalidArgument, "user name: empty"},
		"uppercase":         {&unumv1.AddUserRequest{Name: "Alice", Role: "viewer"}, codes.InvalidArgument, "position 1"},
		"path":              {&unumv1.AddUserRequest{Name: "a/b", Role: "viewer"}, codes.InvalidArgument, "position 2"},
		"unknown role":      {&unumv1.AddUserRequest{Name: "u-x", Role: "root"}, codes.InvalidArgument, `--role "root"`},
		"no role":           {&unumv1.AddUserRequest{Name: "u-x"}, codes.InvalidArgument, "--role is required"},
		"cert ttl too low":  {&unumv1.AddUserRequest{Name: "u-x", Role: "viewer", CertTtlSeconds: 59}, codes.InvalidArgument, "--cert-ttl"},
		"cert ttl too high": {&unumv1.AddUserRequest{Name: "u-x", Role: "viewer", CertTtlSeconds: 8 * 24 * 3600}, codes.InvalidArgument, "--cert-ttl"},
		"cert ttl huge":     {&unumv1.AddUserRequest{Name: "u-x", Role: "viewer", CertTtlSeconds: 1 << 62}, codes.InvalidArgument, "--cert-ttl"},
		"negative cert ttl": {&unumv1.AddUserRequest{Name: "u-x", Role: "viewer", CertTtlSeconds: -1}, codes.InvalidArgument, "--cert-ttl"},
		"token ttl high":    {&unumv1.AddUserRequest{Name: "u-x", Role: "viewer", TokenTtlSeconds: 25 * 3600}, codes.InvalidArgument, "--token-ttl"},
		"token ttl neg":     {&unumv1.AddUserRequest{Name: "u-x", Role: "viewer", TokenTtlSeconds: -5}, codes.InvalidArgument, "--token-ttl"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ac.AddUser(ctxT(t), tc.req)
			requireCode(t, err, tc.code, tc.msg)
		})
	}
	got, err := h.etcd.Client().Get(ctxT(t), userKey("u-x"))
	require.NoError(t, err)
	require.Empty(t, got.Kvs, "nothing half-applied")

	_, err = ac.RemoveUser(ctxT(t), &unumv1.RemoveUserRequest{Name: "admin"})
	requireCode(t, err, codes.InvalidArgument, "built-in user")
	_, err = ac.RemoveUser(ctxT(t), &unumv1.RemoveUserRequest{Name: "u-nobody"})
	requireCode(t, err, codes.NotFound, "no user")
	_, err = ac.RemoveUser(ctxT(t), &unumv1.RemoveUserRequest{Name: "../x"})
	requireCode(t, err, codes.InvalidArgument, "user name")
	_, err = usersClient(t, "/user/bob").AddUser(ctxT(t), &unumv1.AddUserRequest{Name: "u-y", Role: "viewer"})
	requireCode(t, err, codes.PermissionDenied, "no rule allows spiffe://unum.test/user/bob to user.add")
}

func TestListUsers(t *testing.T) {
	addUser(t, "u-list-b", "viewer")
	addUser(t, "u-list-a", "operator")
	list, err := usersClient(t, "/user/admin").ListUsers(ctxT(t), &unumv1.ListUsersRequest{})
	require.NoError(t, err)
	users := list.GetUsers()
	require.Equal(t, "admin", users[0].GetName(), "the built-in admin first")
	require.Equal(t, "admin", users[0].GetRole())
	var names []string
	for _, u := range users[1:] {
		names = append(names, u.GetName())
	}
	require.IsIncreasing(t, names)
	require.Contains(t, names, "u-list-a")
	for _, u := range users {
		if u.GetName() == "u-list-a" {
			require.Equal(t, "operator", u.GetRole())
			require.Equal(t, "spiffe://unum.test/user/u-list-a", u.GetSpiffeId())
			require.Equal(t, "spiffe://unum.test/user/admin", u.GetCreatedBy())
			require.Equal(t, int64(DefaultUserCertTTL/time.Second), u.GetCertTtlSeconds())
		}
	}
}

// TestUserCertificateExpiry: a user certificate of the minimum lifetime
// stops working when it expires: a connection opened before is refused its
// next call, new connections fail the handshake, and an expired
// certificate cannot renew. The CA's clock is set back so that
// the 1-minute certificate expires a few seconds after it is issued.
func TestUserCertificateExpiry(t *testing.T) {
	tok := addUser(t, "u-expiry", "viewer")
	h.authoritySkew.Store(int64(-(MinUserCertTTL - 3*time.Second)))
	s, err := login(t, tok, MinUserCertTTL)
	h.authoritySkew.Store(0)
	require.NoError(t, err)
	notAfter := s.chain[0].NotAfter
	require.WithinDuration(t, time.Now().Add(3*time.Second), notAfter, 2*time.Second)

	live := s.dial(t)
	_, err = whoAmI(ctxT(t), live)
	require.NoError(t, err, "valid before expiry")
	time.Sleep(time.Until(notAfter) + 1500*time.Millisecond)
	// The connection's handshake was before expiry; its calls are not
	// (T-024).
	_, err = whoAmI(ctxT(t), live)
	requireCode(t, err, codes.Unauthenticated, "expired")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = whoAmI(ctx, s.dial(t))
	require.Error(t, err, "an expired certificate must not authenticate")
	key, _ := ca.GenerateKey()
	csr, err := ca.CreateCSR(key, s.id)
	require.NoError(t, err)
	_, err = unumv1.NewUsersClient(s.dial(t)).RenewUser(ctx, &unumv1.RenewUserRequest{Csr: csr})
	require.Error(t, err, "an expired certificate cannot renew: log in again")
}

func TestPruneUserTokens(t *testing.T) {
	tok, err := jointoken.New(jointoken.KindUser, ca.Fingerprint(h.root), rand.Reader)
	require.NoError(t, err)
	now := time.Now()
	rec := tok.Record("u-prune", nil, "spiffe://unum.test/user/admin", now.Add(-tokenRetention-time.Minute))
	_, err = h.etcd.Client().Put(ctxT(t), userTokenKey(tok.ID), mustJSON(rec))
	require.NoError(t, err)
	_, err = h.srv.pruneJoinTokens(ctxT(t), now)
	require.NoError(t, err)
	got, err := h.etcd.Client().Get(ctxT(t), userTokenKey(tok.ID))
	require.NoError(t, err)
	require.Empty(t, got.Kvs)
}
