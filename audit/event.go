package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Version is the event schema version written by this build. A reader
// refuses events of a version it does not know rather than misread them.
const Version = 1

// MaxEventSize bounds one encoded event. Details that would exceed it are
// refused by Record (the caller trims them), so a single request cannot
// bloat the log.
const MaxEventSize = 64 << 10

// Kind groups events; the action names what happened precisely.
type Kind string

const (
	KindAuthn      Kind = "authn"      // mTLS handshakes accepted or refused
	KindAuthz      Kind = "authz"      // a policy decision
	KindSVID       Kind = "svid"       // SVIDs issued, rotated, refused
	KindToken      Kind = "token"      // join and enrolment tokens
	KindEntry      Kind = "entry"      // registration entries
	KindUser       Kind = "user"       // users added, removed
	KindRevocation Kind = "revocation" // certificates revoked
	KindCA         Kind = "ca"         // CA rotation, root export and import
	KindRecovery   Kind = "recovery"   // break-glass recovery
	KindPolicy     Kind = "policy"     // policy applied, rolled back, shadowed
	KindNode       Kind = "node"       // nodes joined, left, removed
	KindAudit      Kind = "audit"      // the audit system about itself: alerts, prunes, settings
	KindCredential Kind = "credential" // delegated credentials (delegation issue)
	KindJob        Kind = "job"        // jobs (scheduler issue)
	KindKernel     Kind = "kernel"     // kernel enforcement: denials, mode changes, settings
)

var kinds = map[Kind]bool{KindAuthn: true, KindAuthz: true, KindSVID: true, KindToken: true, KindEntry: true,
	KindUser: true, KindRevocation: true, KindCA: true, KindRecovery: true, KindPolicy: true, KindNode: true,
	KindAudit: true, KindCredential: true, KindJob: true, KindKernel: true}

// Outcome is how it ended.
type Outcome string

const (
	Allow Outcome = "allow"
	Deny  Outcome = "deny"
	Error Outcome = "error"
)

// Stable action names of events that are not policy decisions (those carry
// the decided action, e.g. id.register). Names are `<noun>.<verb>`; never
// rename one: operators filter and alert on them.
const (
	ActionAuthnMTLS        = "authn.mtls"            // a TLS client certificate accepted or refused
	ActionAuthnEnroll      = "authn.enroll"          // the enrolment listener refused a handshake or rate-limited a caller
	ActionAuthnEtcd        = "authn.etcd"            // etcd refused a handshake on its client or peer port (no member certificate)
	ActionWorkloadAttest   = "workload.attest"       // the Workload API refused a caller: attestation failed (process gone, exec after connect) or no entry matched
	ActionSVIDIssue        = "svid.issue"            // an X509- or JWT-SVID signed (or refused)
	ActionSVIDRotate       = "svid.rotate"           // a node or user renewed its own SVID
	ActionTokenMint        = "token.mint"            // a join or enrolment token created
	ActionTokenUse         = "token.use"             // a token redeemed (or refused)
	ActionEntryCreate      = "entry.create"          // registration entry created
	ActionEntryDelete      = "entry.delete"          // registration entry deleted
	ActionUserAdd          = "user.add"              // user added
	ActionUserRemove       = "user.remove"           // user removed
	ActionRevoke           = "revocation.add"        // certificates revoked
	ActionCARotate         = "ca.rotate"             // CA rotation step
	ActionCARoot           = "ca.root"               // root exported or imported
	ActionRecover          = "recovery.admin"        // break-glass admin recovery
	ActionPolicyApply      = "policy.apply"          // a policy revision stored
	ActionPolicyRollback   = "policy.rollback"       // an old revision stored again
	ActionPolicyShadow     = "policy.shadow"         // shadow started or stopped
	ActionNodeJoin         = "node.join"             // a node joined
	ActionNodeLeave        = "node.leave"            // a node shut down cleanly
	ActionNodeRemove       = "node.remove"           // a node removed
	ActionAuditAlert       = "audit.alert"           // the witness refused a fork or truncation, or records were lost
	ActionAuditPrune       = "audit.prune"           // retention pruned entries (signed prune record)
	ActionAuditConfigure   = "audit.configure"       // audit settings changed
	ActionAuditUnavailable = "audit.unavailable"     // allow-and-alert let actions through unrecorded
	ActionCredMint         = "cred.mint"             // a delegated credential signed (allow) or refused (deny)
	ActionCredVerify       = "cred.verify"           // a presented credential refused (deny, with why)
	ActionCredRevoke       = "cred.revoke"           // credentials revoked (by jti, subject or holder)
	ActionJobSubmit        = "job.submit"            // a job stored (a new version) or refused
	ActionJobStop          = "job.stop"              // a job stopped
	ActionJobPlace         = "job.place"             // the scheduler leader committed a plan: placements, preemptions, tasks lost with their node
	ActionNodeDown         = "node.down"             // a node missed its lease (its tasks are re-placed after the grace period)
	ActionNodeSchedule     = "node.schedule"         // a node drained, undrained or relabelled
	ActionNodeFence        = "node.fence"            // a node killed its tasks because it could not renew its lease
	ActionExecRun          = "exec.run"              // `unum exec` started on nodes (control node) or a node ran its exec task
	ActionEnforcementDeny  = "enforcement.deny"      // the kernel refused (or, audit-only, would have refused) a task's connect, sendmsg or socket
	ActionEnforcementMode  = "enforcement.mode"      // a node's enforcement mode or layers changed (at start too): never silent
	ActionEnforcementSet   = "enforcement.configure" // the cluster's enforcement settings changed
)

