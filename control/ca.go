package control

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity"
	"github.com/unumos/unum/identity/ca"
)

// CAHost is what the CA service needs from the node it runs on: durable
// storage of CA keys and the node's own credentials. Implementations must be
// safe for concurrent use.
type CAHost interface {
	// SaveRoot persists root (key sealed) as the root this node holds,
	// replacing any other; nil deletes the held root key. It returns only
	// once the change is durable.
	SaveRoot(root *Signer) error
	// SaveIntermediate persists a new intermediate and its key (sealed)
	// so that a restart keeps it, and re-issues the node's own SVID from
	// it, before it returns.
	SaveIntermediate(a *ca.Authority, cert *x509.Certificate, key crypto.Signer) error
	// DialControl connects to another control node's API with this node's
	// credentials.
	DialControl(addr string) (*grpc.ClientConn, error)
}

// Keys of the CA state in etcd (keyRoots is in schema.go).
const (
	keyRotation         = "/unum/ca/rotation"
	prefixIntermediates = "/unum/ca/intermediates/"
)

func intermediateKey(node string) string { return prefixIntermediates + node }

// errRootOffline is what everything that needs the root key says once it
// has been exported.
var errRootOffline = errors.New("the root CA key is offline (exported with `unum ca export-root`): bring it back with `unum ca import-root FILE` against a control node, or pass it for one command with `unum ca rotate --root-key FILE`")

// caState is the control node's CA material that changes while it runs.
type caState struct {
	authority atomic.Pointer[ca.Authority]
	// root is the root key this node holds (sealed on disk); oneShot a root
	// key brought for the duration of one Rotate call, never stored.
	root    atomic.Pointer[Signer]
	oneShot atomic.Pointer[Signer]
	kick    chan struct{}
	// tick serializes the CA loop's steps with the handlers that change
	// the same state (export, import).
	tick sync.Mutex
}

// Authority returns the intermediate this node currently signs with.
func (s *Server) Authority() *ca.Authority { return s.ca.authority.Load() }

// root returns the root key usable on this node now, if any.
func (s *Server) root() *Signer {
	if r := s.ca.oneShot.Load(); r != nil {
		return r
	}
	return s.ca.root.Load()
}

// bundle returns the current trust bundle: the watched one, or the one the
// node started with until the watch has loaded.
func (s *Server) bundle() []*x509.Certificate {
	if snap := s.cache.snapshot(); snap.loaded && len(snap.roots) > 0 {
		return snap.roots
	}
	return s.cfg.Roots
}

func (s *Server) kickCA() {
	select {
	case s.ca.kick <- struct{}{}:
	default:
	}
}

// caSnapshot is one consistent read of the CA state.
type caSnapshot struct {
	rot      RotationRecord
	rotRev   int64
	roots    []*x509.Certificate
	rootsRev int64
	nodes    []NodeRecord
	statuses map[string]NodeStatus
	inters   map[string]IntermediateRecord
	interRaw map[string][]byte
}

