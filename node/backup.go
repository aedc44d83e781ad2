package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/unumos/unum/control"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/backup"
	"github.com/unumos/unum/internal/seal"
	"github.com/unumos/unum/storage/meta"
)

// backupSource gives Backup.Create this control node's CA material: the
// certificates and the keys as sealed on disk. Never node.key (plain), the
// etcd member key, or the etcd CA: a restore makes a new etcd CA (see
// Restore), so a backup need not carry one.
type backupSource struct {
	l    Layout
	kek  *seal.KEK
	node backup.Node
}

var _ control.BackupSource = backupSource{}

func (b backupSource) files() map[string]string {
	return map[string]string{
		backup.Bundle:           b.l.Bundle(),
		backup.RootCert:         b.l.RootCert(),
		backup.RootKey:          b.l.RootKey(),
		backup.IntermediateCert: b.l.IntermediateCert(),
		backup.IntermediateKey:  b.l.IntermediateKey(),
		backup.JWTKey:           b.l.JWTKey(),
	}
}

// Material implements control.BackupSource. The root is optional: only the
// node where `unum init` ran holds it (until it is exported).
func (b backupSource) Material() (backup.Node, map[string][]byte, error) {
	out := map[string][]byte{}
	for name, path := range b.files() {
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) && (name == backup.RootCert || name == backup.RootKey) {
			continue
		}
		if err != nil {
			return b.node, nil, err
		}
		out[name] = data
	}
	if (out[backup.RootCert] == nil) != (out[backup.RootKey] == nil) {
		return b.node, nil, errors.New("root certificate and sealed root key: only one of them is present")
	}
	return b.node, out, nil
}

// Seal implements backup.Sealer.
func (b backupSource) Seal(plaintext, ad []byte) ([]byte, error) { return b.kek.Seal(plaintext, ad) }

func backupNode(c *Config) backup.Node {
	n := backup.Node{Name: c.Name, Roles: slices.Clone(c.Roles), APIAddress: c.APIListen, EnrollAddress: c.EnrollListen}
	if c.Etcd != nil {
		n.EtcdClientURL, n.EtcdPeerURL = c.Etcd.ClientURL, c.Etcd.PeerURL
	}
	return n
}

// RestoreOptions configure `unum backup restore`.
type RestoreOptions struct {
	// Archive is the backup file.
	Archive string
	DataDir string
	// KEKFile is the key-encryption key the backup's keys are sealed under
	// (the backed-up node's); it must live outside DataDir.
	KEKFile string
	// TrustDomain, when set, must be the backup's.
	TrustDomain string
	// Ports: all empty means the addresses of the node the backup was
	// taken on (so that nodes that knew it find the restored node);
	// otherwise as for init.
	Ports                       Ports
	EtcdHeartbeat, EtcdElection time.Duration
	Clock                       func() time.Time
	Log                         *slog.Logger
}

// RestoreResult says what a restore did.
type RestoreResult struct {
	Manifest *backup.Manifest
	// Window is the restore window now in force.
	Window  revocation.Window
	Rewrite control.RestoreRewrite
	// HoldsRoot: the restored node holds the root CA key, so it can admit
	// control nodes (else only compute nodes can join until the root is
	// imported).
	HoldsRoot bool
	Ports     Ports
}

// RestoreWindow is the restore window for a backup taken at createdAt and
// restored at restoredAt. Certificates carry whole seconds and control
// nodes' clocks differ, so the window opens a second and ClockSkewAllowance
// before the backup time: a certificate issued after the snapshot is never
// taken for one issued before it (the cost: certificates issued in those
// few seconds before the backup renew too). It closes at restoredAt rounded
// down, so every certificate the restore itself signs is outside it.
func RestoreWindow(createdAt, restoredAt time.Time) revocation.Window {
	return revocation.Window{
		BackupAt:   createdAt.Truncate(time.Second).Add(-time.Second - revocation.ClockSkewAllowance).UTC(),
		RestoredAt: restoredAt.Truncate(time.Second).UTC(),
	}
}

