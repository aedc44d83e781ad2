package cli

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/clientconfig"
	"github.com/unumos/unum/internal/rpc"
	"github.com/unumos/unum/node"
)

// runLogin enrols a person with a user token, or with --renew renews the
// certificate of the current client config. The key is made here and never
// leaves this machine; only a CSR travels.
func runLogin(e *env, args []string) error {
	fs := flag.NewFlagSet("unum login", flag.ContinueOnError)
	config := fs.String("config", "", "client config file to write (default $XDG_CONFIG_HOME/unum/config.yaml, i.e. ~/.config/unum/config.yaml); with --renew, the one to renew (default as every command: --config, $UNUM_CONFIG, then that file)")
	addr := fs.String("addr", "", "enrolment address HOST:PORT of a control node (the one `unum node --join` takes)")
	token := fs.String("token", "", "user enrolment token from `unum user add`; prefer $UNUM_LOGIN_TOKEN or --token-file: a command line is readable by every local user")
	tokenFile := fs.String("token-file", "", "file holding the enrolment token")
	ttl := fs.Duration("ttl", 0, fmt.Sprintf("certificate lifetime (default and longest: the user's, %s unless set at `user add`; at least %s)", node.DefaultUserCertTTL, node.MinUserCertTTL))
	renew := fs.Bool("renew", false, "renew the current config's certificate (before it expires) with a new key")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the server")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(pos); err != nil {
		return err
	}
	if *ttl != 0 && *ttl < node.MinUserCertTTL {
		return usagef("--ttl must be at least %s", node.MinUserCertTTL)
	}
	ctx, cancel := context.WithTimeout(e.ctx, *timeout)
	defer cancel()
	if *renew {
		if *addr != "" || *token != "" || *tokenFile != "" {
			return usagef("--renew uses the current certificate: give no --addr or token")
		}
		return renewLogin(ctx, e, *config, *ttl)
	}
	if *addr == "" {
		return usagef("--addr HOST:PORT is required: a control node's enrolment address (unum node ls)")
	}
	tok, err := readToken(e, *token, *tokenFile, "UNUM_LOGIN_TOKEN")
	if err != nil {
		return err
	}
	if tok == "" {
		return usagef("no token: set $UNUM_LOGIN_TOKEN, or pass --token-file or --token")
	}
	parsed, err := jointoken.Parse(tok)
	if err != nil {
		return err
	}
	if parsed.Kind != jointoken.KindUser {
		return fmt.Errorf("this is a %s token: it is for `unum node --join`, not for login", parsed.Kind)
	}
	path := *config
	if path == "" {
		if path, err = clientconfig.DefaultPath(); err != nil {
			return err
		}
	}
	key, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	// No SAN: the server names the certificate from the token.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	cc, err := rpc.DialEnrollment(*addr, parsed.CAFingerprint)
	if err != nil {
		return err
	}
	defer cc.Close()
	resp, err := unumv1.NewEnrollmentClient(cc).Login(ctx, &unumv1.LoginRequest{Token: tok, Csr: csr, TtlSeconds: int64(ttl.Seconds())})
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(resp.GetTrustDomain())
	if err != nil {
		return fmt.Errorf("login response: %w", err)
	}
	roots, err := parseDERCerts(resp.GetRoots())
	if err != nil || len(roots) == 0 {
		return fmt.Errorf("login response: bad trust bundle: %v", err)
	}
	// The bundle must contain the CA the token pinned: the server was
	// authenticated by it, so the bundle it hands out must be that CA's.
	if !slices.ContainsFunc(roots, func(r *x509.Certificate) bool { return ca.Fingerprint(r) == parsed.CAFingerprint }) {
		return errors.New("login response: the trust bundle does not contain the CA the token names")
	}
	id, err := identity.UserID(td, resp.GetName())
	if err != nil {
		return fmt.Errorf("login response: %w", err)
	}
	chain, err := checkUserChain(resp.GetSvidChain(), roots, id, key.Public())
	if err != nil {
		return fmt.Errorf("login response: %w", err)
	}
	addrs := resp.GetControlAddresses()
	cfg, err := clientconfig.New(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, roots, addrs)
	if err != nil {
		return err
	}
	if err := cfg.SaveNew(path); err != nil {
		return err
	}
	e.log.Info("logged in", "spiffe_id", id.String(), "role", resp.GetRole(), "expires", chain[0].NotAfter.UTC(), "config", path)
	fmt.Fprintf(e.stderr, "logged in as %s (role %s) until %s\nclient config: %s\n",
		id, resp.GetRole(), chain[0].NotAfter.UTC().Format(time.RFC3339), path)
	if len(addrs) == 0 {
		fmt.Fprintln(e.stderr, "note: the cluster named no API addresses; set UNUM_ADDR=HOST:PORT")
	}
	if env := e.getenv("UNUM_CONFIG"); env != "" && env != path && *config == "" {
		fmt.Fprintf(e.stderr, "note: UNUM_CONFIG=%s takes precedence over this file; unset it to use your login\n", env)
	}
	fmt.Fprintf(e.stderr, "renew before it expires: unum login --renew\n")
	return nil
}

