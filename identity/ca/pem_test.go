package ca_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/identity/ca"
)

func TestFingerprint(t *testing.T) {
	f := newFixture(t)
	sum := sha256.Sum256(f.root.Raw)
	require.Equal(t, "sha256:"+hex.EncodeToString(sum[:]), ca.Fingerprint(f.root))
	require.Regexp(t, `^sha256:[0-9a-f]{64}$`, ca.Fingerprint(f.inter))
	require.NotEqual(t, ca.Fingerprint(f.root), ca.Fingerprint(f.inter))
}

func TestCertsPEMRoundTrip(t *testing.T) {
	f := newFixture(t)
	data := ca.EncodeCertsPEM([]*x509.Certificate{f.inter, f.root})
	got, err := ca.ParseCertsPEM(data)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.True(t, got[0].Equal(f.inter))
	require.True(t, got[1].Equal(f.root))

	// Surrounding whitespace and CRLF line ends are fine.
	crlf := bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
	got, err = ca.ParseCertsPEM(append(append([]byte("\n  \r\n"), crlf...), "\n\n"...))
	require.NoError(t, err)
	require.Len(t, got, 2)
}

func TestParseCertsPEMRefuses(t *testing.T) {
	f := newFixture(t)
	for name, tc := range badPEMs(f.root) {
		t.Run(name, func(t *testing.T) {
			_, err := ca.ParseCertsPEM(tc.data)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

type badPEM struct {
	data    []byte
	wantErr string
}

func badPEMs(cert *x509.Certificate) map[string]badPEM {
	one := ca.EncodeCertsPEM([]*x509.Certificate{cert})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return map[string]badPEM{
		"empty":         {nil, "no certificates"},
		"whitespace":    {[]byte(" \n\t"), "no certificates"},
		"garbage":       {[]byte("hello"), "found other data"},
		"leading text":  {cat([]byte("subject=evil\n"), one), "found other data"},
		"trailing text": {cat(one, []byte("junk")), "found other data"},
		"private key":   {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), "found other data"},
		"wrong type":    {bytes.Replace(one, []byte("CERTIFICATE-----\n"), []byte("CERTIFICATEX-----\n"), 2), "found other data"},
		"headers":       {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"a": "b"}, Bytes: cert.Raw}), "headers"},
		"bad der":       {pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x00}}), "certificate 0"},
		"truncated":     {one[:len(one)-10], "malformed PEM block"},
		"skipped block": {cat([]byte("-----BEGIN CERTIFICATE-----\n!!!\n"), one), "malformed PEM block"},
		"second bad":    {cat(one, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}})), "certificate 1"},
	}
}
