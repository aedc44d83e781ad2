package control

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/rpc"
)

func mintToken(t *testing.T, name string, roles ...string) string {
	t.Helper()
	if len(roles) == 0 {
		roles = []string{"compute"}
	}
	resp, err := unumv1.NewClusterClient(conn(t, "/user/admin")).CreateJoinToken(ctxT(t), &unumv1.CreateJoinTokenRequest{Name: name, Roles: roles})
	require.NoError(t, err)
	return resp.GetToken()
}

func enrollClient(t *testing.T, fingerprint string) unumv1.EnrollmentClient {
	t.Helper()
	cc, err := rpc.DialEnrollment(h.enrollAddr, fingerprint)
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return unumv1.NewEnrollmentClient(cc)
}

type csrOpts struct {
	uris     []string
	dns      []string
	caTrue   bool
	keyUsage bool
}

func makeCSR(t *testing.T, o csrOpts) []byte {
	t.Helper()
	key, err := ca.GenerateKey()
	require.NoError(t, err)
	tmpl := &x509.CertificateRequest{DNSNames: o.dns, Subject: pkix.Name{CommonName: "unum-control"}}
	for _, u := range o.uris {
		pu, err := url.Parse(u)
		require.NoError(t, err)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if o.caTrue {
		val, err := asn1.Marshal(struct {
			IsCA bool `asn1:"optional"`
		}{true})
		require.NoError(t, err)
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: val})
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, crypto.Signer(key))
	require.NoError(t, err)
	return der
}

func joinReq(token string, csr []byte) *unumv1.JoinRequest {
	return &unumv1.JoinRequest{Token: token, Csr: csr, ApiAddress: "127.0.0.1:1"}
}

func requireCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status error: %v", err)
	require.Equal(t, code, st.Code(), st.Message())
	require.Contains(t, st.Message(), contains)
}

