// Package label holds the label values of unum's metrics: the small, fixed
// sets that instrumented packages (control, rpc) report and the exporter
// (internal/metrics) accepts. It has no dependencies, so the instrumented
// packages need not import the Prometheus client; the exporter maps any
// value outside these sets to Other, which keeps every label's cardinality
// bounded whatever a caller passes.
//
// Imported by control, internal/rpc, internal/metrics and node.
package label

// What an issued or refused SVID is for (label "kind").
const (
	KindWorkload = "workload" // X509-SVID of a workload
	KindJWT      = "jwt"      // JWT-SVID of a workload
	KindNode     = "node"     // node SVID (join and renewal)
	KindUser     = "user"     // a person's certificate (login and renewal)
)

// Why an SVID was refused (label "reason"), from the gRPC code of the
// refusal: no caller-supplied text ever becomes a label.
const (
	ReasonInvalid     = "invalid"     // bad request: CSR, SPIFFE ID, audience
	ReasonDenied      = "denied"      // not allowed: no entry, not a member, revoked
	ReasonUnavailable = "unavailable" // could not confirm (no etcd quorum, timeout)
	ReasonError       = "error"       // anything else (internal errors)
)

// Outcomes of an enrolment attempt (label "outcome"), node joins and user
// logins alike.
const (
	OutcomeOK          = "ok"
	OutcomeBadToken    = "bad_token"    // malformed, unknown, or of the wrong kind
	OutcomeExpired     = "expired"      // the token's TTL has passed
	OutcomeUsed        = "used"         // single use: redeemed before
	OutcomeInvalid     = "invalid"      // the rest of the request was refused
	OutcomeRateLimited = "rate_limited" // the enrolment listener's token buckets
	OutcomeError       = "error"        // etcd or internal failure
)

// Outcomes of a policy decision (label "outcome"): allowed, denied by the
// policy, or refused because it could not be decided soundly (no policy
// loaded, a stale view for a privileged action, an evaluation error).
const (
	DecisionAllow   = "allow"
	DecisionDeny    = "deny"
	DecisionRefused = "refused"
)

// Outcomes of a checkpoint submitted to this control node's audit witness
// (label "outcome"). Fork, truncation and signature refusals also record an
// audit.alert event.
const (
	WitnessOK         = "witnessed"
	WitnessFork       = "fork"       // another history than the witnessed one
	WitnessTruncation = "truncation" // smaller than the witnessed size
	WitnessSignature  = "signature"  // not signed by the node's registered key
	WitnessRefused    = "refused"    // another node's checkpoint, a malformed one
	WitnessRetry      = "retry"      // a stale base or a lost race: the node submits again
)

// Other replaces a value outside the sets above.
const Other = "other"

// SVIDKinds, RefusalReasons, EnrollmentKinds and EnrollmentOutcomes list
// the accepted values; the exporter pre-creates one series per combination.
func SVIDKinds() []string { return []string{KindWorkload, KindJWT, KindNode, KindUser} }

func RefusalReasons() []string {
	return []string{ReasonInvalid, ReasonDenied, ReasonUnavailable, ReasonError}
}

func EnrollmentKinds() []string { return []string{KindNode, KindUser} }

func EnrollmentOutcomes() []string {
	return []string{OutcomeOK, OutcomeBadToken, OutcomeExpired, OutcomeUsed, OutcomeInvalid, OutcomeRateLimited, OutcomeError}
}

func DecisionOutcomes() []string { return []string{DecisionAllow, DecisionDeny, DecisionRefused} }

func WitnessOutcomes() []string {
	return []string{WitnessOK, WitnessFork, WitnessTruncation, WitnessSignature, WitnessRefused, WitnessRetry}
}
