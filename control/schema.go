package control

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
)

// Keys in etcd. Everything unum keeps in etcd lives under /unum/.
const (
	keyClusterInfo = "/unum/cluster/info"
	keyRoots       = "/unum/ca/roots"
	prefixJWTKeys  = "/unum/ca/jwt/"
	// prefixCredKeys holds one CredKeyRecord per control node: the public
	// keys of its delegated-credential keyring.
	prefixCredKeys   = "/unum/cred/keys/"
	prefixNodes      = "/unum/nodes/"
	prefixNodeStatus = "/unum/nodestatus/"
	prefixEntries    = "/unum/entries/"
	prefixJoinTokens = "/unum/tokens/join/"
	// prefixUserTokens holds user enrolment tokens (jointoken.Record with
	// the user's name), consumed by Login.
	prefixUserTokens = "/unum/tokens/user/"
	prefixUsers      = "/unum/users/"
	// prefixRevocations holds one revocationRecord per revoked SPIFFE ID,
	// keyed by the ID; keyRestoreWindow the revocation.Window of the last
	// restore from backup. Both are read by every control node's
	// revocation feed (revocations.go).
	prefixRevocations = "/unum/revocations/ids/"
	keyRestoreWindow  = "/unum/revocations/restore"
	watchRevocations  = "/unum/revocations/"
	// prefixRemovedNodes keeps the record of every removed node (with the
	// certificates it held) so its past signatures stay verifiable.
	prefixRemovedNodes = "/unum/removednodes/"
	watchPrefixAll     = "/unum/"
	nodeReadyAfter     = 10 * time.Second
	maxJoinTokenTTL    = 24 * time.Hour
	defaultJoinTTL     = 15 * time.Minute
	maxEntrySelectors  = 16
	// confirmTimeout bounds the linearizable reads that gate issuance.
	confirmTimeout = 5 * time.Second
)

// ClusterInfo is written once by `unum init`.
type ClusterInfo struct {
	TrustDomain string    `json:"trust_domain"`
	CreatedAt   time.Time `json:"created_at"`
}

// NodeRecord is a node's membership record, created by init or by a join.
type NodeRecord struct {
	Name              string    `json:"name"`
	SPIFFEID          string    `json:"spiffe_id"`
	Roles             []string  `json:"roles"`
	APIAddress        string    `json:"api_address"`
	EnrollmentAddress string    `json:"enrollment_address,omitempty"`
	EtcdMemberID      uint64    `json:"etcd_member_id,omitempty"`
	JoinedAt          time.Time `json:"joined_at"`
}

