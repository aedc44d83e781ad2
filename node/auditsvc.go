package node

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/control"
)

// auditService is the Audit service a node serves: the reading half
// (Query, Verify, Proof) of its own log on every node, from Local, and the
// witness half (SubmitCheckpoint, Keys, Witnessed, Configure, GetConfig)
// on control nodes, from Witness. A half a node lacks answers
// Unimplemented (Local unset) or FailedPrecondition (not a control node).
type auditService struct {
	unumv1.UnimplementedAuditServer
	Local   unumv1.AuditServer
	Witness *control.AuditWitness
}

var _ unumv1.AuditServer = (*auditService)(nil)

func (a *auditService) local() (unumv1.AuditServer, error) {
	if a.Local == nil {
		return nil, status.Error(codes.Unimplemented, "this node does not serve its audit log")
	}
	return a.Local, nil
}

func (a *auditService) witness() (*control.AuditWitness, error) {
	if a.Witness == nil {
		return nil, status.Error(codes.FailedPrecondition, "not a control node: ask a control node (the audit witness)")
	}
	return a.Witness, nil
}

func (a *auditService) Query(req *unumv1.AuditQueryRequest, stream grpc.ServerStreamingServer[unumv1.AuditEventBatch]) error {
	l, err := a.local()
	if err != nil {
		return err
	}
	return l.Query(req, stream)
}

func (a *auditService) Verify(ctx context.Context, req *unumv1.AuditVerifyRequest) (*unumv1.AuditVerifyResponse, error) {
	l, err := a.local()
	if err != nil {
		return nil, err
	}
	return l.Verify(ctx, req)
}

func (a *auditService) Proof(ctx context.Context, req *unumv1.AuditProofRequest) (*unumv1.AuditProofResponse, error) {
	l, err := a.local()
	if err != nil {
		return nil, err
	}
	return l.Proof(ctx, req)
}

func (a *auditService) SubmitCheckpoint(ctx context.Context, req *unumv1.SubmitCheckpointRequest) (*unumv1.SubmitCheckpointResponse, error) {
	w, err := a.witness()
	if err != nil {
		return nil, err
	}
	return w.SubmitCheckpoint(ctx, req)
}

func (a *auditService) Keys(ctx context.Context, req *unumv1.AuditKeysRequest) (*unumv1.AuditKeysResponse, error) {
	w, err := a.witness()
	if err != nil {
		return nil, err
	}
	return w.Keys(ctx, req)
}

func (a *auditService) Witnessed(ctx context.Context, req *unumv1.AuditWitnessedRequest) (*unumv1.AuditWitnessedResponse, error) {
	w, err := a.witness()
	if err != nil {
		return nil, err
	}
	return w.Witnessed(ctx, req)
}

func (a *auditService) Configure(ctx context.Context, req *unumv1.AuditConfigureRequest) (*unumv1.AuditConfig, error) {
	w, err := a.witness()
	if err != nil {
		return nil, err
	}
	return w.Configure(ctx, req)
}

func (a *auditService) GetConfig(ctx context.Context, req *unumv1.AuditGetConfigRequest) (*unumv1.AuditConfig, error) {
	w, err := a.witness()
	if err != nil {
		return nil, err
	}
	return w.GetConfig(ctx, req)
}
