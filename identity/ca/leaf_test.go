package ca_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/unumos/unum/identity/ca"
)

var (
	oidKeyUsage          = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName    = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints  = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidAuthorityKeyID    = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtKeyUsage       = asn1.ObjectIdentifier{2, 5, 29, 37}
	longHierarchyStart   = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	longHierarchyTTL     = 80 * 365 * 24 * time.Hour
	y2050HierarchyStart  = time.Date(2049, 1, 1, 0, 0, 0, 0, time.UTC)
	y2050HierarchyTTL    = 10 * 365 * 24 * time.Hour
	wantLeafExtensionIDs = []asn1.ObjectIdentifier{oidKeyUsage, oidExtKeyUsage, oidBasicConstraints, oidAuthorityKeyID, oidSubjectAltName}
	wantLeafCritical     = []bool{true, false, true, false, true}
)

// hierarchy is a root and intermediate of td, both valid from start for ttl.
type hierarchy struct {
	td       spiffeid.TrustDomain
	root     *x509.Certificate
	inter    *x509.Certificate
	interKey *ecdsa.PrivateKey
}

func newHierarchy(t testing.TB, td spiffeid.TrustDomain, start time.Time, ttl time.Duration) *hierarchy {
	t.Helper()
	rootKey := mustKey(t)
	root, err := ca.NewRoot(td, rootKey, start, ttl)
	require.NoError(t, err)
	h := &hierarchy{td: td, root: root, interKey: mustKey(t)}
	h.inter, err = ca.NewIntermediate(td, "cp1", h.interKey.Public(), root, rootKey, start.Add(time.Minute), ttl)
	require.NoError(t, err)
	return h
}

// authorityAt is an Authority for h whose clock always reads now.
func (h *hierarchy) authorityAt(t testing.TB, now time.Time) *ca.Authority {
	t.Helper()
	a, err := ca.New(h.td, h.inter, h.interKey, nil, func() time.Time { return now })
	require.NoError(t, err)
	return a
}

// issueBothWays issues one leaf through the direct path and the
// x509.CreateCertificate path of a, with the same serial, by calling sign.
func issueBothWays(t testing.TB, a *ca.Authority, serial *big.Int, sign func(*ca.Authority) ([]*x509.Certificate, error)) (direct, template []*x509.Certificate) {
	t.Helper()
	fixed := func() *big.Int { return new(big.Int).Set(serial) }
	d := a.WithTestSeams(fixed, false)
	tm := a.WithTestSeams(fixed, true)
	require.True(t, d.SignsDirectly(), "an *ecdsa.PrivateKey Authority signs leaves directly")
	require.False(t, tm.SignsDirectly())
	direct, err := sign(d)
	require.NoError(t, err)
	template, err = sign(tm)
	require.NoError(t, err)
	return direct, template
}

