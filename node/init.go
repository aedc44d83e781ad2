package node

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/control"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/seal"
	"github.com/unumos/unum/storage/meta"
)

// Lifetimes of what init and joins create.
const (
	RootTTL         = 10 * 365 * 24 * time.Hour
	IntermediateTTL = 365 * 24 * time.Hour
	EtcdCertTTL     = 365 * 24 * time.Hour
	NodeSVIDTTL     = time.Hour
	AdminCertTTL    = 24 * time.Hour
	DefaultAPIPort  = 7443
)

// Ports are a node's listen addresses. Empty fields default to the API
// port + 1 (enrolment), + 2 (etcd client), + 3 (etcd peer), and
// 127.0.0.1:API port + 4 (metrics; see DefaultMetricsListen).
type Ports struct {
	API        string `json:"api"`
	Enroll     string `json:"enroll"`
	EtcdClient string `json:"etcd_client"`
	EtcdPeer   string `json:"etcd_peer"`
	// Metrics is the /metrics endpoint (metrics.ParseListen, or "off").
	// Unlike the others it is local to the node: on an existing node a
	// value given to `unum node` overrides node.yaml for that run.
	Metrics string `json:"metrics,omitempty"`
}

// FreeLoopbackPorts picks n sets of free ports on 127.0.0.1 for nodes that
// run on one machine (unum dev, the benchmarks, tests). All are held open
// together, so none repeats, and released for the nodes to bind.
func FreeLoopbackPorts(n int) ([]Ports, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	addr := func() (string, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		ls = append(ls, l)
		return l.Addr().String(), nil
	}
	out := make([]Ports, n)
	for i := range out {
		for _, p := range []*string{&out[i].API, &out[i].Enroll, &out[i].EtcdClient, &out[i].EtcdPeer, &out[i].Metrics} {
			a, err := addr()
			if err != nil {
				return nil, fmt.Errorf("pick a free port: %w", err)
			}
			*p = a
		}
	}
	return out, nil
}

func (p Ports) withDefaults() (Ports, error) {
	if p.API == "" {
		p.API = net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultAPIPort))
	}
	host, portStr, err := net.SplitHostPort(p.API)
	if err != nil {
		return p, fmt.Errorf("--listen %q: %w", p.API, err)
	}
	ip := net.ParseIP(host)
	if ip != nil && ip.IsUnspecified() {
		return p, fmt.Errorf("--listen %q: give the address other nodes reach this node at, not an unspecified address", p.API)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65532 {
		return p, fmt.Errorf("--listen %q: bad port", p.API)
	}
	def := func(v *string, off int) {
		if *v == "" {
			*v = net.JoinHostPort(host, strconv.Itoa(port+off))
		}
	}
	def(&p.Enroll, 1)
	def(&p.EtcdClient, 2)
	def(&p.EtcdPeer, 3)
	if p.Metrics == "" {
		if p.Metrics, err = DefaultMetricsListen(p.API); err != nil {
			return p, err
		}
	}
	if err := checkMetricsListen(p.Metrics); err != nil {
		return p, err
	}
	for _, a := range []string{p.Enroll, p.EtcdClient, p.EtcdPeer} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return p, fmt.Errorf("listen address %q: %w", a, err)
		}
	}
	return p, nil
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

