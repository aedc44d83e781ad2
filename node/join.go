package node

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
	"github.com/unumos/unum/storage/meta"
)

// ErrJoinRefused wraps every refusal of a join by the cluster (or by the
// joining node's own checks of the server). A refused node exits and does
// not retry: a refusal does not get better by repetition.
var ErrJoinRefused = errors.New("join refused")

// join enrols a new node through the enrolment listener at addr. The token's
// CA fingerprint authenticates the server before anything is sent. Keys are
// generated here and never leave the node; only CSRs travel. The joining node
// does not know its roles until the answer (the token fixes them), so it
// always sends the CSRs a control node needs and drops them otherwise.
func join(ctx context.Context, o Options, ports Ports) (*Config, error) {
	tok, err := jointoken.Parse(o.Token)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrJoinRefused, err)
	}
	l := Layout{Dir: o.DataDir}
	// A control join needs a KEK outside DIR; check it before the token is
	// presented, so a mistake here does not burn the token.
	var kek *seal.KEK
	if o.KEKFile != "" {
		if err := checkKEKOutside(o.DataDir, o.KEKFile); err != nil {
			return nil, err
		}
		if _, err := os.Stat(o.KEKFile); errors.Is(err, fs.ErrNotExist) {
			if err := seal.CreateKEKFile(o.KEKFile); err != nil {
				return nil, err
			}
		}
		var err error
		if kek, err = seal.LoadKEK(o.KEKFile); err != nil {
			return nil, err
		}
	}
	if err := l.mkdirs(); err != nil {
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	nodeKey, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	interKey, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	etcdKey, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	// The CSRs carry no SAN: the server fixes the ID from the token.
	csr, err := bareCSR(nodeKey)
	if err != nil {
		return nil, err
	}
	interCSR, err := bareCSR(interKey)
	if err != nil {
		return nil, err
	}
	etcdCSR, err := bareCSR(etcdKey)
	if err != nil {
		return nil, err
	}
	// The audit checkpoint key is registered at the join, before the node
	// knows its name (the key does not depend on it). A join that failed
	// earlier left it behind: the same key is offered again.
	auditPub, err := auditPublicKeyset(l.AuditKey())
	if err != nil {
		return nil, err
	}
	cc, err := rpc.DialEnrollment(o.JoinAddr, tok.CAFingerprint)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := unumv1.NewEnrollmentClient(cc).Join(jctx, &unumv1.JoinRequest{
		Token:             o.Token,
		Csr:               csr,
		ApiAddress:        ports.API,
		IntermediateCsr:   interCSR,
		EtcdCsr:           etcdCSR,
		EnrollmentAddress: ports.Enroll,
		EtcdPeerUrl:       "https://" + ports.EtcdPeer,
		EtcdClientUrl:     "https://" + ports.EtcdClient,
		EtcdHosts:         etcdHosts(ports),
		KekReady:          kek != nil,
		AuditPublicKeyset: auditPub,
	})
	if err != nil {
		if st, ok := status.FromError(err); ok {
			return nil, fmt.Errorf("%w by %s: %s", ErrJoinRefused, o.JoinAddr, st.Message())
		}
		return nil, fmt.Errorf("%w: %v", ErrJoinRefused, err)
	}

	td, err := spiffeid.TrustDomainFromString(resp.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("join response: %w", err)
	}
	roots, err := parseDERs(resp.GetRoots())
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("join response: bad trust bundle: %v", err)
	}
	// The bundle we are given must contain the CA the token pinned.
	if !slices.ContainsFunc(roots, func(r *x509.Certificate) bool { return ca.Fingerprint(r) == tok.CAFingerprint }) {
		return nil, fmt.Errorf("%w: trust bundle does not contain the CA the token names", ErrJoinRefused)
	}
	chain, err := parseDERs(resp.GetSvidChain())
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("join response: bad svid: %v", err)
	}
	nodeID, err := identity.NodeID(td, resp.GetName())
	if err != nil {
		return nil, err
	}
	if err := verifyChain(chain, roots, nodeID); err != nil {
		return nil, fmt.Errorf("join response: %w", err)
	}
	cfg := &Config{
		Name:             resp.GetName(),
		TrustDomain:      td.Name(),
		Roles:            resp.GetRoles(),
		APIListen:        ports.API,
		MetricsListen:    ports.Metrics,
		ControlAddresses: resp.GetControlAddresses(),
	}
	if err := seal.WritePrivateKey(l.NodeKey(), nodeKey); err != nil {
		return nil, err
	}
	if err := seal.WriteFileAtomic(l.NodeCert(), ca.EncodeCertsPEM(chain), 0o644); err != nil {
		return nil, err
	}
	if err := seal.WriteFileAtomic(l.Bundle(), ca.EncodeCertsPEM(roots), 0o644); err != nil {
		return nil, err
	}
	if cfg.HasRole("control") {
		if kek == nil {
			// The server refuses a control token without kek_ready.
			return nil, errors.New("join response: a control role for a node without a KEK")
		}
		inter, err := x509.ParseCertificate(resp.GetIntermediate())
		if err != nil {
			return nil, fmt.Errorf("join response: intermediate: %w", err)
		}
		if err := checkIntermediate(inter, interKey.Public(), roots, nodeID); err != nil {
			return nil, fmt.Errorf("join response: %w", err)
		}
		etcdCA, err := x509.ParseCertificate(resp.GetEtcdCa())
		if err != nil {
			return nil, fmt.Errorf("join response: etcd ca: %w", err)
		}
		etcdCert, err := x509.ParseCertificate(resp.GetEtcdCert())
		if err != nil {
			return nil, fmt.Errorf("join response: etcd certificate: %w", err)
		}
		jwtKey, err := ca.GenerateKey()
		if err != nil {
			return nil, err
		}
		if err := seal.WriteSealedKey(kek, l.IntermediateKey(), labelIntermediate, interKey); err != nil {
			return nil, err
		}
		if err := seal.WriteSealedKey(kek, l.JWTKey(), labelJWT, jwtKey); err != nil {
			return nil, err
		}
		if _, err := meta.WriteTLSFiles(l.etcdTLSDir(), etcdCA, etcdCert, etcdKey); err != nil {
			return nil, err
		}
		if err := seal.WriteFileAtomic(l.IntermediateCert(), ca.EncodeCertsPEM([]*x509.Certificate{inter}), 0o644); err != nil {
			return nil, err
		}
		cfg.EnrollListen = ports.Enroll
		cfg.Etcd = &EtcdConfig{
			ClientURL:       "https://" + ports.EtcdClient,
			PeerURL:         "https://" + ports.EtcdPeer,
			InitialCluster:  resp.GetEtcdInitialCluster(),
			State:           "existing",
			MemberID:        resp.GetEtcdMemberId(),
			VoterClientURLs: resp.GetEtcdClientUrls(),
		}
	}
	if err := saveConfig(l, cfg); err != nil {
		return nil, err
	}
	o.Log.Info("joined the cluster", "node", cfg.Name, "roles", cfg.Roles, "trust_domain", cfg.TrustDomain)
	return cfg, nil
}

// checkIntermediate verifies the intermediate a control join returned: it
// certifies our key, is a CA for our node ID, and chains to the bundle.
func checkIntermediate(inter *x509.Certificate, pub crypto.PublicKey, roots []*x509.Certificate, id spiffeid.ID) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := inter.PublicKey.(equaler); !ok || !k.Equal(pub) {
		return errors.New("intermediate does not certify this node's key")
	}
	if !inter.IsCA || len(inter.URIs) != 1 || inter.URIs[0].String() != id.String() {
		return fmt.Errorf("intermediate is not a CA for %s", id)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if _, err := inter.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("intermediate does not chain to the trust bundle: %w", err)
	}
	return nil
}

// bareCSR is a CSR with no subject and no SAN: at a join the node does not
// know its own name yet; the server derives every name from the token.
func bareCSR(key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
}

func parseDERs(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// verifyChain checks that chain is an SVID for want issued under roots.
func verifyChain(chain, roots []*x509.Certificate, want spiffeid.ID) error {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("svid does not verify: %w", err)
	}
	if len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != want.String() {
		return fmt.Errorf("svid is not for %s", want)
	}
	return nil
}