// Restore rebuilds a control plane from a backup as a single-member control
// node in DataDir. The archive is verified completely first (the manifest
// tag under the KEK, every member's hash, the CA material) in a staging
// folder beside DataDir; a refused archive leaves nothing behind. Then:
// etcd's own snapshot restore into a new single-member cluster, a new etcd
// CA and member certificate (every etcd certificate of the lost cluster is
// worthless against it), the sealed CA material as it was, a fresh node
// SVID and admin config from the restored intermediate, and the cluster
// state rewritten for the new reality (control.RewriteAfterRestore) with
// the restore window in force.
func Restore(ctx context.Context, o RestoreOptions) (res *RestoreResult, err error) {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Archive == "" {
		return nil, errors.New("no backup file")
	}
	if o.DataDir == "" {
		return nil, errors.New("--data-dir is required")
	}
	l := Layout{Dir: o.DataDir}
	for _, p := range []string{l.NodeConfig(), l.Keys(), l.EtcdData(), l.Admin()} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("%s already holds node state (%s): restore into a new folder", o.DataDir, p)
		}
	}
	if err := checkKEKOutside(o.DataDir, o.KEKFile); err != nil {
		return nil, err
	}
	kek, err := seal.LoadKEK(o.KEKFile)
	if err != nil {
		return nil, fmt.Errorf("the backup's key-encryption key: %w", err)
	}
	abs, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(filepath.Dir(abs), ".unum-restore-")
	if err != nil {
		return nil, fmt.Errorf("staging folder beside %s: %w", o.DataDir, err)
	}
	defer os.RemoveAll(staging)

	m, err := extractArchive(o.Archive, staging, kek)
	if err != nil {
		return nil, err
	}
	if o.TrustDomain != "" && o.TrustDomain != m.TrustDomain {
		return nil, fmt.Errorf("%s is a backup of trust domain %q, not %q", o.Archive, m.TrustDomain, o.TrustDomain)
	}
	td, err := spiffeid.TrustDomainFromString(m.TrustDomain)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(m.Node.Roles, "control") {
		return nil, fmt.Errorf("%s was taken on %s, which is no control node", o.Archive, m.Node.Name)
	}
	mat, err := checkMaterial(staging, td, m, kek)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Archive, err)
	}
	ports, err := restorePorts(o.Ports, m.Node)
	if err != nil {
		return nil, err
	}

	// From here on DataDir is written; on failure it is emptied again.
	if err := l.mkdirs(); err != nil {
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	defer func() {
		if err != nil {
			for _, p := range []string{l.Keys(), l.EtcdData(), l.Public(), l.Admin(), l.NodeConfig()} {
				_ = os.RemoveAll(p)
			}
		}
	}()
	src := backupSource{l: l}
	for name, dst := range src.files() {
		if !m.Has(name) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(staging, filepath.FromSlash(name)))
		if err != nil {
			return nil, err
		}
		perm := os.FileMode(0o644)
		if filepath.Ext(dst) == ".sealed" {
			perm = 0o600
		}
		if err := seal.WriteFileAtomic(dst, data, perm); err != nil {
			return nil, err
		}
	}
	now := o.Clock()
	etcdCA, etcdCAKey, err := meta.NewCA(now, RootTTL)
	if err != nil {
		return nil, fmt.Errorf("etcd CA: %w", err)
	}
	memberKey, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	memberCert, err := meta.IssueMemberCert(etcdCA, etcdCAKey, memberKey.Public(), etcdHosts(ports), now, EtcdCertTTL)
	if err != nil {
		return nil, fmt.Errorf("etcd member certificate: %w", err)
	}
	if err := seal.WriteSealedKey(kek, l.EtcdCAKey(), labelEtcdCA, etcdCAKey); err != nil {
		return nil, err
	}
	if _, err := meta.WriteTLSFiles(l.etcdTLSDir(), etcdCA, memberCert, memberKey); err != nil {
		return nil, err
	}
	cfg := &Config{
		Name:             m.Node.Name,
		TrustDomain:      td.Name(),
		Roles:            slices.Clone(m.Node.Roles),
		APIListen:        ports.API,
		EnrollListen:     ports.Enroll,
		ControlAddresses: []string{ports.API},
		Etcd: &EtcdConfig{
			ClientURL:      "https://" + ports.EtcdClient,
			PeerURL:        "https://" + ports.EtcdPeer,
			InitialCluster: m.Node.Name + "=https://" + ports.EtcdPeer,
			State:          meta.ClusterStateNew,
			Promoted:       true,
		},
	}
	ecfg := etcdConfig(l, cfg, o.EtcdHeartbeat, o.EtcdElection, o.Log)
	if err := meta.RestoreSnapshot(filepath.Join(staging, filepath.FromSlash(backup.SnapshotFile)), ecfg); err != nil {
		return nil, err
	}
	srv, err := meta.Start(ctx, ecfg)
	if err != nil {
		return nil, fmt.Errorf("start restored etcd: %w", err)
	}
	cfg.Etcd.MemberID = srv.ID()
	restoredAt := o.Clock()
	window := RestoreWindow(m.CreatedAt, restoredAt)
	rw, err := control.RewriteAfterRestore(ctx, srv.Client(), control.RestorePlan{
		TrustDomain: td.Name(), Name: m.Node.Name, APIAddress: ports.API, EnrollmentAddress: ports.Enroll,
		EtcdMemberID: srv.ID(), Window: window, Now: restoredAt,
	})
	if cerr := srv.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}

	// Sign only now, after restoredAt: these certificates are outside the
	// window they would otherwise fall into.
	authority, err := ca.New(td, mat.inter, mat.interKey, nil, o.Clock)
	if err != nil {
		return nil, err
	}
	nodeID, err := identity.NodeID(td, m.Node.Name)
	if err != nil {
		return nil, err
	}
	nodeKey, err := ca.GenerateKey()
	if err != nil {
		return nil, err
	}
	chain, err := authority.SignX509SVIDForKey(nodeKey.Public(), nodeID, NodeSVIDTTL)
	if err != nil {
		return nil, fmt.Errorf("node svid: %w", err)
	}
	if err := seal.WritePrivateKey(l.NodeKey(), nodeKey); err != nil {
		return nil, err
	}
	if err := seal.WriteFileAtomic(l.NodeCert(), ca.EncodeCertsPEM(chain), 0o644); err != nil {
		return nil, err
	}
	adminCfg, err := issueAdmin(authority, td, mat.bundle, []string{ports.API}, AdminCertTTL)
	if err != nil {
		return nil, err
	}
	if err := adminCfg.Save(l.Admin()); err != nil {
		return nil, fmt.Errorf("write admin config: %w", err)
	}
	if err := saveConfig(l, cfg); err != nil {
		return nil, err
	}
	o.Log.Info("control plane restored", "trust_domain", td.Name(), "node", cfg.Name, "backup_at", m.CreatedAt,
		"removed_control_nodes", rw.Removed, "nodes", rw.Nodes, "window_from", window.BackupAt, "window_to", window.RestoredAt)
	return &RestoreResult{Manifest: m, Window: window, Rewrite: rw, HoldsRoot: m.Has(backup.RootKey), Ports: ports}, nil
}