// requireSameLeaf requires got (direct path) and want (template path) to be
// the same certificate apart from the signature value, issued by inter.
func requireSameLeaf(t testing.TB, inter *x509.Certificate, got, want *x509.Certificate) {
	t.Helper()
	require.Equal(t, 3, got.Version)
	require.Equal(t, want.Version, got.Version)
	require.Equal(t, 0, want.SerialNumber.Cmp(got.SerialNumber), "serial %s vs %s", got.SerialNumber, want.SerialNumber)
	require.Equal(t, x509.ECDSAWithSHA256, got.SignatureAlgorithm)
	require.Equal(t, want.SignatureAlgorithm, got.SignatureAlgorithm)
	require.Equal(t, inter.RawSubject, got.RawIssuer)
	require.Equal(t, want.RawIssuer, got.RawIssuer)
	require.Equal(t, want.Issuer.String(), got.Issuer.String())
	require.Equal(t, []byte{0x30, 0x00}, got.RawSubject, "empty Subject")
	require.Equal(t, want.RawSubject, got.RawSubject)
	require.Equal(t, want.Subject.String(), got.Subject.String())
	require.True(t, want.NotBefore.Equal(got.NotBefore), "NotBefore %s vs %s", got.NotBefore, want.NotBefore)
	require.True(t, want.NotAfter.Equal(got.NotAfter), "NotAfter %s vs %s", got.NotAfter, want.NotAfter)
	require.Equal(t, want.RawSubjectPublicKeyInfo, got.RawSubjectPublicKeyInfo)
	require.Equal(t, want.KeyUsage, got.KeyUsage)
	require.Equal(t, want.ExtKeyUsage, got.ExtKeyUsage)
	require.Empty(t, got.UnknownExtKeyUsage)
	require.True(t, got.BasicConstraintsValid)
	require.Equal(t, want.BasicConstraintsValid, got.BasicConstraintsValid)
	require.False(t, got.IsCA)
	require.Equal(t, want.IsCA, got.IsCA)
	require.Equal(t, -1, got.MaxPathLen)
	require.Equal(t, want.MaxPathLen, got.MaxPathLen)
	require.Empty(t, got.SubjectKeyId)
	require.Equal(t, want.SubjectKeyId, got.SubjectKeyId)
	require.Equal(t, inter.SubjectKeyId, got.AuthorityKeyId)
	require.Equal(t, want.AuthorityKeyId, got.AuthorityKeyId)
	require.Len(t, got.URIs, 1)
	require.Equal(t, want.URIs[0].String(), got.URIs[0].String())
	require.Empty(t, got.DNSNames)
	require.Empty(t, got.IPAddresses)
	require.Empty(t, got.EmailAddresses)
	require.Equal(t, want.Extensions, got.Extensions)
	gotIDs := make([]asn1.ObjectIdentifier, len(got.Extensions))
	gotCritical := make([]bool, len(got.Extensions))
	for i, e := range got.Extensions {
		gotIDs[i], gotCritical[i] = e.Id, e.Critical
	}
	require.Equal(t, wantLeafExtensionIDs, gotIDs)
	require.Equal(t, wantLeafCritical, gotCritical, "KU, BC and SAN (empty Subject) critical; EKU and AKID not")
	require.Empty(t, got.ExtraExtensions)
	require.Empty(t, got.UnhandledCriticalExtensions)

	gotTBS, gotAlg, gotSig := certificateParts(t, got.Raw)
	wantTBS, wantAlg, _ := certificateParts(t, want.Raw)
	require.Equal(t, wantAlg, gotAlg, "outer signatureAlgorithm")
	require.Equal(t, byte(0), gotSig[0], "signature BIT STRING has no unused bits")
	require.Equal(t, want.RawTBSCertificate, got.RawTBSCertificate, "TBSCertificate differs from x509.CreateCertificate's")
	require.Equal(t, wantTBS, gotTBS)
	require.NoError(t, got.CheckSignatureFrom(inter))
}

// certificateParts splits a DER certificate into its three fields, refusing
// trailing data.
func certificateParts(t testing.TB, der []byte) (tbs, alg, sig []byte) {
	t.Helper()
	in := cryptobyte.String(der)
	var cert, tbsS, algS, sigS cryptobyte.String
	require.True(t, in.ReadASN1(&cert, cbasn1.SEQUENCE) && in.Empty(), "certificate is one SEQUENCE")
	require.True(t, cert.ReadASN1Element(&tbsS, cbasn1.SEQUENCE), "tbsCertificate")
	require.True(t, cert.ReadASN1Element(&algS, cbasn1.SEQUENCE), "signatureAlgorithm")
	require.True(t, cert.ReadASN1(&sigS, cbasn1.BIT_STRING), "signatureValue")
	require.True(t, cert.Empty(), "nothing after signatureValue")
	return tbsS, algS, sigS
}

// randomTestSerial draws a positive serial of 1 to 20 octets, sometimes with the
// top bit set (so that DER needs a leading zero octet).
func randomTestSerial(rng *mrand.Rand) *big.Int {
	b := make([]byte, 1+rng.IntN(20))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if rng.IntN(2) == 0 {
		b[0] |= 0x80
	}
	n := new(big.Int).SetBytes(b)
	if n.Sign() == 0 {
		n.SetInt64(1)
	}
	return n
}

const idSegmentChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"

func randomTestID(t testing.TB, rng *mrand.Rand, td spiffeid.TrustDomain) spiffeid.ID {
	t.Helper()
	segs := make([]string, rng.IntN(6))
	for i := range segs {
		for {
			var sb strings.Builder
			for range 1 + rng.IntN(24) {
				sb.WriteByte(idSegmentChars[rng.IntN(len(idSegmentChars))])
			}
			if s := sb.String(); s != "." && s != ".." {
				segs[i] = s
				break
			}
		}
	}
	id, err := spiffeid.FromSegments(td, segs...)
	require.NoError(t, err)
	return id
}

// randomTestClock picks an instant at which h's intermediate is valid, often
// close to one of its ends or to the 2050 change of time encoding, at any
// nanosecond and in a random zone.
func randomTestClock(rng *mrand.Rand, h *hierarchy, ttl time.Duration) time.Time {
	from, to := h.inter.NotBefore, h.inter.NotAfter
	var now time.Time
	switch rng.IntN(4) {
	case 0: // NotBefore before the issuer's
		now = from.Add(time.Duration(rng.Int64N(int64(2 * ca.ClockSkew))))
	case 1: // NotAfter capped at the issuer's
		span := min(ttl, to.Sub(from))
		now = to.Add(-time.Duration(1 + rng.Int64N(int64(span))))
	case 2: // around the UTCTime/GeneralizedTime change
		now = time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int64N(int64(4*time.Hour))) - 2*time.Hour)
	default:
		now = from.Add(time.Duration(rng.Int64N(int64(to.Sub(from)))))
	}
	if now.Before(from) || !now.Before(to) {
		now = from
	}
	zone := time.FixedZone("test", (rng.IntN(27*60)-12*60)*60)
	return now.In(zone)
}

func randomTestTTL(rng *mrand.Rand) time.Duration {
	switch rng.IntN(4) {
	case 0:
		return time.Duration(1 + rng.Int64N(int64(time.Minute))) // sub-second parts, shorter than ClockSkew
	case 1:
		return time.Duration(1 + rng.Int64N(int64(48*time.Hour)))
	case 2:
		return time.Duration(1+rng.IntN(30)) * 365 * 24 * time.Hour
	default:
		return time.Hour
	}
}

