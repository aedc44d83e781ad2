package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/unumos/unum/identity"
)

// NewRoot creates the self-signed root certificate of td for key: a CA
// allowed one intermediate level below it (MaxPathLen 1), with URI SAN
// spiffe://TD and Subject O=unum, CN="unum root CA TD". It is valid from
// now-ClockSkew for ttl (DefaultRootTTL when ttl is zero).
func NewRoot(td spiffeid.TrustDomain, key crypto.Signer, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	if td.IsZero() {
		return nil, errors.New("new root: empty trust domain")
	}
	if key == nil {
		return nil, errors.New("new root: no key")
	}
	if err := checkP256(key.Public()); err != nil {
		return nil, fmt.Errorf("new root: %w", err)
	}
	ttl, err := validity(ttl, DefaultRootTTL)
	if err != nil {
		return nil, fmt.Errorf("new root: %w", err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("new root: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject: pkix.Name{
			Organization: []string{"unum"},
			CommonName:   "unum root CA " + td.Name(),
		},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		URIs:                  []*url.URL{td.ID().URL()},
		SubjectKeyId:          ski,
	}
	return createCertificate(tmpl, tmpl, key.Public(), key)
}

// NewIntermediate creates the intermediate CA certificate of control node
// nodeName for pub, signed by root. It may sign leaves only (MaxPathLen 0),
// only URI SANs in td (critical name constraints that also exclude every DNS,
// email and IP name; see the package documentation),
// carries URI SAN spiffe://TD/node/NAME and Subject O=unum,
// CN="unum intermediate CA NAME". It is valid from now-ClockSkew for ttl
// (DefaultIntermediateTTL when ttl is zero) but never past root.NotAfter.
func NewIntermediate(td spiffeid.TrustDomain, nodeName string, pub crypto.PublicKey, root *x509.Certificate, rootKey crypto.Signer, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	if td.IsZero() {
		return nil, errors.New("new intermediate: empty trust domain")
	}
	nodeID, err := identity.NodeID(td, nodeName)
	if err != nil {
		return nil, fmt.Errorf("new intermediate: node name %q: %w", nodeName, err)
	}
	if err := checkP256(pub); err != nil {
		return nil, fmt.Errorf("new intermediate for %s: %w", nodeName, err)
	}
	if err := checkRoot(td, root, rootKey, now); err != nil {
		return nil, fmt.Errorf("new intermediate for %s: %w", nodeName, err)
	}
	ttl, err = validity(ttl, DefaultIntermediateTTL)
	if err != nil {
		return nil, fmt.Errorf("new intermediate for %s: %w", nodeName, err)
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("new intermediate for %s: %w", nodeName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject: pkix.Name{
			Organization: []string{"unum"},
			CommonName:   "unum intermediate CA " + nodeName,
		},
		NotBefore:             now.Add(-ClockSkew), // exact: revocation reads the issue time back from it
		NotAfter:              minTime(now.Add(ttl), root.NotAfter),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{nodeID.URL()},
		SubjectKeyId:          ski,
		// Marks the whole name constraints extension critical, not only DNS.
		PermittedDNSDomainsCritical: true,
		PermittedURIDomains:         []string{td.Name()},
		ExcludedURIDomains:          []string{"." + td.Name()},
		// An empty DNS or email constraint matches every name (RFC 5280
		// §4.2.1.10), and the two IP ranges cover every address: a leaf
		// under this intermediate may carry no DNS, email or IP name at all.
		ExcludedDNSDomains:     []string{""},
		ExcludedEmailAddresses: []string{""},
		ExcludedIPRanges:       []*net.IPNet{{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, {IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}},
	}
	return createCertificate(tmpl, root, pub, rootKey)
}

// checkRoot makes sure root is a usable root of td at now and rootKey is its
// key.
func checkRoot(td spiffeid.TrustDomain, root *x509.Certificate, rootKey crypto.Signer, now time.Time) error {
	switch {
	case root == nil:
		return errors.New("no root certificate")
	case !root.BasicConstraintsValid || !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("root certificate is not a CA allowed to sign certificates")
	case !bytes.Equal(root.RawIssuer, root.RawSubject) || root.CheckSignatureFrom(root) != nil:
		return errors.New("root certificate is not self-signed")
	case len(root.URIs) != 1 || root.URIs[0].String() != td.IDString():
		return fmt.Errorf("root certificate is not the root of trust domain %q (URI SANs %v)", td.Name(), root.URIs)
	case !keyMatches(rootKey, root.PublicKey):
		return errors.New("root key does not match the root certificate")
	case now.Before(root.NotBefore):
		return fmt.Errorf("root certificate is not valid until %s", root.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(root.NotAfter):
		return fmt.Errorf("root certificate expired at %s", root.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func validity(ttl, def time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return def, nil
	case ttl < 0:
		return 0, fmt.Errorf("negative validity %s", ttl)
	}
	return ttl, nil
}

func createCertificate(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	return cert, nil
}