// TestJoinMisuse tries every misuse of the enrolment path named in the
// threat register (T-001, T-002, T-009) against the real services.
func TestJoinMisuse(t *testing.T) {
	fp := ca.Fingerprint(h.root)

	t.Run("valid join then reuse", func(t *testing.T) {
		tok := mintToken(t, "misuse-a")
		ec := enrollClient(t, fp)
		resp, err := ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
		require.NoError(t, err)
		leaf, err := x509.ParseCertificate(resp.GetSvidChain()[0])
		require.NoError(t, err)
		require.Equal(t, "spiffe://unum.test/node/misuse-a", leaf.URIs[0].String())
		require.Empty(t, leaf.Subject.CommonName, "the CA strips the CN from node CSRs")
		_, err = ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
		requireCode(t, err, codes.PermissionDenied, "already been used")
	})

	t.Run("unknown token", func(t *testing.T) {
		tok, err := jointoken.New(jointoken.KindNode, fp, rand.Reader)
		require.NoError(t, err)
		_, err = enrollClient(t, fp).Join(ctxT(t), joinReq(tok.String(), makeCSR(t, csrOpts{})))
		requireCode(t, err, codes.PermissionDenied, "unknown")
	})

	t.Run("wrong secret", func(t *testing.T) {
		good, err := jointoken.Parse(mintToken(t, "misuse-b"))
		require.NoError(t, err)
		forged := good
		forged.Secret = make([]byte, len(good.Secret))
		_, err = enrollClient(t, fp).Join(ctxT(t), joinReq(forged.String(), makeCSR(t, csrOpts{})))
		requireCode(t, err, codes.PermissionDenied, "invalid")
	})

	t.Run("expired token", func(t *testing.T) {
		tok, err := jointoken.New(jointoken.KindNode, fp, rand.Reader)
		require.NoError(t, err)
		rec := tok.Record("misuse-c", []string{"compute"}, "spiffe://unum.test/user/admin", time.Now().Add(-time.Second))
		_, err = h.etcd.Client().Put(ctxT(t), joinTokenKey(tok.ID), mustJSON(rec))
		require.NoError(t, err)
		_, err = enrollClient(t, fp).Join(ctxT(t), joinReq(tok.String(), makeCSR(t, csrOpts{})))
		requireCode(t, err, codes.PermissionDenied, "expired")
	})

	t.Run("malformed token", func(t *testing.T) {
		_, err := enrollClient(t, fp).Join(ctxT(t), joinReq("unum1.node.zz", makeCSR(t, csrOpts{})))
		requireCode(t, err, codes.InvalidArgument, "join token")
	})

	t.Run("bad CSRs are refused and do not burn the token", func(t *testing.T) {
		tok := mintToken(t, "misuse-d")
		ec := enrollClient(t, fp)
		for name, o := range map[string]csrOpts{
			"another name":         {uris: []string{"spiffe://unum.test/node/node-1"}},
			"another trust domain": {uris: []string{"spiffe://evil.test/node/misuse-d"}},
			"an admin identity":    {uris: []string{"spiffe://unum.test/user/admin"}},
			"extra DNS SAN":        {dns: []string{"etcd.unum.test"}},
			"two URIs":             {uris: []string{"spiffe://unum.test/node/misuse-d", "spiffe://unum.test/user/admin"}},
			"CA:true":              {caTrue: true},
		} {
			_, err := ec.Join(ctxT(t), joinReq(tok, makeCSR(t, o)))
			requireCode(t, err, codes.InvalidArgument, "csr")
			_ = name
		}
		_, err := ec.Join(ctxT(t), joinReq(tok, []byte("not a csr")))
		requireCode(t, err, codes.InvalidArgument, "csr")
		// The token still works for a well-formed request.
		_, err = ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{uris: []string{"spiffe://unum.test/node/misuse-d"}})))
		require.NoError(t, err)
	})

	t.Run("two concurrent uses: exactly one wins", func(t *testing.T) {
		tok := mintToken(t, "misuse-e")
		ec := enrollClient(t, fp)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		csrs := make([][]byte, n)
		for i := range csrs {
			csrs[i] = makeCSR(t, csrOpts{})
		}
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = ec.Join(ctxT(t), joinReq(tok, csrs[i]))
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

	t.Run("names are unique", func(t *testing.T) {
		_, err := unumv1.NewClusterClient(conn(t, "/user/admin")).CreateJoinToken(ctxT(t), &unumv1.CreateJoinTokenRequest{Name: "node-1", Roles: []string{"compute"}})
		requireCode(t, err, codes.AlreadyExists, "already exists")
		// A token stored for a name that is taken by the time it is used.
		tok, err := jointoken.New(jointoken.KindNode, fp, rand.Reader)
		require.NoError(t, err)
		rec := tok.Record("node-1", []string{"compute"}, "spiffe://unum.test/user/admin", time.Now().Add(time.Minute))
		_, err = h.etcd.Client().Put(ctxT(t), joinTokenKey(tok.ID), mustJSON(rec))
		require.NoError(t, err)
		_, err = enrollClient(t, fp).Join(ctxT(t), joinReq(tok.String(), makeCSR(t, csrOpts{})))
		requireCode(t, err, codes.AlreadyExists, "already exists")
	})

	t.Run("man in the middle with another CA", func(t *testing.T) {
		// The joiner pins a CA the server does not have: the handshake
		// fails before the token is sent, so the token stays unused.
		tok := mintToken(t, "misuse-f")
		otherKey, _ := ca.GenerateKey()
		other, err := ca.NewRoot(spiffeid.RequireTrustDomainFromString("unum.test"), otherKey, time.Now(), time.Hour)
		require.NoError(t, err)
		_, err = enrollClient(t, ca.Fingerprint(other)).Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
		require.Error(t, err)
		require.Contains(t, err.Error(), "does not match the CA fingerprint")
		_, err = enrollClient(t, fp).Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
		require.NoError(t, err, "the token must not have been consumed by the refused handshake")
	})

	t.Run("only admins mint join tokens", func(t *testing.T) {
		for _, p := range []string{"/node/node-1", "/ns/default/job/web", "/user/bob"} {
			_, err := unumv1.NewClusterClient(conn(t, p)).CreateJoinToken(ctxT(t), &unumv1.CreateJoinTokenRequest{Name: "x", Roles: []string{"compute"}})
			requireCode(t, err, codes.PermissionDenied, "denied by policy (decision node-1.")
		}
	})
}

func TestControlJoin(t *testing.T) {
	tok := mintToken(t, "ctl-2", "compute", "control")
	ec := enrollClient(t, ca.Fingerprint(h.root))
	// A control token presented by a node without a KEK is refused before
	// it is consumed.
	_, err := ec.Join(ctxT(t), joinReq(tok, makeCSR(t, csrOpts{})))
	requireCode(t, err, codes.FailedPrecondition, "--kek-file")
	interKey, _ := ca.GenerateKey()
	interCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, interKey)
	require.NoError(t, err)
	peer, _ := freeAddr()
	req := &unumv1.JoinRequest{
		Token: tok, Csr: makeCSR(t, csrOpts{}), ApiAddress: "127.0.0.1:2", IntermediateCsr: interCSR,
		EtcdCsr: makeCSR(t, csrOpts{}), EnrollmentAddress: "127.0.0.1:3",
		EtcdPeerUrl: "https://" + peer, EtcdClientUrl: "https://127.0.0.1:4", EtcdHosts: []string{"127.0.0.1"}, KekReady: true,
	}
	resp, err := ec.Join(ctxT(t), req)
	require.NoError(t, err)
	// While that member is a learner that never started, a second control
	// join is refused without consuming its token.
	tok3 := mintToken(t, "ctl-3", "compute", "control")
	req3 := &unumv1.JoinRequest{
		Token: tok3, Csr: makeCSR(t, csrOpts{}), ApiAddress: "127.0.0.1:5", IntermediateCsr: interCSR,
		EtcdCsr: makeCSR(t, csrOpts{}), EnrollmentAddress: "127.0.0.1:6",
		EtcdPeerUrl: "https://127.0.0.1:7", EtcdClientUrl: "https://127.0.0.1:8", EtcdHosts: []string{"127.0.0.1"}, KekReady: true,
	}
	_, err = ec.Join(ctxT(t), req3)
	requireCode(t, err, codes.FailedPrecondition, "still joining")
	inter, err := x509.ParseCertificate(resp.GetIntermediate())
	require.NoError(t, err)
	require.True(t, inter.IsCA)
	require.Equal(t, []string{"unum.test"}, inter.PermittedURIDomains)
	require.NoError(t, inter.CheckSignatureFrom(h.root))
	require.NotZero(t, resp.GetEtcdMemberId())
	require.Contains(t, resp.GetEtcdInitialCluster(), "ctl-2=https://"+peer)
	// The learner never starts here: remove it so the harness stays healthy.
	_, err = h.etcd.Client().MemberRemove(ctxT(t), resp.GetEtcdMemberId())
	require.NoError(t, err)
	_ = spiffeid.ID{}
}

func TestPruneJoinTokens(t *testing.T) {
	fp := ca.Fingerprint(h.root)
	now := time.Now()
	put := func(name string, expires time.Time) string {
		tok, err := jointoken.New(jointoken.KindNode, fp, rand.Reader)
		require.NoError(t, err)
		rec := tok.Record(name, []string{"compute"}, "spiffe://unum.test/user/admin", expires)
		_, err = h.etcd.Client().Put(ctxT(t), joinTokenKey(tok.ID), mustJSON(rec))
		require.NoError(t, err)
		return joinTokenKey(tok.ID)
	}
	old := put("prune-old", now.Add(-tokenRetention-time.Minute))
	recent := put("prune-recent", now.Add(-time.Minute))
	live := put("prune-live", now.Add(time.Hour))
	_, err := h.srv.pruneJoinTokens(ctxT(t), now)
	require.NoError(t, err)
	for key, want := range map[string]bool{old: false, recent: true, live: true} {
		resp, err := h.etcd.Client().Get(ctxT(t), key)
		require.NoError(t, err)
		require.Equal(t, want, len(resp.Kvs) == 1, key)
	}
}
