package cli

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBenchAuthz(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"cluster", []string{"bench", "authz", "--cluster", "--socket", "s", "--node", "n"}, "--cluster does not apply"},
		{"negative concurrency", []string{"bench", "authz", "--concurrency", "-1"}, "--concurrency"},
		{"cred cluster", []string{"bench", "cred", "--cluster", "--socket", "s", "--node", "n"}, "cred starts the cluster it measures"},
		{"sched cluster", []string{"bench", "sched", "--cluster", "--socket", "s", "--node", "n"}, "sched is measured in this process"},
		{"unknown component", []string{"bench", "nope"}, "authz, cred, enforce, revocation, sched, svid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			require.Equal(t, ExitUsage, Main(t.Context(), tc.args, nil, &out, &errb))
			require.Contains(t, errb.String(), tc.msg)
		})
	}

	t.Run("runs in process", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := Main(t.Context(), []string{"bench", "authz", "--duration", "40ms", "-o", "json"}, nil, &out, &errb)
		require.Equal(t, ExitOK, code, errb.String())
		var rep struct {
			Component string `json:"component"`
			Settings  struct {
				Concurrency int `json:"concurrency"`
				GOMAXPROCS  int `json:"gomaxprocs"`
			} `json:"settings"`
			Results []struct {
				Name string `json:"name"`
				Ops  int64  `json:"ops"`
			} `json:"results"`
		}
		require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
		require.Equal(t, "authz", rep.Component)
		require.Equal(t, rep.Settings.GOMAXPROCS, rep.Settings.Concurrency, "authz defaults to GOMAXPROCS clients")
		require.Len(t, rep.Results, 3)
		for _, r := range rep.Results {
			require.Positive(t, r.Ops, r.Name)
		}
		require.Contains(t, errb.String(), "round 4/4")
	})
}
