package metrics

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/unumos/unum/identity/revocation"
	"github.com/unumos/unum/internal/metrics/label"
	"github.com/unumos/unum/policy"
)

// Metric names.
const (
	NameSVIDsIssued        = "unum_svids_issued_total"
	NameSVIDsRefused       = "unum_svids_refused_total"
	NameEnrollmentAttempts = "unum_enrollment_attempts_total"
	NameNodeSVIDExpiry     = "unum_node_svid_expiry_seconds"
	NameCACertExpiry       = "unum_ca_certificate_expiry_seconds"
	NameRevocationAge      = "unum_revocation_view_age_seconds"
	NameRevocationBound    = "unum_revocation_view_bound_seconds"
	NameRevocationSetSize  = "unum_revocation_set_size"
	NamePolicyDecisions    = "unum_policy_decisions_total"
	NamePolicyRevision     = "unum_policy_revision"
	NamePolicyLatest       = "unum_policy_latest_revision"
	NamePolicyAge          = "unum_policy_view_age_seconds"
	NameEtcdHealthy        = "unum_etcd_healthy"
	NameEtcdHasLeader      = "unum_etcd_has_leader"
	NameEtcdDBSize         = "unum_etcd_db_size_bytes"
	// NameAuditWitness counts checkpoints submitted to this control node's
	// audit witness, by outcome.
	NameAuditWitness = "unum_audit_witness_submissions_total"
	// NameAuditUnrecorded counts decisions let through while the audit log
	// could not record them (audit.on_failure allow-and-alert);
	// NameAuditAuthnSuppressed refused handshakes not recorded one by one
	// (a flood: the log holds one summary per window instead).
	NameAuditUnrecorded      = "unum_audit_unrecorded_decisions_total"
	NameAuditAuthnSuppressed = "unum_audit_authn_suppressed_total"
)

// Label names.
const (
	LabelKind        = "kind"
	LabelReason      = "reason"
	LabelOutcome     = "outcome"
	LabelFingerprint = "fingerprint"
)

// CA certificate kinds (label "kind" of NameCACertExpiry).
const (
	CAKindRoot         = "root"
	CAKindIntermediate = "intermediate"
)

// DefaultEtcdTimeout bounds the etcd health probe of one scrape.
const DefaultEtcdTimeout = 2 * time.Second

// CACert is a CA certificate the node holds, as the expiry gauge shows it.
type CACert struct {
	Kind        string // CAKindRoot or CAKindIntermediate
	Fingerprint string // ca.Fingerprint
	NotAfter    time.Time
}

// EtcdHealth is the local etcd member's health, probed at scrape time.
type EtcdHealth struct {
	// HasLeader: the member knows a leader.
	HasLeader bool
	// Healthy: it has a leader and answered a linearizable read within the
	// probe's deadline (so it is part of a quorum).
	Healthy     bool
	DBSizeBytes int64
}

// Sources are read at every scrape; the node hands in closures over its
// live state. Each may be nil where the node has no such state, and the
// gauge is then left out. The closures must be safe for concurrent use.
type Sources struct {
	// Clock is time.Now when nil.
	Clock func() time.Time
	// NodeSVIDExpiry is when the node's current SVID expires.
	NodeSVIDExpiry func() time.Time
	// CACerts are the trust bundle's roots and, on control nodes, the
	// intermediate the node signs with.
	CACerts func() []CACert
	// Revocations is the node's revocation view.
	Revocations *revocation.View
	// Policy is the node's policy view.
	Policy *policy.View
	// Etcd probes the local etcd member (control nodes).
	Etcd func(ctx context.Context) EtcdHealth
	// EtcdTimeout bounds Etcd (DefaultEtcdTimeout when zero).
	EtcdTimeout time.Duration
}

// Metrics is one node's registry and the counters the control services
// report to. Its methods are safe for concurrent use and on a nil
// *Metrics (they do nothing).
type Metrics struct {
	reg     *prometheus.Registry
	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
	enroll  *prometheus.CounterVec
	decided *prometheus.CounterVec
	witness *prometheus.CounterVec

	unrecorded, suppressed prometheus.Counter
}