// etcdHosts are the SANs of a member's etcd certificate.
func etcdHosts(p Ports) []string {
	hosts := []string{"127.0.0.1", "localhost"}
	for _, a := range []string{p.EtcdClient, p.EtcdPeer} {
		if h := hostOf(a); h != "" && h != "127.0.0.1" && h != "localhost" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// InitOptions configure `unum init`.
type InitOptions struct {
	TrustDomain string
	DataDir     string
	KEKFile     string
	Name        string
	Ports       Ports
	// EtcdHeartbeat and EtcdElection zero mean etcd's defaults.
	EtcdHeartbeat, EtcdElection time.Duration
	// EnforcementOptional lets nodes without kernel enforcement (degraded:
	// not root, no cgroup BPF) run tasks. Off by default: only unum dev,
	// a single machine for development, turns it on. `unum enforcement
	// require on|off` changes it later.
	EnforcementOptional bool
	Clock               func() time.Time
	Log                 *slog.Logger
}

// Init creates a trust domain and its first control node in DataDir: root
// CA, this node's intermediate, the etcd CA and member certificate, the JWT
// signing key, the node SVID, the initial etcd state, and DIR/admin.yaml.
// Signing keys are sealed under the KEK. On failure nothing is left behind.
func Init(ctx context.Context, o InitOptions) (err error) {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Name == "" {
		o.Name = "node-1"
	}
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return fmt.Errorf("--trust-domain %q: %w", o.TrustDomain, err)
	}
	if err := jointoken.ValidateNodeName(o.Name); err != nil {
		return fmt.Errorf("--name: %w", err)
	}
	if o.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	ports, err := o.Ports.withDefaults()
	if err != nil {
		return err
	}
	l := Layout{Dir: o.DataDir}
	// Never initialise over anything a node left behind: a half-removed
	// node may still hold a sealed root key.
	for _, p := range []string{l.NodeConfig(), l.Keys(), l.EtcdData(), l.Admin()} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already holds node state (%s): refusing to initialise over it", o.DataDir, p)
		}
	}
	if err := checkKEKOutside(o.DataDir, o.KEKFile); err != nil {
		return err
	}
	if _, err := os.Stat(o.KEKFile); errors.Is(err, fs.ErrNotExist) {
		if err := seal.CreateKEKFile(o.KEKFile); err != nil {
			return fmt.Errorf("create key-encryption key: %w", err)
		}
		o.Log.Info("created key-encryption key", "path", o.KEKFile)
	}
	kek, err := seal.LoadKEK(o.KEKFile)
	if err != nil {
		return err
	}
	if err := l.mkdirs(); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	defer func() {
		if err != nil {
			for _, p := range []string{l.Keys(), l.EtcdData(), l.Public(), l.Admin(), l.NodeConfig()} {
				_ = os.RemoveAll(p)
			}
		}
	}()

	now := o.Clock()
	rootKey, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	root, err := ca.NewRoot(td, rootKey, now, RootTTL)
	if err != nil {
		return fmt.Errorf("root CA: %w", err)
	}
	interKey, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	inter, err := ca.NewIntermediate(td, o.Name, interKey.Public(), root, rootKey, now, IntermediateTTL)
	if err != nil {
		return fmt.Errorf("intermediate CA: %w", err)
	}
	authority, err := ca.New(td, inter, interKey, nil, o.Clock)
	if err != nil {
		return err
	}
	jwtKey, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	jwtSigner, err := ca.NewJWTSigner(td, jwtKey, o.Clock)
	if err != nil {
		return err
	}
	etcdCA, etcdCAKey, err := meta.NewCA(now, RootTTL)
	if err != nil {
		return fmt.Errorf("etcd CA: %w", err)
	}
	memberKey, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	memberCert, err := meta.IssueMemberCert(etcdCA, etcdCAKey, memberKey.Public(), etcdHosts(ports), now, EtcdCertTTL)
	if err != nil {
		return fmt.Errorf("etcd member certificate: %w", err)
	}
	nodeID, err := identity.NodeID(td, o.Name)
	if err != nil {
		return err
	}
	nodeKey, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	nodeChain, err := authority.SignX509SVIDForKey(nodeKey.Public(), nodeID, NodeSVIDTTL)
	if err != nil {
		return fmt.Errorf("node svid: %w", err)
	}
	adminID, err := identity.UserID(td, identity.AdminUser)
	if err != nil {
		return err
	}
	adminKey, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	adminChain, err := authority.SignX509SVIDForKey(adminKey.Public(), adminID, AdminCertTTL)
	if err != nil {
		return fmt.Errorf("admin certificate: %w", err)
	}

	for _, sk := range []struct {
		path, label string
		key         crypto.Signer
	}{
		{l.RootKey(), labelRoot, rootKey},
		{l.IntermediateKey(), labelIntermediate, interKey},
		{l.JWTKey(), labelJWT, jwtKey},
		{l.EtcdCAKey(), labelEtcdCA, etcdCAKey},
	} {
		if err := seal.WriteSealedKey(kek, sk.path, sk.label, sk.key); err != nil {
			return fmt.Errorf("seal %s: %w", sk.label, err)
		}
	}
	if err := seal.WritePrivateKey(l.NodeKey(), nodeKey); err != nil {
		return err
	}
	if _, err := meta.WriteTLSFiles(l.etcdTLSDir(), etcdCA, memberCert, memberKey); err != nil {
		return err
	}
	for _, c := range []struct {
		path  string
		certs []*x509.Certificate
	}{
		{l.RootCert(), []*x509.Certificate{root}},
		{l.Bundle(), []*x509.Certificate{root}},
		{l.IntermediateCert(), []*x509.Certificate{inter}},
		{l.NodeCert(), nodeChain},
	} {
		if err := seal.WriteFileAtomic(c.path, ca.EncodeCertsPEM(c.certs), 0o644); err != nil {
			return err
		}
	}

	cfg := &Config{
		Name:             o.Name,
		TrustDomain:      td.Name(),
		Roles:            []string{"compute", "control"},
		APIListen:        ports.API,
		EnrollListen:     ports.Enroll,
		MetricsListen:    ports.Metrics,
		ControlAddresses: []string{ports.API},
		Etcd: &EtcdConfig{
			ClientURL:      "https://" + ports.EtcdClient,
			PeerURL:        "https://" + ports.EtcdPeer,
			InitialCluster: o.Name + "=https://" + ports.EtcdPeer,
			State:          "new",
			Promoted:       true,
		},
	}
	// The node's audit checkpoint key, registered with the node.
	auditSigner, err := audit.LoadOrCreateSigner(o.Name, l.AuditKey())
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	// Write the initial cluster state into a freshly started etcd.
	srv, err := meta.Start(ctx, etcdConfig(l, cfg, o.EtcdHeartbeat, o.EtcdElection, o.Log))
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	jwtPub, err := x509.MarshalPKIXPublicKey(jwtSigner.PublicKey())
	if err != nil {
		srv.Close()
		return err
	}
	err = control.Bootstrap(ctx, srv.Client(),
		control.ClusterInfo{TrustDomain: td.Name(), CreatedAt: now.UTC()},
		[]*x509.Certificate{root},
		control.NodeRecord{Name: o.Name, SPIFFEID: nodeID.String(), Roles: cfg.Roles, APIAddress: ports.API, EnrollmentAddress: ports.Enroll, JoinedAt: now.UTC()},
		control.JWTKeyRecord{KeyID: jwtSigner.KeyID(), Node: o.Name, PublicKey: jwtPub},
		auditSigner.PublicKeyset(),
		control.EnforcementSettings{Required: !o.EnforcementOptional},
	)
	if cerr := srv.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("bootstrap cluster state: %w", err)
	}

	adminCfg, err := clientconfig.New(&x509svid.SVID{ID: adminID, Certificates: adminChain, PrivateKey: adminKey}, []*x509.Certificate{root}, []string{ports.API})
	if err != nil {
		return err
	}
	if err := adminCfg.Save(l.Admin()); err != nil {
		return fmt.Errorf("write admin config: %w", err)
	}
	if err := saveConfig(l, cfg); err != nil {
		return err
	}
	o.Log.Info("trust domain created", "trust_domain", td.Name(), "node", o.Name, "root_fingerprint", ca.Fingerprint(root), "admin_config", l.Admin())
	return nil
}

func etcdConfig(l Layout, c *Config, hb, election time.Duration, log *slog.Logger) meta.Config {
	return meta.Config{
		Name:              c.Name,
		DataDir:           l.EtcdData(),
		ClientURL:         c.Etcd.ClientURL,
		PeerURL:           c.Etcd.PeerURL,
		InitialCluster:    c.Etcd.InitialCluster,
		ClusterState:      c.Etcd.State,
		TLS:               l.EtcdTLS(),
		HeartbeatInterval: hb,
		ElectionTimeout:   election,
		Logger:            log,
	}
}
