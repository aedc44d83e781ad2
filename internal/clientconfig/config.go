package clientconfig

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
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

// DefaultPath is where `unum login` writes the client config:
// $XDG_CONFIG_HOME/unum/config.yaml, or ~/.config/unum/config.yaml when
// XDG_CONFIG_HOME is unset or not absolute (the XDG base directory
// specification says to ignore a relative one).
func DefaultPath() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "unum", "config.yaml"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("default client config: %w", err)
	}
	return filepath.Join(home, ".config", "unum", "config.yaml"), nil
}

// Resolve returns the config path: the flag value, else UNUM_CONFIG, else
// DefaultPath if that file exists.
func Resolve(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if p := os.Getenv("UNUM_CONFIG"); p != "" {
		return p, nil
	}
	def, err := DefaultPath()
	if err == nil {
		if _, serr := os.Stat(def); serr == nil {
			return def, nil
		}
	} else {
		def = "$XDG_CONFIG_HOME/unum/config.yaml"
	}
	return "", fmt.Errorf("no client config: run `unum login --addr HOST:PORT` with a token from `unum user add` (writes %s), set UNUM_CONFIG (unum dev prints the line) or pass --config", def)
}

// Load reads path and applies UNUM_ADDR. The file holds a private key, so
// it must not be group- or world-readable.
func Load(path string) (*Config, error) {
	c, err := Read(path)
	if err != nil {
		return nil, err
	}
	if addr := os.Getenv("UNUM_ADDR"); addr != "" {
		c.Addresses = strings.Split(addr, ",")
	}
	return c, nil
}

// Read reads path as it is, without UNUM_ADDR (for rewriting it), with the
// same checks as Load.
func Read(path string) (*Config, error) {
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

// SaveNew writes c to path like Save, creating its folder 0700 first when
// missing (an existing folder keeps its mode).
func (c *Config) SaveNew(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("client config folder: %w", err)
	}
	return c.Save(path)
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
