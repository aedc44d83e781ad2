package rpc

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
)

func nilLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// ClientTLSNoCert is a client that verifies the server but presents no
// certificate: what an unauthenticated network peer does.
func ClientTLSNoCert(root *x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
}
