package control

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEnforcementSettingsFailClosed: settings that cannot be decoded (a
// corrupted or hand-written etcd value) make enforcement required and
// every node unschedulable, enforcing or not, until they are written
// again; readable ones are what was stored.
func TestEnforcementSettingsFailClosed(t *testing.T) {
	ready := NodeStatus{AgentReady: true, Enforcement: "enforce"}
	for _, tc := range []struct {
		name       string
		stored     string
		wantReason string
	}{
		{"not json", "{not json", "the cluster's enforcement settings are unreadable"},
		{"wrong type", `{"required": "no"}`, "the cluster's enforcement settings are unreadable"},
		{"readable, optional", `{"required": false}`, ""},
		{"readable, required", `{"required": true}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := decodeEnforcementSettings([]byte(tc.stored))
			require.Equal(t, tc.wantReason, unschedulable(NodeSched{}, ready, st))
			if tc.wantReason != "" {
				require.True(t, st.Required, "unreadable settings must require enforcement")
				require.Contains(t, unschedulable(NodeSched{}, NodeStatus{AgentReady: true, Enforcement: "degraded"}, st), "unreadable")
			}
		})
	}
}