func (s *Server) readCA(ctx context.Context) (caSnapshot, error) {
	resp, err := s.cfg.Etcd.Txn(ctx).Then(
		clientv3.OpGet(keyRotation),
		clientv3.OpGet(keyRoots),
		clientv3.OpGet(prefixNodes, clientv3.WithPrefix()),
		clientv3.OpGet(prefixNodeStatus, clientv3.WithPrefix()),
		clientv3.OpGet(prefixIntermediates, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return caSnapshot{}, err
	}
	snap := caSnapshot{statuses: map[string]NodeStatus{}, inters: map[string]IntermediateRecord{}, interRaw: map[string][]byte{}}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		if snap.rot, err = decode[RotationRecord](kvs[0].Value); err != nil {
			return snap, err
		}
		snap.rotRev = kvs[0].ModRevision
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 {
		if snap.roots, err = ca.ParseCertsPEM(kvs[0].Value); err != nil {
			return snap, fmt.Errorf("%s: %w", keyRoots, err)
		}
		snap.rootsRev = kvs[0].ModRevision
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		if n, err := decode[NodeRecord](kv.Value); err == nil {
			snap.nodes = append(snap.nodes, n)
		}
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		if st, err := decode[NodeStatus](kv.Value); err == nil {
			snap.statuses[strings.TrimPrefix(string(kv.Key), prefixNodeStatus)] = st
		}
	}
	for _, kv := range resp.Responses[4].GetResponseRange().Kvs {
		name := strings.TrimPrefix(string(kv.Key), prefixIntermediates)
		if ir, err := decode[IntermediateRecord](kv.Value); err == nil {
			snap.inters[name] = ir
			snap.interRaw[name] = kv.Value
		}
	}
	return snap, nil
}

func (snap caSnapshot) node(name string) (NodeRecord, bool) {
	for _, n := range snap.nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeRecord{}, false
}

func (snap caSnapshot) rootByFingerprint(fp string) *x509.Certificate {
	for _, r := range snap.roots {
		if ca.Fingerprint(r) == fp {
			return r
		}
	}
	return nil
}

// issuerOf returns the fingerprint of the root in roots that signed cert.
func issuerOf(cert *x509.Certificate, roots []*x509.Certificate) string {
	for _, r := range roots {
		if bytes.Equal(cert.RawIssuer, r.RawSubject) && cert.CheckSignatureFrom(r) == nil {
			return ca.Fingerprint(r)
		}
	}
	return ""
}

// issuedAt is when a certificate made by identity/ca was signed (NotBefore
// is backdated by exactly ClockSkew).
func issuedAt(c *x509.Certificate) time.Time { return c.NotBefore.Add(ca.ClockSkew) }

// intermediateRecord describes what this node signs with now, relative to
// rotation rot.
func (s *Server) intermediateRecord(snap caSnapshot) IntermediateRecord {
	cert := s.Authority().Certificate()
	rec := IntermediateRecord{
		Node:          s.cfg.NodeName,
		Fingerprint:   ca.Fingerprint(cert),
		Root:          issuerOf(cert, snap.roots),
		NotAfter:      cert.NotAfter.UTC(),
		Certificate:   cert.Raw,
		LeafRetention: s.cfg.LeafRetention,
	}
	if r := s.ca.root.Load(); r != nil {
		rec.RootKey = ca.Fingerprint(r.Cert)
	}
	if rot := snap.rot; rot.ID != "" && rec.Root == rot.NewRoot && !issuedAt(cert).Before(rot.StartedAt) {
		rec.RotationID = rot.ID
		rec.SwitchedAt = issuedAt(cert).UTC()
	}
	return rec
}

// caLoop publishes this node's intermediate record, switches intermediates
// when a rotation asks for it, and drives the rotations this node holds.
// Every control node runs it; etcd transactions conditional on what was read
// keep concurrent steps from both applying.
func (s *Server) caLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.CAPoll)
	defer t.Stop()
	for {
		if err := s.caStep(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("ca rotation step failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.ca.kick:
		}
	}
}

func (s *Server) caStep(ctx context.Context) error {
	s.ca.tick.Lock()
	defer s.ca.tick.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	snap, err := s.readCA(ctx)
	if err != nil {
		return err
	}
	rot := snap.rot
	if rot.InProgress() && rot.Phase == PhaseIntermediates && s.cfg.CA != nil {
		if s.intermediateRecord(snap).RotationID != rot.ID {
			if err := s.switchIntermediate(ctx, snap); err != nil {
				return fmt.Errorf("switch intermediate: %w", err)
			}
		}
	}
	if err := s.publishIntermediate(ctx, snap); err != nil {
		return err
	}
	if !rot.InProgress() || rot.Holder != s.cfg.NodeName {
		return nil
	}
	return s.driveRotation(ctx, snap)
}

func (s *Server) publishIntermediate(ctx context.Context, snap caSnapshot) error {
	rec := s.intermediateRecord(snap)
	data := mustJSON(rec)
	if bytes.Equal(snap.interRaw[s.cfg.NodeName], []byte(data)) {
		return nil
	}
	// Only members publish: a removed node must not reappear in ca status.
	_, err := s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(nodeKey(s.cfg.NodeName)), ">", 0)).
		Then(clientv3.OpPut(intermediateKey(s.cfg.NodeName), data)).
		Commit()
	return err
}

