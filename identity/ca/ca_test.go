package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
)

var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

func TestNewRoot(t *testing.T) {
	key := mustKey(t)
	root, err := ca.NewRoot(testTD, key, testNow, 0)
	require.NoError(t, err)

	require.True(t, root.IsCA)
	require.True(t, root.BasicConstraintsValid)
	require.Equal(t, 1, root.MaxPathLen)
	require.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, root.KeyUsage)
	require.Len(t, root.URIs, 1)
	require.Equal(t, "spiffe://unum.local", root.URIs[0].String())
	require.Equal(t, "unum root CA unum.local", root.Subject.CommonName)
	require.Equal(t, []string{"unum"}, root.Subject.Organization)
	require.Equal(t, testNow.Add(-ca.ClockSkew), root.NotBefore)
	require.Equal(t, testNow.Add(ca.DefaultRootTTL), root.NotAfter)
	require.Len(t, root.SubjectKeyId, 20)
	require.LessOrEqual(t, root.SerialNumber.BitLen(), 128)
	require.Greater(t, root.SerialNumber.BitLen(), 64, "serial is random 128-bit (this fails with probability 2^-64)")
	require.NoError(t, root.CheckSignatureFrom(root))

	other, err := ca.NewRoot(testTD, key, testNow, 0)
	require.NoError(t, err)
	require.NotEqual(t, root.SerialNumber, other.SerialNumber)

	short, err := ca.NewRoot(testTD, key, testNow, time.Hour)
	require.NoError(t, err)
	require.Equal(t, testNow.Add(time.Hour), short.NotAfter)
}

func TestNewRootRefuses(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	_, err = ca.NewRoot(testTD, p384, testNow, 0)
	require.ErrorContains(t, err, "want P-256")
	_, err = ca.NewRoot(spiffeid.TrustDomain{}, mustKey(t), testNow, 0)
	require.ErrorContains(t, err, "empty trust domain")
	_, err = ca.NewRoot(testTD, mustKey(t), testNow, -time.Hour)
	require.ErrorContains(t, err, "negative validity")
	_, err = ca.NewRoot(testTD, nil, testNow, 0)
	require.ErrorContains(t, err, "no key")
}

func TestNewIntermediate(t *testing.T) {
	f := newFixture(t)
	in := f.inter
	require.True(t, in.IsCA)
	require.Equal(t, 0, in.MaxPathLen)
	require.True(t, in.MaxPathLenZero)
	require.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, in.KeyUsage)
	require.Equal(t, "unum intermediate CA cp1", in.Subject.CommonName)
	require.Len(t, in.URIs, 1)
	require.Equal(t, "spiffe://unum.local/node/cp1", in.URIs[0].String())
	require.Equal(t, []string{"unum.local"}, in.PermittedURIDomains)
	require.Equal(t, []string{".unum.local"}, in.ExcludedURIDomains)
	require.Equal(t, []string{""}, in.ExcludedDNSDomains, "every DNS name excluded")
	require.Equal(t, []string{""}, in.ExcludedEmailAddresses, "every email address excluded")
	require.Len(t, in.ExcludedIPRanges, 2, "every IPv4 and IPv6 address excluded")
	require.Len(t, in.SubjectKeyId, 20)
	require.Equal(t, f.root.SubjectKeyId, in.AuthorityKeyId)
	require.Equal(t, testNow.Add(-time.Minute).Add(ca.DefaultIntermediateTTL), in.NotAfter)
	var critical bool
	for _, ext := range in.Extensions {
		if ext.Id.Equal(oidNameConstraints) {
			critical = ext.Critical
		}
	}
	require.True(t, critical, "name constraints must be critical")
	_, err := in.Verify(x509.VerifyOptions{Roots: f.rootPool(), CurrentTime: testNow})
	require.NoError(t, err)

	// Never beyond the root.
	long, err := ca.NewIntermediate(testTD, "cp2", mustKey(t).Public(), f.root, f.rootKey, testNow, 20*ca.DefaultRootTTL)
	require.NoError(t, err)
	require.Equal(t, f.root.NotAfter, long.NotAfter)
}

