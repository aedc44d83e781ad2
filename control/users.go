package control

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/internal/metrics/label"
	"github.com/unumos/unum/internal/rpc"
)

// People: spiffe://TD/user/NAME.
//
// # Records and tokens
//
// A user is a UserRecord at userKey(NAME): name, role and the lifetime of
// their certificates. Roles are data, read by the authorizer from the
// watched state (Server.UserRole) and later by the policy engine; they are
// never in a certificate, so a user cannot carry a role anywhere the record
// does not say it, and changing or removing the record changes what every
// certificate of theirs may do.
//
// `unum user add` writes the record and a jointoken.Record of kind user at
// userTokenKey(ID) in one transaction. Login redeems the token the way Join
// redeems a node token: everything that can be checked without consuming it
// is checked first; one transaction then marks it used, conditional on the
// token and on the user record being unchanged since they were read; only
// then is anything signed. A token is valid only for the incarnation of the
// user it was minted for (its create revision is not older than the user
// record's), so a token that survived a `user rm` cannot enrol a later user
// of the same name.
//
// # Removal and revocation
//
// RemoveUser deletes the record and the user's pending tokens and records a
// revocation of spiffe://TD/user/NAME in the same transaction (Server.revoke):
// every API server refuses the user's existing certificates, live
// connections included, as soon as its revocation view has the entry.
// RevokeUser records the revocation only (a stolen certificate; the user
// logs in again with a new token from `user add NAME --reissue-token`).
//
// The user named identity.AdminUser is built in (made by `unum init`,
// re-minted by `unum admin recover`): it has no record, cannot be added or
// removed, may be revoked, and may renew.

const (
	// DefaultUserCertTTL is a user certificate's lifetime unless the user's
	// record or the request says less.
	DefaultUserCertTTL = 12 * time.Hour
	// MinUserCertTTL is the shortest user certificate lifetime one may ask
	// for: shorter ones would spend more time being renewed than used.
	MinUserCertTTL = time.Minute
	// defaultUserTokenTTL is the lifetime of a user enrolment token.
	defaultUserTokenTTL = 15 * time.Minute
	// prefixAllTokens holds both join and user token records (janitor).
	prefixAllTokens = "/unum/tokens/"
)

const errBuiltinAdmin = "is the built-in user (made by unum init): it cannot be added or removed; " +
	"revoke its certificates with `unum user revoke admin` and mint a new one on a control node with `unum admin recover`"

var _ unumv1.UsersServer = (*Server)(nil)

// secondsArg converts a request's seconds to a duration without overflow:
// anything above limit comes back as limit+1s, which every caller refuses
// or caps.
func secondsArg(secs int64, limit time.Duration) time.Duration {
	if secs > int64(limit/time.Second) {
		return limit + time.Second
	}
	return time.Duration(secs) * time.Second
}

// UserCertTTL is the lifetime of a certificate for a user whose record says
// userTTL (0: DefaultUserCertTTL) when requested is asked for (0: the
// user's). It never exceeds the user's lifetime or MaxUserCertTTL, and a
// request below MinUserCertTTL is refused, not raised.
func UserCertTTL(requested, userTTL time.Duration) (time.Duration, error) {
	limit := userTTL
	if limit <= 0 {
		limit = DefaultUserCertTTL
	}
	limit = min(limit, MaxUserCertTTL)
	switch {
	case requested < 0:
		return 0, errors.New("ttl: negative")
	case requested == 0:
		return limit, nil
	case requested < MinUserCertTTL:
		return 0, errors.New("ttl: must be at least " + MinUserCertTTL.String())
	}
	return min(requested, limit), nil
}

func (s *Server) userID(name string) (spiffeid.ID, error) {
	if err := jointoken.ValidateUserName(name); err != nil {
		return spiffeid.ID{}, status.Error(codes.InvalidArgument, err.Error())
	}
	id, err := identity.UserID(s.cfg.TrustDomain, name)
	if err != nil {
		return spiffeid.ID{}, status.Errorf(codes.InvalidArgument, "user %q: %v", name, err)
	}
	return id, nil
}