// switchIntermediate gives this node a new intermediate under the
// rotation's new root: its own key, signed by the root holder (itself, or
// over SignIntermediate), stored before it is used.
func (s *Server) switchIntermediate(ctx context.Context, snap caSnapshot) error {
	rot := snap.rot
	newRoot := snap.rootByFingerprint(rot.NewRoot)
	if newRoot == nil {
		return fmt.Errorf("new root %s is not in the bundle", rot.NewRoot)
	}
	key, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	now := s.cfg.Clock()
	var cert *x509.Certificate
	if r := s.root(); r != nil && ca.Fingerprint(r.Cert) == rot.NewRoot {
		if cert, err = ca.NewIntermediate(s.cfg.TrustDomain, s.cfg.NodeName, key.Public(), r.Cert, r.Key, now, s.cfg.IntermediateTTL); err != nil {
			return err
		}
	} else {
		holder, ok := snap.node(rot.Holder)
		if !ok || holder.APIAddress == "" {
			return fmt.Errorf("root holder %s is not a member", rot.Holder)
		}
		id, err := identity.NodeID(s.cfg.TrustDomain, s.cfg.NodeName)
		if err != nil {
			return err
		}
		csr, err := ca.CreateCSR(key, id)
		if err != nil {
			return err
		}
		cc, err := s.cfg.CA.DialControl(holder.APIAddress)
		if err != nil {
			return err
		}
		defer cc.Close()
		resp, err := unumv1.NewCAClient(cc).SignIntermediate(ctx, &unumv1.SignIntermediateRequest{RotationId: rot.ID, Csr: csr})
		if err != nil {
			return fmt.Errorf("root holder %s: %w", rot.Holder, err)
		}
		if cert, err = x509.ParseCertificate(resp.GetIntermediate()); err != nil {
			return fmt.Errorf("intermediate from %s: %w", rot.Holder, err)
		}
		if err := cert.CheckSignatureFrom(newRoot); err != nil {
			return fmt.Errorf("intermediate from %s is not signed by the new root: %w", rot.Holder, err)
		}
	}
	a, err := ca.New(s.cfg.TrustDomain, cert, key, nil, s.cfg.Clock)
	if err != nil {
		return err
	}
	if err := s.cfg.CA.SaveIntermediate(a, cert, key); err != nil {
		return err
	}
	s.ca.authority.Store(a)
	s.record(ctx, audit.Event{Kind: audit.KindCA, Action: audit.ActionCARotate, Subject: s.selfID(), Outcome: audit.Allow, Resource: "ca/-/intermediates"}.
		WithDetails(CADetails{Step: "switch-intermediate", Rotation: rot.ID, Fingerprint: ca.Fingerprint(cert), Node: s.cfg.NodeName}))
	s.cfg.Log.Info("switched to a new intermediate", "rotation", rot.ID, "fingerprint", ca.Fingerprint(cert), "root", rot.NewRoot)
	return nil
}

// driveRotation takes the holder's next step of the rotation.
func (s *Server) driveRotation(ctx context.Context, snap caSnapshot) error {
	rot := snap.rot
	act := nextRotationStep(rotationView{Rot: rot, Nodes: snap.nodes, Statuses: snap.statuses, Inters: snap.inters, Now: s.cfg.Clock()})
	cond := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(keyRotation), "=", snap.rotRev)}
	switch act.Kind {
	case actMakeRoot:
		return s.makeRoot(ctx, snap)
	case actStartIntermediates:
		// From here on the new root comes first: join tokens pin Roots[0],
		// and the enrolment server switches to the new root now.
		roots := []*x509.Certificate{snap.rootByFingerprint(rot.NewRoot)}
		for _, r := range snap.roots {
			if ca.Fingerprint(r) != rot.NewRoot {
				roots = append(roots, r)
			}
		}
		rot.Phase = PhaseIntermediates
		return s.commitRotation(ctx, append(cond, clientv3.Compare(clientv3.ModRevision(keyRoots), "=", snap.rootsRev)), rot, roots)
	case actStartRetiring:
		rot.Phase, rot.SwitchedAt, rot.RetireAt = PhaseRetiring, act.SwitchedAt.UTC(), act.RetireAt.UTC()
		return s.commitRotation(ctx, cond, rot, nil)
	case actFinish:
		rot.Phase, rot.SwitchedAt = PhaseDone, act.SwitchedAt.UTC()
		return s.commitRotation(ctx, cond, rot, nil)
	case actRetire:
		var roots []*x509.Certificate
		for _, r := range snap.roots {
			if ca.Fingerprint(r) != rot.OldRoot {
				roots = append(roots, r)
			}
		}
		if len(roots) == 0 {
			return errors.New("retiring the old root would empty the bundle")
		}
		rot.Phase = PhaseDone
		return s.commitRotation(ctx, append(cond, clientv3.Compare(clientv3.ModRevision(keyRoots), "=", snap.rootsRev)), rot, roots)
	}
	return nil
}