// TestDirectLeafMatchesTemplate is the golden equivalence of the two leaf
// encodings: for random keys, IDs, TTLs, clocks, zones, serials and trust
// domains, through every issuing method, the directly encoded leaf has a
// TBSCertificate byte-identical to x509.CreateCertificate's, and the
// validity rules hold.
func TestDirectLeafMatchesTemplate(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, seed>>1))
	tds := []spiffeid.TrustDomain{testTD}
	for i := range 3 {
		tds = append(tds, spiffeid.RequireTrustDomainFromString(fmt.Sprintf("td-%d.%d.example", i, rng.IntN(1000))))
	}
	const perTrustDomain = 150
	// What the random cases covered: each must be hit, or the test proves
	// less than it claims.
	var cappedNotBefore, cappedNotAfter, utcNotAfter, generalizedNotAfter, serialTopBit int
	defer func() {
		if t.Failed() {
			return
		}
		t.Logf("covered: NotBefore before the issuer's %d, NotAfter capped %d, NotAfter UTCTime %d, GeneralizedTime %d, serial with top bit set %d",
			cappedNotBefore, cappedNotAfter, utcNotAfter, generalizedNotAfter, serialTopBit)
		for name, n := range map[string]int{
			"NotBefore before the issuer's": cappedNotBefore, "NotAfter capped at the issuer's": cappedNotAfter,
			"NotAfter as UTCTime": utcNotAfter, "NotAfter as GeneralizedTime": generalizedNotAfter,
			"serial with its top bit set": serialTopBit,
		} {
			require.Positive(t, n, "no random case with %s", name)
		}
	}()
	for _, td := range tds {
		h := newHierarchy(t, td, longHierarchyStart, longHierarchyTTL)
		for i := range perTrustDomain {
			key := mustKey(t)
			id := randomTestID(t, rng, td)
			ttl := randomTestTTL(rng)
			now := randomTestClock(rng, h, ttl)
			serial := randomTestSerial(rng)
			a := h.authorityAt(t, now)

			var sign func(*ca.Authority) ([]*x509.Certificate, error)
			method := []string{"SignX509SVIDForKey", "SignX509SVID", "SignVerifiedCSR"}[i%3]
			switch method {
			case "SignX509SVIDForKey":
				sign = func(a *ca.Authority) ([]*x509.Certificate, error) { return a.SignX509SVIDForKey(key.Public(), id, ttl) }
			case "SignX509SVID":
				csrDER, err := ca.CreateCSR(key, id)
				require.NoError(t, err)
				sign = func(a *ca.Authority) ([]*x509.Certificate, error) { return a.SignX509SVID(csrDER, id, ttl) }
			case "SignVerifiedCSR":
				csrDER, err := ca.CreateCSR(key, id)
				require.NoError(t, err)
				csr, err := ca.VerifyCSR(csrDER, id)
				require.NoError(t, err)
				sign = func(a *ca.Authority) ([]*x509.Certificate, error) { return a.SignVerifiedCSR(csr, id, ttl) }
			}
			ok := t.Run(fmt.Sprintf("%s/%d/%s", td.Name(), i, method), func(t *testing.T) {
				t.Logf("id %s, now %s, ttl %s, serial %x", id, now.Format(time.RFC3339Nano), ttl, serial)
				direct, template := issueBothWays(t, a, serial, sign)
				require.Len(t, direct, 2)
				require.Same(t, h.inter, direct[1])
				requireSameLeaf(t, h.inter, direct[0], template[0])

				leaf := direct[0]
				require.True(t, key.PublicKey.Equal(leaf.PublicKey))
				require.Equal(t, id.String(), leaf.URIs[0].String())
				// Exactly now-ClockSkew, even before the issuer's NotBefore:
				// revocation reads the issue time back from it.
				wantNotBefore := now.Add(-ca.ClockSkew)
				wantNotAfter := now.Add(ttl)
				if wantNotAfter.After(h.inter.NotAfter) {
					wantNotAfter = h.inter.NotAfter
				}
				require.Equal(t, wantNotBefore.UTC().Truncate(time.Second), leaf.NotBefore)
				require.Equal(t, wantNotAfter.UTC().Truncate(time.Second), leaf.NotAfter)

				if leaf.NotBefore.Before(h.inter.NotBefore) {
					cappedNotBefore++
				}
				if leaf.NotAfter.Equal(h.inter.NotAfter) {
					cappedNotAfter++
				}
				if _, _, naTag, _ := validityTimes(t, leaf.RawTBSCertificate); naTag == cbasn1.UTCTime {
					utcNotAfter++
				} else {
					generalizedNotAfter++
				}
				if serial.Bytes()[0]&0x80 != 0 {
					serialTopBit++
				}
			})
			if !ok {
				return // one failure says enough; the rest would repeat it
			}
		}
	}
}

// TestDirectLeafVerifies checks a directly signed leaf with go-spiffe and
// with OpenSSL, through the name-constrained intermediate.
func TestDirectLeafVerifies(t *testing.T) {
	f := newFixture(t)
	require.True(t, f.auth.SignsDirectly())
	key := mustKey(t)
	id := mustID(t, "spiffe://unum.local/ns/prod/job/web")
	csr, err := ca.CreateCSR(key, id)
	require.NoError(t, err)
	chain, err := f.auth.SignX509SVID(csr, id, time.Hour)
	require.NoError(t, err)
	require.Len(t, chain, 2)

	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.root})
	gotID, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(testNow))
	require.NoError(t, err)
	require.Equal(t, id, gotID)
	require.NotEmpty(t, f.inter.PermittedURIDomains, "the chain runs through the name-constrained intermediate")

	t.Run("openssl", func(t *testing.T) {
		opensslVerify(t, f.root, chain, testNow)
		// The same check refuses the leaf once it has expired, so the
		// acceptance above is OpenSSL's verdict and not a harness artefact.
		out, err := runOpenSSLVerify(t, f.root, chain, chain[0].NotAfter.Add(time.Minute), "sslclient")
		require.Error(t, err)
		require.Contains(t, out, "certificate has expired")
	})
}

