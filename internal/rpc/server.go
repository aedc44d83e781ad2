package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/identity/revocation"
)

type callerKey struct{}

type decisionKey struct{}

// DecisionFromContext returns the decision that allowed the current call,
// so that what the handler records can name it.
func DecisionFromContext(ctx context.Context) (Decision, bool) {
	d, ok := ctx.Value(decisionKey{}).(Decision)
	return d, ok
}

// CallerFromContext returns the verified caller of the current call.
func CallerFromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// WithCaller returns ctx carrying c. Used by in-process callers that have
// already been authenticated by other means.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// ServerTLS is the mutual-TLS config of an API listener: the server presents
// creds' SVID and accepts any client whose SVID chains to the bundle and is
// in the trust domain. Which principal may do what is the Authorizer's job.
func ServerTLS(creds *Credentials) *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(creds, creds, tlsconfig.AuthorizeMemberOf(creds.TrustDomain()))
	cfg.MinVersion = tls.VersionTLS13
	// A resumed session skips certificate verification; every connection
	// must present and verify its SVID afresh (bundle changes, revocation).
	cfg.SessionTicketsDisabled = true
	return cfg
}

// ServerConfig is what NewServer needs besides credentials.
type ServerConfig struct {
	Authorizer Authorizer
	// Revocations, when set, is checked on every call and stream (a new
	// connection's first call included) against the caller's whole chain,
	// and a stream is cut when its caller is revoked while it runs; a
	// Privileged decision is refused while the view is stale. The TLS
	// handshake itself is left to complete so that a refused caller is told
	// why. Nil only on servers that accept no privileged call.
	Revocations *revocation.View
	Log         *slog.Logger
	// Audit records every accepted client handshake (authn.mtls, allow),
	// Refusals every refused one and every caller whose chain is revoked
	// when it connects (deny, with why). Anyone can cause a refusal, so
	// Refusals should be rate-limited (audit.Limiter). Nil records nothing.
	// Refusals (Audit when nil) also records every presented credential
	// refused (cred.verify): a caller presenting garbage in a loop is
	// counted, not written one event per call.
	Audit, Refusals audit.Recorder
	// Credentials verifies delegated credentials presented with a call
	// (DelegationHeader); nil refuses every call that presents one.
	// Audience is who this server is to them: the unum API (identity.APIID)
	// and the node's own SPIFFE ID.
	Credentials *delegation.Verifier
	Audience    []spiffeid.ID
}

// DelegationHeader is the gRPC metadata key that carries a delegated
// credential: the call is then made on behalf of the credential's subject,
// by the presenting caller, who must be its holder.
const DelegationHeader = delegation.MetadataKey

// WithDelegation returns ctx whose outgoing calls present token.
func WithDelegation(ctx context.Context, token string) context.Context {
	return delegation.OutgoingContext(ctx, token)
}

// CredentialFromContext returns the delegated credential the current call
// presented (verified, held by the caller), if any.
func CredentialFromContext(ctx context.Context) (*delegation.Credential, bool) {
	return delegation.FromContext(ctx)
}

// NewServer returns a gRPC server on creds whose every method is checked
// against revocations and authorized. Register services on it, then Serve.
func NewServer(creds *Credentials, cfg ServerConfig, opts ...grpc.ServerOption) *grpc.Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	credRefusals := cfg.Refusals
	if credRefusals == nil {
		credRefusals = cfg.Audit
	}
	ic := &interceptor{authz: cfg.Authorizer, revocations: cfg.Revocations, log: cfg.Log, creds: cfg.Credentials, audience: cfg.Audience, audit: credRefusals}
	opts = append([]grpc.ServerOption{
		grpc.Creds(tlsCreds(ServerTLS(creds), audit.ActionAuthnMTLS, cfg.Audit, cfg.Refusals, cfg.Revocations, cfg.Log)),
		grpc.ChainUnaryInterceptor(ic.unary),
		grpc.ChainStreamInterceptor(ic.stream),
	}, opts...)
	return grpc.NewServer(opts...)
}