func (s *Server) commitRotation(ctx context.Context, cond []clientv3.Cmp, rot RotationRecord, roots []*x509.Certificate) error {
	ops := []clientv3.Op{clientv3.OpPut(keyRotation, mustJSON(rot))}
	if roots != nil {
		ops = append(ops, clientv3.OpPut(keyRoots, string(ca.EncodeCertsPEM(roots))))
	}
	resp, err := s.cfg.Etcd.Txn(ctx).If(cond...).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded {
		s.record(ctx, audit.Event{Kind: audit.KindCA, Action: audit.ActionCARotate, Subject: s.selfID(), Outcome: audit.Allow, Resource: "ca/-/intermediates"}.
			WithDetails(CADetails{Step: "advance", Rotation: rot.ID, Phase: rot.Phase}))
		s.cfg.Log.Info("ca rotation advanced", "rotation", rot.ID, "phase", rot.Phase)
		s.kickCA()
	}
	return nil
}

// makeRoot makes the new root, stores it (replacing the old root key: from
// now on nothing is signed with the old root), and publishes it beside the
// old one. A crash between the store and the publish leaves an unpublished
// root that the next step replaces; Join refuses to sign with a root that
// is not in the bundle.
func (s *Server) makeRoot(ctx context.Context, snap caSnapshot) error {
	old := s.root()
	if old == nil {
		return errRootOffline
	}
	key, err := ca.GenerateKey()
	if err != nil {
		return err
	}
	cert, err := ca.NewRoot(s.cfg.TrustDomain, key, s.cfg.Clock(), s.cfg.RootTTL)
	if err != nil {
		return err
	}
	nr := &Signer{Cert: cert, Key: key}
	if err := s.cfg.CA.SaveRoot(nr); err != nil {
		return fmt.Errorf("store new root: %w", err)
	}
	s.ca.root.Store(nr)
	s.ca.oneShot.Store(nil) // the old root key is not needed any more
	rot := snap.rot
	rot.Phase, rot.NewRoot = PhaseBundle, ca.Fingerprint(cert)
	roots := append(append([]*x509.Certificate(nil), snap.roots...), cert)
	return s.commitRotation(ctx, []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(keyRotation), "=", snap.rotRev),
		clientv3.Compare(clientv3.ModRevision(keyRoots), "=", snap.rootsRev),
	}, rot, roots)
}

