package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/revocation"
)

// AuthorizeControlNode accepts a server whose SVID proves it is a control
// node of td. Every unum API a client calls is served by a control node, and
// a compute node (which also holds a valid node SVID) must never pass for
// one: it could otherwise capture join tokens or feed agents a trust bundle.
// The proof is in the chain, so no extra identity is needed: a control
// node serves with a node SVID issued by its *own* intermediate (whose URI
// SAN names the node), and intermediates are signed only by the root, at
// `unum init` and on control joins.
func AuthorizeControlNode(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if id.TrustDomain() != td || identity.Classify(id).Kind != identity.KindNode {
			return fmt.Errorf("server %s is not a node of trust domain %s", id, td.Name())
		}
		for _, chain := range chains {
			if IsControlChain(id, chain) {
				return nil
			}
		}
		return fmt.Errorf("server %s is not a control node: its SVID was not issued by its own intermediate", id)
	}
}

// IsControlChain reports whether chain (leaf first, then its issuer, with or
// without the root after it) is that of control node id: the leaf's issuer
// is a CA whose only URI SAN is id. The root's URI SAN is the bare trust
// domain, never a node ID, so a leaf signed by the root directly fails.
func IsControlChain(id spiffeid.ID, chain []*x509.Certificate) bool {
	if len(chain) < 2 {
		return false
	}
	issuer := chain[1]
	return issuer.IsCA && len(issuer.URIs) == 1 && issuer.URIs[0].String() == id.String()
}

// ClientTLS is the mutual-TLS config of a unum client.
func ClientTLS(creds *Credentials) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(creds, creds, AuthorizeControlNode(creds.TrustDomain()))
	cfg.MinVersion = tls.VersionTLS13
	return cfg
}

// AuthorizeUnrevokedControlNode is AuthorizeControlNode plus a check of the
// server's whole chain against view: a node does not keep talking to a
// control node that was removed (revoked), nor trust what it serves.
func AuthorizeUnrevokedControlNode(td spiffeid.TrustDomain, view *revocation.View) tlsconfig.Authorizer {
	control := AuthorizeControlNode(td)
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if err := control(id, chains); err != nil {
			return err
		}
		for _, chain := range chains {
			if err := view.CheckChain(chain); err != nil && !errors.Is(err, revocation.ErrMustRenew) {
				return fmt.Errorf("server %s: %w", id, err)
			}
		}
		return nil
	}
}

// DialChecked is Dial for nodes, which hold a revocation view: the server's
// chain is also checked against it at every handshake.
func DialChecked(creds *Credentials, view *revocation.View, addrs []string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cfg := tlsconfig.MTLSClientConfig(creds, creds, AuthorizeUnrevokedControlNode(creds.TrustDomain(), view))
	cfg.MinVersion = tls.VersionTLS13
	return dialTLS(credentials.NewTLS(cfg), addrs, opts...)
}

// Dial connects to the unum API at one of addrs (HOST:PORT), failing over
// between them in order. The connection is lazy: errors surface on the first
// call.
func Dial(creds *Credentials, addrs []string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return dialTLS(credentials.NewTLS(ClientTLS(creds)), addrs, opts...)
}

// DialNode connects to the API of exactly node (any role) at addr. Clients
// use it only to ask a node about itself, the decisions it made (policy
// explain, shadow reports): the answer is that node's own record, so the
// server is authorized by its exact identity, not as a control node.
func DialNode(creds *Credentials, node spiffeid.ID, addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if identity.Classify(node).Kind != identity.KindNode {
		return nil, fmt.Errorf("%s is not a node identity", node)
	}
	cfg := tlsconfig.MTLSClientConfig(creds, creds, tlsconfig.AuthorizeID(node))
	cfg.MinVersion = tls.VersionTLS13
	return dialTLS(credentials.NewTLS(cfg), []string{addr}, opts...)
}

func dialTLS(tc credentials.TransportCredentials, addrs []string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	var clean []string
	for _, a := range addrs {
		if a = strings.TrimSpace(a); a != "" {
			clean = append(clean, a)
		}
	}
	if len(clean) == 0 {
		return nil, errors.New("no server address: set UNUM_ADDR or addresses in the client config")
	}
	r := manual.NewBuilderWithScheme("unum")
	state := resolver.State{}
	for _, a := range clean {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	opts = append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(tc),
		// pick_first walks the address list in order and fails over.
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{}}]}`),
	}, opts...)
	cc, err := grpc.NewClient(r.Scheme()+":///unum", opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", strings.Join(clean, ","), err)
	}
	return cc, nil
}

// WaitReady is a convenience for callers that want connection errors early.
func WaitReady(ctx context.Context, cc *grpc.ClientConn) error {
	cc.Connect()
	for {
		s := cc.GetState()
		if s.String() == "READY" {
			return nil
		}
		if !cc.WaitForStateChange(ctx, s) {
			return ctx.Err()
		}
	}
}