// readToken takes a token from the flag, the file or the environment, in
// that order of precedence, refusing both flag and file.
func readToken(e *env, flagValue, file, envName string) (string, error) {
	switch {
	case flagValue != "" && file != "":
		return "", usagef("give --token or --token-file, not both")
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return strings.TrimSpace(string(data)), nil
	case flagValue != "":
		return strings.TrimSpace(flagValue), nil
	}
	return strings.TrimSpace(e.getenv(envName)), nil
}

func renewLogin(ctx context.Context, e *env, flagPath string, ttl time.Duration) error {
	path, err := clientconfig.Resolve(flagPath)
	if err != nil {
		return err
	}
	stored, err := clientconfig.Read(path)
	if err != nil {
		return err
	}
	dialCfg, err := clientconfig.Load(path) // with UNUM_ADDR, for dialing only
	if err != nil {
		return err
	}
	svid, err := stored.SVID()
	if err != nil {
		return err
	}
	if identity.Classify(svid.ID).Kind != identity.KindUser {
		return fmt.Errorf("%s holds %s, not a user certificate: only users renew with `unum login --renew`", path, svid.ID)
	}
	if leaf := svid.Certificates[0]; !time.Now().Before(leaf.NotAfter) {
		return fmt.Errorf("the certificate in %s expired at %s: it can no longer renew; ask an admin for `unum user add %s --reissue-token` and log in again",
			path, leaf.NotAfter.UTC().Format(time.RFC3339), identity.Classify(svid.ID).Name)
	}
	roots, err := stored.Roots()
	if err != nil {
		return err
	}
	creds, err := dialCfg.Credentials()
	if err != nil {
		return err
	}
	cc, err := rpc.Dial(creds, dialCfg.Addresses)
	if err != nil {
		return err
	}
	defer cc.Close()
	key, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	csr, err := ca.CreateCSR(key, svid.ID)
	if err != nil {
		return err
	}
	resp, err := unumv1.NewUsersClient(cc).RenewUser(ctx, &unumv1.RenewUserRequest{Csr: csr, TtlSeconds: int64(ttl.Seconds())})
	if err != nil {
		return err
	}
	chain, err := checkUserChain(resp.GetChain(), roots, svid.ID, key.Public())
	if err != nil {
		return fmt.Errorf("renewal response: %w", err)
	}
	cfg, err := clientconfig.New(&x509svid.SVID{ID: svid.ID, Certificates: chain, PrivateKey: key}, roots, stored.Addresses)
	if err != nil {
		return err
	}
	if err := cfg.Save(path); err != nil {
		return err
	}
	e.log.Info("user certificate renewed", "spiffe_id", svid.ID.String(), "expires", chain[0].NotAfter.UTC(), "config", path)
	fmt.Fprintf(e.stderr, "renewed %s until %s (%s)\n", svid.ID, chain[0].NotAfter.UTC().Format(time.RFC3339), path)
	return nil
}

// checkUserChain checks that ders is a certificate chain for id, for our
// own key pub, issued under roots, before it is written anywhere.
func checkUserChain(ders [][]byte, roots []*x509.Certificate, id spiffeid.ID, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	chain, err := parseDERCerts(ders)
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("bad certificate chain: %v", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("certificate does not verify: %w", err)
	}
	if len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != id.String() {
		return nil, fmt.Errorf("certificate is not for %s", id)
	}
	if k, ok := chain[0].PublicKey.(*ecdsa.PublicKey); !ok || !k.Equal(pub) {
		return nil, errors.New("certificate is not for the key made here")
	}
	return chain, nil
}

func parseDERCerts(ders [][]byte) ([]*x509.Certificate, error) {
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
