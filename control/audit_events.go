package control

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/internal/rpc"
)

// recordTimeout bounds how long an event recorded after its action waits
// for the log: the caller has its answer's effects already.
const recordTimeout = 10 * time.Second

// record appends e to the node's audit log. An event recorded after its
// action ran cannot undo it: the action's decision record was made durable
// before it ran (fail closed), so a failure here is logged and shows in
// the node's audit health, not returned to the caller.
//
// The subject defaults to the verified caller of ctx (for a call made with
// a delegated credential: the credential's subject, with its chain and
// jtis), and the decision id
// and policy revision to the decision that allowed the call, so the event
// links to its authz record. The event is recorded even when the caller
// hangs up: its action has happened.
func (s *Server) record(ctx context.Context, e audit.Event) {
	if s.cfg.Audit == nil {
		return
	}
	if cred, ok := rpc.CredentialFromContext(ctx); ok && e.Subject == "" && len(e.Creds) == 0 {
		// Done on someone's behalf: the event says for whom, through whom,
		// under which credential, as the decision that allowed it does.
		e.Subject, e.Chain, e.Creds = cred.Subject.String(), chainOf(cred), cred.JTIs()
	}
	if c, ok := rpc.CallerFromContext(ctx); ok && e.Subject == "" {
		e.Subject = c.ID.String()
	}
	if d, ok := rpc.DecisionFromContext(ctx); ok && e.DecisionID == "" {
		e.DecisionID, e.PolicyRevision = d.ID, d.Revision
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := s.cfg.Audit.Record(ctx, &e); err != nil {
		s.cfg.Log.Error("audit record failed", "action", e.Action, "err", err)
	}
}

// selfID is this control node's SPIFFE ID: the subject of what it does on
// its own (CA rotation steps).
func (s *Server) selfID() string {
	id, err := identity.NodeID(s.cfg.TrustDomain, s.cfg.NodeName)
	if err != nil {
		return ""
	}
	return id.String()
}

// recordRefusal records e through the rate-limited recorder for refusals
// anyone can cause without authenticating (enrolment token uses).
func (s *Server) recordRefusal(ctx context.Context, e audit.Event) {
	rec := s.cfg.AuditRefusals
	if rec == nil {
		s.record(ctx, e)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := rec.Record(ctx, &e); err != nil {
		s.cfg.Log.Error("audit record failed", "action", e.Action, "err", err)
	}
}

// outcomeOf is the outcome of a handler that returned err: allow, deny
// when the request was refused, error when the server failed; with the
// refusal's message as the reason.
func outcomeOf(err error) (audit.Outcome, []string) {
	if err == nil {
		return audit.Allow, nil
	}
	st := status.Convert(err)
	reason := []string{clip(st.Message())}
	switch st.Code() {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.NotFound,
		codes.AlreadyExists, codes.FailedPrecondition, codes.OutOfRange, codes.ResourceExhausted:
		return audit.Deny, reason
	}
	return audit.Error, reason
}

// maxEventString bounds what a request can put into one event field.
const maxEventString = audit.MaxFieldBytes

func clip(s string) string { return audit.Clip(s, maxEventString) }

// Details of the control services' events. A token is named by its id,
// never by the token itself; no event holds a key or a secret.
type (
	// TokenDetails: token.mint, token.use.
	TokenDetails struct {
		TokenID   string    `json:"token_id,omitempty"`
		TokenKind string    `json:"token_kind"`
		Name      string    `json:"name,omitempty"`
		Roles     []string  `json:"roles,omitempty"`
		ExpiresAt time.Time `json:"expires_at,omitzero"`
		// Peer is the address a token was presented from (token.use).
		Peer string `json:"peer,omitempty"`
	}
	// SVIDDetails: svid.issue, svid.rotate, node.join.
	SVIDDetails struct {
		Type     string    `json:"type"` // x509, jwt
		SPIFFEID string    `json:"spiffe_id"`
		EntryID  string    `json:"entry_id,omitempty"`
		Serial   string    `json:"serial,omitempty"`
		NotAfter time.Time `json:"not_after,omitzero"`
		Audience []string  `json:"audience,omitempty"`
		// Roles and TokenID: node.join.
		Roles   []string `json:"roles,omitempty"`
		TokenID string   `json:"token_id,omitempty"`
	}
	// EntryDetails: entry.create, entry.delete.
	EntryDetails struct {
		EntryID   string   `json:"entry_id"`
		SPIFFEID  string   `json:"spiffe_id"`
		Node      string   `json:"node,omitempty"`
		AllNodes  bool     `json:"all_nodes,omitempty"`
		Selectors []string `json:"selectors,omitempty"`
		// Revoked: the deletion revoked the ID (no other entry grants it).
		Revoked bool `json:"revoked,omitempty"`
	}
	// UserDetails: user.add, user.remove.
	UserDetails struct {
		Name       string `json:"name"`
		Role       string `json:"role,omitempty"`
		CertTTLSec int64  `json:"cert_ttl_seconds,omitempty"`
		// TokensDeleted: pending enrolment tokens removed with the user.
		TokensDeleted int `json:"tokens_deleted,omitempty"`
	}
	// RevocationDetails: revocation.add.
	RevocationDetails struct {
		SPIFFEID string    `json:"spiffe_id"`
		Before   time.Time `json:"before"`
		Reason   string    `json:"reason"`
	}
	// PolicyDetails: policy.apply, policy.rollback, policy.shadow.
	PolicyDetails struct {
		Revision int64    `json:"revision,omitempty"`
		SHA256   string   `json:"sha256,omitempty"`
		Message  string   `json:"message,omitempty"`
		Restores int64    `json:"restores,omitempty"`
		Forced   []string `json:"forced,omitempty"`
		// ShadowID, Until, Stopped: policy.shadow.
		ShadowID string    `json:"shadow_id,omitempty"`
		Until    time.Time `json:"until,omitzero"`
		Stopped  bool      `json:"stopped,omitempty"`
	}
	// NodeDetails: node.remove.
	NodeDetails struct {
		Name              string   `json:"name"`
		Roles             []string `json:"roles,omitempty"`
		Forced            bool     `json:"forced,omitempty"`
		RemovedEtcdMember bool     `json:"removed_etcd_member,omitempty"`
		DeletedEntries    int32    `json:"deleted_entries,omitempty"`
		RevokedSPIFFEID   string   `json:"revoked_spiffe_id,omitempty"`
	}
	// CADetails: ca.rotate, ca.root.
	CADetails struct {
		// Step: start, advance, switch-intermediate, sign-intermediate,
		// export, confirm-export, import.
		Step        string `json:"step"`
		Rotation    string `json:"rotation,omitempty"`
		Phase       string `json:"phase,omitempty"`
		Fingerprint string `json:"fingerprint,omitempty"`
		Node        string `json:"node,omitempty"`
	}
)

// AuditLog is what the server records into: a recorder that can also say
// why it cannot record now (audit.Log). Enrolment, which no decision
// record covers, asks before it consumes a token.
type AuditLog interface {
	audit.Recorder
	Err() error
}

var _ AuditLog = (*audit.Log)(nil)

// auditErr is why the node's audit log cannot record now (nil when it
// can). Enrolment, which no interceptor records, checks it before
// consuming a token: like every privileged action, it does not run
// unrecorded.
func (s *Server) auditErr() error {
	if s.cfg.Audit == nil {
		return nil
	}
	return s.cfg.Audit.Err()
}
