package ca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
)

type badCSR struct {
	der     []byte
	wantErr string
}

// rawSAN builds a subjectAltName extension from raw GeneralNames.
func rawSAN(t testing.TB, names ...asn1.RawValue) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(names)
	require.NoError(t, err)
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: v}
}

// badCSRs returns CSRs that VerifyCSR must refuse for want, each with the
// text its error must contain. They double as fuzz seeds.
func badCSRs(t testing.TB, want spiffeid.ID) map[string]badCSR {
	t.Helper()
	key := mustKey(t)
	wantURI := []*url.URL{want.URL()}
	csr := func(tmpl *x509.CertificateRequest) []byte { return mustCSR(t, key, tmpl) }

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	caTrue, err := asn1.Marshal(struct{ IsCA bool }{true})
	require.NoError(t, err)
	certSign, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x04}, BitLength: 6}) // keyCertSign (bit 5)
	require.NoError(t, err)
	crlSign, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x02}, BitLength: 7}) // cRLSign (bit 6)
	require.NoError(t, err)

	tampered := csr(&x509.CertificateRequest{URIs: wantURI})
	tampered[len(tampered)-1] ^= 0x01
	// Swap the URI after signing: the signature no longer covers the body.
	swapped := csr(&x509.CertificateRequest{URIs: []*url.URL{mustID(t, "spiffe://unum.local/node/n2").URL()}})
	swapped = bytes.Replace(swapped, []byte("node/n2"), []byte("node/n1"), 1)

	otherName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: []byte{0x06, 0x03, 0x2a, 0x03, 0x04, 0xa0, 0x03, 0x0c, 0x01, 'x'}}
	dirName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: []byte{0x30, 0x00}}
	uriName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(want.String())}

	return map[string]badCSR{
		"garbage":            {[]byte("not a csr at all"), "cannot parse"},
		"empty":              {nil, "cannot parse"},
		"trailing data":      {append(csr(&x509.CertificateRequest{URIs: wantURI}), 0), "cannot parse"},
		"tampered signature": {tampered, "bad signature"},
		"swapped URI":        {swapped, "bad signature"},
		"dns san":            {csr(&x509.CertificateRequest{URIs: wantURI, DNSNames: []string{"etcd.local"}}), `DNS SAN "etcd.local"`},
		"ip san":             {csr(&x509.CertificateRequest{URIs: wantURI, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}), "IP SAN 10.0.0.1"},
		"email san":          {csr(&x509.CertificateRequest{URIs: wantURI, EmailAddresses: []string{"root@unum.local"}}), `email SAN "root@unum.local"`},
		"two uris":           {csr(&x509.CertificateRequest{URIs: []*url.URL{want.URL(), want.URL()}}), "2 URI SANs"},
		"uri other trust domain": {csr(&x509.CertificateRequest{URIs: []*url.URL{mustID(t, "spiffe://other.td/node/n1").URL()}}),
			`in trust domain "other.td"`},
		"uri other path": {csr(&x509.CertificateRequest{URIs: []*url.URL{mustID(t, "spiffe://unum.local/system/ca").URL()}}),
			"not the SPIFFE ID being issued"},
		"uri not spiffe": {csr(&x509.CertificateRequest{URIs: []*url.URL{{Scheme: "https", Host: "unum.local", Path: "/node/n1"}}}),
			"not a SPIFFE ID"},
		"other name san":     {csr(&x509.CertificateRequest{ExtraExtensions: []pkix.Extension{rawSAN(t, uriName, otherName)}}), "otherName SAN"},
		"directory name san": {csr(&x509.CertificateRequest{ExtraExtensions: []pkix.Extension{rawSAN(t, dirName)}}), "directoryName SAN"},
		"ca true": {csr(&x509.CertificateRequest{URIs: wantURI, ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: caTrue}}}), "CA:TRUE"},
		"key usage cert sign": {csr(&x509.CertificateRequest{URIs: wantURI, ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: certSign}}}), "keyCertSign"},
		"key usage crl sign": {csr(&x509.CertificateRequest{URIs: wantURI, ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: crlSign}}}), "cRLSign"},
		"malformed basic constraints": {csr(&x509.CertificateRequest{URIs: wantURI, ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: []byte{0x04, 0x00}}}}), "malformed basicConstraints"},
		"unknown extension": {csr(&x509.CertificateRequest{URIs: wantURI, ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 30}, Value: []byte{0x30, 0x00}}}}), "unsupported requested extension 2.5.29.30"},
		"rsa key":     {mustCSR(t, rsaKey, &x509.CertificateRequest{URIs: wantURI}), "signature algorithm SHA256-RSA"},
		"p384 key":    {mustCSR(t, p384, &x509.CertificateRequest{URIs: wantURI}), "curve P-384, want P-256"},
		"ed25519 key": {mustCSR(t, edKey, &x509.CertificateRequest{URIs: wantURI}), "signature algorithm Ed25519"},
		"oversized":   {make([]byte, 17<<10), "limit"},
	}
}