type interceptor struct {
	authz       Authorizer
	revocations *revocation.View
	log         *slog.Logger
	creds       *delegation.Verifier
	audience    []spiffeid.ID
	audit       audit.Recorder
}

// authorize checks the caller of a call (revocation, expiry, authorizer,
// freshness) and returns ctx carrying the caller, and the caller's chain.
func (ic *interceptor) authorize(ctx context.Context, method string, msg any) (context.Context, []*x509.Certificate, error) {
	caller, chain, err := callerFromPeer(ctx)
	if err != nil {
		return nil, nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if err := checkUserExpiry(caller, time.Now()); err != nil {
		return nil, nil, err
	}
	if err := ic.checkRevoked(method, caller, chain); err != nil {
		return nil, nil, err
	}
	cred, err := ic.credential(ctx, method, caller)
	if err != nil {
		return nil, nil, err
	}
	d, err := ic.authz.Authorize(ctx, Request{Caller: caller, Method: method, Message: msg, RequestID: requestID(ctx), Credential: cred})
	if err != nil {
		// Fail closed: an authorizer that cannot decide denies.
		ic.log.Warn("authorizer failed", "method", method, "caller", caller.ID.String(), "decision_id", d.ID, "err", err)
		if errors.Is(err, ErrNotReady) {
			return nil, nil, status.Errorf(codes.Unavailable, "%s refused (decision %s): %v", shortMethod(method), d.ID, err)
		}
		return nil, nil, status.Errorf(codes.PermissionDenied, "denied (decision %s): authorizer error: %v", d.ID, err)
	}
	if !d.Allow {
		ic.log.Info("call denied", "method", method, "caller", caller.ID.String(), "decision_id", d.ID, "reason", d.Reason())
		return nil, nil, deniedStatus(d)
	}
	if d.Privileged {
		if ic.revocations == nil {
			return nil, nil, status.Errorf(codes.Unavailable, "%s is privileged and this server has no revocation view", shortMethod(method))
		}
		if err := ic.revocations.Fresh(); err != nil {
			ic.log.Warn("privileged call refused: stale revocation view", "method", method, "caller", caller.ID.String(), "err", err)
			return nil, nil, status.Errorf(codes.Unavailable, "%s refused: %v", shortMethod(method), err)
		}
	}
	ctx = context.WithValue(WithCaller(ctx, caller), decisionKey{}, d)
	if cred != nil {
		ctx = delegation.NewContext(ctx, cred)
	}
	return ctx, chain, nil
}

// credential verifies the delegated credential the call presents, if any:
// nil without one. A credential that does not verify refuses the call
// (Unauthenticated, with why) and is recorded (cred.verify, deny): the
// caller is never judged on its own rights instead.
func (ic *interceptor) credential(ctx context.Context, method string, caller Caller) (*delegation.Credential, error) {
	var cred *delegation.Credential
	var err error
	if ic.creds == nil || ic.revocations == nil {
		md, _ := metadata.FromIncomingContext(ctx)
		if len(md.Get(DelegationHeader)) == 0 {
			return nil, nil
		}
		// Without a revocation view nothing revoked could be told, nor a
		// stream cut when its credential is.
		err = errors.New("this server does not accept delegated credentials")
	} else {
		// The policy's depth bound is applied when the call is decided.
		cred, err = ic.creds.FromIncoming(ctx, ic.audience, delegation.MaxDepth)
		if errors.Is(err, delegation.ErrNotPresented) {
			return nil, nil
		}
	}
	if err == nil {
		return cred, nil
	}
	ic.log.Info("delegated credential refused", "method", method, "caller", caller.ID.String(), "err", err)
	if ic.audit != nil {
		// The reason quotes what the presenter sent (alg, typ, kid).
		e := audit.Event{Kind: audit.KindCredential, Action: audit.ActionCredVerify, Subject: caller.ID.String(), Outcome: audit.Deny,
			Resource: "method/-/" + method, Reasons: []string{boundReason(err.Error())}}
		if cred != nil {
			e.Creds = cred.JTIs()
		}
		if rerr := ic.audit.Record(ctx, &e); rerr != nil {
			ic.log.Warn("audit: record refused credential", "err", rerr)
		}
	}
	return nil, status.Errorf(codes.Unauthenticated, "delegated credential refused: %v", err)
}

// checkRevoked refuses a revoked caller with the reason (codes.Unauthenticated:
// the certificate no longer proves who it names).
func (ic *interceptor) checkRevoked(method string, caller Caller, chain []*x509.Certificate) error {
	if ic.revocations == nil {
		return nil
	}
	set, _, loaded := ic.revocations.Snapshot()
	if !loaded && !usableUnloaded[method] {
		// Nothing known to be revoked is not nothing revoked: until the
		// view has loaded, serve only what a revoked caller cannot misuse.
		return status.Errorf(codes.Unavailable, "%s refused: %v", shortMethod(method), revocation.ErrNoView)
	}
	err := set.CheckChain(chain)
	if err == nil || (errors.Is(err, revocation.ErrMustRenew) && renewalMethods[method]) {
		return nil
	}
	ic.log.Info("revoked caller refused", "method", method, "caller", caller.ID.String(), "err", err)
	return revokedStatus(err)
}

// requestID is the client's x-request-id metadata, if any (bounded, so a
// client cannot make decisions carry arbitrary text).
func requestID(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	v := md.Get("x-request-id")
	if len(v) == 0 || len(v[0]) > 64 {
		return ""
	}
	return v[0]
}

func (ic *interceptor) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, _, err := ic.authorize(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (ic *interceptor) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, chain, err := ic.authorize(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	if ic.revocations == nil {
		return handler(srv, &callerStream{ServerStream: ss, ctx: ctx})
	}
	// Cut the stream when its caller is revoked while it runs, and when
	// the delegated credential it was opened with is revoked or expires:
	// the credential was verified once, at the start, and a stream (an
	// audit follower, say) may outlive it by hours.
	caller, _ := CallerFromContext(ctx)
	cred, _ := CredentialFromContext(ctx)
	var expired <-chan time.Time
	if cred != nil {
		t := time.NewTimer(time.Until(cred.Expiry.Add(delegation.Leeway)))
		defer t.Stop()
		expired = t.C
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			set, changed, _ := ic.revocations.Snapshot()
			if err := ic.checkRevoked(info.FullMethod, caller, chain); err != nil {
				cancel(err)
				return
			}
			if cred != nil {
				if err := delegation.CheckRevoked(set, cred); err != nil {
					cancel(status.Errorf(codes.Unauthenticated, "delegated credential refused: %v", err))
					return
				}
			}
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-expired:
				cancel(status.Errorf(codes.Unauthenticated, "delegated credential refused: %v: at %s", delegation.ErrExpired,
					cred.Expiry.UTC().Format(time.RFC3339)))
				return
			case <-changed:
			}
		}
	}()
	err = handler(srv, &callerStream{ServerStream: ss, ctx: ctx})
	if cause := context.Cause(ctx); cause != nil && status.Code(cause) == codes.Unauthenticated {
		return cause
	}
	return err
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }

// callerFromPeer extracts the SPIFFE ID from the verified peer certificate.
// The TLS layer has already verified the chain against the bundle; a
// connection without a verified chain never reaches here on an API listener.
func callerFromPeer(ctx context.Context) (Caller, []*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, nil, errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Caller{}, nil, errors.New("connection is not TLS")
	}
	// go-spiffe verifies the chain against the bundle in
	// VerifyPeerCertificate (tls.Config.ClientAuth RequireAnyClientCert), so
	// VerifiedChains stays empty; a handshake that reached this point has
	// passed that verification, and the leaf is PeerCertificates[0].
	if !ti.State.HandshakeComplete || len(ti.State.PeerCertificates) == 0 {
		return Caller{}, nil, errors.New("no verified client certificate")
	}
	leaf := ti.State.PeerCertificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return Caller{}, nil, fmt.Errorf("client certificate has no SPIFFE ID: %w", err)
	}
	return Caller{Principal: identity.Classify(id), Certificate: leaf}, ti.State.PeerCertificates, nil
}
