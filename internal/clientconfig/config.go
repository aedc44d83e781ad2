package clientconfig

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"sigs.k8s.io/yaml"

	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/internal/seal"
)

// Config is a client configuration file.
type Config struct {
	TrustDomain string   `json:"trust_domain"`
	SPIFFEID    string   `json:"spiffe_id"`
	Addresses   []string `json:"addresses"`
	// Certificate is the PEM chain (leaf first), Key the PEM PKCS#8 key,
	// Bundle the PEM trust bundle (roots).
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	Bundle      string `json:"bundle"`
}

// Resolve returns the config path from the flag value or UNUM_CONFIG.
func Resolve(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if p := os.Getenv("UNUM_CONFIG"); p != "" {
		return p, nil
	}
	return "", errors.New("no client config: set UNUM_CONFIG (unum dev prints the line) or pass --config")
}

// Load reads path. The file holds a private key, so it must not be group-
// or world-readable.
func Load(path string) (*Config, error) {
	if err := seal.CheckKeyFilePerms(path); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	if addr := os.Getenv("UNUM_ADDR"); addr != "" {
		c.Addresses = strings.Split(addr, ",")
	}
	return &c, nil
}

// Save writes c to path, 0600, atomically.
func (c *Config) Save(path string) error {
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return seal.WriteFileAtomic(path, data, 0o600)
}

// New builds a config from an SVID and bundle.
func New(svid *x509svid.SVID, roots []*x509.Certificate, addrs []string) (*Config, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return nil, err
	}
	return &Config{
		TrustDomain: svid.ID.TrustDomain().Name(),
		SPIFFEID:    svid.ID.String(),
		Addresses:   addrs,
		Certificate: string(ca.EncodeCertsPEM(svid.Certificates)),
		Key:         string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		Bundle:      string(ca.EncodeCertsPEM(roots)),
	}, nil
}

// SVID parses the certificate and key.
func (c *Config) SVID() (*x509svid.SVID, error) {
	svid, err := x509svid.Parse([]byte(c.Certificate), []byte(c.Key))
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	return svid, nil
}

// Roots parses the bundle.
func (c *Config) Roots() ([]*x509.Certificate, error) {
	roots, err := ca.ParseCertsPEM([]byte(c.Bundle))
	if err != nil {
		return nil, fmt.Errorf("client config bundle: %w", err)
	}
	return roots, nil
}

// Credentials returns rpc credentials for dialing.
func (c *Config) Credentials() (*rpc.Credentials, error) {
	svid, err := c.SVID()
	if err != nil {
		return nil, err
	}
	roots, err := c.Roots()
	if err != nil {
		return nil, err
	}
	return rpc.NewCredentials(svid, roots)
}