// Rotate starts a CA rotation (see docs/design/ca-rotation.md).
func (s *Server) Rotate(ctx context.Context, req *unumv1.CARotateRequest) (*unumv1.CARotateResponse, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if s.cfg.CA == nil {
		return nil, status.Error(codes.Unimplemented, "this node cannot store CA keys")
	}
	snap, err := s.readCA(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read ca state: %v", err)
	}
	var oneShot *Signer
	if len(req.GetRootKeyPem()) > 0 {
		if oneShot, err = matchRootKey(req.GetRootKeyPem(), snap.roots); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "--root-key: %v", err)
		}
	}
	root := oneShot
	if root == nil {
		root = s.ca.root.Load()
	}
	if root == nil {
		for _, ir := range snap.inters {
			if ir.RootKey != "" && ir.Node != s.cfg.NodeName {
				addr := ""
				if n, ok := snap.node(ir.Node); ok {
					addr = n.APIAddress
				}
				return nil, status.Errorf(codes.FailedPrecondition, "the root key is held by control node %s: run this against it (UNUM_ADDR=%s)", ir.Node, addr)
			}
		}
		return nil, status.Error(codes.FailedPrecondition, errRootOffline.Error())
	}
	rootFP := ca.Fingerprint(root.Cert)
	if snap.rootByFingerprint(rootFP) == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the root this node holds (%s) is not in the trust bundle", rootFP)
	}
	rot := snap.rot
	switch {
	case rot.InProgress() && oneShot != nil && (rot.Phase == PhaseNewRoot || rot.Phase == PhaseIntermediates) && req.GetRoot() == rot.Root:
		// Resume a rotation that waits for the root key: this node holds
		// it now, for this call.
		rot.Holder = s.cfg.NodeName
	case rot.InProgress():
		return nil, status.Errorf(codes.FailedPrecondition, "CA rotation %s is in progress (phase %s): see `unum ca status`", rot.ID, rot.Phase)
	default:
		if len(snap.roots) != 1 {
			return nil, status.Errorf(codes.FailedPrecondition, "the trust bundle holds %d roots; a rotation starts from exactly one", len(snap.roots))
		}
		if rootFP != ca.Fingerprint(snap.roots[0]) {
			return nil, status.Error(codes.FailedPrecondition, "the root key given is not the bundle's active root")
		}
		rot = RotationRecord{ID: newRotationID(), Root: req.GetRoot(), Holder: s.cfg.NodeName, StartedAt: s.cfg.Clock().UTC().Truncate(time.Second), StartedBy: c.ID.String()}
		if rot.Root {
			rot.Phase, rot.OldRoot = PhaseNewRoot, rootFP
		} else {
			rot.Phase, rot.NewRoot = PhaseIntermediates, rootFP
		}
	}
	txn, err := s.cfg.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(keyRotation), "=", snap.rotRev)).
		Then(clientv3.OpPut(keyRotation, mustJSON(rot))).
		Commit()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store rotation: %v", err)
	}
	if !txn.Succeeded {
		return nil, status.Error(codes.Aborted, "the CA state changed while the rotation was being started: try again")
	}
	s.record(ctx, audit.Event{Kind: audit.KindCA, Action: audit.ActionCARotate, Outcome: audit.Allow, Resource: "ca/-/intermediates"}.
		WithDetails(CADetails{Step: "start", Rotation: rot.ID, Phase: rot.Phase}))
	s.cfg.Log.Info("ca rotation started", "rotation", rot.ID, "root", rot.Root, "phase", rot.Phase, "by", c.ID.String())
	resp := &unumv1.CARotateResponse{RotationId: rot.ID, Phase: rot.Phase}
	if oneShot == nil {
		s.kickCA()
		return resp, nil
	}
	// The key given for this call is used until every control node has
	// its new intermediate, then forgotten.
	s.ca.oneShot.Store(oneShot)
	defer s.ca.oneShot.Store(nil)
	s.kickCA()
	for {
		snap, err := s.readCA(ctx)
		if err == nil && snap.rot.ID == rot.ID {
			resp.Phase = snap.rot.Phase
			if snap.rot.Phase == PhaseRetiring || snap.rot.Phase == PhaseDone {
				return resp, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.DeadlineExceeded, "rotation %s is in phase %s and needs the root key until every control node has switched; the key was dropped: run `unum ca rotate --root-key FILE` again to continue", rot.ID, resp.Phase)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newRotationID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "rot-" + hex.EncodeToString(b[:])
}

// matchRootKey parses a PKCS#8 PEM key and returns it with the root of the
// bundle it belongs to.
func matchRootKey(keyPEM []byte, roots []*x509.Certificate) (*Signer, error) {
	// The file export-root writes holds the certificate first.
	var block *pem.Block
	for rest := keyPEM; ; {
		block, rest = pem.Decode(rest)
		if block == nil || block.Type == "PRIVATE KEY" {
			break
		}
	}
	if block == nil {
		return nil, errors.New("no PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----) found")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	for _, r := range roots {
		if pub, ok := r.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(signer.Public()) {
			return &Signer{Cert: r, Key: signer}, nil
		}
	}
	fps := make([]string, 0, len(roots))
	for _, r := range roots {
		fps = append(fps, ca.Fingerprint(r))
	}
	return nil, fmt.Errorf("the key does not belong to any root of the trust bundle (%s)", strings.Join(fps, ", "))
}

// SignIntermediate: the root holder signs a new
// intermediate for a control node during a rotation, for the caller's own
// node ID only.
func (s *Server) SignIntermediate(ctx context.Context, req *unumv1.SignIntermediateRequest) (*unumv1.SignIntermediateResponse, error) {
	node, err := callerNode(ctx)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	snap, err := s.readCA(rctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read ca state: %v", err)
	}
	rec, ok := snap.node(node)
	if !ok || !rec.HasRole("control") {
		s.cfg.Log.Warn("intermediate refused: not a control node", "node", node)
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not a control node: only control nodes get intermediates", node)
	}
	rot := snap.rot
	if !rot.InProgress() || rot.Phase != PhaseIntermediates || rot.ID != req.GetRotationId() {
		return nil, status.Errorf(codes.FailedPrecondition, "no CA rotation %q is waiting for intermediates", req.GetRotationId())
	}
	root := s.root()
	if rot.Holder != s.cfg.NodeName || root == nil || ca.Fingerprint(root.Cert) != rot.NewRoot {
		return nil, status.Errorf(codes.FailedPrecondition, "this node does not hold the root key of rotation %s", rot.ID)
	}
	id, err := identity.NodeID(s.cfg.TrustDomain, node)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	csr, err := ca.VerifyCSR(req.GetCsr(), id)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "intermediate csr refused: %v", err)
	}
	if err := s.waitSignable(ctx, id); err != nil {
		return nil, err
	}
	cert, err := ca.NewIntermediate(s.cfg.TrustDomain, node, csr.PublicKey, root.Cert, root.Key, s.cfg.Clock(), s.cfg.IntermediateTTL)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign intermediate: %v", err)
	}
	s.record(ctx, audit.Event{Kind: audit.KindCA, Action: audit.ActionCARotate, Outcome: audit.Allow, Resource: "ca/-/intermediates"}.
		WithDetails(CADetails{Step: "sign-intermediate", Rotation: rot.ID, Fingerprint: ca.Fingerprint(cert), Node: node}))
	s.cfg.Log.Info("intermediate signed", "node", node, "rotation", rot.ID, "fingerprint", ca.Fingerprint(cert))
	return &unumv1.SignIntermediateResponse{Intermediate: cert.Raw, Root: root.Cert.Raw}, nil
}