// HasRole reports whether the node has role r.
func (n NodeRecord) HasRole(r string) bool {
	for _, x := range n.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// NodeStatus is what a node reports in its heartbeats.
type NodeStatus struct {
	LastSeen      time.Time `json:"last_seen"`
	SVIDExpiresAt time.Time `json:"svid_expires_at"`
	Enforcement   string    `json:"enforcement"`
	AgentReady    bool      `json:"agent_ready"`
	// RevocationAgeMs is -1 before the node's view first loaded.
	RevocationAgeMs           int64    `json:"revocation_age_ms"`
	BundleFingerprints        []string `json:"bundle_fingerprints,omitempty"`
	IntermediateFingerprint   string   `json:"intermediate_fingerprint,omitempty"`
	IntermediateExpiresAtUnix int64    `json:"intermediate_expires_at_unix,omitempty"`
	// PolicyRevision is the revision the node serves; PolicyAgeMs how long
	// ago it last confirmed that revision is the latest (-1: never).
	PolicyRevision int64 `json:"policy_revision,omitempty"`
	PolicyAgeMs    int64 `json:"policy_age_ms,omitempty"`
	// AuditError is why the node's audit log cannot record ("" when it can).
	AuditError string `json:"audit_error,omitempty"`
	// EnforcementStatus is the compute node's enforcement in detail.
	EnforcementStatus *unumv1.NodeEnforcement `json:"enforcement_status,omitempty"`
}

// EntryRecord is a registration entry.
type EntryRecord struct {
	ID        string    `json:"id"`
	SPIFFEID  string    `json:"spiffe_id"`
	Node      string    `json:"node,omitempty"`
	AllNodes  bool      `json:"all_nodes,omitempty"`
	Selectors []string  `json:"selectors"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// AppliesTo reports whether the entry is for node name.
func (e EntryRecord) AppliesTo(name string) bool { return e.AllNodes || e.Node == name }

// JWTKeyRecord is a control node's JWT-SVID signing key (public part).
type JWTKeyRecord struct {
	KeyID     string `json:"kid"`
	Node      string `json:"node"`
	PublicKey []byte `json:"public_key"` // PKIX DER
}

// UserRecord is a person: spiffe://TD/user/NAME with a role. Roles are
// admin, operator and viewer (see rpc.BuiltinAuthorizer); the policy issue
// reads them as data.
type UserRecord struct {
	Name      string        `json:"name"`
	Role      string        `json:"role"`
	CertTTL   time.Duration `json:"cert_ttl"`
	CreatedAt time.Time     `json:"created_at"`
	CreatedBy string        `json:"created_by"`
}

// RemovedNodeRecord is what is kept of a removed node.
type RemovedNodeRecord struct {
	Node      NodeRecord `json:"node"`
	RemovedAt time.Time  `json:"removed_at"`
	RemovedBy string     `json:"removed_by"`
	Forced    bool       `json:"forced,omitempty"`
	// Certificates (PEM) the node held that others may need to verify its
	// past signatures: its intermediate for a control node.
	Certificates []byte `json:"certificates,omitempty"`
}

func nodeKey(name string) string        { return prefixNodes + name }
func userKey(name string) string        { return prefixUsers + name }
func userTokenKey(id string) string     { return prefixUserTokens + id }
func revocationKey(id string) string    { return prefixRevocations + id }
func removedNodeKey(name string) string { return prefixRemovedNodes + name }
func nodeStatusKey(name string) string  { return prefixNodeStatus + name }
func entryKey(id string) string         { return prefixEntries + id }
func joinTokenKey(id string) string     { return prefixJoinTokens + id }

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("control: marshal %T: %v", v, err)) // only our own plain structs
	}
	return string(b)
}

func decode[T any](data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}

// Scheduling state (scheduler issue). Allocations under a per-node prefix
// are the source of truth: the node runs exactly the allocations under its
// prefix, and the CA mints a task's SVID only after a linearizable read
// finds the allocation there.
const (
	// prefixJobs holds one JobRecord per job, keyed NS/NAME.
	prefixJobs = "/unum/jobs/"
	// prefixAllocs holds one AllocRecord per placed task, keyed NODE/ID.
	prefixAllocs = "/unum/allocs/"
	// prefixTaskStatus holds the last state a node reported for each of
	// its allocations, keyed NODE/ID (written only while the allocation
	// exists).
	prefixTaskStatus = "/unum/taskstatus/"
	// prefixNodeSched holds each node's scheduling record: labels,
	// draining, and the capacity and limits its executor reports.
	prefixNodeSched = "/unum/nodesched/"
	// keyEnforcementSettings holds the EnforcementSettings (whether nodes
	// must enforce to receive tasks, and what is audit-only).
	keyEnforcementSettings = "/unum/enforcement/settings"
	// keyNetIDNext holds the next identity number to assign to a job (a
	// decimal integer; absent: 1). Numbers are never reused.
	keyNetIDNext = "/unum/enforcement/next-identity"
	// prefixSchedLeader is the scheduler leader election.
	prefixSchedLeader = "/unum/sched/leader"
	// allocEntryPrefix marks a Workload API entry that stands for an
	// allocation: entry id "alloc:ID". The CA confirms it against the
	// allocation, not against a registration entry.
	allocEntryPrefix = "alloc:"
)

// JobRecord is a submitted job.
type JobRecord struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	SPIFFEID  string `json:"spiffe_id"`
	// NetID is the job identity's compact number for the kernel's maps
	// (enforcement.IdentityNum), assigned from keyNetIDNext when the job is
	// first stored and kept by every later version; never reused.
	NetID uint32 `json:"net_id,omitempty"`
	// Spec is the canonical JSON of the defaulted spec (jobspec.Canonical),
	// kept as a string: a raw JSON member would be re-encoded (HTML
	// escapes) and no longer be canonical.
	Spec        string    `json:"spec"`
	Version     int64     `json:"version"`
	SubmittedBy string    `json:"submitted_by"`
	SubmittedAt time.Time `json:"submitted_at"`
	DecisionID  string    `json:"decision_id,omitempty"`
	Stopped     bool      `json:"stopped,omitempty"`
	StoppedBy   string    `json:"stopped_by,omitempty"`
	StoppedAt   time.Time `json:"stopped_at,omitzero"`
	// Egress is each declared egress target with the policy's answer at
	// submission (re-evaluated by enforcement on every policy change).
	Egress []EgressRecord `json:"egress,omitempty"`
}

// EgressRecord is one declared egress target and whether policy allows it.
type EgressRecord struct {
	Target  string   `json:"target"`
	Allowed bool     `json:"allowed"`
	Reasons []string `json:"reasons,omitempty"`
}

// AllocRecord is one task placed on a node. It pins the job version and
// spec it runs, so a node never needs the job record.
type AllocRecord struct {
	ID         string         `json:"id"`
	Namespace  string         `json:"namespace"`
	Job        string         `json:"job"`
	Index      int            `json:"index"`
	Node       string         `json:"node"`
	JobVersion int64          `json:"job_version"`
	SPIFFEID   string         `json:"spiffe_id"`
	Spec       string         `json:"spec"`
	CPUMillis  int64          `json:"cpu_millis"`
	MemoryMiB  int64          `json:"memory_mib"`
	Priority   int            `json:"priority"`
	Class      string         `json:"class"`
	Ports      map[string]int `json:"ports,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	// Done is set by the leader once the node reported the task finished
	// for good (complete, or failed with its restarts used up): it no
	// longer holds resources, the node stops tracking it and the CA no
	// longer mints for it.
	Done bool `json:"done,omitempty"`
}

// TaskStatusRecord is a node's report of one allocation.
type TaskStatusRecord struct {
	State      string    `json:"state"`
	PID        int       `json:"pid,omitempty"`
	UID        uint32    `json:"uid,omitempty"`
	ExitCode   int       `json:"exit_code"`
	Signal     string    `json:"signal,omitempty"`
	Restarts   int       `json:"restarts,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Message    string    `json:"message,omitempty"`
}

// NodeSched is a node's scheduling record.
type NodeSched struct {
	Labels   map[string]string `json:"labels,omitempty"`
	Draining bool              `json:"draining,omitempty"`
	// Reported by the node's executor.
	Compute   bool     `json:"compute,omitempty"`
	CPUMillis int64    `json:"cpu_millis,omitempty"`
	MemoryMiB int64    `json:"memory_mib,omitempty"`
	Limits    []string `json:"limits,omitempty"`
	// PortLo..PortHi are the ports tasks may be given (0: the default).
	PortLo int `json:"port_lo,omitempty"`
	PortHi int `json:"port_hi,omitempty"`
}

// EnforcementSettings are the cluster's kernel enforcement settings, under
// keyEnforcementSettings. Bootstrap writes them; a cluster without the key
// (made before enforcement existed) reads defaultEnforcementSettings.
type EnforcementSettings struct {
	// Required: a degraded node (no BPF) receives no new tasks.
	Required bool `json:"required"`
	// AuditOnly: the whole cluster records what would be denied and
	// allows it.
	AuditOnly bool `json:"audit_only,omitempty"`
	// AuditOnlyNamespaces are audit-only namespaces (sorted).
	AuditOnlyNamespaces []string `json:"audit_only_namespaces,omitempty"`
	// unreadable is set when the stored settings could not be decoded:
	// every check against them fails closed.
	unreadable bool
}

// defaultEnforcementSettings: enforcement is required, nothing is
// audit-only. Only `unum init --enforcement-optional` (unum dev) starts a
// cluster otherwise.
func defaultEnforcementSettings() EnforcementSettings { return EnforcementSettings{Required: true} }

// namespaceAuditOnly reports whether identities of namespace ns are
// audit-only.
func (e EnforcementSettings) namespaceAuditOnly(ns string) bool {
	return e.AuditOnly || slices.Contains(e.AuditOnlyNamespaces, ns)
}

func jobKey(ns, name string) string        { return prefixJobs + ns + "/" + name }
func allocPrefix(node string) string       { return prefixAllocs + node + "/" }
func allocKey(node, id string) string      { return allocPrefix(node) + id }
func taskStatusKey(node, id string) string { return prefixTaskStatus + node + "/" + id }
func nodeSchedKey(node string) string      { return prefixNodeSched + node }
