package rpc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
)

// EnrollmentServerTLS is the server-only TLS config of the enrolment
// listener. It presents the node's SVID chain followed by the root, so that
// a joiner can pin the root by fingerprint without holding the bundle. No
// client certificate is requested: the join token authenticates the client.
func EnrollmentServerTLS(creds *Credentials) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			svid, err := creds.GetX509SVID()
			if err != nil {
				return nil, err
			}
			c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
			for _, cert := range svid.Certificates {
				c.Certificate = append(c.Certificate, cert.Raw)
			}
			for _, r := range creds.Roots() {
				c.Certificate = append(c.Certificate, r.Raw)
			}
			return c, nil
		},
	}
}

// fingerprint matches ca.Fingerprint: "sha256:" + hex(SHA-256(DER)).
func fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ErrCAFingerprintMismatch is returned when the enrolment server's CA is not
// the one the token names: a man in the middle, or the wrong cluster.
var ErrCAFingerprintMismatch = errors.New("enrolment server's CA does not match the CA fingerprint in the token")

// PinnedClientTLS verifies an enrolment server by the CA fingerprint from a
// token: one of the certificates the server sent must hash to caFingerprint,
// the leaf must chain to it, and the leaf must be a node SVID. Nothing is
// sent to a server that fails this (TLS aborts the handshake).
func PinnedClientTLS(caFingerprint string) *tls.Config {
	want := strings.ToLower(caFingerprint)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Standard verification needs a root pool we do not have yet; the
		// pinned verification below replaces it and is stricter.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyPinned(raw, want)
		},
	}
}

func verifyPinned(raw [][]byte, want string) error {
	if len(raw) == 0 {
		return errors.New("enrolment server sent no certificate")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("enrolment server certificate %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	var root *x509.Certificate
	for _, c := range certs[1:] {
		if subtle.ConstantTimeCompare([]byte(fingerprint(c)), []byte(want)) == 1 {
			root = c
		}
	}
	if root == nil {
		return ErrCAFingerprintMismatch
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		if c != root {
			inter.AddCert(c)
		}
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("enrolment server certificate does not chain to the pinned CA: %w", err)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return fmt.Errorf("enrolment server certificate: %w", err)
	}
	if identity.Classify(id).Kind != identity.KindNode {
		return fmt.Errorf("enrolment server %s is not a node", id)
	}
	// Only a control node may take a join token: a compute node's SVID
	// chains to the same root but not through its own intermediate.
	for _, chain := range chains {
		if IsControlChain(id, chain) {
			return nil
		}
	}
	return fmt.Errorf("enrolment server %s is not a control node", id)
}

// DialEnrollment connects to an enrolment listener, pinning its CA.
func DialEnrollment(addr, caFingerprint string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return dialTLS(credentials.NewTLS(PinnedClientTLS(caFingerprint)), []string{addr}, opts...)
}

// Limits of the enrolment listener, the only listener that accepts callers
// without a certificate.
const (
	enrollRatePerSecond = 5
	enrollBurst         = 20
	// All peers together: what one node's etcd is asked to bear from
	// unauthenticated callers.
	enrollGlobalRate  = 50
	enrollGlobalBurst = 100
	enrollMaxMessage  = 64 << 10
	enrollMaxStreams  = 16
	enrollHandshake   = 10 * time.Second
	enrollMaxPeers    = 4096
)

// NewEnrollmentServer returns the gRPC server of the enrolment listener. It
// serves with the node's chain plus the root (EnrollmentServerTLS), takes
// small messages only, and passes every call through an interceptor that
// rate-limits each source address (a token bucket per IP) and logs refusals,
// so an unauthenticated peer cannot turn it into a cheap way to load etcd.
// Register only the Enrollment service on it.
func NewEnrollmentServer(creds *Credentials, log *slog.Logger, opts ...EnrollmentOption) *grpc.Server {
	var o enrollOptions
	for _, opt := range opts {
		opt(&o)
	}
	l := &enrollLimiter{peers: map[string]*rate.Limiter{}, global: rate.NewLimiter(enrollGlobalRate, enrollGlobalBurst)}
	return grpc.NewServer(
		// No client certificate here: the token authenticates, and its
		// use is recorded by the handler. Only refusals are recorded.
		grpc.Creds(tlsCreds(EnrollmentServerTLS(creds), audit.ActionAuthnEnroll, nil, o.refusals, nil, log)),
		grpc.MaxRecvMsgSize(enrollMaxMessage),
		grpc.MaxConcurrentStreams(enrollMaxStreams),
		grpc.ConnectionTimeout(enrollHandshake),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			ip := "unknown"
			if p, ok := peer.FromContext(ctx); ok {
				if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
					ip = limiterKey(host)
				}
			}
			if !l.allow(ip) {
				log.Warn("enrolment call rate-limited", "peer", ip, "method", info.FullMethod)
				if o.onRateLimited != nil {
					o.onRateLimited(info.FullMethod)
				}
				o.recordRateLimited(ctx, ip, info.FullMethod, log)
				return nil, status.Error(codes.ResourceExhausted, "too many enrolment attempts from this address; slow down")
			}
			return handler(ctx, req)
		}),
	)
}

// EnrollmentOption configures NewEnrollmentServer.
type EnrollmentOption func(*enrollOptions)

type enrollOptions struct {
	onRateLimited func(fullMethod string)
	refusals      audit.Recorder
}

// AuditRefusals has every refused handshake and rate-limited call of the
// enrolment listener recorded (authn.enroll, deny) through rec, which
// should itself be rate-limited (audit.Limiter): anyone can cause them.
func AuditRefusals(rec audit.Recorder) EnrollmentOption {
	return func(o *enrollOptions) { o.refusals = rec }
}

func (o *enrollOptions) recordRateLimited(ctx context.Context, peer, method string, log *slog.Logger) {
	if o.refusals == nil {
		return
	}
	e := audit.Event{Kind: audit.KindAuthn, Action: audit.ActionAuthnEnroll, Outcome: audit.Deny,
		Reasons: []string{"rate-limited: " + shortMethod(method)}}
	e = e.WithDetails(AuthnDetails{Peer: peer})
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handshakeRecordTimeout)
	defer cancel()
	if err := o.refusals.Record(ctx, &e); err != nil {
		log.Warn("audit record failed", "action", e.Action, "err", err)
	}
}

// OnRateLimited has f called with the full method name of every call the
// rate limiter refuses (for metrics: such calls never reach a handler).
// f must be quick and safe for concurrent use.
func OnRateLimited(f func(fullMethod string)) EnrollmentOption {
	return func(o *enrollOptions) { o.onRateLimited = f }
}

// limiterKey groups IPv6 peers by /64 (one host usually owns a whole /64,
// so per-address buckets would be free to multiply) and keeps IPv4 as is.
func limiterKey(host string) string {
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

type enrollLimiter struct {
	mu     sync.Mutex
	peers  map[string]*rate.Limiter
	global *rate.Limiter
}

func (l *enrollLimiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.peers[key]
	if !ok {
		if len(l.peers) >= enrollMaxPeers {
			// Bounded memory: forget only peers whose bucket has refilled
			// (they gain nothing by being forgotten). If every bucket is
			// still draining, refuse newcomers rather than reset anyone.
			for k, pl := range l.peers {
				if pl.Tokens() >= enrollBurst {
					delete(l.peers, k)
				}
			}
			if len(l.peers) >= enrollMaxPeers {
				return false
			}
		}
		lim = rate.NewLimiter(enrollRatePerSecond, enrollBurst)
		l.peers[key] = lim
	}
	return lim.Allow() && l.global.Allow()
}