func userToProto(td spiffeid.TrustDomain, u UserRecord) *unumv1.User {
	id, _ := identity.UserID(td, u.Name)
	out := &unumv1.User{
		Name:           u.Name,
		SpiffeId:       id.String(),
		Role:           u.Role,
		CreatedBy:      u.CreatedBy,
		CertTtlSeconds: int64(u.CertTTL / time.Second),
	}
	if !u.CreatedAt.IsZero() {
		out.CreatedAtUnix = u.CreatedAt.Unix()
	}
	return out
}

// AddUser creates a user and a single-use enrolment token, or with
// reissue_token a new token for an existing user (whose role and lifetime
// stay as they are).
func (s *Server) AddUser(ctx context.Context, req *unumv1.AddUserRequest) (*unumv1.AddUserResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	if _, err := s.userID(name); err != nil {
		return nil, err
	}
	if name == identity.AdminUser {
		return nil, status.Errorf(codes.InvalidArgument, "user %q %s", name, errBuiltinAdmin)
	}
	if r := req.GetRole(); r != "" && !rpc.ValidRole(r) {
		return nil, status.Errorf(codes.InvalidArgument, "--role %q: want %s, %s or %s", r, rpc.RoleAdmin, rpc.RoleOperator, rpc.RoleViewer)
	}
	certTTL := secondsArg(req.GetCertTtlSeconds(), MaxUserCertTTL)
	switch {
	case certTTL == 0:
		certTTL = DefaultUserCertTTL
	case certTTL < MinUserCertTTL || certTTL > MaxUserCertTTL:
		return nil, status.Errorf(codes.InvalidArgument, "--cert-ttl must be between %s and %s", MinUserCertTTL, MaxUserCertTTL)
	}
	tokenTTL := secondsArg(req.GetTokenTtlSeconds(), maxJoinTokenTTL)
	switch {
	case tokenTTL == 0:
		tokenTTL = defaultUserTokenTTL
	case tokenTTL < time.Second || tokenTTL > maxJoinTokenTTL:
		return nil, status.Errorf(codes.InvalidArgument, "--token-ttl must be between 1s and %s", maxJoinTokenTTL)
	}
	// Pin what join tokens pin: the first root of the current bundle (the
	// new root once a rotation has reached every node).
	bundle := s.bundle()
	if len(bundle) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "no trust bundle")
	}
	tok, err := jointoken.New(jointoken.KindUser, ca.Fingerprint(bundle[0]), rand.Reader)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "new token: %v", err)
	}
	now := s.cfg.Clock().UTC()
	expires := now.Add(tokenTTL)
	tokRec := tok.Record(name, nil, c.ID.String(), expires)

	got, err := s.cfg.Etcd.Get(ctx, userKey(name))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read user: %v", err)
	}
	var user UserRecord
	var cmp clientv3.Cmp
	var ops []clientv3.Op
	switch {
	case len(got.Kvs) == 0:
		if req.GetRole() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "--role is required (%s, %s or %s)", rpc.RoleAdmin, rpc.RoleOperator, rpc.RoleViewer)
		}
		user = UserRecord{Name: name, Role: req.GetRole(), CertTTL: certTTL, CreatedAt: now, CreatedBy: c.ID.String()}
		cmp = clientv3.Compare(clientv3.CreateRevision(userKey(name)), "=", 0)
		ops = append(ops, clientv3.OpPut(userKey(name), mustJSON(user)))
	case !req.GetReissueToken():
		return nil, status.Errorf(codes.AlreadyExists, "a user named %q already exists (--reissue-token mints a new enrolment token for them; `unum user rm` removes them)", name)
	default:
		if user, err = decode[UserRecord](got.Kvs[0].Value); err != nil {
			return nil, status.Errorf(codes.Internal, "user %s: %v", name, err)
		}
		// A new token never changes what the user is: that takes rm and add.
		if r := req.GetRole(); r != "" && r != user.Role {
			return nil, status.Errorf(codes.FailedPrecondition, "user %s has role %s; a reissued token keeps it (remove and add the user to change the role)", name, user.Role)
		}
		if req.GetCertTtlSeconds() != 0 && certTTL != user.CertTTL {
			return nil, status.Errorf(codes.FailedPrecondition, "user %s has certificate lifetime %s; a reissued token keeps it", name, user.CertTTL)
		}
		cmp = clientv3.Compare(clientv3.ModRevision(userKey(name)), "=", got.Kvs[0].ModRevision)
	}
	ops = append(ops, clientv3.OpPut(userTokenKey(tok.ID), mustJSON(tokRec)))
	txn, err := s.cfg.Etcd.Txn(ctx).If(cmp).Then(ops...).Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store user: %v", err)
	}
	if !txn.Succeeded {
		return nil, status.Errorf(codes.Aborted, "user %s changed concurrently; try again", name)
	}
	if len(got.Kvs) == 0 {
		s.record(ctx, audit.Event{Kind: audit.KindUser, Action: audit.ActionUserAdd, Outcome: audit.Allow, Resource: "user/-/" + name}.
			WithDetails(UserDetails{Name: name, Role: user.Role, CertTTLSec: int64(user.CertTTL / time.Second)}))
	}
	s.record(ctx, audit.Event{Kind: audit.KindToken, Action: audit.ActionTokenMint, Outcome: audit.Allow, Resource: "user/-/" + name}.
		WithDetails(TokenDetails{TokenID: tok.ID, TokenKind: "user", Name: name, ExpiresAt: expires}))
	if len(got.Kvs) == 0 {
		s.cfg.Log.Info("user added", "user", name, "role", user.Role, "cert_ttl", user.CertTTL, "token_id", tok.ID, "token_expires", expires, "by", c.ID.String())
	} else {
		s.cfg.Log.Info("user enrolment token reissued", "user", name, "token_id", tok.ID, "token_expires", expires, "by", c.ID.String())
	}
	return &unumv1.AddUserResponse{User: userToProto(s.cfg.TrustDomain, user), Token: tok.String(), TokenExpiresAtUnix: expires.Unix()}, nil
}