// opensslVerify requires `openssl verify -x509_strict` to accept chain
// (leaf first) against root at the time at, for both TLS client and server
// use.
func opensslVerify(t *testing.T, root *x509.Certificate, chain []*x509.Certificate, at time.Time) {
	t.Helper()
	for _, purpose := range []string{"sslclient", "sslserver"} {
		out, err := runOpenSSLVerify(t, root, chain, at, purpose)
		require.NoError(t, err, "openssl verify -purpose %s: %s", purpose, out)
		require.True(t, strings.HasSuffix(out, "leaf.pem: OK\n"), "openssl verify -purpose %s: %s", purpose, out)
	}
}

// runOpenSSLVerify skips t when openssl is not installed.
func runOpenSSLVerify(t *testing.T, root *x509.Certificate, chain []*x509.Certificate, at time.Time, purpose string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skipf("openssl not installed, cannot cross-check with a second verifier: %v", err)
	}
	dir := t.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		var buf bytes.Buffer
		for _, c := range certs {
			require.NoError(t, pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
		}
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, buf.Bytes(), 0o600))
		return p
	}
	out, err := exec.Command(bin, "verify", "-x509_strict", "-purpose", purpose,
		"-attime", strconv.FormatInt(at.Unix(), 10),
		"-CAfile", write("root.pem", root), "-untrusted", write("inter.pem", chain[1:]...),
		write("leaf.pem", chain[0])).CombinedOutput()
	return string(out), err
}

