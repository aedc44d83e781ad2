package node

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unumos/unum/audit"
	"github.com/unumos/unum/identity/agent"
	"github.com/unumos/unum/storage/meta"
)

// openRefusalLog opens a real audit log and the node's refusal limiter in
// front of it, as run does.
func openRefusalLog(t *testing.T) (*audit.Log, *audit.Limiter) {
	t.Helper()
	h, err := audit.NewSigningKeyset()
	require.NoError(t, err)
	signer, err := audit.NewSigner("rf", h)
	require.NoError(t, err)
	l, err := audit.Open(audit.Config{Dir: filepath.Join(t.TempDir(), "audit"), Node: "rf", Signer: signer, Logger: quietLog()})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l, newRefusalLimiter(l, func() {})
}

// logged returns the log's events of action.
func logged(t *testing.T, l *audit.Log, action string) []*audit.Event {
	t.Helper()
	var out []*audit.Event
	require.NoError(t, l.Scan(context.Background(), 0, func(_ uint64, raw []byte) bool {
		e, err := audit.DecodeEvent(raw)
		require.NoError(t, err)
		if e.Action == action {
			out = append(out, e)
		}
		return true
	}))
	return out
}

// Workload API refusals reach the node's log one by one, with who called
// (pid, uid, a clipped executable path, whether attestation itself
// failed), although a flood of etcd handshake refusals drained their
// bucket, and although the refused caller hung up before the record was
// written.
func TestWorkloadRefusalsRecordedDuringAFlood(t *testing.T) {
	l, refusals := openRefusalLog(t)
	for i := 0; i < 4*refusalBurst; i++ {
		recordEtcdRefusal(refusals, quietLog(), meta.Refusal{Endpoint: "client", Remote: "10.0.0.9:4000", Reason: "tls: client didn't provide a certificate"})
	}
	etcd := logged(t, l, audit.ActionAuthnEtcd)
	require.Less(t, len(etcd), 4*refusalBurst, "the flood was rate-limited")

	// The caller chooses its executable's path: up to PATH_MAX.
	path := "/tmp/" + strings.Repeat("x", 4090)
	hungUp, cancel := context.WithCancel(context.Background())
	cancel()
	const calls = 10 // each would race its cancelled context without WithoutCancel
	for i := 0; i < calls; i++ {
		recordWorkloadRefusal(hungUp, refusals, quietLog(), agent.Refusal{Method: "/SpiffeWorkloadAPI/FetchX509SVID", PID: 4242 + i, UID: 65534,
			Path: path, Reason: "workload attestation failed: executed a different binary after connecting", Attestation: true})
	}
	got := logged(t, l, audit.ActionWorkloadAttest)
	require.Len(t, got, calls, "each refusal recorded one by one")
	for i, e := range got {
		require.Equal(t, audit.Deny, e.Outcome)
		require.Equal(t, audit.KindAuthn, e.Kind)
		require.Equal(t, "workload-api/-/SpiffeWorkloadAPI/FetchX509SVID", e.Resource)
		require.Equal(t, []string{"workload attestation failed: executed a different binary after connecting"}, e.Reasons)
		var d WorkloadRefusalDetails
		require.NoError(t, json.Unmarshal(e.Details, &d))
		require.Equal(t, 4242+i, d.PID)
		require.Equal(t, uint32(65534), d.UID)
		require.True(t, d.Attestation)
		require.Equal(t, audit.Clip(path, audit.MaxFieldBytes), d.Path, "the path is clipped")
		require.LessOrEqual(t, len(d.Path), audit.MaxFieldBytes+len("…"))
	}
}

// An etcd refusal is recorded with the listener, the caller's address
// (the field the API's refused handshakes use) and etcd's reason.
func TestEtcdRefusalRecorded(t *testing.T) {
	l, refusals := openRefusalLog(t)
	recordEtcdRefusal(refusals, quietLog(), meta.Refusal{Endpoint: "peer", Remote: "10.0.0.9:4000",
		Reason: "tls: failed to verify certificate: x509: certificate signed by unknown authority"})
	got := logged(t, l, audit.ActionAuthnEtcd)
	require.Len(t, got, 1)
	e := got[0]
	require.Equal(t, audit.Deny, e.Outcome)
	require.Equal(t, "etcd/-/peer", e.Resource)
	require.Equal(t, []string{"tls handshake refused on the etcd peer port: tls: failed to verify certificate: x509: certificate signed by unknown authority"}, e.Reasons)
	require.JSONEq(t, `{"peer": "10.0.0.9:4000", "endpoint": "peer"}`, string(e.Details))
}
