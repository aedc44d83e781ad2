package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/control"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/seal"
)

// IssueAdminConfig signs a fresh admin client config (spiffe://TD/user/admin,
// AdminCertTTL) with the intermediate of the control node in dataDir, from
// local CA material: it needs the KEK, so only someone who can already run
// that control node can do it. `unum dev` uses it on resume (the admin
// certificate of a dev cluster older than a day has expired); the
// break-glass `unum admin recover` uses RecoverAdmin.
func IssueAdminConfig(dataDir, kekFile string, addrs []string) (*clientconfig.Config, error) {
	authority, td, roots, err := localAuthority(dataDir, kekFile)
	if err != nil {
		return nil, err
	}
	return issueAdmin(authority, td, roots, addrs, AdminCertTTL)
}

// Lifetimes of user certificates (control owns them), for the CLI's early
// checks and help; the server's checks are the ones that count.
const (
	DefaultUserCertTTL = control.DefaultUserCertTTL
	MinUserCertTTL     = control.MinUserCertTTL
	MaxUserCertTTL     = control.MaxUserCertTTL
)

// Break-glass recovery bounds the lifetime of the credential it mints.
const (
	MinRecoverTTL     = time.Minute
	DefaultRecoverTTL = time.Hour
)

// RecoverAdmin is the break-glass path behind `unum admin recover`: it signs
// a fresh admin client config (spiffe://TD/user/admin, ttl between
// MinRecoverTTL and AdminCertTTL) with the intermediate of the control node
// in dataDir, from local material, for when the admin config was lost or
// stolen (and revoked with `unum user revoke admin`). It needs what running
// that control node needs: read access to its keys and the KEK. The config
// points at the node's own API address and the control addresses it knows.
// The caller makes the event loud (log and terminal).
//
// The recovery is recorded in the node's audit log (recovery.admin, by
// naming the local account that ran it) before the config is returned: by
// opening the log when the node is stopped, else through the running
// node's audit inbox. When it cannot be recorded, nothing is returned.
func RecoverAdmin(ctx context.Context, dataDir, kekFile string, ttl time.Duration, by string) (*clientconfig.Config, error) {
	if ttl < MinRecoverTTL || ttl > AdminCertTTL {
		return nil, fmt.Errorf("recover admin: ttl %s: must be between %s and %s", ttl, MinRecoverTTL, AdminCertTTL)
	}
	cfg, err := loadConfig(Layout{Dir: dataDir})
	if err != nil {
		return nil, err
	}
	authority, td, roots, err := localAuthority(dataDir, kekFile)
	if err != nil {
		return nil, err
	}
	addrs := []string{cfg.APIListen}
	for _, a := range cfg.ControlAddresses {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	admin, err := issueAdmin(authority, td, roots, addrs, ttl)
	if err != nil {
		return nil, err
	}
	svid, err := admin.SVID()
	if err != nil {
		return nil, err
	}
	nodeID, err := identity.NodeID(td, cfg.Name)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	leaf := svid.Certificates[0]
	e := audit.Event{Kind: audit.KindRecovery, Action: audit.ActionRecover, Subject: nodeID.String(), Outcome: audit.Allow,
		Resource: "user/-/" + identity.AdminUser, Reasons: []string{"break-glass: admin credential minted from the node's local CA material"}}
	e = e.WithDetails(RecoveryDetails{SPIFFEID: svid.ID.String(), Serial: leaf.SerialNumber.String(), NotAfter: leaf.NotAfter.UTC(), By: by, Host: host})
	if err := recordRecovery(ctx, Layout{Dir: dataDir}, cfg.Name, &e); err != nil {
		return nil, fmt.Errorf("recover admin: refused, the recovery could not be recorded in the audit log: %w", err)
	}
	return admin, nil
}

// RecoveryDetails are the details of a recovery.admin event.
type RecoveryDetails struct {
	// SPIFFEID, Serial and NotAfter name the credential minted.
	SPIFFEID string    `json:"spiffe_id"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	// By is the local account that ran the recovery, Host the machine.
	By   string `json:"by"`
	Host string `json:"host,omitempty"`
}

func issueAdmin(authority *ca.Authority, td spiffeid.TrustDomain, roots []*x509.Certificate, addrs []string, ttl time.Duration) (*clientconfig.Config, error) {
	adminID, err := identity.UserID(td, identity.AdminUser)
	if err != nil {
		return nil, err
	}
	key, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	chain, err := authority.SignX509SVIDForKey(key.Public(), adminID, ttl)
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	return clientconfig.New(&x509svid.SVID{ID: adminID, Certificates: chain, PrivateKey: key}, roots, addrs)
}

// localAuthority opens the intermediate CA of the control node in dataDir
// from local material (it needs the KEK).
func localAuthority(dataDir, kekFile string) (*ca.Authority, spiffeid.TrustDomain, []*x509.Certificate, error) {
	var td spiffeid.TrustDomain
	l := Layout{Dir: dataDir}
	cfg, err := loadConfig(l)
	if err != nil {
		return nil, td, nil, err
	}
	if !cfg.HasRole("control") {
		return nil, td, nil, fmt.Errorf("%s is not a control node: it holds no CA", dataDir)
	}
	if err := l.CheckKeyFiles(); err != nil {
		return nil, td, nil, err
	}
	if td, err = spiffeid.TrustDomainFromString(cfg.TrustDomain); err != nil {
		return nil, td, nil, err
	}
	kek, err := loadKEK(dataDir, kekFile)
	if err != nil {
		return nil, td, nil, err
	}
	authority, err := l.openAuthority(td, kek)
	if err != nil {
		return nil, td, nil, err
	}
	roots, err := readCerts(l.Bundle())
	if err != nil {
		return nil, td, nil, err
	}
	return authority, td, roots, nil
}

// loadKEK loads the key-encryption key of the node in dataDir, refusing one
// kept inside the data folder.
func loadKEK(dataDir, kekFile string) (*seal.KEK, error) {
	if err := checkKEKOutside(dataDir, kekFile); err != nil {
		return nil, err
	}
	return seal.LoadKEK(kekFile)
}

// openAuthority unseals this control node's intermediate CA.
func (l Layout) openAuthority(td spiffeid.TrustDomain, kek *seal.KEK) (*ca.Authority, error) {
	interCerts, err := readCerts(l.IntermediateCert())
	if err != nil {
		return nil, err
	}
	interKey, err := seal.ReadSealedKey(kek, l.IntermediateKey(), labelIntermediate)
	if err != nil {
		return nil, err
	}
	return ca.New(td, interCerts[0], interKey, nil, time.Now)
}

// NodeSVIDExpired reports whether the node SVID in dataDir has expired.
func NodeSVIDExpired(dataDir string, now time.Time) (bool, error) {
	chain, err := readCerts(Layout{Dir: dataDir}.NodeCert())
	if err != nil {
		return false, err
	}
	return !now.Before(chain[0].NotAfter), nil
}

// ReissueNodeSVID gives the node in nodeDir a fresh SVID (new key) signed by
// the intermediate of the control node in controlDir, from local material.
// It is for a compute node that was down longer than its SVID lifetime and
// can no longer renew over the network; the caller must hold the KEK and
// both folders, which `unum dev` does for its own nodes.
func ReissueNodeSVID(controlDir, kekFile, nodeDir string) error {
	authority, td, _, err := localAuthority(controlDir, kekFile)
	if err != nil {
		return err
	}
	l := Layout{Dir: nodeDir}
	cfg, err := loadConfig(l)
	if err != nil {
		return err
	}
	if cfg.TrustDomain != td.Name() {
		return fmt.Errorf("%s is in trust domain %s, not %s", nodeDir, cfg.TrustDomain, td.Name())
	}
	id, err := identity.NodeID(td, cfg.Name)
	if err != nil {
		return err
	}
	key, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	chain, err := authority.SignX509SVIDForKey(key.Public(), id, NodeSVIDTTL)
	if err != nil {
		return err
	}
	if err := seal.WritePrivateKey(l.NodeKey(), key); err != nil {
		return err
	}
	return seal.WriteFileAtomic(l.NodeCert(), ca.EncodeCertsPEM(chain), 0o644)
}
