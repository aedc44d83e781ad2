package control

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/identity/jointoken"
	"github.com/unumos/unum/storage/meta"
)

const maxEtcdHosts = 8

// redeemableToken reads the record of tok at key and checks tok against it,
// without consuming it. what ("join", "login") names the token in errors
// and logs; expiredHint, when set, adds what to do to the expiry error.
func (s *Server) redeemableToken(ctx context.Context, key string, tok jointoken.Token, what string, expiredHint func(jointoken.Record) string) (jointoken.Record, *mvccpb.KeyValue, error) {
	got, err := s.cfg.Etcd.Get(ctx, key)
	if err != nil {
		return jointoken.Record{}, nil, status.Errorf(codes.Unavailable, "read %s token: %v", what, err)
	}
	if len(got.Kvs) == 0 {
		s.cfg.Log.Warn(what+" refused: unknown token", "token_id", tok.ID)
		return jointoken.Record{}, nil, status.Errorf(codes.PermissionDenied, "%s token is unknown to this cluster", what)
	}
	kv := got.Kvs[0]
	rec, err := decode[jointoken.Record](kv.Value)
	if err != nil {
		return jointoken.Record{}, nil, status.Errorf(codes.Internal, "%s token record: %v", what, err)
	}
	if err := rec.Check(tok, s.cfg.Clock()); err != nil {
		s.cfg.Log.Warn(what+" refused", "token_id", tok.ID, "name", rec.Name, "err", err)
		switch {
		case errors.Is(err, jointoken.ErrExpired):
			hint := ""
			if expiredHint != nil {
				hint = expiredHint(rec)
			}
			return rec, nil, status.Errorf(codes.PermissionDenied, "%s token expired at %s%s", what, rec.ExpiresAt.UTC().Format(time.RFC3339), hint)
		case errors.Is(err, jointoken.ErrUsed):
			return rec, nil, status.Errorf(codes.PermissionDenied, "%s token has already been used", what)
		default:
			return rec, nil, status.Errorf(codes.PermissionDenied, "%s token is invalid", what)
		}
	}
	return rec, kv, nil
}

