package node

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/control"
)

// auditService is the Audit service a node serves: the reading half
// (Query, Verify, Proof) of its own log on every node, from the embedded
// ReadService, and the witness half (SubmitCheckpoint, Keys, Witnessed,
// Configure, GetConfig) on control nodes, from Witness; other nodes answer
// those FailedPrecondition.
type auditService struct {
	*audit.ReadService
	Witness *control.AuditWitness
}

var _ unumv1.AuditServer = (*auditService)(nil)

func (a *auditService) witness() (*control.AuditWitness, error) {
	if a.Witness == nil {
		return nil, status.Error(codes.FailedPrecondition, "not a control node: ask a control node (the audit witness)")
	}
	return a.Witness, nil
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