// ListUsers lists the users, the built-in admin first.
func (s *Server) ListUsers(ctx context.Context, _ *unumv1.ListUsersRequest) (*unumv1.ListUsersResponse, error) {
	resp, err := s.cfg.Etcd.Get(ctx, prefixUsers, clientv3.WithPrefix())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list users: %v", err)
	}
	users := make([]UserRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		u, err := decode[UserRecord](kv.Value)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "%s: %v", kv.Key, err)
		}
		users = append(users, u)
	}
	sort.Slice(users, func(i, j int) bool { return users[i].Name < users[j].Name })
	out := &unumv1.ListUsersResponse{Users: []*unumv1.User{
		userToProto(s.cfg.TrustDomain, UserRecord{Name: identity.AdminUser, Role: rpc.RoleAdmin, CreatedBy: "built in"}),
	}}
	for _, u := range users {
		out.Users = append(out.Users, userToProto(s.cfg.TrustDomain, u))
	}
	return out, nil
}

// RemoveUser deletes the user and their pending enrolment tokens and revokes
// every certificate issued to them, in one transaction.
func (s *Server) RemoveUser(ctx context.Context, req *unumv1.RemoveUserRequest) (*unumv1.RemoveUserResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	id, err := s.userID(name)
	if err != nil {
		return nil, err
	}
	if name == identity.AdminUser {
		return nil, status.Errorf(codes.InvalidArgument, "user %q %s", name, errBuiltinAdmin)
	}
	resp, err := s.cfg.Etcd.Txn(ctx).Then(
		clientv3.OpGet(userKey(name)),
		clientv3.OpGet(prefixUserTokens, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read user: %v", err)
	}
	if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return nil, status.Errorf(codes.NotFound, "no user named %q", name)
	}
	ops := []clientv3.Op{clientv3.OpDelete(userKey(name))}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if rec, err := decode[jointoken.Record](kv.Value); err == nil && rec.Name == name {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	e, err := s.revoke(ctx, id, "user removed", c.ID.String(), ops...)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "remove user: %v", err)
	}
	s.record(ctx, audit.Event{Kind: audit.KindUser, Action: audit.ActionUserRemove, Outcome: audit.Allow, Resource: "user/-/" + name}.
		WithDetails(UserDetails{Name: name, TokensDeleted: len(ops) - 1}))
	s.cfg.Log.Info("user removed", "user", name, "pending_tokens_deleted", len(ops)-1, "revoked_before", e.Before, "by", c.ID.String())
	return &unumv1.RemoveUserResponse{}, nil
}

