package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/revocation"
)

// Authentication events are recorded per connection, at the TLS handshake,
// not per call: a connection carries many calls, and each call's decision
// is recorded anyway (kind authz). Accepted handshakes name a verified
// caller, who is accountable, and are recorded one by one; refused ones
// can come from anyone, so they go through a rate-limited recorder
// (audit.Limiter) that summarizes a flood instead of storing it.

// handshakeRecordTimeout bounds the wait for the log in a handshake.
const handshakeRecordTimeout = 5 * time.Second

// maxReasonBytes bounds the refusal reason recorded: TLS errors quote
// what the peer sent (a SPIFFE ID of another trust domain).
const maxReasonBytes = 512

// AuthnDetails are the details of an authentication event.
type AuthnDetails struct {
	// Peer is the remote address of the connection.
	Peer string `json:"peer"`
	// Serial and NotAfter describe the verified leaf (accepted only).
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// auditedCreds records the outcome of every server-side handshake.
type auditedCreds struct {
	credentials.TransportCredentials
	action string
	// accepted records accepted handshakes (nil: not recorded); refused
	// refused ones and callers revoked at handshake time.
	accepted, refused audit.Recorder
	revocations       *revocation.View
	log               logger
}

// logger is the part of *slog.Logger used here.
type logger interface {
	Warn(msg string, args ...any)
}

func (c *auditedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	peer := raw.RemoteAddr().String()
	if err != nil {
		c.recordTo(c.refused, audit.Event{Kind: audit.KindAuthn, Action: c.action, Outcome: audit.Deny,
			Reasons: []string{boundReason("tls handshake refused: " + err.Error())}}, AuthnDetails{Peer: peer})
		return conn, info, err
	}
	if c.accepted == nil {
		return conn, info, nil
	}
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return conn, info, nil
	}
	leaf := ti.State.PeerCertificates[0]
	e := audit.Event{Kind: audit.KindAuthn, Action: c.action, Outcome: audit.Allow}
	if id, err := x509svid.IDFromCert(leaf); err == nil {
		e.Subject = id.String()
	}
	d := AuthnDetails{Peer: peer, Serial: leaf.SerialNumber.String(), NotAfter: leaf.NotAfter.UTC()}
	// The handshake completes so that the caller is told why its calls
	// are refused; the record says so now. It is recorded one by one like
	// any handshake with a chain of ours (the caller is accountable), not
	// through the refusals' rate limit, where anyone's flood could turn it
	// into an anonymous count.
	if c.revocations != nil {
		if set, _, loaded := c.revocations.Snapshot(); loaded {
			if err := set.CheckChain(ti.State.PeerCertificates); errors.Is(err, revocation.ErrRevoked) {
				e.Outcome, e.Reasons = audit.Deny, []string{boundReason(err.Error())}
			}
		}
	}
	c.recordTo(c.accepted, e, d)
	return conn, info, nil
}

func (c *auditedCreds) recordTo(rec audit.Recorder, e audit.Event, d AuthnDetails) {
	if rec == nil {
		return
	}
	e = e.WithDetails(d)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeRecordTimeout)
	defer cancel()
	if err := rec.Record(ctx, &e); err != nil {
		c.log.Warn("audit record failed", "action", e.Action, "outcome", e.Outcome, "err", err)
	}
}

func (c *auditedCreds) Clone() credentials.TransportCredentials {
	cc := *c
	cc.TransportCredentials = c.TransportCredentials.Clone()
	return &cc
}

func boundReason(s string) string { return audit.Clip(s, maxReasonBytes) }

// tlsCreds are the transport credentials of tc, audited when either
// recorder is set.
func tlsCreds(tc *tls.Config, action string, accepted, refused audit.Recorder, revocations *revocation.View, log logger) credentials.TransportCredentials {
	creds := credentials.NewTLS(tc)
	if accepted == nil && refused == nil {
		return creds
	}
	return &auditedCreds{TransportCredentials: creds, action: action, accepted: accepted, refused: refused, revocations: revocations, log: log}
}
