package control

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRotationStep(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ctl := func(n string) NodeRecord { return NodeRecord{Name: n, Roles: []string{"control"}} }
	cmp := func(n string) NodeRecord { return NodeRecord{Name: n, Roles: []string{"compute"}} }
	seen := func(ago time.Duration, fps ...string) NodeStatus {
		return NodeStatus{LastSeen: now.Add(-ago), BundleFingerprints: fps}
	}
	rot := func(phase string, root bool) RotationRecord {
		return RotationRecord{ID: "r1", Root: root, Phase: phase, Holder: "a", OldRoot: "R1", NewRoot: "R2", StartedAt: now.Add(-time.Minute)}
	}
	switched := func(n string, at time.Time, retention time.Duration) IntermediateRecord {
		return IntermediateRecord{Node: n, Root: "R2", RotationID: "r1", SwitchedAt: at, LeafRetention: retention}
	}
	tests := []struct {
		name string
		v    rotationView
		want rotationAction
	}{
		{name: "new root first", v: rotationView{Rot: rot(PhaseNewRoot, true)}, want: rotationAction{Kind: actMakeRoot}},
		{
			name: "bundle waits for every live node, compute nodes included",
			v: rotationView{Rot: rot(PhaseBundle, true), Now: now, Nodes: []NodeRecord{ctl("a"), cmp("w"), ctl("b")},
				Statuses: map[string]NodeStatus{"a": seen(time.Second, "R1", "R2"), "b": seen(time.Second, "R1"), "w": seen(time.Second, "R1")}},
			want: rotationAction{Kind: actWait, WaitingFor: []string{"b", "w"}},
		},
		{
			name: "bundle does not wait for a node that is down or never reported",
			v: rotationView{Rot: rot(PhaseBundle, true), Now: now, Nodes: []NodeRecord{ctl("a"), cmp("down"), cmp("new")},
				Statuses: map[string]NodeStatus{"a": seen(time.Second, "R2", "R1"), "down": seen(time.Minute, "R1")}},
			want: rotationAction{Kind: actStartIntermediates},
		},
		{
			name: "intermediates wait for every control node, down or not",
			v: rotationView{Rot: rot(PhaseIntermediates, true), Nodes: []NodeRecord{ctl("a"), ctl("b"), cmp("w")},
				Inters: map[string]IntermediateRecord{"a": switched("a", now, time.Hour), "b": {Node: "b", Root: "R1"}}},
			want: rotationAction{Kind: actWait, WaitingFor: []string{"b"}},
		},
		{
			name: "an intermediate of another rotation does not count",
			v: rotationView{Rot: rot(PhaseIntermediates, true), Nodes: []NodeRecord{ctl("a")},
				Inters: map[string]IntermediateRecord{"a": {Node: "a", Root: "R2", RotationID: "r0"}}},
			want: rotationAction{Kind: actWait, WaitingFor: []string{"a"}},
		},
		{
			name: "all switched: retire after the last switch plus the longest retention",
			v: rotationView{Rot: rot(PhaseIntermediates, true), Nodes: []NodeRecord{ctl("a"), ctl("b"), cmp("w")}, Now: now,
				Inters: map[string]IntermediateRecord{"a": switched("a", now.Add(-2*time.Second), time.Hour), "b": switched("b", now.Add(-time.Second), 2*time.Hour)}},
			want: rotationAction{Kind: actStartRetiring, SwitchedAt: now.Add(-time.Second), RetireAt: now.Add(-time.Second).Add(2 * time.Hour)},
		},
		{
			name: "intermediates only: done once all switched",
			v: rotationView{Rot: rot(PhaseIntermediates, false), Nodes: []NodeRecord{ctl("a")}, Now: now,
				Inters: map[string]IntermediateRecord{"a": switched("a", now, time.Hour)}},
			want: rotationAction{Kind: actFinish, SwitchedAt: now},
		},
		{
			name: "retiring waits until RetireAt",
			v:    rotationView{Rot: func() RotationRecord { r := rot(PhaseRetiring, true); r.RetireAt = now.Add(time.Second); return r }(), Now: now},
			want: rotationAction{Kind: actWait, RetireAt: now.Add(time.Second)},
		},
		{
			name: "retire at RetireAt",
			v:    rotationView{Rot: func() RotationRecord { r := rot(PhaseRetiring, true); r.RetireAt = now; return r }(), Now: now},
			want: rotationAction{Kind: actRetire},
		},
		{name: "done does nothing", v: rotationView{Rot: rot(PhaseDone, true)}, want: rotationAction{Kind: actNone}},
		{name: "unknown phase does nothing", v: rotationView{Rot: rot("bogus", true)}, want: rotationAction{Kind: actNone}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, nextRotationStep(tt.v))
		})
	}
}