// CAStatus answers the CA service's Status.
func (s *Server) CAStatus(ctx context.Context) (*unumv1.CAStatusResponse, error) {
	snap, err := s.readCA(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read ca state: %v", err)
	}
	out := &unumv1.CAStatusResponse{}
	rot := snap.rot
	online := map[string]bool{}
	for _, ir := range snap.inters {
		if ir.RootKey != "" {
			online[ir.RootKey] = true
		}
	}
	for i, r := range snap.roots {
		fp := ca.Fingerprint(r)
		st := "active"
		switch {
		case rot.InProgress() && fp == rot.NewRoot && (rot.Phase == PhaseBundle):
			st = "next"
		case rot.InProgress() && fp == rot.OldRoot && rot.Phase == PhaseBundle:
			st = "active"
		case rot.InProgress() && fp == rot.OldRoot:
			st = "retiring"
		case i > 0 && !rot.InProgress():
			st = "extra"
		}
		cc := certProto(r, st)
		cc.KeyOnline = online[fp]
		if st == "retiring" && !rot.RetireAt.IsZero() {
			cc.RetireAtUnix = rot.RetireAt.Unix()
		}
		out.Roots = append(out.Roots, cc)
	}
	for _, n := range snap.nodes {
		if !n.HasRole("control") {
			continue
		}
		ir, ok := snap.inters[n.Name]
		if !ok {
			out.Intermediates = append(out.Intermediates, &unumv1.CACert{Node: n.Name, State: "unknown"})
			continue
		}
		cert, err := x509.ParseCertificate(ir.Certificate)
		if err != nil {
			continue
		}
		st := "active"
		if rot.InProgress() && rot.Phase == PhaseIntermediates && ir.RotationID != rot.ID {
			st = "to-switch"
		}
		cc := certProto(cert, st)
		cc.Node = n.Name
		cc.IssuerFingerprint = ir.Root
		out.Intermediates = append(out.Intermediates, cc)
	}
	if rot.ID != "" {
		out.RotationId, out.RotationPhase, out.RotationRoot = rot.ID, rot.Phase, rot.Root
		out.RotationStartedUnix = rot.StartedAt.Unix()
		if !rot.SwitchedAt.IsZero() {
			out.RotationSwitchedUnix = rot.SwitchedAt.Unix()
		}
		if rot.InProgress() {
			act := nextRotationStep(rotationView{Rot: rot, Nodes: snap.nodes, Statuses: snap.statuses, Inters: snap.inters, Now: s.cfg.Clock()})
			out.WaitingFor = act.WaitingFor
			if rot.Phase == PhaseRetiring {
				out.WaitingFor = []string{"old root retires at " + rot.RetireAt.Format(time.RFC3339)}
			}
		}
	}
	return out, nil
}