// RevokeUser refuses every certificate issued to the user so far, keeping
// the user (who logs in again with a reissued token).
func (s *Server) RevokeUser(ctx context.Context, req *unumv1.RevokeUserRequest) (*unumv1.RevokeUserResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	id, err := s.userID(name)
	if err != nil {
		return nil, err
	}
	if name != identity.AdminUser {
		got, err := s.cfg.Etcd.Get(ctx, userKey(name))
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "read user: %v", err)
		}
		if len(got.Kvs) == 0 {
			return nil, status.Errorf(codes.NotFound, "no user named %q", name)
		}
	}
	e, err := s.revoke(ctx, id, "user certificates revoked", c.ID.String())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "revoke user: %v", err)
	}
	return &unumv1.RevokeUserResponse{BeforeUnixNano: e.Before.UnixNano()}, nil
}

// Login implements unumv1.EnrollmentServer: a person redeems a user
// enrolment token for a certificate. See the comment at the top of this
// file for the order of checks.
func (s *Server) Login(ctx context.Context, req *unumv1.LoginRequest) (*unumv1.LoginResponse, error) {
	var u tokenUse
	resp, err := s.login(ctx, req, &u)
	s.recordTokenUse(ctx, "user", &u, err, func(e audit.Event) audit.Event {
		id, _ := identity.UserID(s.cfg.TrustDomain, u.name)
		e.Kind, e.Action, e.Subject = audit.KindSVID, audit.ActionSVIDIssue, id.String()
		return e.WithDetails(SVIDDetails{Type: "x509", SPIFFEID: id.String(), Serial: u.leaf.SerialNumber.String(),
			NotAfter: u.leaf.NotAfter.UTC(), TokenID: u.id})
	})
	s.countEnrollment(label.KindUser, err)
	if err == nil {
		s.countSVID(label.KindUser, nil)
	}
	return resp, err
}

func (s *Server) login(ctx context.Context, req *unumv1.LoginRequest, u *tokenUse) (*unumv1.LoginResponse, error) {
	if err := s.revocations.Fresh(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "login refused: %v", err)
	}
	if err := s.auditErr(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "login refused: %v", err)
	}
	tok, err := jointoken.Parse(req.GetToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	u.id = tok.ID
	if tok.Kind != jointoken.KindUser {
		return nil, status.Errorf(codes.InvalidArgument, "login token: a %s token cannot log in a user (it is for `unum node --join`)", tok.Kind)
	}
	if req.GetTtlSeconds() < 0 {
		return nil, status.Error(codes.InvalidArgument, "ttl: negative")
	}
	rec, tokenKV, err := s.redeemableToken(ctx, userTokenKey(tok.ID), tok, "login", func(rec jointoken.Record) string {
		return fmt.Sprintf(" (ask an admin for `unum user add %s --reissue-token`)", rec.Name)
	})
	u.name = rec.Name
	if err != nil {
		return nil, err
	}
	name := rec.Name
	id, err := s.userID(name)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "login token record: %v", err)
	}
	csr, err := ca.VerifyCSR(req.GetCsr(), id)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "user csr refused: %v", err)
	}
	got, err := s.cfg.Etcd.Get(ctx, userKey(name))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read user: %v", err)
	}
	// A token outlives neither its user nor that user's incarnation.
	if len(got.Kvs) == 0 || tokenKV.CreateRevision < got.Kvs[0].CreateRevision {
		s.cfg.Log.Warn("login refused: token of a removed user", "token_id", tok.ID, "user", name)
		return nil, status.Error(codes.PermissionDenied, "login token is invalid: its user was removed")
	}
	userKV := got.Kvs[0]
	user, err := decode[UserRecord](userKV.Value)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "user %s: %v", name, err)
	}
	ttl, err := UserCertTTL(secondsArg(req.GetTtlSeconds(), MaxUserCertTTL), user.CertTTL)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// Before the token is consumed: a user removed and added again waits
	// here a few seconds rather than burn the token on a born-revoked
	// certificate.
	if err := s.waitSignable(ctx, id); err != nil {
		return nil, err
	}
	used := rec
	used.Used, used.UsedAt = true, s.cfg.Clock().UTC()
	txn, err := s.cfg.Etcd.Txn(ctx).
		If(
			clientv3.Compare(clientv3.ModRevision(userTokenKey(tok.ID)), "=", tokenKV.ModRevision),
			clientv3.Compare(clientv3.ModRevision(userKey(name)), "=", userKV.ModRevision),
		).
		Then(clientv3.OpPut(userTokenKey(tok.ID), mustJSON(used))).
		Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "consume login token: %v", err)
	}
	if !txn.Succeeded {
		s.cfg.Log.Warn("login refused: token used concurrently or user changed", "token_id", tok.ID, "user", name)
		return nil, status.Error(codes.PermissionDenied, "login token has already been used (or its user was changed meanwhile)")
	}
	// From here on the token is spent whatever happens: single use means
	// single use.
	chain, err := s.Authority().SignVerifiedCSR(csr, id, ttl)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign user certificate: %v", err)
	}
	u.leaf = chain[0]
	resp := &unumv1.LoginResponse{
		TrustDomain:      s.cfg.TrustDomain.Name(),
		Name:             name,
		Role:             user.Role,
		SvidChain:        derChain(chain),
		ControlAddresses: controlAddresses(s.cache.snapshot().nodes),
	}
	for _, r := range s.bundle() {
		resp.Roots = append(resp.Roots, r.Raw)
	}
	s.cfg.Log.Info("user logged in", "user", name, "role", user.Role, "token_id", tok.ID, "serial", chain[0].SerialNumber.String(), "expires", chain[0].NotAfter)
	return resp, nil
}