func TestNewIntermediateRefuses(t *testing.T) {
	f := newFixture(t)
	otherTD := spiffeid.RequireTrustDomainFromString("other.td")
	otherRoot, err := ca.NewRoot(otherTD, f.rootKey, testNow, 0)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	pub := mustKey(t).Public()
	tests := []struct {
		name    string
		node    string
		pub     any
		root    *x509.Certificate
		rootKey *ecdsa.PrivateKey
		now     time.Time
		wantErr string
	}{
		{"bad node name", "a/b", pub, f.root, f.rootKey, testNow, `node name "a/b"`},
		{"empty node name", "", pub, f.root, f.rootKey, testNow, "node name"},
		{"p384 key", "cp2", &p384.PublicKey, f.root, f.rootKey, testNow, "want P-256"},
		{"wrong root key", "cp2", pub, f.root, mustKey(t), testNow, "root key does not match"},
		{"intermediate as root", "cp2", pub, f.inter, f.interKey, testNow, "not self-signed"},
		{"root of other trust domain", "cp2", pub, otherRoot, f.rootKey, testNow, "not the root of trust domain"},
		{"expired root", "cp2", pub, f.root, f.rootKey, f.root.NotAfter, "root certificate expired"},
		{"root not yet valid", "cp2", pub, f.root, f.rootKey, f.root.NotBefore.Add(-time.Second), "not valid until"},
		{"no root", "cp2", pub, nil, f.rootKey, testNow, "no root certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.NewIntermediate(testTD, tc.node, tc.pub, tc.root, tc.rootKey, tc.now, 0)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestSignX509SVIDVerifiesWithGoSpiffe(t *testing.T) {
	f := newFixture(t)
	key := mustKey(t)
	id := mustID(t, "spiffe://unum.local/ns/prod/job/web")
	csr, err := ca.CreateCSR(key, id)
	require.NoError(t, err)
	chain, err := f.auth.SignX509SVID(csr, id, time.Hour)
	require.NoError(t, err)
	require.Len(t, chain, 2, "leaf and intermediate, not the root")
	require.Same(t, f.inter, chain[1])

	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.root})
	gotID, chains, err := x509svid.Verify(chain, bundle, x509svid.WithTime(testNow))
	require.NoError(t, err)
	require.Equal(t, id, gotID)
	require.Len(t, chains, 1)

	leaf := chain[0]
	require.True(t, key.PublicKey.Equal(leaf.PublicKey))
	require.False(t, leaf.IsCA)
	require.True(t, leaf.BasicConstraintsValid)
	require.Equal(t, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment|x509.KeyUsageKeyAgreement, leaf.KeyUsage)
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage)
	require.Equal(t, []*url.URL{id.URL()}, leaf.URIs)
	require.Empty(t, leaf.DNSNames)
	require.Equal(t, []byte{0x30, 0x00}, leaf.RawSubject, "empty Subject")
	require.Equal(t, testNow.Add(-ca.ClockSkew), leaf.NotBefore)
	require.Equal(t, testNow.Add(time.Hour), leaf.NotAfter)
	require.LessOrEqual(t, leaf.SerialNumber.BitLen(), 128)

	// SignX509SVIDForKey issues the same shape.
	chain2, err := f.auth.SignX509SVIDForKey(key.Public(), id, time.Hour)
	require.NoError(t, err)
	_, _, err = x509svid.Verify(chain2, bundle, x509svid.WithTime(testNow))
	require.NoError(t, err)
	require.NotEqual(t, leaf.SerialNumber, chain2[0].SerialNumber)

	// Another trust domain's bundle does not verify it.
	otherRoot, err := ca.NewRoot(testTD, mustKey(t), testNow.Add(-time.Hour), 0)
	require.NoError(t, err)
	_, _, err = x509svid.Verify(chain, x509bundle.FromX509Authorities(testTD, []*x509.Certificate{otherRoot}), x509svid.WithTime(testNow))
	require.Error(t, err)
}

func TestCSRSubjectIsNeverCopied(t *testing.T) {
	f := newFixture(t)
	key := mustKey(t)
	id := mustID(t, "spiffe://unum.local/node/n1")
	csr := mustCSR(t, key, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "unum-control", Organization: []string{"system:masters"}},
		URIs:    []*url.URL{id.URL()},
	})
	chain, err := f.auth.SignX509SVID(csr, id, time.Hour)
	require.NoError(t, err)
	require.Empty(t, chain[0].Subject.CommonName)
	require.Empty(t, chain[0].Subject.Organization)
	require.Equal(t, []byte{0x30, 0x00}, chain[0].RawSubject)
}

func TestNotAfterCappedAtIssuer(t *testing.T) {
	f := newFixtureTTL(t, 2*time.Hour)
	id := mustID(t, "spiffe://unum.local/user/alice")
	chain, err := f.auth.SignX509SVIDForKey(mustKey(t).Public(), id, 24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, f.inter.NotAfter, chain[0].NotAfter)
	_, _, err = x509svid.Verify(chain, x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.root}), x509svid.WithTime(f.inter.NotAfter.Add(-time.Second)))
	require.NoError(t, err)
}