func certProto(c *x509.Certificate, state string) *unumv1.CACert {
	return &unumv1.CACert{
		Fingerprint:    ca.Fingerprint(c),
		Subject:        c.Subject.CommonName,
		NotBeforeUnix:  c.NotBefore.Unix(),
		NotAfterUnix:   c.NotAfter.Unix(),
		State:          state,
		CertificateDer: c.Raw,
	}
}

// ExportRoot hands out the root key this
// node holds. Nothing is deleted until ConfirmExportRoot.
func (s *Server) ExportRoot(ctx context.Context, _ *unumv1.ExportRootRequest) (*unumv1.ExportRootResponse, error) {
	r, err := s.exportableRoot(ctx)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(r.Key)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode root key: %v", err)
	}
	c, _ := callerOf(ctx)
	// The key travels to the caller; the event names it by fingerprint only.
	s.record(ctx, audit.Event{Kind: audit.KindCA, Action: audit.ActionCARoot, Outcome: audit.Allow, Resource: "ca/-/root"}.
		WithDetails(CADetails{Step: "export", Fingerprint: ca.Fingerprint(r.Cert), Node: s.cfg.NodeName}))
	s.cfg.Log.Warn("root key exported", "fingerprint", ca.Fingerprint(r.Cert), "by", c.ID.String())
	return &unumv1.ExportRootResponse{
		RootCertPem: ca.EncodeCertsPEM([]*x509.Certificate{r.Cert}),
		RootKeyPem:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		Fingerprint: ca.Fingerprint(r.Cert),
	}, nil
}

func (s *Server) exportableRoot(ctx context.Context) (*Signer, error) {
	if s.cfg.CA == nil {
		return nil, status.Error(codes.Unimplemented, "this node cannot store CA keys")
	}
	r := s.ca.root.Load()
	if r == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node holds no root key (already exported, or held by another control node: see `unum ca status`)")
	}
	snap, err := s.readCA(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read ca state: %v", err)
	}
	if rot := snap.rot; rot.InProgress() && rot.Phase != PhaseRetiring {
		return nil, status.Errorf(codes.FailedPrecondition, "CA rotation %s needs the root key (phase %s): export it once it is retiring or done", rot.ID, rot.Phase)
	}
	return r, nil
}

// ConfirmExportRoot: the caller has the key
// safely; delete it here.
func (s *Server) ConfirmExportRoot(ctx context.Context, req *unumv1.ConfirmExportRootRequest) (*unumv1.ConfirmExportRootResponse, error) {
	s.ca.tick.Lock()
	defer s.ca.tick.Unlock()
	r, err := s.exportableRoot(ctx)
	if err != nil {
		return nil, err
	}
	if fp := ca.Fingerprint(r.Cert); req.GetFingerprint() != fp {
		return nil, status.Errorf(codes.InvalidArgument, "fingerprint %q is not that of the root key held here (%s)", req.GetFingerprint(), fp)
	}
	if err := s.cfg.CA.SaveRoot(nil); err != nil {
		return nil, status.Errorf(codes.Internal, "delete root key: %v", err)
	}
	s.ca.root.Store(nil)
	c, _ := callerOf(ctx)
	s.record(ctx, audit.Event{Kind: audit.KindCA, Action: audit.ActionCARoot, Outcome: audit.Allow, Resource: "ca/-/root"}.
		WithDetails(CADetails{Step: "confirm-export", Fingerprint: req.GetFingerprint(), Node: s.cfg.NodeName}))
	s.cfg.Log.Warn("root key deleted from this node after export", "fingerprint", req.GetFingerprint(), "by", c.ID.String())
	s.kickCA()
	return &unumv1.ConfirmExportRootResponse{}, nil
}

