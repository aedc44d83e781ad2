package node

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"sigs.k8s.io/yaml"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
	"github.com/unumos/unum/storage/meta"
)

// Layout names the files of a node's data folder:
//
//	DIR/               0711: traversable by every uid, listable by none
//	DIR/node.yaml      the node's configuration (name, roles, addresses)
//	DIR/keys/          0700: everything secret
//	  node.key node.pem bundle.pem         the node SVID and trust bundle
//	  ca/root.pem ca/root.key.sealed       only where `unum init` ran
//	  ca/intermediate.pem ca/intermediate.key.sealed ca/jwt.key.sealed
//	  etcd/ca.pem etcd/ca.key.sealed       etcd CA: only where init ran
//	  etcd/member.pem etcd/member.key
//	  audit.key                            the node's audit checkpoint key
//	  witness.key                          control nodes: the audit witness key
//	DIR/audit/         the node's audit log (Pebble)
//	DIR/etcd/          etcd's data (control nodes)
//	DIR/audit-inbox/   0700: events local tools hand the running node (break-glass)
//	DIR/public/        0755: agent.sock, 0666
//	DIR/admin.yaml     0600: the admin's client config (init only)
type Layout struct{ Dir string }

func (l Layout) path(p ...string) string { return filepath.Join(append([]string{l.Dir}, p...)...) }

func (l Layout) NodeConfig() string       { return l.path("node.yaml") }
func (l Layout) Keys() string             { return l.path("keys") }
func (l Layout) NodeKey() string          { return l.path("keys", "node.key") }
func (l Layout) NodeCert() string         { return l.path("keys", "node.pem") }
func (l Layout) Bundle() string           { return l.path("keys", "bundle.pem") }
func (l Layout) RootCert() string         { return l.path("keys", "ca", "root.pem") }
func (l Layout) RootKey() string          { return l.path("keys", "ca", "root.key.sealed") }
func (l Layout) IntermediateCert() string { return l.path("keys", "ca", "intermediate.pem") }
func (l Layout) IntermediateKey() string  { return l.path("keys", "ca", "intermediate.key.sealed") }
func (l Layout) JWTKey() string           { return l.path("keys", "ca", "jwt.key.sealed") }
func (l Layout) etcdTLSDir() string       { return l.path("keys", "etcd") }
func (l Layout) EtcdTLS() meta.TLSFiles   { return meta.TLSFilesIn(l.etcdTLSDir()) }
func (l Layout) EtcdCACert() string       { return l.EtcdTLS().CAFile }
func (l Layout) EtcdCAKey() string        { return l.path("keys", "etcd", "ca.key.sealed") }
func (l Layout) EtcdMemberCert() string   { return l.EtcdTLS().CertFile }
func (l Layout) EtcdMemberKey() string    { return l.EtcdTLS().KeyFile }
func (l Layout) EtcdData() string         { return l.path("etcd") }
func (l Layout) Public() string           { return l.path("public") }
func (l Layout) Socket() string           { return l.path("public", "agent.sock") }
func (l Layout) Admin() string            { return l.path("admin.yaml") }
func (l Layout) AuditKey() string         { return l.path("keys", "audit.key") }
func (l Layout) WitnessKey() string       { return l.path("keys", "witness.key") }
func (l Layout) AuditDir() string         { return l.path("audit") }

// Labels bind each sealed key to its purpose (AEAD associated data), so a
// sealed root key cannot be swapped in as an intermediate key.
const (
	labelRoot         = "unum/ca/root"
	labelIntermediate = "unum/ca/intermediate"
	labelJWT          = "unum/ca/jwt"
	labelEtcdCA       = "unum/etcd/ca"
)

// mkdirs creates the folders with their modes (MkdirAll honours umask, so
// chmod explicitly).
func (l Layout) mkdirs() error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{l.Dir, 0o711},
		{l.Keys(), 0o700},
		{l.path("keys", "ca"), 0o700},
		{l.path("keys", "etcd"), 0o700},
		{l.Public(), 0o755},
	} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
	}
	return nil
}