func TestSignRefuses(t *testing.T) {
	f := newFixture(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	id := mustID(t, "spiffe://unum.local/node/n1")
	at := func(now time.Time) *ca.Authority {
		a, err := ca.New(testTD, f.inter, f.interKey, nil, func() time.Time { return now })
		require.NoError(t, err)
		return a
	}
	tests := []struct {
		name    string
		auth    *ca.Authority
		pub     any
		id      spiffeid.ID
		ttl     time.Duration
		wantErr string
	}{
		{"other trust domain", f.auth, mustKey(t).Public(), mustID(t, "spiffe://other.td/node/n1"), time.Hour, `not in trust domain "unum.local"`},
		{"empty id", f.auth, mustKey(t).Public(), spiffeid.ID{}, time.Hour, "empty SPIFFE ID"},
		{"zero ttl", f.auth, mustKey(t).Public(), id, 0, "not positive"},
		{"p384 key", f.auth, &p384.PublicKey, id, time.Hour, "want P-256"},
		{"expired authority", at(f.inter.NotAfter), mustKey(t).Public(), id, time.Hour, "authority certificate expired"},
		{"authority not yet valid", at(f.inter.NotBefore.Add(-time.Second)), mustKey(t).Public(), id, time.Hour, "not valid until"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.auth.SignX509SVIDForKey(tc.pub, tc.id, tc.ttl)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
	// A CSR for one ID cannot be used to obtain another.
	csr, err := ca.CreateCSR(mustKey(t), mustID(t, "spiffe://unum.local/node/n2"))
	require.NoError(t, err)
	_, err = f.auth.SignX509SVID(csr, id, time.Hour)
	require.ErrorIs(t, err, ca.ErrCSRRefused)
}

func TestNewAuthorityRefuses(t *testing.T) {
	f := newFixture(t)
	leafChain, err := f.auth.SignX509SVIDForKey(mustKey(t).Public(), mustID(t, "spiffe://unum.local/node/n1"), time.Hour)
	require.NoError(t, err)
	otherTD := spiffeid.RequireTrustDomainFromString("other.td")
	otherRoot, err := ca.NewRoot(otherTD, f.rootKey, testNow, 0)
	require.NoError(t, err)
	otherInter, err := ca.NewIntermediate(otherTD, "cp1", f.interKey.Public(), otherRoot, f.rootKey, testNow, 0)
	require.NoError(t, err)
	tests := []struct {
		name    string
		cert    *x509.Certificate
		key     *ecdsa.PrivateKey
		chain   []*x509.Certificate
		wantErr string
	}{
		{"root", f.root, f.rootKey, nil, "self-signed"},
		{"key mismatch", f.inter, mustKey(t), nil, "key does not match"},
		{"leaf", leafChain[0], f.interKey, nil, "not a CA"},
		{"other trust domain", otherInter, f.interKey, nil, "not in trust domain"},
		{"nil cert", nil, f.interKey, nil, "no certificate"},
		{"root in chain", f.inter, f.interKey, []*x509.Certificate{f.root}, "chain excludes the root"},
		{"unrelated chain", f.inter, f.interKey, []*x509.Certificate{otherInter}, "did not sign"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var key *ecdsa.PrivateKey = tc.key
			_, err := ca.New(testTD, tc.cert, key, tc.chain, nil)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// TestIntermediateNameConstraints signs leaves with the intermediate key
// directly, bypassing the Authority's checks, as a thief of that key would:
// the name constraints must still keep them from verifying.
func TestIntermediateNameConstraints(t *testing.T) {
	f := newFixture(t)
	own := []*url.URL{mustID(t, "spiffe://unum.local/ns/a/job/b").URL()}
	uris := func(s string) []*url.URL {
		u, err := url.Parse(s)
		require.NoError(t, err)
		return []*url.URL{u}
	}
	tests := []struct {
		name    string
		leaf    x509.Certificate
		wantErr bool
	}{
		{"own trust domain", x509.Certificate{URIs: own}, false},
		{"other trust domain", x509.Certificate{URIs: uris("spiffe://other.td/x")}, true},
		{"subdomain of trust domain", x509.Certificate{URIs: uris("spiffe://evil.unum.local/x")}, true},
		{"suffix-sharing domain", x509.Certificate{URIs: uris("spiffe://notunum.local/x")}, true},
		{"dns name", x509.Certificate{URIs: own, DNSNames: []string{"etcd.unum.local"}}, true},
		{"single-label dns name", x509.Certificate{URIs: own, DNSNames: []string{"localhost"}}, true},
		{"ipv4 address", x509.Certificate{URIs: own, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, true},
		{"ipv6 address", x509.Certificate{URIs: own, IPAddresses: []net.IP{net.IPv6loopback}}, true},
		{"email address", x509.Certificate{URIs: own, EmailAddresses: []string{"root@unum.local"}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leafKey := mustKey(t)
			tmpl := tc.leaf
			tmpl.SerialNumber = big1()
			tmpl.NotBefore = testNow.Add(-time.Minute)
			tmpl.NotAfter = testNow.Add(time.Hour)
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			der, err := x509.CreateCertificate(rand.Reader, &tmpl, f.inter, leafKey.Public(), f.interKey)
			require.NoError(t, err)
			leaf, err := x509.ParseCertificate(der)
			require.NoError(t, err)
			inter := x509.NewCertPool()
			inter.AddCert(f.inter)
			_, err = leaf.Verify(x509.VerifyOptions{
				Roots: f.rootPool(), Intermediates: inter, CurrentTime: testNow,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			})
			if !tc.wantErr {
				require.NoError(t, err)
				return
			}
			var invalid x509.CertificateInvalidError
			require.ErrorAs(t, err, &invalid)
			require.Equal(t, x509.CANotAuthorizedForThisName, invalid.Reason, "refused because of the name constraint: %v", err)
		})
	}
}

// TestIntermediateCannotIssueCA checks MaxPathLen 0: a CA certificate signed
// by the intermediate key cannot anchor a leaf.
func TestIntermediateCannotIssueCA(t *testing.T) {
	f := newFixture(t)
	subKey := mustKey(t)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big1(), Subject: pkix.Name{CommonName: "rogue"},
		NotBefore: testNow.Add(-time.Minute), NotAfter: testNow.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{mustID(t, "spiffe://unum.local/rogue").URL()},
	}, f.inter, subKey.Public(), f.interKey)
	require.NoError(t, err)
	sub, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	a, err := ca.New(testTD, sub, subKey, []*x509.Certificate{f.inter}, func() time.Time { return testNow })
	require.NoError(t, err, "the Authority itself does not verify path length; verifiers do")
	chain, err := a.SignX509SVIDForKey(mustKey(t).Public(), mustID(t, "spiffe://unum.local/node/x"), time.Hour)
	require.NoError(t, err)
	require.Len(t, chain, 3)
	_, _, err = x509svid.Verify(chain, x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.root}), x509svid.WithTime(testNow))
	require.ErrorContains(t, err, "too many intermediates")
}

func TestSignConcurrently(t *testing.T) {
	f := newFixture(t)
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.root})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			key, err := ca.GenerateKey()
			if err != nil {
				errs <- err
				return
			}
			id := spiffeid.RequireFromSegments(testTD, "node", "n"+string(rune('a'+i)))
			csr, err := ca.CreateCSR(key, id)
			if err != nil {
				errs <- err
				return
			}
			chain, err := f.auth.SignX509SVID(csr, id, time.Hour)
			if err != nil {
				errs <- err
				return
			}
			_, _, err = x509svid.Verify(chain, bundle, x509svid.WithTime(testNow))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestCreateCSR(t *testing.T) {
	key := mustKey(t)
	id := mustID(t, "spiffe://unum.local/user/alice")
	der, err := ca.CreateCSR(key, id)
	require.NoError(t, err)
	csr, err := ca.VerifyCSR(der, id)
	require.NoError(t, err)
	require.Equal(t, []byte{0x30, 0x00}, csr.RawSubject)
	require.Equal(t, []*url.URL{id.URL()}, csr.URIs)
	_, err = ca.CreateCSR(key, spiffeid.ID{})
	require.Error(t, err)
	_, err = ca.CreateCSR(nil, id)
	require.Error(t, err)
}

func TestVerifyCSR(t *testing.T) {
	want := mustID(t, "spiffe://unum.local/node/n1")
	key := mustKey(t)
	valid, err := ca.CreateCSR(key, want)
	require.NoError(t, err)
	for name, tc := range badCSRs(t, want) {
		t.Run(name, func(t *testing.T) {
			_, err := ca.VerifyCSR(tc.der, want)
			require.ErrorIs(t, err, ca.ErrCSRRefused)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
	t.Run("valid with URI", func(t *testing.T) {
		csr, err := ca.VerifyCSR(valid, want)
		require.NoError(t, err)
		require.True(t, key.PublicKey.Equal(csr.PublicKey))
	})
	t.Run("valid without URI", func(t *testing.T) {
		_, err := ca.VerifyCSR(mustCSR(t, key, &x509.CertificateRequest{}), want)
		require.NoError(t, err)
	})
	t.Run("valid with harmless extensions", func(t *testing.T) {
		bc, err := asn1.Marshal(struct{}{})
		require.NoError(t, err)
		ku, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x80}, BitLength: 1}) // digitalSignature
		require.NoError(t, err)
		_, err = ca.VerifyCSR(mustCSR(t, key, &x509.CertificateRequest{
			URIs: []*url.URL{want.URL()},
			ExtraExtensions: []pkix.Extension{
				{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
				{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: ku},
			},
		}), want)
		require.NoError(t, err)
	})
	t.Run("no wanted id", func(t *testing.T) {
		_, err := ca.VerifyCSR(valid, spiffeid.ID{})
		require.ErrorIs(t, err, ca.ErrCSRRefused)
	})
}

func big1() *big.Int { return big.NewInt(1) }
