package control

import (
	"encoding/json"
	"fmt"
	"time"
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
