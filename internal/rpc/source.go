package rpc

import (
	"crypto/x509"
	"errors"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Credentials holds a party's current SVID and trust bundle. It is the
// x509svid.Source and x509bundle.Source behind every TLS config built here,
// so rotating the SVID or the bundle takes effect on the next handshake
// without rebuilding servers or clients. Safe for concurrent use.
type Credentials struct {
	td spiffeid.TrustDomain

	mu struct {
		sync.RWMutex
		svid  *x509svid.SVID
		roots []*x509.Certificate
	}
}

var (
	_ x509svid.Source   = (*Credentials)(nil)
	_ x509bundle.Source = (*Credentials)(nil)
)

// NewCredentials returns credentials for svid trusting roots.
func NewCredentials(svid *x509svid.SVID, roots []*x509.Certificate) (*Credentials, error) {
	if svid == nil || len(svid.Certificates) == 0 {
		return nil, errors.New("credentials: no svid")
	}
	if len(roots) == 0 {
		return nil, errors.New("credentials: empty trust bundle")
	}
	c := &Credentials{td: svid.ID.TrustDomain()}
	c.mu.svid = svid
	c.mu.roots = roots
	return c, nil
}

// TrustDomain is the trust domain of the SVID.
func (c *Credentials) TrustDomain() spiffeid.TrustDomain { return c.td }

// GetX509SVID implements x509svid.Source.
func (c *Credentials) GetX509SVID() (*x509svid.SVID, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.mu.svid, nil
}

// SetSVID replaces the SVID (rotation). The trust domain must not change.
func (c *Credentials) SetSVID(svid *x509svid.SVID) error {
	if svid.ID.TrustDomain() != c.td {
		return errors.New("credentials: rotated svid is in another trust domain")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.svid = svid
	return nil
}

// Roots returns the trust bundle's root certificates.
func (c *Credentials) Roots() []*x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]*x509.Certificate(nil), c.mu.roots...)
}

// SetRoots replaces the trust bundle.
func (c *Credentials) SetRoots(roots []*x509.Certificate) {
	if len(roots) == 0 {
		return // never trust nothing by accident: keep the old bundle
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.roots = append([]*x509.Certificate(nil), roots...)
}

// GetX509BundleForTrustDomain implements x509bundle.Source. Only our own
// trust domain is trusted: unum does not federate (yet).
func (c *Credentials) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.td {
		return nil, errors.New("credentials: no bundle for trust domain " + td.Name())
	}
	return x509bundle.FromX509Authorities(td, c.Roots()), nil
}
