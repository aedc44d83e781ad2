package node

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	"github.com/unumos/unum/control"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
)

// caHost stores a control node's CA material for the control server's CA
// service (rotation, export, import).
type caHost struct {
	n   *node
	kek *seal.KEK
}

var _ control.CAHost = (*caHost)(nil)

// SaveRoot implements control.CAHost.
func (h *caHost) SaveRoot(root *control.Signer) error {
	l := h.n.l
	if root == nil {
		// The certificate stays: it is public and names what was exported.
		if err := os.Remove(l.RootKey()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return syncDir(filepath.Dir(l.RootKey()))
	}
	return replacePair(h.kek, l.RootCert(), l.RootKey(), labelRoot, root.Cert, root.Key)
}

// SaveIntermediate implements control.CAHost.
func (h *caHost) SaveIntermediate(a *ca.Authority, cert *x509.Certificate, key crypto.Signer) error {
	l := h.n.l
	if err := replacePair(h.kek, l.IntermediateCert(), l.IntermediateKey(), labelIntermediate, cert, key); err != nil {
		return err
	}
	h.n.authority.Store(a)
	// Clients accept a control node only with an SVID from its own
	// current intermediate: re-issue at once.
	if err := h.n.renewLocally(); err != nil {
		return err
	}
	select {
	case h.n.svidReplaced <- struct{}{}:
	default:
	}
	return nil
}

// DialControl implements control.CAHost.
func (h *caHost) DialControl(addr string) (*grpc.ClientConn, error) {
	return rpc.DialChecked(h.n.creds, h.n.revocations, []string{addr})
}

// nextPath is where the next version of a CA file is staged. The name keeps
// the file's suffix, so CheckKeyFiles checks a staged key's mode too.
func nextPath(p string) string { return filepath.Join(filepath.Dir(p), "next-"+filepath.Base(p)) }

// replacePair replaces a CA certificate and its sealed key so that a crash at
// any point leaves either the old pair or the new one (after
// recoverPair): both files of the new pair are staged first, then the key
// and then the certificate are renamed into place.
func replacePair(kek *seal.KEK, certPath, keyPath, label string, cert *x509.Certificate, key crypto.Signer) error {
	nk, nc := nextPath(keyPath), nextPath(certPath)
	if err := seal.WriteSealedKey(kek, nk, label, key); err != nil {
		return err
	}
	if err := seal.WriteFileAtomic(nc, ca.EncodeCertsPEM([]*x509.Certificate{cert}), 0o644); err != nil {
		return err
	}
	if err := os.Rename(nk, keyPath); err != nil {
		return err
	}
	if err := os.Rename(nc, certPath); err != nil {
		return err
	}
	return syncDir(filepath.Dir(certPath))
}

// recoverPair finishes or undoes a replacePair that a crash interrupted:
// with the staged certificate present the new key was staged before it, so
// the pair is completed; a staged key alone is an incomplete staging and is
// dropped.
func recoverPair(certPath, keyPath string) error {
	nk, nc := nextPath(keyPath), nextPath(certPath)
	_, errC := os.Stat(nc)
	_, errK := os.Stat(nk)
	switch {
	case errC == nil && errK == nil:
		if err := os.Rename(nk, keyPath); err != nil {
			return err
		}
		fallthrough
	case errC == nil:
		if err := os.Rename(nc, certPath); err != nil {
			return err
		}
	case errK == nil:
		if err := os.Remove(nk); err != nil {
			return err
		}
	default:
		return nil
	}
	return syncDir(filepath.Dir(certPath))
}

func (l Layout) recoverCAFiles() error {
	for _, p := range [][2]string{{l.RootCert(), l.RootKey()}, {l.IntermediateCert(), l.IntermediateKey()}} {
		if err := recoverPair(p[0], p[1]); err != nil {
			return fmt.Errorf("finish interrupted CA key replacement of %s: %w", p[0], err)
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// bundleFingerprints are reported in heartbeats: CA rotation waits until
// every live node holds a new root before anything chains to it.
func bundleFingerprints(roots []*x509.Certificate) []string {
	out := make([]string, 0, len(roots))
	for _, r := range roots {
		out = append(out, ca.Fingerprint(r))
	}
	return out
}
