package node

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/internal/rpc"
)

// scrapeNode fetches a running node's /metrics from the address in its
// node.yaml (loopback: plain HTTP) and parses the sample lines.
func scrapeNode(t *testing.T, name string) map[string]float64 {
	t.Helper()
	cfg, err := loadConfig(Layout{Dir: cl.nodes[name].dir})
	require.NoError(t, err)
	require.NotEmpty(t, cfg.MetricsListen, "init and join record the metrics address")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + cfg.MetricsListen + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	return out
}

func withPrefix(m map[string]float64, prefix string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// TestMetricsEndpoint scrapes the running nodes: the control node shows
// etcd health, its CA material and a fresh revocation view, and its
// counters move when a compute node asks for SVIDs.
func TestMetricsEndpoint(t *testing.T) {
	m1 := scrapeNode(t, "node-1")
	require.Equal(t, 1.0, m1["unum_etcd_healthy"])
	require.Equal(t, 1.0, m1["unum_etcd_has_leader"])
	require.Positive(t, m1["unum_etcd_db_size_bytes"])
	require.Greater(t, m1["unum_node_svid_expiry_seconds"], 60.0)
	require.GreaterOrEqual(t, m1["unum_revocation_view_age_seconds"], 0.0)
	require.LessOrEqual(t, m1["unum_revocation_view_age_seconds"], m1["unum_revocation_view_bound_seconds"])
	cas := withPrefix(m1, "unum_ca_certificate_expiry_seconds{")
	var roots, inters int
	for k, v := range cas {
		require.Greater(t, v, 24*3600.0, k)
		switch {
		case strings.Contains(k, `kind="root"`):
			roots++
		case strings.Contains(k, `kind="intermediate"`):
			inters++
		}
	}
	require.Equal(t, 1, roots, "%v", cas)
	require.Equal(t, 1, inters, "%v", cas)

	// node-2 is compute only: no etcd, no intermediate.
	m2 := scrapeNode(t, "node-2")
	require.NotContains(t, m2, "unum_etcd_healthy")
	require.Len(t, withPrefix(m2, "unum_ca_certificate_expiry_seconds{"), 1)
	require.GreaterOrEqual(t, m2["unum_revocation_view_age_seconds"], 0.0)
	// Both serve the latest policy revision, confirmed recently, and have
	// counted their decisions (node-1 decides node-2's heartbeats).
	for _, m := range []map[string]float64{m1, m2} {
		require.Positive(t, m["unum_policy_revision"])
		require.Equal(t, m["unum_policy_latest_revision"], m["unum_policy_revision"])
		require.GreaterOrEqual(t, m["unum_policy_view_age_seconds"], 0.0)
		require.Less(t, m["unum_policy_view_age_seconds"], 10.0)
	}
	require.Positive(t, m1[`unum_policy_decisions_total{outcome="allow"}`])
	require.Contains(t, m2, `unum_policy_decisions_total{outcome="refused"}`)

	// node-2 asks node-1's CA for SVIDs over its node SVID, like its agent.
	e := register(t, "spiffe://unum.test/ns/metrics/job/a", "node-2", uidSelector())
	creds, err := Layout{Dir: cl.nodes["node-2"].dir}.Credentials()
	require.NoError(t, err)
	n1, err := loadConfig(Layout{Dir: cl.nodes["node-1"].dir})
	require.NoError(t, err)
	cc, err := rpc.Dial(creds, []string{n1.APIListen})
	require.NoError(t, err)
	defer cc.Close()
	ic := unumv1.NewIdentityClient(cc)
	before := scrapeNode(t, "node-1")
	_, err = ic.MintJWTSVID(ctxT(t, 10*time.Second), &unumv1.MintJWTSVIDRequest{EntryId: e.GetId(), SpiffeId: e.GetSpiffeId(), Audience: []string{"db"}})
	require.NoError(t, err)
	_, err = ic.MintJWTSVID(ctxT(t, 10*time.Second), &unumv1.MintJWTSVIDRequest{EntryId: "0000", SpiffeId: e.GetSpiffeId(), Audience: []string{"db"}})
	require.Error(t, err)
	after := scrapeNode(t, "node-1")
	require.Equal(t, 1.0, after[`unum_svids_issued_total{kind="jwt"}`]-before[`unum_svids_issued_total{kind="jwt"}`])
	require.Equal(t, 1.0, after[`unum_svids_refused_total{kind="jwt",reason="denied"}`]-before[`unum_svids_refused_total{kind="jwt",reason="denied"}`])
	require.Positive(t, after[`unum_enrollment_attempts_total{kind="node",outcome="ok"}`], "node-2 joined through node-1")
}

// TestStatusReportsIntermediates: a control node's heartbeat carries its
// intermediate, and a healthy node draws no warning.
func TestStatusReportsIntermediates(t *testing.T) {
	cc, err := cl.adminConn()
	require.NoError(t, err)
	defer cc.Close()
	var st *unumv1.StatusResponse
	require.Eventually(t, func() bool {
		st, err = unumv1.NewClusterClient(cc).Status(ctxT(t, 10*time.Second), &unumv1.StatusRequest{})
		if err != nil {
			return false
		}
		for _, n := range st.GetNodes() {
			if n.GetName() == "node-1" && n.GetIntermediateExpiresAtUnix() != 0 {
				require.True(t, strings.HasPrefix(n.GetIntermediateFingerprint(), "sha256:"))
				return true
			}
		}
		return false
	}, 30*time.Second, 200*time.Millisecond)
	for _, w := range st.GetWarnings() {
		// Other tests leave stopped nodes behind; these two run.
		require.NotContains(t, w, "node-1", "%q", st.GetWarnings())
		require.NotContains(t, w, "node-2", "%q", st.GetWarnings())
		require.False(t, strings.HasPrefix(w, "etcd:"), w)
		require.False(t, strings.HasPrefix(w, "ca:"), w)
	}
}

// TestMetricsListenDefaults: the default endpoint is loopback even when the
// API listens on a routable address, and bad values are refused up front.
func TestMetricsListenDefaults(t *testing.T) {
	p, err := Ports{API: "10.0.0.5:7443"}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7447", p.Metrics)
	p, err = Ports{API: "127.0.0.1:7443", Metrics: "off"}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, "off", p.Metrics)
	p, err = Ports{API: "127.0.0.1:7443", Metrics: "https://10.0.0.5:9100"}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, "https://10.0.0.5:9100", p.Metrics)
	_, err = Ports{API: "127.0.0.1:7443", Metrics: "nonsense"}.withDefaults()
	require.ErrorContains(t, err, "--metrics-listen")
	_, err = DefaultMetricsListen("127.0.0.1:65533")
	require.ErrorContains(t, err, "set --metrics-listen")

	// An existing node: the value given to `unum node` wins over node.yaml,
	// node.yaml over the default.
	n := &node{cfg: &Config{APIListen: "127.0.0.1:8000"}}
	v, err := n.metricsListen()
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8004", v)
	n.cfg.MetricsListen = "127.0.0.1:9100"
	v, _ = n.metricsListen()
	require.Equal(t, "127.0.0.1:9100", v)
	n.o.Ports.Metrics = "off"
	v, _ = n.metricsListen()
	require.Equal(t, "off", v)
	n.o.Ports.Metrics = "ftp://x:1"
	_, err = n.metricsListen()
	require.Error(t, err)
}
