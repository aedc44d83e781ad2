package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Authority is one control node's intermediate CA, used to sign X509-SVIDs.
// It is immutable after New and safe for concurrent use.
type Authority struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
	// ecKey is key when it is an in-process *ecdsa.PrivateKey; leaves are
	// then encoded and signed directly (leaf.go), otherwise with
	// x509.CreateCertificate.
	ecKey *ecdsa.PrivateKey
	// issuerName and leafExtensions are the DER the direct path writes into
	// every leaf (see leafConstants).
	issuerName     []byte
	leafExtensions []byte
	// issuers is what follows a leaf in an issued chain: cert, then the
	// intermediates above it, never the root.
	issuers []*x509.Certificate
	clock   func() time.Time
	// newSerial is randomSerial; tests replace it to compare the two leaf
	// encodings (export_test.go).
	newSerial func() *big.Int
}

// New returns an Authority that signs with key under cert for td. chain holds
// the certificates above cert up to but excluding the root (usually empty).
// clock is the time source; nil means time.Now.
//
// New refuses a cert that is not a CA allowed to sign certificates, that is
// self-signed (a root: SVIDs are signed by an intermediate so that the root
// key can stay offline), whose key is not ECDSA P-256 or does not match key,
// that names or is constrained to another trust domain, or a chain whose
// certificates did not sign each other in order.
func New(td spiffeid.TrustDomain, cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate, clock func() time.Time) (*Authority, error) {
	if td.IsZero() {
		return nil, errors.New("new authority: empty trust domain")
	}
	if cert == nil {
		return nil, errors.New("new authority: no certificate")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("new authority: certificate is not a CA allowed to sign certificates")
	}
	if isSelfSigned(cert) {
		return nil, errors.New("new authority: certificate is self-signed: sign SVIDs with an intermediate, not the root")
	}
	if err := checkP256(cert.PublicKey); err != nil {
		return nil, fmt.Errorf("new authority: certificate key: %w", err)
	}
	if !keyMatches(key, cert.PublicKey) {
		return nil, errors.New("new authority: key does not match the certificate")
	}
	for _, u := range cert.URIs {
		if err := inTrustDomain(td, u); err != nil {
			return nil, fmt.Errorf("new authority: certificate URI SAN: %w", err)
		}
	}
	if len(cert.PermittedURIDomains) > 0 && !slices.Contains(cert.PermittedURIDomains, td.Name()) {
		return nil, fmt.Errorf("new authority: certificate is constrained to URI domains %q, not trust domain %q", cert.PermittedURIDomains, td.Name())
	}
	issuers := append([]*x509.Certificate{cert}, chain...)
	for i := 1; i < len(issuers); i++ {
		parent := issuers[i]
		if parent == nil || isSelfSigned(parent) {
			return nil, fmt.Errorf("new authority: chain[%d] is missing or a root: chain excludes the root", i-1)
		}
		if err := issuers[i-1].CheckSignatureFrom(parent); err != nil {
			return nil, fmt.Errorf("new authority: chain[%d] did not sign the certificate below it: %w", i-1, err)
		}
	}
	issuerName, leafExtensions, err := leafConstants(cert)
	if err != nil {
		return nil, fmt.Errorf("new authority: %w", err)
	}
	if clock == nil {
		clock = time.Now
	}
	ecKey, _ := key.(*ecdsa.PrivateKey)
	return &Authority{
		td:             td,
		cert:           cert,
		key:            key,
		ecKey:          ecKey,
		issuerName:     issuerName,
		leafExtensions: leafExtensions,
		issuers:        issuers,
		clock:          clock,
		newSerial:      randomSerial,
	}, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func inTrustDomain(td spiffeid.TrustDomain, u *url.URL) error {
	id, err := spiffeid.FromURI(u)
	if err != nil {
		return fmt.Errorf("%q is not a SPIFFE ID: %w", u, err)
	}
	if id.TrustDomain() != td {
		return fmt.Errorf("%s is not in trust domain %q", id, td.Name())
	}
	return nil
}

// TrustDomain is the trust domain the Authority issues for.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// Certificate is the Authority's own (intermediate) certificate. It must not
// be modified.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// SignX509SVID verifies csrDER with VerifyCSR against id and issues an
// X509-SVID for its key. See SignX509SVIDForKey for the certificate issued.
func (a *Authority) SignX509SVID(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := a.checkID(id); err != nil {
		return nil, err
	}
	csr, err := VerifyCSR(csrDER, id)
	if err != nil {
		return nil, fmt.Errorf("sign x509-svid for %s: %w", id, err)
	}
	return a.issue(csr.PublicKey, id, ttl)
}

// SignVerifiedCSR issues an X509-SVID for id and the key of csr, which must
// come from VerifyCSR(…, id). It does not check csr's signature, names or
// extensions again: a caller that has to verify the request before anything
// else (to refuse it early, or to authorize on its contents) pays for one
// signature verification instead of two. It still refuses an id outside the
// Authority's trust domain, a key that is not ECDSA P-256, and a csr that
// names a URI other than id (a request verified for another ID). See
// SignX509SVIDForKey for the certificate issued.
func (a *Authority) SignVerifiedCSR(csr *x509.CertificateRequest, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := a.checkID(id); err != nil {
		return nil, err
	}
	if csr == nil {
		return nil, fmt.Errorf("sign x509-svid for %s: no certificate signing request", id)
	}
	if len(csr.URIs) > 1 {
		return nil, fmt.Errorf("sign x509-svid for %s: %w", id, refuse("asks for %d URI SANs, at most one is allowed", len(csr.URIs)))
	}
	if len(csr.URIs) == 1 {
		if err := checkURI(csr.URIs[0], id); err != nil {
			return nil, fmt.Errorf("sign x509-svid for %s: %w", id, err)
		}
	}
	if err := checkP256(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("sign x509-svid for %s: %w", id, err)
	}
	return a.issue(csr.PublicKey, id, ttl)
}

// SignX509SVIDForKey issues an X509-SVID for id and pub, an ECDSA P-256 key
// generated by the caller itself (a node or admin key). The leaf has URI SAN
// id and nothing else, an empty Subject, is not a CA, has key usage
// digitalSignature|keyEncipherment|keyAgreement and extended key usage
// serverAuth+clientAuth, is valid from exactly now-ClockSkew (even when that
// is before the issuer's NotBefore: validity is checked per certificate at
// verification time, and revocation reads the issue time back as
// NotBefore+ClockSkew) to min(now+ttl, issuer NotAfter), and has a random serial. id must
// be in the Authority's trust domain. The result is the leaf followed by the
// issuer chain (this Authority's certificate and any above it), never the
// root; the returned issuer certificates must not be modified.
func (a *Authority) SignX509SVIDForKey(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := a.checkID(id); err != nil {
		return nil, err
	}
	if err := checkP256(pub); err != nil {
		return nil, fmt.Errorf("sign x509-svid for %s: %w", id, err)
	}
	return a.issue(pub, id, ttl)
}

func (a *Authority) checkID(id spiffeid.ID) error {
	if id.IsZero() {
		return errors.New("sign x509-svid: empty SPIFFE ID")
	}
	if id.TrustDomain() != a.td {
		return fmt.Errorf("sign x509-svid for %s: not in trust domain %q", id, a.td.Name())
	}
	return nil
}

func (a *Authority) issue(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("sign x509-svid for %s: ttl %s is not positive", id, ttl)
	}
	now := a.clock()
	if now.Before(a.cert.NotBefore) {
		return nil, fmt.Errorf("sign x509-svid for %s: authority certificate is not valid until %s", id, a.cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(a.cert.NotAfter) {
		return nil, fmt.Errorf("sign x509-svid for %s: authority certificate expired at %s", id, a.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	spec := leafSpec{
		serial:    a.newSerial(),
		notBefore: now.Add(-ClockSkew),
		notAfter:  minTime(now.Add(ttl), a.cert.NotAfter),
		pub:       pub,
		id:        id,
	}
	var leaf *x509.Certificate
	var err error
	if a.ecKey != nil {
		leaf, err = a.signLeafDirect(spec)
	} else {
		leaf, err = a.signLeafWithTemplate(spec)
	}
	if err != nil {
		return nil, fmt.Errorf("sign x509-svid for %s: %w", id, err)
	}
	return append([]*x509.Certificate{leaf}, a.issuers...), nil
}
