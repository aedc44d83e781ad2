package node

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/seal"
)

// IssueAdminConfig signs a fresh admin client config (spiffe://TD/user/admin,
// AdminCertTTL) with the intermediate of the control node in dataDir, from
// local CA material: it needs the KEK, so only someone who can already run
// that control node can do it. `unum dev` uses it on resume (the admin
// certificate of a dev cluster older than a day has expired); the operations
// issue's break-glass `unum admin recover` builds on it.
func IssueAdminConfig(dataDir, kekFile string, addrs []string) (*clientconfig.Config, error) {
	l := Layout{Dir: dataDir}
	cfg, err := loadConfig(l)
	if err != nil {
		return nil, err
	}
	if !cfg.HasRole("control") {
		return nil, fmt.Errorf("%s is not a control node: it holds no CA", dataDir)
	}
	if err := l.CheckKeyFiles(); err != nil {
		return nil, err
	}
	if err := checkKEKOutside(dataDir, kekFile); err != nil {
		return nil, err
	}
	kek, err := seal.LoadKEK(kekFile)
	if err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	interCerts, err := readCerts(l.IntermediateCert())
	if err != nil {
		return nil, err
	}
	interKey, err := seal.ReadSealedKey(kek, l.IntermediateKey(), labelIntermediate)
	if err != nil {
		return nil, err
	}
	authority, err := ca.New(td, interCerts[0], interKey, nil, time.Now)
	if err != nil {
		return nil, err
	}
	roots, err := readCerts(l.Bundle())
	if err != nil {
		return nil, err
	}
	adminID, err := identity.UserID(td, identity.AdminUser)
	if err != nil {
		return nil, err
	}
	key, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	chain, err := authority.SignX509SVIDForKey(key.Public(), adminID, AdminCertTTL)
	if err != nil {
		return nil, fmt.Errorf("admin certificate: %w", err)
	}
	return clientconfig.New(&x509svid.SVID{ID: adminID, Certificates: chain, PrivateKey: key}, roots, addrs)
}
