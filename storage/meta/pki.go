package meta

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/unumos/unum/internal/seal"
)

// RoleCN is the subject common name every etcd member certificate carries and
// the only CN etcd accepts on its client and peer listeners.
const RoleCN = "unum-control"

// caCN names the etcd CA so that an operator reading a certificate can tell it
// apart from the SPIFFE CA at a glance.
const caCN = "unum etcd CA"

// clockSkew backdates NotBefore so that control nodes whose clocks differ by a
// little accept a certificate issued just now.
const clockSkew = time.Minute

// File names inside a node's etcd key folder (DIR/keys/etcd).
const (
	caFileName   = "ca.pem"
	certFileName = "member.pem"
	keyFileName  = "member.key"
)

// NewCA creates the self-signed etcd CA: ECDSA P-256, CN "unum etcd CA",
// allowed to sign end-entity certificates only (path length 0). It is a
// function of now, ttl and randomness.
func NewCA(now time.Time, ttl time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("etcd ca: ttl %v is not positive", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd ca: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("etcd ca: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCN},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd ca: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd ca: parse own certificate: %w", err)
	}
	return cert, key, nil
}

// IssueMemberCert signs a member certificate for pub (an ECDSA P-256 key):
// CN RoleCN, usable as TLS server and client, with one IP or DNS SAN per
// host. etcd checks a peer's IP SAN against its address, and clients check the
// server's SANs, so hosts must list every address the member is reached at.
// The certificate never outlives the CA: NotAfter is clamped to the CA's.
func IssueMemberCert(caCert *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, hosts []string, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	if caCert == nil || caKey == nil {
		return nil, errors.New("etcd member cert: missing ca certificate or key")
	}
	if !caCert.IsCA || caCert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("etcd member cert: issuer is not a ca")
	}
	if !publicKeysEqual(caCert.PublicKey, caKey.Public()) {
		return nil, errors.New("etcd member cert: ca key does not match ca certificate")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("etcd member cert: ttl %v is not positive", ttl)
	}
	ecPub, ok := pub.(*ecdsa.PublicKey)
	if !ok || ecPub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("etcd member cert: public key is %T, want ECDSA P-256", pub)
	}
	if len(hosts) == 0 {
		return nil, errors.New("etcd member cert: no hosts: peers and clients verify the member by IP or DNS name")
	}
	var ips []net.IP
	var dnsNames []string
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := validDNSName(h); err != nil {
			return nil, fmt.Errorf("etcd member cert: host %q: %w", h, err)
		}
		dnsNames = append(dnsNames, strings.ToLower(h))
	}
	notAfter := now.Add(ttl)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("etcd member cert: ca expired at %v", caCert.NotAfter)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("etcd member cert: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: RoleCN},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IPAddresses:           ips,
		DNSNames:              dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, ecPub, caKey)
	if err != nil {
		return nil, fmt.Errorf("etcd member cert: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("etcd member cert: parse issued certificate: %w", err)
	}
	return cert, nil
}

// TLSFiles locates a member's TLS material on disk. etcd reads certificates
// from files, so this is the form every etcd-facing API takes.
type TLSFiles struct{ CAFile, CertFile, KeyFile string }

// TLSFilesIn names the files WriteTLSFiles writes into dir.
func TLSFilesIn(dir string) TLSFiles {
	return TLSFiles{
		CAFile:   filepath.Join(dir, caFileName),
		CertFile: filepath.Join(dir, certFileName),
		KeyFile:  filepath.Join(dir, keyFileName),
	}
}