// join serves Join. Order matters: everything that can
// be checked without consuming the token is checked first (so a malformed
// request does not burn it); then one etcd transaction consumes the token and
// claims the node name, so of two concurrent uses exactly one wins; only then
// is anything signed.
func (s *Server) join(ctx context.Context, req *unumv1.JoinRequest, u *tokenUse) (*unumv1.JoinResponse, error) {
	// Enrolment signs certificates: like every privileged action, not on a
	// stale revocation view (the enrolment listener has no interceptor).
	if err := s.revocations.Fresh(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "join refused: %v", err)
	}
	// Nor without an audit log that records (the listener has no decision
	// record to fail closed on): a join records its token's use after.
	if err := s.auditErr(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "join refused: %v", err)
	}
	tok, err := jointoken.Parse(req.GetToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	u.id = tok.ID
	if tok.Kind != jointoken.KindNode {
		return nil, status.Errorf(codes.InvalidArgument, "join token: a %s token cannot join a node", tok.Kind)
	}
	rec, tokenKV, err := s.redeemableToken(ctx, joinTokenKey(tok.ID), tok, "join", nil)
	u.name, u.roles = rec.Name, rec.Roles
	if err != nil {
		return nil, err
	}
	name, control := rec.Name, slices.Contains(rec.Roles, "control")
	nodeID, err := identity.NodeID(s.cfg.TrustDomain, name)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "node id: %v", err)
	}
	if _, err := ca.VerifyCSR(req.GetCsr(), nodeID); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "node csr refused: %v", err)
	}
	if err := checkHostPort("api_address", req.GetApiAddress()); err != nil {
		return nil, err
	}
	var interCSR, etcdCSR *x509.CertificateRequest
	if control {
		if err := s.checkControlJoinCA(ctx); err != nil {
			return nil, err
		}
		// One control join at a time on this node (only the root holder
		// admits control nodes): the pending-learner check below and the
		// AddLearner after the token is consumed must not interleave with
		// another control join, or that one's token would burn.
		s.controlJoins.Lock()
		defer s.controlJoins.Unlock()
		if !req.GetKekReady() {
			return nil, status.Error(codes.FailedPrecondition, "this token joins a control node, which holds CA keys: start it with --kek-file PATH (outside its data folder); the token was not used")
		}
		// etcd admits one joining member at a time; refuse before the token
		// is consumed rather than burn it on a second concurrent join.
		members, err := s.cfg.Etcd.MemberList(ctx)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "list etcd members: %v", err)
		}
		for _, m := range members.Members {
			if m.IsLearner || m.Name == "" {
				return nil, status.Errorf(codes.FailedPrecondition, "another control node (etcd member %x) is still joining; try again once it is promoted (unum status); the token was not used", m.ID)
			}
		}
		if interCSR, err = ca.VerifyCSR(req.GetIntermediateCsr(), nodeID); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "intermediate csr refused: %v", err)
		}
		if etcdCSR, err = ca.VerifyCSR(req.GetEtcdCsr(), nodeID); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "etcd csr refused: %v", err)
		}
		if err := checkHostPort("enrollment_address", req.GetEnrollmentAddress()); err != nil {
			return nil, err
		}
		for _, u := range []string{req.GetEtcdPeerUrl(), req.GetEtcdClientUrl()} {
			if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" {
				return nil, status.Errorf(codes.InvalidArgument, "etcd url %q must be https://HOST:PORT", u)
			}
		}
		if n := len(req.GetEtcdHosts()); n == 0 || n > maxEtcdHosts {
			return nil, status.Errorf(codes.InvalidArgument, "etcd_hosts: give 1 to %d hosts", maxEtcdHosts)
		}
		for _, h := range req.GetEtcdHosts() {
			if err := meta.ValidateHost(h); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "etcd host %q: %v", h, err)
			}
		}
	}

	// A node removed and joined again under its name: wait out the tail of
	// its revocation so that what is signed below is not born revoked.
	if err := s.waitSignable(ctx, nodeID); err != nil {
		return nil, err
	}
	now := s.cfg.Clock().UTC()
	record := NodeRecord{
		Name:       name,
		SPIFFEID:   nodeID.String(),
		Roles:      rec.Roles,
		APIAddress: req.GetApiAddress(),
		JoinedAt:   now,
	}
	if control {
		record.EnrollmentAddress = req.GetEnrollmentAddress()
	}
	used := rec
	used.Used, used.UsedAt = true, now
	// The node's audit checkpoint key is registered with the node, in the
	// same transaction (audit.go).
	auditCmps, auditOps, err := s.auditJoinOps(ctx, name, req.GetAuditPublicKeyset(), now)
	if err != nil {
		return nil, err
	}
	txn, err := s.cfg.Etcd.Txn(ctx).
		If(append([]clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(joinTokenKey(tok.ID)), "=", tokenKV.ModRevision),
			clientv3.Compare(clientv3.CreateRevision(nodeKey(name)), "=", 0),
		}, auditCmps...)...).
		Then(append([]clientv3.Op{
			clientv3.OpPut(joinTokenKey(tok.ID), mustJSON(used)),
			clientv3.OpPut(nodeKey(name), mustJSON(record)),
		}, auditOps...)...).
		Else(clientv3.OpGet(joinTokenKey(tok.ID)), clientv3.OpGet(nodeKey(name))).
		Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "consume join token: %v", err)
	}
	if !txn.Succeeded {
		// Someone else consumed the token first (or the name was taken).
		// Say which, the token's fate first: that is what the caller did.
		if kvs := txn.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].ModRevision != tokenKV.ModRevision {
			s.cfg.Log.Warn("join refused: token used concurrently", "token_id", tok.ID, "name", name)
			return nil, status.Error(codes.PermissionDenied, "join token has already been used")
		}
		if kvs := txn.Responses[1].GetResponseRange().Kvs; len(kvs) == 0 {
			// Only the audit keys of the name changed since read: the
			// token is unused; the node may try again.
			return nil, status.Errorf(codes.Aborted, "the audit keys of %q changed during the join: try again; the token was not used", name)
		}
		return nil, status.Errorf(codes.AlreadyExists, "a node named %q already exists", name)
	}

	resp := &unumv1.JoinResponse{TrustDomain: s.cfg.TrustDomain.Name(), Name: name, Roles: rec.Roles}
	chain, err := s.Authority().SignX509SVID(req.GetCsr(), nodeID, s.cfg.NodeSVIDTTL)
	if err != nil {
		s.rollbackJoin(name)
		return nil, status.Errorf(codes.Internal, "sign node svid: %v", err)
	}
	resp.SvidChain = derChain(chain)
	u.leaf = chain[0]
	for _, r := range s.bundle() {
		resp.Roots = append(resp.Roots, r.Raw)
	}
	if control {
		root := s.root()
		if root == nil {
			s.rollbackJoin(name)
			return nil, status.Error(codes.FailedPrecondition, errRootOffline.Error())
		}
		inter, err := ca.NewIntermediate(s.cfg.TrustDomain, name, interCSR.PublicKey, root.Cert, root.Key, now, s.cfg.IntermediateTTL)
		if err != nil {
			s.rollbackJoin(name)
			return nil, status.Errorf(codes.Internal, "sign intermediate: %v", err)
		}
		etcdCert, err := meta.IssueMemberCert(s.cfg.EtcdCA.Cert, s.cfg.EtcdCA.Key, etcdCSR.PublicKey, req.GetEtcdHosts(), now, s.cfg.IntermediateTTL)
		if err != nil {
			s.rollbackJoin(name)
			return nil, status.Errorf(codes.Internal, "sign etcd certificate: %v", err)
		}
		learner, err := meta.AddLearner(ctx, s.cfg.Etcd, name, req.GetEtcdPeerUrl())
		if err != nil {
			s.rollbackJoin(name)
			return nil, status.Errorf(codes.Unavailable, "add etcd member: %v", err)
		}
		record.EtcdMemberID = learner.ID
		if _, err := s.cfg.Etcd.Put(ctx, nodeKey(name), mustJSON(record)); err != nil {
			s.cfg.Log.Warn("record etcd member id", "node", name, "err", err)
		}
		resp.Intermediate = inter.Raw
		resp.EtcdCa = s.cfg.EtcdCA.Cert.Raw
		resp.EtcdCert = etcdCert.Raw
		resp.EtcdInitialCluster = learner.InitialCluster
		resp.EtcdMemberId = learner.ID
		resp.EtcdClientUrls = learner.VoterClientURLs
	}
	resp.ControlAddresses = controlAddresses(s.cache.snapshot().nodes)
	if control {
		resp.ControlAddresses = append(resp.ControlAddresses, record.APIAddress)
	}
	s.cfg.Log.Info("node joined", "node", name, "roles", rec.Roles, "token_id", tok.ID)
	return resp, nil
}

