package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/delegation"
	"github.com/unumos/unum/internal/rpc"
)

// CredKeyRecord is one control node's credential verification keys.
type CredKeyRecord struct {
	Node      string          `json:"node"`
	JWKS      json.RawMessage `json:"jwks"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// PublishCredentialKeys records node's credential verification keys (a JWK
// set) so that every verifier gets them: control nodes from their state
// cache, other nodes through the agent sync stream.
func PublishCredentialKeys(ctx context.Context, cli *clientv3.Client, node string, jwks []byte, now time.Time) error {
	if _, err := delegation.ParsePublicKeys(map[string][]byte{node: jwks}); err != nil {
		return fmt.Errorf("publish credential keys of %s: %w", node, err)
	}
	// Only for a member: a publish racing the node's removal must not
	// bring back the keys the removal deleted (one transaction deletes
	// both records).
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(nodeKey(node)), ">", 0)).
		Then(clientv3.OpPut(prefixCredKeys+node, mustJSON(CredKeyRecord{Node: node, JWKS: jwks, UpdatedAt: now.UTC()}))).Commit()
	if err != nil {
		return fmt.Errorf("publish credential keys of %s: %w", node, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("publish credential keys of %s: it is not a member of the cluster (removed?)", node)
	}
	return nil
}

// CredentialKeys are the published key sets by node (from the state cache),
// a channel closed at the next change of the cache, and whether it has
// loaded.
func (s *Server) CredentialKeys() (map[string][]byte, <-chan struct{}, bool) {
	snap := s.cache.snapshot()
	out := make(map[string][]byte, len(snap.credKeys))
	for _, k := range snap.credKeys {
		out[k.Node] = k.JWKS
	}
	return out, snap.changed, snap.loaded
}

// KeySetsFromProto reads the key sets of a sync message.
func KeySetsFromProto(sets []*unumv1.CredentialKeySet) map[string][]byte {
	out := make(map[string][]byte, len(sets))
	for _, k := range sets {
		out[k.GetNode()] = k.GetJwks()
	}
	return out
}

// CredentialDetails are the details of a cred.mint event: the issuance
// record `unum cred list` reads, with everything `audit query --cred`
// needs to say who delegated what to whom.
type CredentialDetails struct {
	JTI string `json:"jti"`
	// Parent is the credential it was exchanged from.
	Parent  string `json:"parent,omitempty"`
	Subject string `json:"subject"`
	// Chain is the actors, first to last (the holder).
	Chain []string `json:"chain"`
	// Grants are what the prior actors held and passed on, by index into
	// Chain: what a revocation check of the credential reads.
	Grants           []GrantRecord `json:"grants,omitempty"`
	Holder           string        `json:"holder"`
	CertificateBound bool          `json:"certificate_bound,omitempty"`
	Scopes           []string      `json:"scopes"`
	Audience         []string      `json:"audience"`
	IssuedAt         time.Time     `json:"issued_at"`
	ExpiresAt        time.Time     `json:"expires_at"`
	KeyID            string        `json:"kid,omitempty"`
}

// chainOf is a credential's actors as audit events name them, first to
// last.
func chainOf(c *delegation.Credential) []string {
	out := make([]string, len(c.Chain))
	for i, l := range c.Chain {
		out[i] = l.Actor.String()
	}
	return out
}

// GrantRecord is the grant Chain[Actor] held when it passed the credential
// on.
type GrantRecord struct {
	Actor    int       `json:"actor"`
	JTI      string    `json:"jti"`
	IssuedAt time.Time `json:"issued_at"`
}

func credentialDetails(c *delegation.Credential) CredentialDetails {
	d := CredentialDetails{JTI: c.ID, Subject: c.Subject.String(), Holder: c.Holder().String(), CertificateBound: c.Thumbprint != "",
		IssuedAt: c.IssuedAt.UTC(), ExpiresAt: c.Expiry.UTC(), KeyID: c.KeyID}
	d.Chain = chainOf(c)
	for i, l := range c.Chain {
		if g := l.Grant; g != nil {
			d.Grants = append(d.Grants, GrantRecord{Actor: i, JTI: g.ID, IssuedAt: g.IssuedAt.UTC()})
		}
	}
	if n := len(c.Chain); n > 1 {
		if g := c.Chain[n-2].Grant; g != nil {
			d.Parent = g.ID
		}
	}
	for _, s := range c.Scopes {
		d.Scopes = append(d.Scopes, s.String())
	}
	for _, a := range c.Audience {
		d.Audience = append(d.Audience, a.String())
	}
	return d
}

// CredentialService implements unumv1.CredentialsServer on a control node.
type CredentialService struct {
	unumv1.UnimplementedCredentialsServer
	S *Server
	// Issuer is the node's current issuer (its keyring rotates); nil until
	// the keyring has loaded.
	Issuer func() *delegation.Issuer
	// Verifier is the node's verifier (Inspect).
	Verifier *delegation.Verifier
	// Log is this node's audit log, whose issuance records List reads.
	Log *audit.Log
}

var _ unumv1.CredentialsServer = (*CredentialService)(nil)

// Delegate implements unumv1.CredentialsServer. The call has been decided
// already (cred.delegate, or cred.impersonate with on_behalf_of; for an
// exchange as the presented credential's whole chain, within its scopes);
// here the credential is planned under the deciding revision's limits and
// the delegation rules, signed, and its issuance recorded durably before
// the token is returned.
func (cs *CredentialService) Delegate(ctx context.Context, req *unumv1.DelegateRequest) (*unumv1.DelegateResponse, error) {
	s := cs.S
	caller, _ := rpc.CallerFromContext(ctx)
	d, _ := rpc.DecisionFromContext(ctx)
	parent, _ := rpc.CredentialFromContext(ctx)
	iss := cs.Issuer()
	if iss == nil {
		return nil, status.Error(codes.Unavailable, "this control node's credential keyring is not loaded")
	}
	r, err := cs.request(req, caller, parent, d)
	if err == nil {
		var c *delegation.Credential
		if c, err = iss.Plan(r); err == nil {
			return cs.sign(ctx, iss, c)
		}
	}
	code := codes.InvalidArgument
	if errors.Is(err, delegation.ErrChain) || errors.Is(err, delegation.ErrHolder) {
		code = codes.PermissionDenied
	}
	// record names the presented credential's subject, chain and jtis.
	s.record(ctx, audit.Event{Kind: audit.KindCredential, Action: audit.ActionCredMint, Outcome: audit.Deny, Reasons: []string{clip(err.Error())},
		Resource: d.Resource})
	return nil, status.Errorf(code, "delegate: %v", err)
}

// request reads a Delegate request into what the issuer plans.
func (cs *CredentialService) request(req *unumv1.DelegateRequest, caller rpc.Caller, parent *delegation.Credential, d rpc.Decision) (delegation.Request, error) {
	td := cs.S.cfg.TrustDomain
	r := delegation.Request{Caller: caller.ID, CallerCert: caller.Certificate, Parent: parent,
		TTL: time.Duration(req.GetTtlSeconds()) * time.Second, MaxTTL: d.Limits.MaxTTL, MaxDepth: d.Limits.MaxDepth}
	if req.GetTtlSeconds() < 0 {
		return r, fmt.Errorf("ttl_seconds %d is negative", req.GetTtlSeconds())
	}
	var err error
	if to := req.GetTo(); to != "" {
		if r.Holder, err = idIn(td, "to", to); err != nil {
			return r, err
		}
	}
	if o := req.GetOnBehalfOf(); o != "" {
		if parent != nil {
			return r, errors.New("on_behalf_of: an exchanged credential keeps the subject it was delegated for")
		}
		if r.OnBehalfOf, err = idIn(td, "on_behalf_of", o); err != nil {
			return r, err
		}
	}
	for _, a := range req.GetAudience() {
		id, err := idIn(td, "audience", a)
		if err != nil {
			return r, err
		}
		r.Audience = append(r.Audience, id)
	}
	if len(req.GetScopes()) > 0 {
		if r.Scopes, err = delegation.ParseScopes(req.GetScopes()); err != nil {
			return r, err
		}
	}
	return r, nil
}

func idIn(td spiffeid.TrustDomain, field, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%s %q: %v", field, s, err)
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("%s %s is not in trust domain %q", field, id, td.Name())
	}
	return id, nil
}

// sign signs c and records its issuance; the token is returned only once
// the record is durable (one audit event per mint, nothing written to etcd).
func (cs *CredentialService) sign(ctx context.Context, iss *delegation.Issuer, c *delegation.Credential) (*unumv1.DelegateResponse, error) {
	if cs.S.cfg.Audit == nil {
		return nil, status.Error(codes.Unavailable, "delegate: this node has no audit log to record the issuance in")
	}
	tok, err := iss.Sign(c)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "delegate: %v", err)
	}
	d, _ := rpc.DecisionFromContext(ctx)
	details := credentialDetails(c)
	e := audit.Event{Kind: audit.KindCredential, Action: audit.ActionCredMint, Outcome: audit.Allow, Privileged: true,
		Subject: c.Subject.String(), Chain: details.Chain, Resource: d.Resource, DecisionID: d.ID, PolicyRevision: d.Revision, Creds: c.JTIs()}.
		WithDetails(details)
	if err := cs.S.cfg.Audit.Record(ctx, &e); err != nil {
		// Not recorded, not issued: the token is dropped.
		return nil, status.Errorf(codes.Unavailable, "delegate: the issuance could not be recorded, so nothing was issued: %v", err)
	}
	return &unumv1.DelegateResponse{Token: tok, Jti: c.ID, ExpiresUnix: c.Expiry.Unix(), CertificateBound: c.Thumbprint != "", EventId: e.ID}, nil
}

// Inspect implements unumv1.CredentialsServer.
func (cs *CredentialService) Inspect(_ context.Context, req *unumv1.InspectCredentialRequest) (*unumv1.InspectCredentialResponse, error) {
	if cs.Verifier == nil {
		return nil, status.Error(codes.Unavailable, "inspect: this node verifies no credentials")
	}
	c, err := cs.Verifier.Verify(delegation.Presentation{Token: req.GetToken(), Inspect: true})
	resp := &unumv1.InspectCredentialResponse{Valid: err == nil, SignatureVerified: c != nil}
	if err != nil {
		resp.Reason = err.Error()
	}
	return resp, nil
}

// List implements unumv1.CredentialsServer: the live credentials this node
// minted, read back from its audit log's issuance records (newest first,
// back to the longest lifetime any credential may have), each checked
// against the revocation set.
func (cs *CredentialService) List(ctx context.Context, req *unumv1.ListCredentialsRequest) (*unumv1.ListCredentialsResponse, error) {
	if cs.Log == nil {
		return nil, status.Error(codes.Unavailable, "list: this node has no audit log")
	}
	now := cs.S.cfg.Clock()
	oldest := now.Add(-delegation.MaxTTL - delegation.Leeway)
	set, _, _ := cs.S.revocations.Snapshot()
	resp := &unumv1.ListCredentialsResponse{Node: cs.S.cfg.NodeName}
	var scanErr error
	err := cs.Log.ScanBackward(ctx, cs.Log.Size(), func(_ uint64, raw []byte) bool {
		e, err := audit.DecodeEvent(raw)
		if err != nil {
			scanErr = err
			return false
		}
		if e.Time.Before(oldest) {
			return false
		}
		if e.Kind != audit.KindCredential || e.Action != audit.ActionCredMint || e.Outcome != audit.Allow {
			return true
		}
		var d CredentialDetails
		if json.Unmarshal(e.Details, &d) != nil || !d.ExpiresAt.After(now) {
			return true
		}
		if s := req.GetSubject(); s != "" && d.Subject != s {
			return true
		}
		rec := &unumv1.CredentialRecord{Jti: d.JTI, Subject: d.Subject, Chain: d.Chain, Scopes: d.Scopes, Audience: d.Audience,
			IssuedUnix: d.IssuedAt.Unix(), ExpiresUnix: d.ExpiresAt.Unix(), Parent: d.Parent, CertificateBound: d.CertificateBound,
			EventId: e.ID, DecisionId: e.DecisionID, PolicyRevision: e.PolicyRevision}
		if c, err := credentialFromDetails(cs.S.cfg.TrustDomain, d); err == nil {
			if err := delegation.CheckRevoked(set, c); err != nil {
				rec.Revoked = err.Error()
			}
		}
		resp.Credentials = append(resp.Credentials, rec)
		return true
	})
	if err == nil {
		err = scanErr
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "list: read the audit log: %v", err)
	}
	return resp, nil
}

// credentialFromDetails rebuilds what a revocation check reads of a
// credential from its issuance record.
func credentialFromDetails(td spiffeid.TrustDomain, d CredentialDetails) (*delegation.Credential, error) {
	sub, err := spiffeid.FromString(d.Subject)
	if err != nil {
		return nil, err
	}
	c := &delegation.Credential{ID: d.JTI, TrustDomain: td, Subject: sub, IssuedAt: d.IssuedAt, Expiry: d.ExpiresAt}
	for _, a := range d.Chain {
		id, err := spiffeid.FromString(a)
		if err != nil {
			return nil, err
		}
		c.Chain = append(c.Chain, delegation.Link{Actor: id})
	}
	if len(c.Chain) == 0 {
		return nil, errors.New("no chain")
	}
	for _, g := range d.Grants {
		if g.Actor < 0 || g.Actor >= len(c.Chain)-1 {
			return nil, fmt.Errorf("grant of actor %d outside the chain", g.Actor)
		}
		c.Chain[g.Actor].Grant = &delegation.Grant{ID: g.JTI, IssuedAt: g.IssuedAt}
	}
	return c, nil
}

// Revoke implements unumv1.CredentialsServer: one entry in the revocation
// set (the same set, watch and staleness bound as certificates), which
// every verifier observes within seconds.
func (cs *CredentialService) Revoke(ctx context.Context, req *unumv1.RevokeCredentialsRequest) (*unumv1.RevokeCredentialsResponse, error) {
	s := cs.S
	td := s.cfg.TrustDomain
	var key, what string
	n := 0
	if j := req.GetJti(); j != "" {
		n++
		if !delegation.ValidJTI(j) {
			return nil, status.Errorf(codes.InvalidArgument, "revoke: jti %q: want 32 lowercase hex digits (as `unum cred list` shows)", j)
		}
		key, what = delegation.RevocationKeyJTI(j), "credential "+j+" and every one minted from it"
	}
	if sub := req.GetSubject(); sub != "" {
		n++
		id, err := idIn(td, "subject", sub)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "revoke: %v", err)
		}
		key, what = delegation.RevocationKeySubject(id), "every credential on behalf of "+id.String()
	}
	if h := req.GetHolder(); h != "" {
		n++
		id, err := idIn(td, "holder", h)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "revoke: %v", err)
		}
		key, what = delegation.RevocationKeyHolder(id), "every credential held by "+id.String()+" and every one minted from those"
	}
	if n != 1 {
		return nil, status.Error(codes.InvalidArgument, "revoke: name exactly one of jti, subject and holder")
	}
	reason := clip(req.GetReason())
	if reason == "" {
		reason = "revoked by `unum cred revoke`"
	}
	by := ""
	if c, ok := rpc.CallerFromContext(ctx); ok {
		by = c.ID.String()
	}
	// Kept until no credential it refuses can be valid.
	keep := func(string) time.Duration { return delegation.MaxTTL + delegation.Leeway + time.Hour }
	es, err := s.revokeKeysIf(ctx, []string{key}, keep, reason, by, nil, nil)
	if err != nil {
		return nil, revocationStatus("revoke", err)
	}
	e := es[0]
	s.cfg.Log.Warn("credentials revoked", "key", key, "before", e.Before, "reason", reason, "by", by)
	ev := audit.Event{Kind: audit.KindCredential, Action: audit.ActionCredRevoke, Outcome: audit.Allow, Privileged: true,
		Resource: "cred/-/" + key, Reasons: []string{what}}
	if j := req.GetJti(); j != "" {
		ev.Creds = []string{j}
	}
	s.record(ctx, ev.WithDetails(RevocationDetails{SPIFFEID: e.ID, Before: e.Before.UTC(), Reason: reason}))
	return &unumv1.RevokeCredentialsResponse{Revocations: []*unumv1.Revocation{revocationToProto(e)}}, nil
}

// Keys implements unumv1.CredentialsServer.
func (cs *CredentialService) Keys(context.Context, *unumv1.CredentialKeysRequest) (*unumv1.CredentialKeysResponse, error) {
	return &unumv1.CredentialKeysResponse{Keys: credKeySetsToProto(cs.S.cache.snapshot().credKeys)}, nil
}

// credKeySetsToProto is the key sets as the API sends them (sorted by
// node, as the snapshot holds them).
func credKeySetsToProto(ks []CredKeyRecord) []*unumv1.CredentialKeySet {
	out := make([]*unumv1.CredentialKeySet, 0, len(ks))
	for _, k := range ks {
		out = append(out, &unumv1.CredentialKeySet{Node: k.Node, Jwks: k.JWKS})
	}
	return out
}
