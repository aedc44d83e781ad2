package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/output"
)

// TestStatusShowsWarnings: warnings from the control plane are printed
// before anything else in a table and listed in JSON; they leave the
// cluster healthy (exit 0), unlike problems.
func TestStatusShowsWarnings(t *testing.T) {
	now := time.Now()
	resp := &unumv1.StatusResponse{
		TrustDomain: "unum.test", Quorum: true, EtcdLeader: "node-1", ServedBy: "node-1",
		CaExpiresAtUnix: now.Add(3 * 24 * time.Hour).Unix(),
		Nodes:           []*unumv1.Node{{Name: "node-1", Ready: true, Roles: []string{"control"}}},
		Warnings: []string{
			"ca: intermediate sha256:0011223344556677 of node-1 expires in 3d (2030-01-01T00:00:00Z)",
			"node node-1: revocation view is 12.3s old (bound 10s): it refuses privileged actions until it catches up",
		},
	}
	v := toStatusView(resp, now)
	require.True(t, v.Healthy, "warnings alone do not make the cluster unhealthy")
	require.Empty(t, v.Problems)

	var table bytes.Buffer
	require.NoError(t, writeStatus(&table, output.Table, v))
	lines := strings.Split(table.String(), "\n")
	require.GreaterOrEqual(t, len(lines), 4)
	require.True(t, strings.HasPrefix(lines[2], "WARNING:"), "warnings come right after the verdict:\n%s", table.String())
	require.Contains(t, lines[2], "ca: intermediate sha256:0011223344556677 of node-1 expires in 3d")
	require.True(t, strings.HasPrefix(lines[3], "WARNING:"))
	require.Contains(t, lines[3], "revocation view is 12.3s old")

	var js bytes.Buffer
	require.NoError(t, writeStatus(&js, output.JSON, v))
	var got struct {
		Healthy  bool     `json:"healthy"`
		Warnings []string `json:"warnings"`
		Problems []string `json:"problems"`
	}
	require.NoError(t, json.Unmarshal(js.Bytes(), &got))
	require.True(t, got.Healthy)
	require.Equal(t, resp.Warnings, got.Warnings)
	require.NotNil(t, got.Problems)

	// No warnings: an empty list in JSON, not null; no WARNING lines.
	resp.Warnings = nil
	v = toStatusView(resp, now)
	js.Reset()
	require.NoError(t, writeStatus(&js, output.JSON, v))
	require.Contains(t, js.String(), `"warnings": []`)
	table.Reset()
	require.NoError(t, writeStatus(&table, output.Table, v))
	require.NotContains(t, table.String(), "WARNING")

	// A problem (here: no quorum) still makes it unhealthy and comes first.
	resp.Quorum = false
	resp.Warnings = []string{"etcd: no quorum: the control plane can neither confirm nor change anything (no SVIDs are minted)"}
	v = toStatusView(resp, now)
	require.False(t, v.Healthy)
	table.Reset()
	require.NoError(t, writeStatus(&table, output.Table, v))
	lines = strings.Split(table.String(), "\n")
	require.True(t, strings.HasPrefix(lines[2], "PROBLEM:"), table.String())
	require.True(t, strings.HasPrefix(lines[3], "WARNING:"), table.String())
}

// TestStatusErrorsAreProblems: an error the control plane reports (a
// node's audit log that cannot record) makes the cluster unhealthy.
func TestStatusErrorsAreProblems(t *testing.T) {
	now := time.Now()
	resp := &unumv1.StatusResponse{
		TrustDomain: "unum.test", Quorum: true, EtcdLeader: "node-1", ServedBy: "node-1",
		CaExpiresAtUnix: now.Add(30 * 24 * time.Hour).Unix(),
		Nodes:           []*unumv1.Node{{Name: "node-1", Ready: true, Roles: []string{"control"}}},
		Errors:          []string{"node node-1: audit log cannot record: disk full (privileged actions are refused)"},
	}
	v := toStatusView(resp, now)
	require.False(t, v.Healthy)
	require.Equal(t, resp.Errors, v.Problems)
}
