package rpc

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc"
)

// ConnTracker records the connections a client dials, so that they can be
// closed to force new handshakes. A TLS connection keeps presenting the
// certificate it was opened with: after a node renews an SVID the server
// refused (IsMustRenew), its open connections still carry the refused one
// until they are replaced. The zero value is ready to use and safe for
// concurrent use.
type ConnTracker struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

// DialOption makes a ClientConn dial through t (plain TCP, no proxy: unum
// clients talk to unum servers directly).
func (t *ConnTracker) DialOption() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, t: t}
		t.mu.Lock()
		if t.conns == nil {
			t.conns = map[*trackedConn]struct{}{}
		}
		t.conns[tc] = struct{}{}
		t.mu.Unlock()
		return tc, nil
	})
}

// CloseAll closes every open connection; gRPC dials anew on the next call,
// with the credentials' current certificate.
func (t *ConnTracker) CloseAll() {
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	t *ConnTracker
}

func (c *trackedConn) Close() error {
	c.t.mu.Lock()
	delete(c.t.conns, c)
	c.t.mu.Unlock()
	return c.Conn.Close()
}