// ImportRoot brings an exported root key back to this node.
func (s *Server) ImportRoot(ctx context.Context, req *unumv1.ImportRootRequest) (*unumv1.ImportRootResponse, error) {
	if s.cfg.CA == nil {
		return nil, status.Error(codes.Unimplemented, "this node cannot store CA keys")
	}
	s.ca.tick.Lock()
	defer s.ca.tick.Unlock()
	snap, err := s.readCA(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read ca state: %v", err)
	}
	r, err := matchRootKey(req.GetRootKeyPem(), snap.roots)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "import root: %v", err)
	}
	for _, ir := range snap.inters {
		if ir.RootKey != "" && ir.Node != s.cfg.NodeName {
			return nil, status.Errorf(codes.FailedPrecondition, "control node %s already holds a root key online", ir.Node)
		}
	}
	if err := s.cfg.CA.SaveRoot(r); err != nil {
		return nil, status.Errorf(codes.Internal, "store root key: %v", err)
	}
	s.ca.root.Store(r)
	c, _ := callerOf(ctx)
	s.record(ctx, audit.Event{Kind: audit.KindCA, Action: audit.ActionCARoot, Outcome: audit.Allow, Resource: "ca/-/root"}.
		WithDetails(CADetails{Step: "import", Fingerprint: ca.Fingerprint(r.Cert), Node: s.cfg.NodeName}))
	s.cfg.Log.Warn("root key imported", "fingerprint", ca.Fingerprint(r.Cert), "by", c.ID.String())
	s.kickCA()
	return &unumv1.ImportRootResponse{Fingerprint: ca.Fingerprint(r.Cert)}, nil
}

// CAService is the CA service of a control Server (a separate type because
// its Status would clash with the Cluster service's).
type CAService struct {
	unumv1.UnimplementedCAServer
	S *Server
}

var _ unumv1.CAServer = CAService{}

// Status implements unumv1.CAServer.
func (c CAService) Status(ctx context.Context, _ *unumv1.CAStatusRequest) (*unumv1.CAStatusResponse, error) {
	return c.S.CAStatus(ctx)
}

// Rotate implements unumv1.CAServer.
func (c CAService) Rotate(ctx context.Context, req *unumv1.CARotateRequest) (*unumv1.CARotateResponse, error) {
	return c.S.Rotate(ctx, req)
}

// ExportRoot implements unumv1.CAServer.
func (c CAService) ExportRoot(ctx context.Context, req *unumv1.ExportRootRequest) (*unumv1.ExportRootResponse, error) {
	return c.S.ExportRoot(ctx, req)
}

// ConfirmExportRoot implements unumv1.CAServer.
func (c CAService) ConfirmExportRoot(ctx context.Context, req *unumv1.ConfirmExportRootRequest) (*unumv1.ConfirmExportRootResponse, error) {
	return c.S.ConfirmExportRoot(ctx, req)
}

// ImportRoot implements unumv1.CAServer.
func (c CAService) ImportRoot(ctx context.Context, req *unumv1.ImportRootRequest) (*unumv1.ImportRootResponse, error) {
	return c.S.ImportRoot(ctx, req)
}

// SignIntermediate implements unumv1.CAServer.
func (c CAService) SignIntermediate(ctx context.Context, req *unumv1.SignIntermediateRequest) (*unumv1.SignIntermediateResponse, error) {
	return c.S.SignIntermediate(ctx, req)
}

// checkControlJoinCA refuses a control join this node cannot sign, with
// what to do about it.
func (s *Server) checkControlJoinCA(ctx context.Context) error {
	if s.cfg.EtcdCA == nil {
		return status.Error(codes.FailedPrecondition, errNoRoot.Error())
	}
	root := s.root()
	if root == nil {
		return status.Error(codes.FailedPrecondition, errRootOffline.Error())
	}
	snap, err := s.readCA(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "read ca state: %v", err)
	}
	if rot := snap.rot; rot.InProgress() && (rot.Phase == PhaseNewRoot || rot.Phase == PhaseBundle) {
		return status.Errorf(codes.FailedPrecondition, "root rotation %s is in phase %s: control nodes can join once the new root is in every node's bundle (`unum ca status`); the token was not used", rot.ID, rot.Phase)
	}
	if snap.rootByFingerprint(ca.Fingerprint(root.Cert)) == nil {
		return status.Errorf(codes.FailedPrecondition, "the root this node holds (%s) is not in the trust bundle (an interrupted root rotation: see `unum ca status`); the token was not used", ca.Fingerprint(root.Cert))
	}
	return nil
}