func extractArchive(path, staging string, kek *seal.KEK) (*backup.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := backup.Extract(f, staging, kek)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// material is the verified CA material of a backup.
type material struct {
	inter    *x509.Certificate
	interKey crypto.Signer
	bundle   []*x509.Certificate
}

// checkMaterial checks that the archive's CA material belongs to the
// manifest: the intermediate is the CA of the manifest's node in its trust
// domain and chains to the bundle, and every sealed key opens under the KEK
// and matches its certificate.
func checkMaterial(dir string, td spiffeid.TrustDomain, m *backup.Manifest, kek *seal.KEK) (*material, error) {
	path := func(name string) string { return filepath.Join(dir, filepath.FromSlash(name)) }
	bundle, err := readCerts(path(backup.Bundle))
	if err != nil {
		return nil, err
	}
	for _, r := range bundle {
		if len(r.URIs) != 1 || r.URIs[0].String() != td.IDString() {
			return nil, fmt.Errorf("the trust bundle holds a CA of another trust domain than %s", td.Name())
		}
	}
	inters, err := readCerts(path(backup.IntermediateCert))
	if err != nil {
		return nil, err
	}
	interKey, err := seal.ReadSealedKey(kek, path(backup.IntermediateKey), labelIntermediate)
	if err != nil {
		return nil, fmt.Errorf("intermediate key: %w", err)
	}
	id, err := identity.NodeID(td, m.Node.Name)
	if err != nil {
		return nil, err
	}
	if err := checkIntermediate(inters[0], interKey.Public(), bundle, id); err != nil {
		return nil, fmt.Errorf("intermediate CA: %w", err)
	}
	jwtKey, err := seal.ReadSealedKey(kek, path(backup.JWTKey), labelJWT)
	if err != nil {
		return nil, fmt.Errorf("jwt key: %w", err)
	}
	if _, ok := jwtKey.(*ecdsa.PrivateKey); !ok {
		return nil, errors.New("jwt key is not ECDSA")
	}
	if m.Has(backup.RootKey) != m.Has(backup.RootCert) {
		return nil, errors.New("root certificate and sealed root key: only one of them is present")
	}
	if m.Has(backup.RootKey) {
		roots, err := readCerts(path(backup.RootCert))
		if err != nil {
			return nil, err
		}
		rootKey, err := seal.ReadSealedKey(kek, path(backup.RootKey), labelRoot)
		if err != nil {
			return nil, fmt.Errorf("root key: %w", err)
		}
		type equaler interface{ Equal(crypto.PublicKey) bool }
		if k, ok := rootKey.Public().(equaler); !ok || !k.Equal(roots[0].PublicKey) {
			return nil, errors.New("the sealed root key does not belong to the root certificate")
		}
		if !slices.ContainsFunc(bundle, roots[0].Equal) {
			return nil, errors.New("the root certificate is not in the trust bundle")
		}
	}
	return &material{inter: inters[0], interKey: interKey, bundle: bundle}, nil
}

// restorePorts are the backed-up node's addresses unless the operator gave
// any, in which case they follow init's rules.
func restorePorts(p Ports, n backup.Node) (Ports, error) {
	if p != (Ports{}) {
		return p.withDefaults()
	}
	hostPort := func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil {
			return ""
		}
		return u.Host
	}
	p = Ports{API: n.APIAddress, Enroll: n.EnrollAddress, EtcdClient: hostPort(n.EtcdClientURL), EtcdPeer: hostPort(n.EtcdPeerURL)}
	if p.API == "" || p.Enroll == "" || p.EtcdClient == "" || p.EtcdPeer == "" {
		return p, errors.New("the backup does not record all of its node's addresses: give --listen")
	}
	return p.withDefaults()
}
