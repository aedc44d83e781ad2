package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/rpc"
)

// Scheme is how the endpoint is asked to serve.
type Scheme string

const (
	// SchemeAuto serves plain HTTP on a loopback address and HTTPS with
	// mutual TLS on any other (a bare HOST:PORT).
	SchemeAuto Scheme = ""
	// SchemeHTTP asks for plain HTTP (http://HOST:PORT): loopback only.
	SchemeHTTP Scheme = "http"
	// SchemeHTTPS asks for HTTPS with mutual TLS (https://HOST:PORT), also
	// on loopback.
	SchemeHTTPS Scheme = "https"
)

// Off is the listen value that turns the endpoint off.
const Off = "off"

// Endpoint is a parsed --metrics-listen value.
type Endpoint struct {
	Scheme Scheme
	Addr   string // HOST:PORT
}

// ParseListen parses "HOST:PORT", "http://HOST:PORT" or
// "https://HOST:PORT". ("off" is the caller's business.)
func ParseListen(s string) (Endpoint, error) {
	var ep Endpoint
	rest := s
	switch {
	case strings.HasPrefix(s, "http://"):
		ep.Scheme, rest = SchemeHTTP, strings.TrimPrefix(s, "http://")
	case strings.HasPrefix(s, "https://"):
		ep.Scheme, rest = SchemeHTTPS, strings.TrimPrefix(s, "https://")
	case strings.Contains(s, "://"):
		return Endpoint{}, fmt.Errorf("metrics listen address %q: scheme must be http or https", s)
	}
	rest = strings.TrimSuffix(rest, "/metrics")
	host, port, err := net.SplitHostPort(rest)
	if err != nil || port == "" {
		return Endpoint{}, fmt.Errorf("metrics listen address %q: want HOST:PORT, http://HOST:PORT or https://HOST:PORT", s)
	}
	ep.Addr = net.JoinHostPort(host, port)
	return ep, nil
}

// ErrPlainNotLoopback refuses plain HTTP on an address other hosts can
// reach.
var ErrPlainNotLoopback = errors.New("plain HTTP is served on loopback addresses only: use a loopback address, or https:// (mutual TLS with a client SVID)")

// ServeRule decides, from the address actually bound, whether the endpoint
// must use mutual TLS. Only a loopback IP allows plain HTTP: an unspecified
// address (0.0.0.0, ::) listens on every interface and is not loopback.
func ServeRule(scheme Scheme, bound net.IP) (mtls bool, err error) {
	loopback := bound != nil && bound.IsLoopback()
	switch scheme {
	case SchemeHTTPS:
		return true, nil
	case SchemeHTTP:
		if !loopback {
			return false, fmt.Errorf("metrics on %s: %w", bound, ErrPlainNotLoopback)
		}
		return false, nil
	case SchemeAuto:
		return !loopback, nil
	}
	return false, fmt.Errorf("unknown metrics scheme %q", scheme)
}

// Server is a listening /metrics endpoint.
type Server struct {
	lis  net.Listener
	http *http.Server
	mtls bool
	log  *slog.Logger
}

// ServeConfig is what Listen needs besides the endpoint.
type ServeConfig struct {
	Handler http.Handler
	// Creds serve HTTPS and verify client SVIDs (rpc.ServerTLS).
	Creds *rpc.Credentials
	// Revocations refuses scrapers whose chain is revoked (mTLS only).
	Revocations *revocation.View
	Log         *slog.Logger
}

// Listen binds ep and decides its transport by ServeRule on the bound
// address; it fails, binding nothing, when the rule refuses.
func Listen(ep Endpoint, cfg ServeConfig) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	lis, err := net.Listen("tcp", ep.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	tcp, _ := lis.Addr().(*net.TCPAddr)
	var ip net.IP
	if tcp != nil {
		ip = tcp.IP
	}
	mtls, err := ServeRule(ep.Scheme, ip)
	if err != nil {
		lis.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	h := cfg.Handler
	if mtls {
		if cfg.Creds == nil {
			lis.Close()
			return nil, errors.New("metrics over mutual TLS need the node's credentials")
		}
		h = requireUnrevoked(h, cfg.Revocations, cfg.Log)
	}
	mux.Handle("/metrics", h)
	s := &Server{lis: lis, mtls: mtls, log: cfg.Log, http: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}}
	if mtls {
		s.http.TLSConfig = rpc.ServerTLS(cfg.Creds)
	}
	return s, nil
}

// URL is where to scrape.
func (s *Server) URL() string {
	scheme := "http"
	if s.mtls {
		scheme = "https"
	}
	return scheme + "://" + s.lis.Addr().String() + "/metrics"
}

// MTLS reports whether the endpoint requires a client SVID.
func (s *Server) MTLS() bool { return s.mtls }

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	var err error
	if s.mtls {
		err = s.http.ServeTLS(s.lis, "", "")
	} else {
		err = s.http.Serve(s.lis)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for scrapes in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

// requireUnrevoked refuses a scraper whose client SVID chain is revoked.
// The TLS handshake has already verified the chain against the bundle and
// the trust domain; a connection without a client certificate never gets
// here (rpc.ServerTLS requires one).
func requireUnrevoked(h http.Handler, view *revocation.View, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "a client SVID is required", http.StatusUnauthorized)
			return
		}
		if view != nil {
			if err := view.CheckChain(r.TLS.PeerCertificates); err != nil {
				log.Info("metrics scrape refused: revoked client", "err", err)
				http.Error(w, "client certificate revoked", http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
