package ca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/unumos/unum/identity/ca"
)

// FuzzVerifyCSR feeds arbitrary bytes to VerifyCSR as an attacker would. Every
// refusal must wrap ErrCSRRefused; every acceptance must hold up under
// independent checks and yield an SVID that go-spiffe verifies as exactly the
// wanted ID, with no other name and no CA power.
func FuzzVerifyCSR(f *testing.F) {
	fx := newFixture(f)
	want := mustID(f, "spiffe://unum.local/node/n1")
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{fx.root})
	key := mustKey(f)
	valid, err := ca.CreateCSR(key, want)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(mustCSR(f, key, &x509.CertificateRequest{}))
	for name, bad := range badCSRs(f, want) {
		if name != "oversized" {
			f.Add(bad.der)
		}
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := ca.VerifyCSR(der, want)
		if err != nil {
			if !errors.Is(err, ca.ErrCSRRefused) {
				t.Fatalf("refusal does not wrap ErrCSRRefused: %v", err)
			}
			return
		}
		// Independent re-checks of what was accepted.
		again, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatalf("accepted a CSR that does not parse: %v", err)
		}
		if err := again.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR with a bad signature: %v", err)
		}
		pub, ok := again.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Fatalf("accepted a %T key", again.PublicKey)
		}
		if len(again.DNSNames)+len(again.IPAddresses)+len(again.EmailAddresses) != 0 {
			t.Fatal("accepted a CSR with DNS, IP or email SANs")
		}
		if len(again.URIs) > 1 || (len(again.URIs) == 1 && again.URIs[0].String() != want.String()) {
			t.Fatalf("accepted URI SANs %v", again.URIs)
		}
		if !pub.Equal(csr.PublicKey) {
			t.Fatal("returned request differs from the input")
		}
		chain, err := fx.auth.SignX509SVID(der, want, time.Hour)
		if err != nil {
			t.Fatalf("accepted CSR could not be signed: %v", err)
		}
		// The control plane's path: verify once, then sign the result.
		chain2, err := fx.auth.SignVerifiedCSR(csr, want, time.Hour)
		if err != nil {
			t.Fatalf("verified CSR could not be signed: %v", err)
		}
		for _, chain := range [][]*x509.Certificate{chain, chain2} {
			leaf := chain[0]
			id, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(testNow))
			if err != nil || id != want {
				t.Fatalf("issued SVID verifies as %v, %v", id, err)
			}
			if !pub.Equal(leaf.PublicKey) {
				t.Fatal("issued SVID is not for the requested key")
			}
			if leaf.IsCA || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 ||
				len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 ||
				!bytes.Equal(leaf.RawSubject, []byte{0x30, 0x00}) {
				t.Fatalf("issued leaf has more than an SVID's rights: %+v", leaf)
			}
		}
	})
}

// FuzzParseCertsPEM checks the strict PEM parser never panics and that what
// it accepts re-encodes to the same certificates.
func FuzzParseCertsPEM(f *testing.F) {
	fx := newFixture(f)
	f.Add(ca.EncodeCertsPEM([]*x509.Certificate{fx.root}))
	f.Add(ca.EncodeCertsPEM([]*x509.Certificate{fx.inter, fx.root}))
	for _, bad := range badPEMs(fx.root) {
		f.Add(bad.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ca.ParseCertsPEM(data)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
		again, err := ca.ParseCertsPEM(ca.EncodeCertsPEM(certs))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded certificates do not parse: %v", err)
		}
		for i := range certs {
			if !again[i].Equal(certs[i]) {
				t.Fatalf("certificate %d changed in a round trip", i)
			}
		}
	})
}
