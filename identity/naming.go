package identity

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Kind is the kind of principal a SPIFFE ID names.
type Kind string

const (
	KindNode     Kind = "node"
	KindSystem   Kind = "system"
	KindWorkload Kind = "workload"
	KindUser     Kind = "user"
	KindUnknown  Kind = "unknown"
)

// AdminUser is the name of the principal `unum init` creates.
const AdminUser = "admin"

// Principal is a classified SPIFFE ID.
type Principal struct {
	ID   spiffeid.ID
	Kind Kind
	// Name is the node, service, user name, or for workloads the path below
	// the namespace (job/JOB).
	Name string
	// Namespace is set for workloads only.
	Namespace string
}

// policyClusterScope is the namespace the policy gives cluster-scoped
// resources ("-"): no workload may live in it, or a namespace-local grant
// would reach every cluster-scoped resource.
const policyClusterScope = "-"

// Classify tells which kind of principal id names. It never fails: an ID of
// an unexpected shape is KindUnknown, which the authorizer grants nothing.
func Classify(id spiffeid.ID) Principal {
	p := Principal{ID: id, Kind: KindUnknown}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	switch {
	case len(segs) == 2 && segs[0] == "node" && segs[1] != "":
		p.Kind, p.Name = KindNode, segs[1]
	case len(segs) == 2 && segs[0] == "system" && segs[1] != "":
		p.Kind, p.Name = KindSystem, segs[1]
	case len(segs) == 2 && segs[0] == "user" && segs[1] != "":
		p.Kind, p.Name = KindUser, segs[1]
	case len(segs) >= 3 && segs[0] == "ns" && segs[1] != "" && segs[1] != policyClusterScope:
		p.Kind, p.Namespace, p.Name = KindWorkload, segs[1], strings.Join(segs[2:], "/")
	}
	return p
}

// NodeID is spiffe://TD/node/NAME.
func NodeID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "node", name)
}

// UserID is spiffe://TD/user/NAME.
func UserID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "user", name)
}

// APIService names the unum API as a service: a delegated credential for
// spiffe://TD/system/api (APIID) may be presented to any node's API; one for
// a node's own ID only to that node.
const APIService = "api"

// APIID is spiffe://TD/system/api, the audience of credentials for the unum
// API.
func APIID(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromSegments(td, "system", APIService)
	return id
}

// SystemID is spiffe://TD/system/SERVICE.
func SystemID(td spiffeid.TrustDomain, service string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "system", service)
}

// ParseWorkloadID parses s and requires it to name a workload of td: the only
// IDs a registration entry may carry. User, node and system IDs are refused
// so that no registration can hand out a privileged principal's identity.
func ParseWorkloadID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("spiffe id %q is not in trust domain %q", s, td.Name())
	}
	if Classify(id).Kind != KindWorkload {
		return spiffeid.ID{}, fmt.Errorf("spiffe id %q is not a workload id: registrations may only name spiffe://%s/ns/NAMESPACE/...", s, td.Name())
	}
	return id, nil
}

// JobID is spiffe://TD/ns/NAMESPACE/job/NAME, the identity of every task of
// a scheduled job.
func JobID(td spiffeid.TrustDomain, namespace, name string) (spiffeid.ID, error) {
	if namespace == policyClusterScope {
		return spiffeid.ID{}, fmt.Errorf("namespace %q is reserved", namespace)
	}
	return spiffeid.FromSegments(td, "ns", namespace, "job", name)
}
