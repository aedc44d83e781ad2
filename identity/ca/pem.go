package ca

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// Fingerprint is "sha256:" followed by the lowercase hex SHA-256 of the
// certificate's DER. Join tokens carry the root's fingerprint so a joining
// node can pin the CA before it trusts anything the server says.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// EncodeCertsPEM encodes certs as consecutive PEM "CERTIFICATE" blocks.
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

const pemCertBegin = "-----BEGIN CERTIFICATE-----"

// ParseCertsPEM parses one or more PEM "CERTIFICATE" blocks. It is strict, as
// befits untrusted input: only whitespace may surround the blocks, blocks may
// not carry headers, every block must be a certificate that parses, and at
// least one is required.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimLeft(data, " \t\r\n")
	for len(rest) > 0 {
		// pem.Decode silently skips text before a block; refuse it instead.
		if !bytes.HasPrefix(rest, []byte(pemCertBegin)) {
			return nil, fmt.Errorf("certificate %d: expected %q, found other data", len(certs), pemCertBegin)
		}
		block, after := pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("certificate %d: malformed PEM block", len(certs))
		}
		// On a malformed block pem.Decode moves on to the next BEGIN line,
		// skipping what it could not parse; refuse that too.
		if consumed := rest[:len(rest)-len(after)]; bytes.Count(consumed, []byte("-----BEGIN")) != 1 {
			return nil, fmt.Errorf("certificate %d: malformed PEM block", len(certs))
		}
		rest = after
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("certificate %d: PEM block type %q, want CERTIFICATE", len(certs), block.Type)
		}
		if len(block.Headers) != 0 {
			return nil, fmt.Errorf("certificate %d: PEM block has headers", len(certs))
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
		}
		certs = append(certs, cert)
		rest = bytes.TrimLeft(rest, " \t\r\n")
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificates in PEM data")
	}
	return certs, nil
}