// tokenUse is what an enrolment attempt learned about its token and what
// it signed, for its audit events.
type tokenUse struct {
	id, name string
	roles    []string
	// leaf is the certificate signed (node SVID, user certificate).
	leaf *x509.Certificate
}

// recordTokenUse records a Join or Login attempt: token.use (refusals
// through the rate-limited recorder: anyone can send a token) and, when
// it succeeded, what it made (made is called then).
func (s *Server) recordTokenUse(ctx context.Context, kind string, u *tokenUse, err error, made func(audit.Event) audit.Event) {
	d := TokenDetails{TokenID: u.id, TokenKind: kind, Name: u.name, Roles: u.roles}
	if p, ok := peer.FromContext(ctx); ok {
		d.Peer = p.Addr.String()
	}
	outcome, reasons := outcomeOf(err)
	e := audit.Event{Kind: audit.KindToken, Action: audit.ActionTokenUse, Outcome: outcome, Reasons: reasons}.WithDetails(d)
	if u.name != "" {
		e.Resource = kind + "/-/" + u.name
	}
	if err != nil {
		s.recordRefusal(ctx, e)
		return
	}
	s.record(ctx, e)
	s.record(ctx, made(audit.Event{Outcome: audit.Allow, Resource: e.Resource}))
}

// rollbackJoin removes the node record of a join that failed after the
// token was consumed; the token stays used (single use means single use).
func (s *Server) rollbackJoin(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.cfg.Etcd.Delete(ctx, nodeKey(name)); err != nil {
		s.cfg.Log.Error("roll back failed join", "node", name, "err", err)
	}
}

func checkHostPort(field, v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil || host == "" || port == "" {
		return status.Errorf(codes.InvalidArgument, "%s %q must be HOST:PORT", field, v)
	}
	return nil
}

// Bootstrap writes the initial cluster state, once, from `unum init`;
// auditKey is the first node's audit checkpoint key (Tink binary public
// keyset), registered with it; enf are the first enforcement settings.
func Bootstrap(ctx context.Context, cli *clientv3.Client, info ClusterInfo, roots []*x509.Certificate, first NodeRecord, jwt JWTKeyRecord, auditKey []byte, enf EnforcementSettings) error {
	if err := audit.CheckPublicKeyset(auditKey); err != nil {
		return fmt.Errorf("audit key of %s: %w", first.Name, err)
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(keyClusterInfo), "=", 0)).
		Then(append([]clientv3.Op{
			clientv3.OpPut(keyClusterInfo, mustJSON(info)),
			clientv3.OpPut(keyRoots, string(ca.EncodeCertsPEM(roots))),
			clientv3.OpPut(nodeKey(first.Name), mustJSON(first)),
			clientv3.OpPut(prefixJWTKeys+jwt.KeyID, mustJSON(jwt)),
			clientv3.OpPut(auditNodeKeyKey(first.Name), mustJSON(NewAuditKeyRecord(first.Name, auditKey, AuditKeyViaInit, info.CreatedAt))),
			clientv3.OpPut(keyEnforcementSettings, mustJSON(enf)),
		}, bootstrapPolicyOps(info.CreatedAt)...)...).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return errors.New("cluster state already initialised")
	}
	return nil
}

// PublishJWTKey records a control node's JWT-SVID signing key so that every
// agent serves it in the JWT bundle.
func PublishJWTKey(ctx context.Context, cli *clientv3.Client, k JWTKeyRecord) error {
	_, err := cli.Put(ctx, prefixJWTKeys+k.KeyID, mustJSON(k))
	return err
}