// CheckKeyFiles refuses to go on when any key file under DIR/keys is group-
// or world-readable: a node must not run with keys others can read.
func (l Layout) CheckKeyFiles() error {
	var bad []string
	err := filepath.WalkDir(l.Keys(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".key") || strings.HasSuffix(p, ".key.sealed")) {
			return nil
		}
		if err := seal.CheckKeyFilePerms(p); err != nil {
			bad = append(bad, err.Error())
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check key files: %w", err)
	}
	// admin.yaml holds the admin's private key.
	if _, err := os.Lstat(l.Admin()); err == nil {
		if err := seal.CheckKeyFilePerms(l.Admin()); err != nil {
			bad = append(bad, err.Error())
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("refusing to start: %s", strings.Join(bad, "; "))
	}
	return nil
}

// resolveExisting resolves the symlinks of the longest existing prefix of an
// absolute path and appends the rest, so that a path through a symlinked
// folder compares equal to its target even when its tail does not exist yet.
func resolveExisting(p string) string {
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// Config is DIR/node.yaml.
type Config struct {
	Name        string   `json:"name"`
	TrustDomain string   `json:"trust_domain"`
	Roles       []string `json:"roles"`
	// APIListen serves the mutual-TLS API; EnrollListen (control) serves
	// only Join.
	APIListen    string `json:"api_listen"`
	EnrollListen string `json:"enroll_listen,omitempty"`
	// MetricsListen serves /metrics (loopback: plain HTTP; otherwise
	// mutual TLS); "off" disables it, empty means DefaultMetricsListen.
	MetricsListen string `json:"metrics_listen,omitempty"`
	// ControlAddresses are the API addresses of control nodes, refreshed
	// from the sync stream.
	ControlAddresses []string    `json:"control_addresses"`
	Etcd             *EtcdConfig `json:"etcd,omitempty"`
}

// EtcdConfig is the etcd member's configuration on a control node.
type EtcdConfig struct {
	ClientURL      string `json:"client_url"`
	PeerURL        string `json:"peer_url"`
	InitialCluster string `json:"initial_cluster"`
	// State is "new" for the first member, "existing" for joined ones.
	State    string `json:"state"`
	MemberID uint64 `json:"member_id,omitempty"`
	// Promoted is false for a joined member until it has been promoted
	// from learner to voter. A learner serves no client requests, so until
	// then the node reaches etcd through VoterClientURLs.
	Promoted        bool     `json:"promoted"`
	VoterClientURLs []string `json:"voter_client_urls,omitempty"`
}

// HasRole reports whether the node has role r.
func (c *Config) HasRole(r string) bool {
	for _, x := range c.Roles {
		if x == r {
			return true
		}
	}
	return false
}

func loadConfig(l Layout) (*Config, error) {
	data, err := os.ReadFile(l.NodeConfig())
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", l.NodeConfig(), err)
	}
	return &c, nil
}

func saveConfig(l Layout, c *Config) error {
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return seal.WriteFileAtomic(l.NodeConfig(), data, 0o600)
}

// checkKEKOutside refuses a key-encryption key inside the data folder: a
// stolen disk (or backup of DIR) must not carry the key that unseals the CA.
func checkKEKOutside(dataDir, kekFile string) error {
	if kekFile == "" {
		return errors.New("--kek-file is required on control nodes: the key-encryption key must come from outside the data folder")
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	kek, err := filepath.Abs(kekFile)
	if err != nil {
		return err
	}
	dir, kek = resolveExisting(dir), resolveExisting(kek)
	if rel, err := filepath.Rel(dir, kek); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return fmt.Errorf("--kek-file %s is inside the data folder %s: keep the key-encryption key elsewhere (only `unum dev` keeps it beside the nodes)", kekFile, dataDir)
	}
	return nil
}

// readCerts reads a PEM file of one or more certificates.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ca.ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// loadSVID reads the node's SVID (key and chain, whose leaf names the
// SPIFFE ID) and trust bundle.
func (l Layout) loadSVID() (*x509svid.SVID, []*x509.Certificate, error) {
	key, err := seal.ReadPrivateKey(l.NodeKey())
	if err != nil {
		return nil, nil, err
	}
	chain, err := readCerts(l.NodeCert())
	if err != nil {
		return nil, nil, err
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", l.NodeCert(), err)
	}
	roots, err := readCerts(l.Bundle())
	if err != nil {
		return nil, nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, roots, nil
}

// Credentials loads the node's SVID and trust bundle as rpc credentials:
// what its agent presents to the control plane.
func (l Layout) Credentials() (*rpc.Credentials, error) {
	svid, roots, err := l.loadSVID()
	if err != nil {
		return nil, err
	}
	return rpc.NewCredentials(svid, roots)
}