// WriteTLSFiles writes ca.pem, member.pem and member.key (mode 0600) into dir
// (created 0700 if missing). Each file is written to a temporary name and
// renamed, so a crash never leaves a half-written key for etcd to load.
func WriteTLSFiles(dir string, caCert, memberCert *x509.Certificate, memberKey *ecdsa.PrivateKey) (TLSFiles, error) {
	if caCert == nil || memberCert == nil || memberKey == nil {
		return TLSFiles{}, errors.New("write etcd tls files: missing ca certificate, member certificate or key")
	}
	if !publicKeysEqual(memberCert.PublicKey, memberKey.Public()) {
		return TLSFiles{}, errors.New("write etcd tls files: member key does not match member certificate")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(memberKey)
	if err != nil {
		return TLSFiles{}, fmt.Errorf("write etcd tls files: marshal key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return TLSFiles{}, fmt.Errorf("write etcd tls files: %w", err)
	}
	files := TLSFilesIn(dir)
	for _, f := range []struct {
		path string
		typ  string
		der  []byte
		mode os.FileMode
	}{
		{files.CAFile, "CERTIFICATE", caCert.Raw, 0o644},
		{files.CertFile, "CERTIFICATE", memberCert.Raw, 0o644},
		{files.KeyFile, "PRIVATE KEY", keyDER, 0o600},
	} {
		data := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := seal.WriteFileAtomic(f.path, data, f.mode); err != nil {
			return TLSFiles{}, fmt.Errorf("write etcd tls files: %w", err)
		}
	}
	return files, nil
}

// clientTLSConfig builds the TLS configuration a control process uses towards
// etcd: it presents the member certificate and accepts only a server whose
// certificate chains to the etcd CA and carries CN RoleCN.
func (f TLSFiles) clientTLSConfig() (*tls.Config, error) {
	pool, pair, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		RootCAs:               pool,
		Certificates:          []tls.Certificate{pair},
		VerifyPeerCertificate: requireRoleCN("etcd server"),
	}, nil
}

// load reads the CA pool and the member key pair.
func (f TLSFiles) load() (*x509.CertPool, tls.Certificate, error) {
	if f.CAFile == "" || f.CertFile == "" || f.KeyFile == "" {
		return nil, tls.Certificate{}, errors.New("tls: ca, certificate and key files are all required")
	}
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("tls: read ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, tls.Certificate{}, fmt.Errorf("tls: %s holds no pem certificate", f.CAFile)
	}
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("tls: load member certificate: %w", err)
	}
	return pool, pair, nil
}

// checkMember verifies, before etcd sees them, that the files hold a member
// certificate valid at now, chaining to the CA in CAFile, matching its key
// and covering hosts. etcd would find most of these faults itself, but late,
// with terse messages, and (v3.7.3) leaking the port it had already bound.
func (f TLSFiles) checkMember(now time.Time, hosts ...string) error {
	pool, pair, err := f.load()
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("tls: parse member certificate: %w", err)
	}
	if leaf.Subject.CommonName != RoleCN {
		return fmt.Errorf("tls: %s has common name %q, want %q", f.CertFile, leaf.Subject.CommonName, RoleCN)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return fmt.Errorf("tls: member certificate %s: %w", f.CertFile, err)
		}
	}
	for _, h := range hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			return fmt.Errorf("tls: member certificate %s does not cover %s, which peers and clients verify: %w", f.CertFile, h, err)
		}
	}
	return nil
}

// requireRoleCN runs after chain verification and refuses a peer whose leaf
// is not a member certificate.
func requireRoleCN(who string) func([][]byte, [][]*x509.Certificate) error {
	return func(_ [][]byte, chains [][]*x509.Certificate) error {
		for _, chain := range chains {
			if len(chain) > 0 && chain[0].Subject.CommonName == RoleCN {
				return nil
			}
		}
		return fmt.Errorf("%s certificate refused: common name is not %q", who, RoleCN)
	}
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// ValidateHost reports whether h can be a SAN of a member certificate: an
// IP address or a DNS name.
func ValidateHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	return validDNSName(h)
}

// validDNSName accepts host names made of LDH labels. Wildcards are refused:
// a member certificate names one member.
func validDNSName(h string) error {
	if h == "" || len(h) > 253 {
		return errors.New("not an IP address or a DNS name of 1 to 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return errors.New("DNS label empty or longer than 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("DNS label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("DNS name has character %q (want letters, digits, '-' and '.')", c)
			}
		}
	}
	return nil
}