// TestLeafTimesAcross2050 checks RFC 5280 §4.1.2.5: validity times are
// UTCTime through 2049 and GeneralizedTime from 2050, decided in UTC.
func TestLeafTimesAcross2050(t *testing.T) {
	h := newHierarchy(t, testTD, y2050HierarchyStart, y2050HierarchyTTL)
	plus5 := time.FixedZone("UTC+5", 5*60*60)
	const utc, gen = cbasn1.UTCTime, cbasn1.GeneralizedTime
	tests := []struct {
		name                   string
		now                    time.Time
		ttl                    time.Duration
		notBeforeTag           cbasn1.Tag
		notBefore              string
		notAfterTag            cbasn1.Tag
		notAfter               string
		wantNotBefore, wantEnd time.Time
	}{
		{"both in 2049", time.Date(2049, 6, 1, 12, 0, 0, 700, time.UTC), time.Hour,
			utc, "490601115930Z", utc, "490601130000Z",
			time.Date(2049, 6, 1, 11, 59, 30, 0, time.UTC), time.Date(2049, 6, 1, 13, 0, 0, 0, time.UTC)},
		{"straddles 2050", time.Date(2049, 12, 31, 23, 59, 0, 0, time.UTC), 2 * time.Hour,
			utc, "491231235830Z", gen, "20500101015900Z",
			time.Date(2049, 12, 31, 23, 58, 30, 0, time.UTC), time.Date(2050, 1, 1, 1, 59, 0, 0, time.UTC)},
		{"ends in the last second of 2049", time.Date(2049, 12, 31, 23, 59, 59, 500_000_000, time.UTC), 400 * time.Millisecond,
			utc, "491231235929Z", utc, "491231235959Z",
			time.Date(2049, 12, 31, 23, 59, 29, 0, time.UTC), time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)},
		{"ends at the first instant of 2050", time.Date(2049, 12, 31, 23, 59, 59, 999_999_999, time.UTC), time.Nanosecond,
			utc, "491231235929Z", gen, "20500101000000Z",
			time.Date(2049, 12, 31, 23, 59, 29, 0, time.UTC), time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"both after 2050", time.Date(2051, 3, 1, 8, 0, 0, 0, time.UTC), time.Hour,
			gen, "20510301075930Z", gen, "20510301090000Z",
			time.Date(2051, 3, 1, 7, 59, 30, 0, time.UTC), time.Date(2051, 3, 1, 9, 0, 0, 0, time.UTC)},
		{"2050 locally but 2049 in UTC", time.Date(2050, 1, 1, 2, 0, 0, 0, plus5), time.Hour,
			utc, "491231205930Z", utc, "491231220000Z",
			time.Date(2049, 12, 31, 20, 59, 30, 0, time.UTC), time.Date(2049, 12, 31, 22, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := h.authorityAt(t, tc.now)
			key := mustKey(t)
			id := mustID(t, "spiffe://unum.local/ns/prod/job/web")
			direct, template := issueBothWays(t, a, big.NewInt(0x42), func(a *ca.Authority) ([]*x509.Certificate, error) {
				return a.SignX509SVIDForKey(key.Public(), id, tc.ttl)
			})
			leaf := direct[0]
			requireSameLeaf(t, h.inter, leaf, template[0])

			nbTag, nb, naTag, na := validityTimes(t, leaf.RawTBSCertificate)
			require.Equal(t, tc.notBeforeTag, nbTag, "notBefore encoding (UTCTime is 23, GeneralizedTime 24)")
			require.Equal(t, tc.notBefore, nb)
			require.Equal(t, tc.notAfterTag, naTag, "notAfter encoding (UTCTime is 23, GeneralizedTime 24)")
			require.Equal(t, tc.notAfter, na)
			require.Equal(t, tc.wantNotBefore, leaf.NotBefore)
			require.Equal(t, tc.wantEnd, leaf.NotAfter)

			bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{h.root})
			_, _, err := x509svid.Verify(direct, bundle, x509svid.WithTime(leaf.NotBefore))
			require.NoError(t, err)
			t.Run("openssl", func(t *testing.T) {
				opensslVerify(t, h.root, direct, leaf.NotBefore)
			})
		})
	}
}

// validityTimes reads the tag and text of notBefore and notAfter from a DER
// TBSCertificate.
func validityTimes(t testing.TB, tbs []byte) (nbTag cbasn1.Tag, nb string, naTag cbasn1.Tag, na string) {
	t.Helper()
	in := cryptobyte.String(tbs)
	var body, validity, nbS, naS cryptobyte.String
	require.True(t, in.ReadASN1(&body, cbasn1.SEQUENCE))
	require.True(t, body.SkipASN1(cbasn1.Tag(0).Constructed().ContextSpecific()), "version")
	require.True(t, body.SkipASN1(cbasn1.INTEGER), "serialNumber")
	require.True(t, body.SkipASN1(cbasn1.SEQUENCE), "signature")
	require.True(t, body.SkipASN1(cbasn1.SEQUENCE), "issuer")
	require.True(t, body.ReadASN1(&validity, cbasn1.SEQUENCE), "validity")
	require.True(t, validity.ReadAnyASN1(&nbS, &nbTag), "notBefore")
	require.True(t, validity.ReadAnyASN1(&naS, &naTag), "notAfter")
	require.True(t, validity.Empty())
	return nbTag, string(nbS), naTag, string(naS)
}

// opaqueSigner hides an ECDSA key behind crypto.Signer, as an HSM or KMS
// signer would; corrupt makes it return a broken signature.
type opaqueSigner struct {
	key     *ecdsa.PrivateKey
	corrupt bool
	calls   atomic.Int32
}

func (s *opaqueSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.calls.Add(1)
	sig, err := s.key.Sign(r, digest, opts)
	if err == nil && s.corrupt {
		sig[len(sig)-1] ^= 1
	}
	return sig, err
}