// Event is one audited thing. The zero value of every optional field is
// omitted from the encoding. ID, Node, Time and V are filled in by the log
// when it appends the event.
type Event struct {
	V int `json:"v"`
	// ID is NODE:INDEX: the node whose log holds it and its index there,
	// so the id alone finds the event and its inclusion proof.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Node string    `json:"node"`
	Kind Kind      `json:"kind"`
	// Action is a stable name: a policy action (id.register) for decisions
	// and the Action* constants for the rest.
	Action string `json:"action"`
	// Subject is the SPIFFE ID that acted (for a delegated call, the
	// credential's original subject); Chain the actors it acted through,
	// first to last (the presenting caller last).
	Subject string   `json:"subject,omitempty"`
	Chain   []string `json:"chain,omitempty"`
	// Resource is KIND/NAMESPACE/NAME as the policy sees it.
	Resource string  `json:"resource,omitempty"`
	Outcome  Outcome `json:"outcome"`
	// Privileged marks actions in the privileged set (recorded durably
	// before they run).
	Privileged     bool     `json:"privileged,omitempty"`
	DecisionID     string   `json:"decision_id,omitempty"`
	PolicyRevision int64    `json:"policy_revision,omitempty"`
	Reasons        []string `json:"reasons,omitempty"`
	// RequestDigest is sha256:HEX of the request message, so a request
	// can be matched without the log holding its content.
	RequestDigest string `json:"request_digest,omitempty"`
	// Creds are the delegated credential the event is about or was decided
	// with, by jti: its own first, then its ancestors', so a query for one
	// credential finds everything minted from it and every use of those.
	Creds []string `json:"creds,omitempty"`
	// Details are kind-specific, a JSON object (see the *Details types).
	Details json.RawMessage `json:"details,omitempty"`
}

// MaxFieldBytes is the usual bound of one event field a caller chooses (a
// message, a name, a path, a reason quoting them): recorders clip such
// fields with Clip(s, MaxFieldBytes) rather than each picking a number.
const MaxFieldBytes = 1024

// Clip bounds s to n bytes for an event field (a reason, a name a caller
// sent), marking the cut, so that no caller can make an event arbitrarily
// large.
func Clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// WithDetails returns e with v encoded as its details. v must encode to a
// JSON object; it panics otherwise (a programming error).
func (e Event) WithDetails(v any) Event {
	b, err := json.Marshal(v)
	if err != nil || len(b) == 0 || b[0] != '{' {
		panic(fmt.Sprintf("audit: details of %s must encode to a JSON object: %v", e.Action, err))
	}
	e.Details = b
	return e
}

