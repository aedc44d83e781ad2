package bench

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunAudit runs the audit benchmark tiny: it checks the report's shape
// and that the measured log verifies, never a performance target.
func TestRunAudit(t *testing.T) {
	var progress bytes.Buffer
	rep, err := RunAudit(testCtx(t), Options{Duration: 200 * time.Millisecond, Concurrency: 8, AuditVerifyEntries: 3000, TempDir: t.TempDir(), Progress: &progress})
	require.NoError(t, err, progress.String())
	require.Equal(t, "audit", rep.Component)
	requireMachine(t, rep)
	require.Len(t, rep.Results, 2)
	rec, ver := rep.Results[0], rep.Results[1]
	require.Equal(t, ResultAuditRecord, rec.Name)
	requireMeasured(t, rec, true, true)
	require.Equal(t, ResultAuditVerify, ver.Name)
	require.GreaterOrEqual(t, ver.Ops, int64(3000))
	require.NotNil(t, ver.Met)
	require.False(t, *ver.Met, "3000 entries cannot meet a target stated for 1,000,000")
	require.NotEmpty(t, rep.Settings.Extra["event_bytes"])
}
