package meta

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// dialTimeout bounds connecting to one endpoint and etcd's own dial steps.
const dialTimeout = 5 * time.Second

// NewClient connects to etcd at endpoints (https URLs) with the member
// certificate in files, and returns once one endpoint has answered a status
// request, within ctx and at most dialTimeout per endpoint. The status check
// completes the TLS handshakes, so a wrong CA or certificate fails here with
// the TLS error rather than on first use.
//
// ctx bounds only the connection; the client lives until Close.
func NewClient(ctx context.Context, endpoints []string, files TLSFiles) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("etcd client: no endpoints")
	}
	for _, ep := range endpoints {
		if _, err := parseHTTPSURL("etcd endpoint", ep); err != nil {
			return nil, fmt.Errorf("etcd client: %w", err)
		}
	}
	tlsCfg, err := files.clientTLSConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: dialTimeout,
		// Keepalives find a dead member within seconds so the balancer
		// moves to a live one.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	var errs []error
	for _, ep := range endpoints {
		sctx, cancel := context.WithTimeout(ctx, dialTimeout)
		err := probeTLS(sctx, ep, tlsCfg)
		if err == nil {
			_, err = c.Status(sctx, ep)
		}
		cancel()
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
		if ctx.Err() != nil {
			break
		}
	}
	c.Close()
	return nil, fmt.Errorf("etcd client: no endpoint answered: %w", errors.Join(errs...))
}

// http2Hello is the HTTP/2 client preface followed by an empty SETTINGS
// frame; any HTTP/2 server answers it with a SETTINGS frame of its own.
const http2Hello = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// probeTLS opens one TLS connection to endpoint and waits for the server's
// first bytes. gRPC hides why a connection failed behind "context deadline
// exceeded"; this surfaces the TLS verdict (unknown authority, refused
// certificate, connection refused) at once. In TLS 1.3 the server judges the
// client certificate after the client's handshake has finished, so its
// verdict arrives only with the first read, hence the HTTP/2 hello.
func probeTLS(ctx context.Context, endpoint string, cfg *tls.Config) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	pc := cfg.Clone()
	pc.NextProtos = []string{"h2"}
	d := tls.Dialer{Config: pc}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return err
		}
	}
	if _, err := conn.Write([]byte(http2Hello)); err != nil {
		return err
	}
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		return fmt.Errorf("no answer after tls handshake: %w", err)
	}
	return nil
}
