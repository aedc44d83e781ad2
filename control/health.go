package control

import (
	"context"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
)

// Thresholds of the warnings in `unum status`. They warn ahead of trouble;
// what is already broken (no quorum, a node not ready) also shows as a
// problem in the CLI.
const (
	// CAExpiryWarning: roots and intermediates need a rotation, which
	// takes an operator, well before they lapse.
	CAExpiryWarning = 7 * 24 * time.Hour
	// NodeSVIDExpiryWarning: node SVIDs renew at half their lifetime (30
	// minutes of a 1h SVID), so less than 10 minutes left means renewal
	// has been failing for a while.
	NodeSVIDExpiryWarning = 10 * time.Minute
	// NodeSilentWarning: heartbeats come every 2 s.
	NodeSilentWarning = 30 * time.Second
)

// HealthInput is the state the status warnings are computed from.
type HealthInput struct {
	Now time.Time
	// Roots is the trust bundle; Intermediate the intermediate of the
	// control node answering (ServedBy). Other control nodes' intermediates
	// come from their heartbeats in Nodes.
	Roots        []*x509.Certificate
	Intermediate *x509.Certificate
	ServedBy     string
	// Quorum is false when the node list could not be read; Nodes is then
	// empty and says nothing.
	Quorum bool
	Nodes  []*unumv1.Node
	// EtcdMembers and EtcdLeader as the Status response reports them;
	// EtcdMembers is empty when the member list could not be read.
	EtcdMembers []*unumv1.EtcdMember
	EtcdLeader  string
	// RevocationBound is how old a node's revocation view may get.
	RevocationBound time.Duration
	// LatestPolicy is the latest policy revision (0: unknown); PolicyBound
	// how long a node may go without confirming it serves it.
	LatestPolicy int64
	PolicyBound  time.Duration
}

// Warnings returns the thresholds crossed, worded for an operator, sorted
// (by subject first: "ca", "etcd", "node NAME"). It is a pure function of
// in.
func Warnings(in HealthInput) []string {
	var out []string
	warn := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	// CA material, each certificate once even when several nodes report it.
	seen := map[string]bool{}
	caCert := func(kind, fp string, notAfter time.Time, holder string) {
		if fp == "" || seen[fp] || notAfter.IsZero() {
			return
		}
		seen[fp] = true
		if left := notAfter.Sub(in.Now); left < CAExpiryWarning {
			warn("ca: %s %s%s %s", kind, shortFingerprint(fp), holder, expiryPhrase(left, notAfter))
		}
	}
	for _, r := range in.Roots {
		caCert("root", ca.Fingerprint(r), r.NotAfter, "")
	}
	if in.Intermediate != nil {
		caCert("intermediate", ca.Fingerprint(in.Intermediate), in.Intermediate.NotAfter, " of "+in.ServedBy)
	}
	for _, n := range in.Nodes {
		if n.GetIntermediateExpiresAtUnix() != 0 {
			caCert("intermediate", n.GetIntermediateFingerprint(), time.Unix(n.GetIntermediateExpiresAtUnix(), 0), " of "+n.GetName())
		}
	}

	if !in.Quorum {
		warn("etcd: no quorum: the control plane can neither confirm nor change anything (no SVIDs are minted)")
	} else if len(in.EtcdMembers) > 0 && in.EtcdLeader == "" {
		warn("etcd: no leader")
	}
	for _, m := range in.EtcdMembers {
		if m.GetLearner() {
			name := m.GetName()
			if name == "" {
				name = m.GetId()
			}
			warn("etcd: member %s is still a learner (joining; it does not vote yet)", name)
		}
	}

	bound := in.RevocationBound
	for _, n := range in.Nodes {
		subject := "node " + n.GetName()
		if n.GetLastSeenUnix() == 0 {
			warn("%s: has never reported a heartbeat", subject)
			continue
		}
		lastSeen := time.Unix(n.GetLastSeenUnix(), 0)
		silent := in.Now.Sub(lastSeen)
		if silent > NodeSilentWarning {
			warn("%s: last heartbeat %s ago (%s)", subject, humanDuration(silent), lastSeen.UTC().Format(time.RFC3339))
		}
		if exp := n.GetSvidExpiresAtUnix(); exp != 0 {
			notAfter := time.Unix(exp, 0)
			if left := notAfter.Sub(in.Now); left < NodeSVIDExpiryWarning {
				warn("%s: node SVID %s", subject, expiryPhrase(left, notAfter))
			}
		}
		// A silent node's last report says nothing about its view now.
		if silent > NodeSilentWarning {
			continue
		}
		switch age := n.GetRevocationAgeMs(); {
		case age < 0:
			warn("%s: has no revocation view yet: it refuses privileged actions", subject)
		case bound > 0 && time.Duration(age)*time.Millisecond > bound:
			warn("%s: revocation view is %s old (bound %s): it refuses privileged actions until it catches up",
				subject, (time.Duration(age) * time.Millisecond).Round(100*time.Millisecond), bound)
		}
		rev, age := n.GetPolicyRevision(), time.Duration(n.GetPolicyAgeMs())*time.Millisecond
		switch {
		case rev == 0:
			warn("%s: has no policy loaded yet: it refuses every call", subject)
		case in.LatestPolicy > 0 && rev < in.LatestPolicy:
			warn("%s: serves policy revision %d, the latest is %d: it refuses privileged actions until it catches up", subject, rev, in.LatestPolicy)
		case n.GetPolicyAgeMs() < 0 || (in.PolicyBound > 0 && age > in.PolicyBound):
			warn("%s: has not confirmed policy revision %d as the latest within %s: it refuses privileged actions", subject, rev, in.PolicyBound)
		}
	}
	sort.Strings(out)
	return out
}