// New returns a registry with the counters, the scrape-time gauges over
// src, and the Go runtime and process collectors.
func New(src Sources) *Metrics {
	if src.Clock == nil {
		src.Clock = time.Now
	}
	if src.EtcdTimeout <= 0 {
		src.EtcdTimeout = DefaultEtcdTimeout
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameSVIDsIssued,
			Help: "SVIDs this node's CA issued, by kind (workload, jwt, node, user).",
		}, []string{LabelKind}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameSVIDsRefused,
			Help: "SVID requests this node refused, by kind and reason (invalid, denied, unavailable, error).",
		}, []string{LabelKind, LabelReason}),
		enroll: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameEnrollmentAttempts,
			Help: "Enrolment attempts (node joins, user logins) on this node, by outcome.",
		}, []string{LabelKind, LabelOutcome}),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NamePolicyDecisions,
			Help: "Authorization decisions this node made, by outcome (allow, deny, refused: could not be decided soundly).",
		}, []string{LabelOutcome}),
		witness: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameAuditWitness,
			Help: "Audit checkpoints submitted to this control node's witness, by outcome (witnessed, fork, truncation, signature, refused, retry).",
		}, []string{LabelOutcome}),
		unrecorded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameAuditUnrecorded,
			Help: "Authorization decisions this node let through although its audit log could not record them (audit.on_failure allow-and-alert).",
		}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameAuditAuthnSuppressed,
			Help: "Refused TLS handshakes beyond the audit log's rate limit: counted here and in one summary event per window, not recorded one by one.",
		}),
	}
	for _, o := range label.DecisionOutcomes() {
		m.decided.WithLabelValues(o)
	}
	for _, o := range label.WitnessOutcomes() {
		m.witness.WithLabelValues(o)
	}
	// Every series exists from the start, at zero: rate() and alerts on
	// absent series then behave, and the set of series is fixed.
	for _, k := range label.SVIDKinds() {
		m.issued.WithLabelValues(k)
		for _, r := range label.RefusalReasons() {
			m.refused.WithLabelValues(k, r)
		}
	}
	for _, k := range label.EnrollmentKinds() {
		for _, o := range label.EnrollmentOutcomes() {
			m.enroll.WithLabelValues(k, o)
		}
	}
	m.reg.MustRegister(m.issued, m.refused, m.enroll, m.decided, m.witness, m.unrecorded, m.suppressed, newNodeCollector(src),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the node's registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A failing collector must not hide the others.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// SVIDIssued counts an SVID issued for kind (a label.Kind* value).
func (m *Metrics) SVIDIssued(kind string) {
	if m == nil {
		return
	}
	m.issued.WithLabelValues(bounded(kind, label.SVIDKinds())).Inc()
}

// SVIDRefused counts a refused SVID request (label.Reason* values).
func (m *Metrics) SVIDRefused(kind, reason string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(bounded(kind, label.SVIDKinds()), bounded(reason, label.RefusalReasons())).Inc()
}

// Enrollment counts an enrolment attempt (label.Kind{Node,User},
// label.Outcome* values).
func (m *Metrics) Enrollment(kind, outcome string) {
	if m == nil {
		return
	}
	m.enroll.WithLabelValues(bounded(kind, label.EnrollmentKinds()), bounded(outcome, label.EnrollmentOutcomes())).Inc()
}

// Decision counts a policy decision (label.Decision* values).
func (m *Metrics) Decision(outcome string) {
	if m == nil {
		return
	}
	m.decided.WithLabelValues(bounded(outcome, label.DecisionOutcomes())).Inc()
}

// AuditWitness counts a checkpoint submission (label.Witness* values).
func (m *Metrics) AuditWitness(outcome string) {
	if m == nil {
		return
	}
	m.witness.WithLabelValues(bounded(outcome, label.WitnessOutcomes())).Inc()
}

// AuditUnrecorded counts a decision let through unrecorded.
func (m *Metrics) AuditUnrecorded() {
	if m == nil {
		return
	}
	m.unrecorded.Inc()
}

// AuthnSuppressed counts refused handshakes not recorded one by one.
func (m *Metrics) AuthnSuppressed(n int) {
	if m == nil {
		return
	}
	m.suppressed.Add(float64(n))
}

// bounded keeps label cardinality fixed whatever a caller passes.
func bounded(v string, allowed []string) string {
	if slices.Contains(allowed, v) {
		return v
	}
	return label.Other
}
