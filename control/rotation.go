package control

import (
	"slices"
	"sort"
	"time"
)

// Rotation phases, in order. A rotation without a new root starts at
// PhaseIntermediates and ends there.
const (
	// PhaseNewRoot: the root holder is to make a new root.
	PhaseNewRoot = "new-root"
	// PhaseBundle: the new root is in the bundle beside the old one; wait
	// until every live node holds it, so nothing chains to it before every
	// verifier trusts it.
	PhaseBundle = "bundle"
	// PhaseIntermediates: every control node gets a new intermediate under
	// the new root and switches to it.
	PhaseIntermediates = "intermediates"
	// PhaseRetiring: every control node has switched; the old root stays in
	// the bundle until every leaf signed under it has expired.
	PhaseRetiring = "retiring"
	// PhaseDone: nothing left to do.
	PhaseDone = "done"
)

// RotationRecord is /unum/ca/rotation: the last (or current) CA rotation.
type RotationRecord struct {
	ID string `json:"id"`
	// Root marks a root rotation; without it only the intermediates change.
	Root  bool   `json:"root"`
	Phase string `json:"phase"`
	// Holder is the control node that holds the root key for this rotation
	// and drives it.
	Holder string `json:"holder"`
	// OldRoot and NewRoot are fingerprints; NewRoot is the root the new
	// intermediates chain to (the current one when Root is false).
	OldRoot   string    `json:"old_root,omitempty"`
	NewRoot   string    `json:"new_root,omitempty"`
	StartedAt time.Time `json:"started_at"`
	StartedBy string    `json:"started_by"`
	// SwitchedAt is when the last control node switched; RetireAt when the
	// old root leaves the bundle.
	SwitchedAt time.Time `json:"switched_at,omitempty"`
	RetireAt   time.Time `json:"retire_at,omitempty"`
}

// InProgress reports whether the rotation still has work to do.
func (r RotationRecord) InProgress() bool { return r.ID != "" && r.Phase != PhaseDone }

// IntermediateRecord is /unum/ca/intermediates/NODE: what a control node
// signs with, written by the node itself.
type IntermediateRecord struct {
	Node        string    `json:"node"`
	Fingerprint string    `json:"fingerprint"`
	Root        string    `json:"root"`
	NotAfter    time.Time `json:"not_after"`
	Certificate []byte    `json:"certificate"` // DER
	// RotationID is the rotation this intermediate was issued for, when it
	// satisfies the current rotation.
	RotationID string    `json:"rotation_id,omitempty"`
	SwitchedAt time.Time `json:"switched_at,omitempty"`
	// LeafRetention is how long a leaf this node signed may stay valid
	// (its longest leaf lifetime plus skew).
	LeafRetention time.Duration `json:"leaf_retention"`
	// RootKey is the fingerprint of the root whose key this node holds
	// online; empty when it holds none.
	RootKey string `json:"root_key,omitempty"`
}

// rotationView is everything the next step of a rotation depends on.
type rotationView struct {
	Rot      RotationRecord
	Nodes    []NodeRecord
	Statuses map[string]NodeStatus
	Inters   map[string]IntermediateRecord
	Now      time.Time
}

type rotationActionKind int

const (
	actNone rotationActionKind = iota
	// actMakeRoot: make the new root and publish it beside the old one.
	actMakeRoot
	// actWait: nothing to do until WaitingFor changes or time passes.
	actWait
	// actStartIntermediates: every live node holds the new root.
	actStartIntermediates
	// actStartRetiring: every control node switched; keep the old root
	// until RetireAt.
	actStartRetiring
	// actRetire: drop the old root from the bundle.
	actRetire
	// actFinish: an intermediates-only rotation is complete.
	actFinish
)

type rotationAction struct {
	Kind       rotationActionKind
	WaitingFor []string
	SwitchedAt time.Time
	RetireAt   time.Time
}

// liveWindow: a node that has not heartbeated for this long is down and is
// not waited for in PhaseBundle (it cannot hold up every rotation; a node
// that is down across a root switch must join again).
const liveWindow = nodeReadyAfter

// nextRotationStep is the rotation's state machine: a pure function of the
// rotation record, the members, their last heartbeats and the control
// nodes' intermediate records at Now. Only the rotation's holder acts on it.
func nextRotationStep(v rotationView) rotationAction {
	r := v.Rot
	switch r.Phase {
	case PhaseNewRoot:
		return rotationAction{Kind: actMakeRoot}
	case PhaseBundle:
		var waiting []string
		for _, n := range v.Nodes {
			st, ok := v.Statuses[n.Name]
			if !ok || v.Now.Sub(st.LastSeen) >= liveWindow {
				continue // down: not waited for
			}
			if !slices.Contains(st.BundleFingerprints, r.NewRoot) {
				waiting = append(waiting, n.Name)
			}
		}
		sort.Strings(waiting)
		if len(waiting) > 0 {
			return rotationAction{Kind: actWait, WaitingFor: waiting}
		}
		return rotationAction{Kind: actStartIntermediates}
	case PhaseIntermediates:
		var waiting []string
		var last time.Time
		var retention time.Duration
		for _, n := range v.Nodes {
			if !n.HasRole("control") {
				continue
			}
			ir, ok := v.Inters[n.Name]
			if !ok || ir.RotationID != r.ID || ir.Root != r.NewRoot {
				waiting = append(waiting, n.Name)
				continue
			}
			if ir.SwitchedAt.After(last) {
				last = ir.SwitchedAt
			}
			retention = max(retention, ir.LeafRetention)
		}
		sort.Strings(waiting)
		if len(waiting) > 0 {
			return rotationAction{Kind: actWait, WaitingFor: waiting}
		}
		if last.IsZero() {
			last = v.Now
		}
		if !r.Root {
			return rotationAction{Kind: actFinish, SwitchedAt: last}
		}
		return rotationAction{Kind: actStartRetiring, SwitchedAt: last, RetireAt: last.Add(retention)}
	case PhaseRetiring:
		if v.Now.Before(r.RetireAt) {
			return rotationAction{Kind: actWait, RetireAt: r.RetireAt}
		}
		return rotationAction{Kind: actRetire}
	}
	return rotationAction{Kind: actNone}
}