// EventID is the id of entry index in node's log.
func EventID(node string, index uint64) string {
	return node + ":" + strconv.FormatUint(index, 10)
}

// ParseEventID splits an event id into node and index.
func ParseEventID(id string) (node string, index uint64, err error) {
	i := strings.LastIndexByte(id, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("event id %q: want NODE:INDEX", id)
	}
	index, err = strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("event id %q: index: %w", id, err)
	}
	return id[:i], index, nil
}

// validateFields checks what a well-formed event must have, but for its
// details: Encode and DecodeEvent have those parsed anyway (encoding/json
// validates and compacts a RawMessage as it marshals or unmarshals one).
func (e *Event) validateFields() error {
	switch {
	case e.V != Version:
		return fmt.Errorf("event version %d: this build reads version %d", e.V, Version)
	case !kinds[e.Kind]:
		return fmt.Errorf("event kind %q is unknown", e.Kind)
	case e.Action == "" || len(e.Action) > 128:
		return errors.New("event action is empty or longer than 128 bytes")
	case e.Outcome != Allow && e.Outcome != Deny && e.Outcome != Error:
		return fmt.Errorf("event outcome %q: want allow, deny or error", e.Outcome)
	case e.Node == "":
		return errors.New("event node is empty")
	case e.Time.IsZero():
		return errors.New("event time is zero")
	}
	if len(e.Details) > 0 && e.Details[0] != '{' {
		return errors.New("event details are not a JSON object")
	}
	return nil
}

// Encode is the event's canonical encoding: its Merkle leaf data. Times are
// UTC with nanoseconds; details are compacted.
func (e *Event) Encode() ([]byte, error) {
	c := *e
	c.Time = c.Time.UTC()
	if err := c.validateFields(); err != nil {
		return nil, err
	}
	// Marshal validates and compacts the details (one pass over them: the
	// encoding is the hot path of every decision).
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", c.Action, err)
	}
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("event %s is %d bytes, more than %d", c.Action, len(b), MaxEventSize)
	}
	return b, nil
}

// DecodeEvent parses an encoded event strictly: unknown fields, trailing
// data and invalid events are errors. It reads untrusted input (a log at
// rest, a proof from a server).
func DecodeEvent(b []byte) (*Event, error) {
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("event is %d bytes, more than %d", len(b), MaxEventSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e Event
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode event: trailing data")
	}
	if err := e.validateFields(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Recorder is what components record events through. Record returns nil
// only once the event is durable; it fills in the event's ID, Node, Time
// (the log's clock) and V. Implementations are safe for concurrent use.
type Recorder interface {
	Record(ctx context.Context, e *Event) error
}

// Filter selects events; the zero Filter matches all.
type Filter struct {
	Subject, Action, Node, DecisionID string
	// Cred matches events whose Creds hold this jti.
	Cred    string
	Outcome Outcome
	Kind    Kind
	// Since and Until bound the event time (inclusive, exclusive); zero is
	// unbounded.
	Since, Until time.Time
}

// Match reports whether e passes f.
func (f *Filter) Match(e *Event) bool {
	return (f.Subject == "" || e.Subject == f.Subject) &&
		(f.Action == "" || e.Action == f.Action) &&
		(f.Node == "" || e.Node == f.Node) &&
		(f.DecisionID == "" || e.DecisionID == f.DecisionID) &&
		(f.Cred == "" || slices.Contains(e.Creds, f.Cred)) &&
		(f.Outcome == "" || e.Outcome == f.Outcome) &&
		(f.Kind == "" || e.Kind == f.Kind) &&
		(f.Since.IsZero() || !e.Time.Before(f.Since)) &&
		(f.Until.IsZero() || e.Time.Before(f.Until))
}

// ActionAuditRegisterKey: a node's checkpoint key registered by the witness
// on the node's first submission (a node of a cluster made before audit;
// every other node registers its key when it joins).
const ActionAuditRegisterKey = "audit.register-key"