// RenewUser signs a new certificate for the calling user, for a new key,
// after a linearizable read confirms the user still exists. Nothing in the
// request can change who the user is or what they may do.
func (s *Server) RenewUser(ctx context.Context, req *unumv1.RenewUserRequest) (*unumv1.RenewUserResponse, error) {
	resp, err := s.renewUser(ctx, req)
	s.countSVID(label.KindUser, err)
	d := SVIDDetails{Type: "x509"}
	if c, ok := rpc.CallerFromContext(ctx); ok {
		d.SPIFFEID = c.ID.String()
	}
	s.recordSVID(ctx, audit.ActionSVIDRotate, d, resp.GetChain(), err)
	return resp, err
}

func (s *Server) renewUser(ctx context.Context, req *unumv1.RenewUserRequest) (*unumv1.RenewUserResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if c.Kind != identity.KindUser {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a user", c.ID)
	}
	if req.GetTtlSeconds() < 0 {
		return nil, status.Error(codes.InvalidArgument, "ttl: negative")
	}
	csr, err := ca.VerifyCSR(req.GetCsr(), c.ID)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "user csr refused: %v", err)
	}
	if c.Certificate != nil && samePublicKey(csr.PublicKey, c.Certificate.PublicKey) {
		return nil, status.Error(codes.InvalidArgument, "renewal needs a new key: the request is for the key of the current certificate")
	}
	var userTTL time.Duration // the built-in admin: the default
	if c.Name != identity.AdminUser {
		rctx, cancel := context.WithTimeout(ctx, confirmTimeout)
		defer cancel()
		kvs, err := s.reader.Get(rctx, userKey(c.Name))
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "cannot confirm the user (no etcd quorum?): %v", err)
		}
		kv, ok := kvs[userKey(c.Name)]
		if !ok {
			return nil, status.Errorf(codes.PermissionDenied, "user %s is not a user of this cluster", c.Name)
		}
		u, err := decode[UserRecord](kv.Value)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "user %s: %v", c.Name, err)
		}
		userTTL = u.CertTTL
	}
	ttl, err := UserCertTTL(secondsArg(req.GetTtlSeconds(), MaxUserCertTTL), userTTL)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.waitSignable(ctx, c.ID); err != nil {
		return nil, err
	}
	chain, err := s.Authority().SignVerifiedCSR(csr, c.ID, ttl)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign user certificate: %v", err)
	}
	s.cfg.Log.Info("user certificate renewed", "user", c.Name, "serial", chain[0].SerialNumber.String(), "expires", chain[0].NotAfter)
	return &unumv1.RenewUserResponse{Chain: derChain(chain)}, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