// TestOpaqueSignerUsesCreateCertificate checks that a signer that is not an
// in-process ECDSA key keeps x509.CreateCertificate and its check of the
// signature the signer returned.
func TestOpaqueSignerUsesCreateCertificate(t *testing.T) {
	f := newFixture(t)
	id := mustID(t, "spiffe://unum.local/ns/prod/job/web")
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.root})

	good := &opaqueSigner{key: f.interKey}
	a, err := ca.New(testTD, f.inter, good, nil, func() time.Time { return testNow })
	require.NoError(t, err)
	require.False(t, a.SignsDirectly())
	chain, err := a.SignX509SVIDForKey(mustKey(t).Public(), id, time.Hour)
	require.NoError(t, err)
	require.Equal(t, int32(1), good.calls.Load())
	_, _, err = x509svid.Verify(chain, bundle, x509svid.WithTime(testNow))
	require.NoError(t, err)

	broken := &opaqueSigner{key: f.interKey, corrupt: true}
	a, err = ca.New(testTD, f.inter, broken, nil, func() time.Time { return testNow })
	require.NoError(t, err)
	_, err = a.SignX509SVIDForKey(mustKey(t).Public(), id, time.Hour)
	require.ErrorContains(t, err, "signature returned by signer is invalid")
}

func TestSignVerifiedCSR(t *testing.T) {
	f := newFixture(t)
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{f.root})
	id := mustID(t, "spiffe://unum.local/ns/prod/job/web")
	key := mustKey(t)
	verified := func(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest, id spiffeid.ID) *x509.CertificateRequest {
		csr, err := ca.VerifyCSR(mustCSR(t, key, tmpl), id)
		require.NoError(t, err)
		return csr
	}

	t.Run("issues for the verified key", func(t *testing.T) {
		for name, tmpl := range map[string]*x509.CertificateRequest{
			"with URI SAN":    {URIs: []*url.URL{id.URL()}},
			"without URI SAN": {},
		} {
			t.Run(name, func(t *testing.T) {
				chain, err := f.auth.SignVerifiedCSR(verified(t, key, tmpl, id), id, time.Hour)
				require.NoError(t, err)
				gotID, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(testNow))
				require.NoError(t, err)
				require.Equal(t, id, gotID)
				require.True(t, key.PublicKey.Equal(chain[0].PublicKey))
			})
		}
	})

	t.Run("same leaf as SignX509SVID", func(t *testing.T) {
		csrDER, err := ca.CreateCSR(key, id)
		require.NoError(t, err)
		csr, err := ca.VerifyCSR(csrDER, id)
		require.NoError(t, err)
		serial := func() *big.Int { return big.NewInt(7) }
		a := f.auth.WithTestSeams(serial, false)
		viaDER, err := a.SignX509SVID(csrDER, id, time.Hour)
		require.NoError(t, err)
		viaCSR, err := a.SignVerifiedCSR(csr, id, time.Hour)
		require.NoError(t, err)
		require.Equal(t, viaDER[0].RawTBSCertificate, viaCSR[0].RawTBSCertificate)
	})

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	other := mustID(t, "spiffe://unum.local/ns/prod/job/other")
	tests := []struct {
		name      string
		csr       *x509.CertificateRequest
		id        spiffeid.ID
		wantErr   string
		wantIsCSR bool
	}{
		{"no csr", nil, id, "no certificate signing request", false},
		{"empty id", verified(t, key, &x509.CertificateRequest{}, id), spiffeid.ID{}, "empty SPIFFE ID", false},
		{"other trust domain", verified(t, key, &x509.CertificateRequest{}, id), mustID(t, "spiffe://other.td/ns/prod/job/web"), `not in trust domain "unum.local"`, false},
		{"verified for another id", verified(t, key, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, id), other, "is not the SPIFFE ID being issued", true},
		{"two URIs", &x509.CertificateRequest{PublicKey: key.Public(), URIs: []*url.URL{id.URL(), id.URL()}}, id, "at most one", true},
		{"p384 key", &x509.CertificateRequest{PublicKey: p384.Public()}, id, "want P-256", false},
		{"no key", &x509.CertificateRequest{}, id, "no public key", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := f.auth.SignVerifiedCSR(tc.csr, tc.id, time.Hour)
			require.ErrorContains(t, err, tc.wantErr)
			require.Nil(t, chain)
			require.Equal(t, tc.wantIsCSR, errors.Is(err, ca.ErrCSRRefused))
		})
	}
}