// Errors returns what is broken now, worded for an operator, sorted:
// `unum status` is unhealthy while any is present. A node whose audit log
// cannot record refuses privileged actions (fail closed) until it is
// repaired and restarted. A silent node's last report says nothing about
// it now (its silence is a warning of its own). A pure function of in.
func Errors(in HealthInput) []string {
	var out []string
	for _, n := range in.Nodes {
		if n.GetAuditError() == "" || n.GetLastSeenUnix() == 0 || in.Now.Sub(time.Unix(n.GetLastSeenUnix(), 0)) > NodeSilentWarning {
			continue
		}
		out = append(out, fmt.Sprintf("node %s: audit log cannot record: %s (privileged actions are refused)", n.GetName(), n.GetAuditError()))
	}
	sort.Strings(out)
	return out
}

func expiryPhrase(left time.Duration, at time.Time) string {
	stamp := at.UTC().Format(time.RFC3339)
	if left <= 0 {
		return "expired at " + stamp
	}
	return fmt.Sprintf("expires in %s (%s)", humanDuration(left), stamp)
}

// humanDuration rounds to the largest unit that keeps two significant
// figures readable: "3d", "5h", "12m", "40s".
func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= 2*time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return fmt.Sprintf("%ds", int(d/time.Second))
}

// shortFingerprint keeps "sha256:" and 16 hex digits: enough to tell the
// handful of CA certificates apart and find the one in `unum ca status`.
func shortFingerprint(fp string) string {
	const keep = len("sha256:") + 16
	if strings.HasPrefix(fp, "sha256:") && len(fp) > keep {
		return fp[:keep]
	}
	return fp
}

// statusWarnings fills out.Warnings from the status just gathered.
func (s *Server) statusWarnings(ctx context.Context, out *unumv1.StatusResponse) {
	roots := s.bundle()
	// Without quorum the latest revision is unknown (0): nodes are then
	// judged by their own confirmation age only.
	var latestPolicy int64
	if out.GetQuorum() {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		latestPolicy, _ = s.latestPolicyRevision(lctx)
		cancel()
	}
	in := HealthInput{
		Now:             s.cfg.Clock(),
		Roots:           roots,
		Intermediate:    s.Authority().Certificate(),
		ServedBy:        s.cfg.NodeName,
		Quorum:          out.GetQuorum(),
		Nodes:           out.GetNodes(),
		EtcdMembers:     out.GetEtcdMembers(),
		EtcdLeader:      out.GetEtcdLeader(),
		RevocationBound: s.revocations.Bound(),
		LatestPolicy:    latestPolicy,
		PolicyBound:     s.cfg.Policy.Bound(),
	}
	out.Warnings = Warnings(in)
	out.Errors = Errors(in)
}