// FuzzDirectLeafMatchesTemplate searches for a serial, clock, zone, TTL and
// SPIFFE path for which the directly encoded leaf differs from
// x509.CreateCertificate's, or one path fails and the other does not.
func FuzzDirectLeafMatchesTemplate(f *testing.F) {
	h := newHierarchy(f, testTD, longHierarchyStart, longHierarchyTTL)
	keys := make([]*ecdsa.PrivateKey, 4)
	for i := range keys {
		keys[i] = mustKey(f)
	}
	f.Add([]byte{1}, testNow.Unix(), uint32(0), int64(time.Hour), int16(0), "/ns/prod/job/web", uint8(0))
	f.Add([]byte{0xff, 0xff}, time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC).Unix(), uint32(999_999_999), int64(1), int16(-600), "/a", uint8(1))
	f.Add(bytes.Repeat([]byte{0x80}, 20), h.inter.NotAfter.Unix()-1, uint32(5), int64(100*365*24*time.Hour), int16(330), "", uint8(2))
	f.Add([]byte{0x7f}, h.inter.NotBefore.Unix(), uint32(1), int64(time.Second), int16(840), "/node/n1", uint8(3))
	f.Add([]byte{}, int64(0), uint32(0), int64(-1), int16(0), "/x", uint8(0))
	f.Fuzz(func(t *testing.T, serialBytes []byte, unix int64, nanos uint32, ttl int64, zoneMinutes int16, path string, keyIndex uint8) {
		serial := new(big.Int).SetBytes(serialBytes)
		if serial.Sign() <= 0 {
			return // the CA's serials are positive (and the direct path refuses others)
		}
		id, err := spiffeid.FromPath(testTD, path)
		if err != nil {
			// Most byte strings are not SPIFFE paths; map them onto one so
			// that the input still reaches the encoders.
			if id, err = spiffeid.FromPath(testTD, asSPIFFEPath(path)); err != nil {
				return
			}
		}
		// Any instant in the intermediate's validity, so that every input
		// reaches the encoders (issue's refusals outside it are shared).
		from := h.inter.NotBefore.Unix()
		span := h.inter.NotAfter.Unix() - from
		offset := unix % span
		if offset < 0 {
			offset += span
		}
		now := time.Unix(from+offset, int64(nanos%1_000_000_000)).In(time.FixedZone("fuzz", int(zoneMinutes)%(18*60)*60))
		key := keys[int(keyIndex)%len(keys)]
		a, err := ca.New(testTD, h.inter, h.interKey, nil, func() time.Time { return now })
		if err != nil {
			t.Fatal(err)
		}
		fixed := func() *big.Int { return new(big.Int).Set(serial) }
		direct, errD := a.WithTestSeams(fixed, false).SignX509SVIDForKey(key.Public(), id, time.Duration(ttl))
		template, errT := a.WithTestSeams(fixed, true).SignX509SVIDForKey(key.Public(), id, time.Duration(ttl))
		if (errD == nil) != (errT == nil) {
			t.Fatalf("direct path error %v, template path error %v", errD, errT)
		}
		if errD != nil {
			return
		}
		requireSameLeaf(t, h.inter, direct[0], template[0])
	})
}

// asSPIFFEPath maps s onto the SPIFFE path alphabet, keeping its slashes and
// adding a leading one.
func asSPIFFEPath(s string) string {
	out := []byte{'/'}
	for i := range len(s) {
		if s[i] == '/' {
			out = append(out, '/')
		} else {
			out = append(out, idSegmentChars[int(s[i])%len(idSegmentChars)])
		}
	}
	if len(out) == 1 {
		return ""
	}
	return string(out)
}
