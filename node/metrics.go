package node

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	unumv1 "github.com/unumos/unum/api/unum/v1"
	"github.com/unumos/unum/identity/ca"
	"github.com/unumos/unum/internal/metrics"
	"github.com/unumos/unum/internal/metrics/label"
	"github.com/unumos/unum/storage/meta"
)

// metricsPortOffset puts the default metrics port after the four ports a
// control node already derives from its API port.
const metricsPortOffset = 4

// DefaultMetricsListen is where a node serves /metrics unless told
// otherwise: loopback, on the API port + 4. Loopback means plain HTTP that
// only processes on the machine reach (a local agent or a Prometheus on the
// node); exposing it to the network takes an explicit address, and is then
// served over mutual TLS only.
func DefaultMetricsListen(api string) (string, error) {
	_, portStr, err := net.SplitHostPort(api)
	if err != nil {
		return "", fmt.Errorf("--listen %q: %w", api, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port+metricsPortOffset > 65535 {
		return "", fmt.Errorf("--listen %q: no default metrics port (API port + %d): set --metrics-listen", api, metricsPortOffset)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port+metricsPortOffset)), nil
}

func checkMetricsListen(v string) error {
	if v == metrics.Off {
		return nil
	}
	if _, err := metrics.ParseListen(v); err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	return nil
}

// nodeMetrics is the node's share of observability state.
type nodeMetrics struct {
	m *metrics.Metrics
	// etcd is the local member (control nodes), set by startControl before
	// the endpoint starts serving.
	etcd *meta.Server
	// url is where the endpoint serves ("" when off); set before run
	// reports the node running.
	url string
}

// metricsListen is this run's endpoint: the value given to `unum node`,
// else node.yaml's, else the default.
func (n *node) metricsListen() (string, error) {
	v := n.o.Ports.Metrics
	if v == "" {
		v = n.cfg.MetricsListen
	}
	if v == "" {
		return DefaultMetricsListen(n.cfg.APIListen)
	}
	return v, checkMetricsListen(v)
}

// newMetrics builds the node's registry over its live state. The closures
// run at scrape time, after run has set everything they read.
func (n *node) newMetrics() *metrics.Metrics {
	src := metrics.Sources{
		Clock:          time.Now,
		NodeSVIDExpiry: n.svidExpiry,
		CACerts:        n.caCerts,
		Revocations:    n.revocations,
		Policy:         n.policy,
	}
	if n.cfg.HasRole("control") {
		src.Etcd = func(ctx context.Context) metrics.EtcdHealth {
			if n.obs.etcd == nil {
				return metrics.EtcdHealth{}
			}
			h := n.obs.etcd.Health(ctx)
			return metrics.EtcdHealth{HasLeader: h.HasLeader, Healthy: h.HasLeader && h.Linearizable, DBSizeBytes: h.DBSizeBytes}
		}
	}
	return metrics.New(src)
}

func (n *node) caCerts() []metrics.CACert {
	var out []metrics.CACert
	for _, r := range n.creds.Roots() {
		out = append(out, metrics.CACert{Kind: metrics.CAKindRoot, Fingerprint: ca.Fingerprint(r), NotAfter: r.NotAfter})
	}
	if a := n.authority.Load(); a != nil {
		c := a.Certificate()
		out = append(out, metrics.CACert{Kind: metrics.CAKindIntermediate, Fingerprint: ca.Fingerprint(c), NotAfter: c.NotAfter})
	}
	return out
}

// startMetrics serves /metrics unless it is off. The returned stop waits
// briefly for scrapes in flight.
func (n *node) startMetrics(goFn func(string, func(context.Context) error)) (func(), error) {
	v, err := n.metricsListen()
	if err != nil {
		return nil, err
	}
	if v == metrics.Off {
		return func() {}, nil
	}
	ep, err := metrics.ParseListen(v)
	if err != nil {
		return nil, err
	}
	srv, err := metrics.Listen(ep, metrics.ServeConfig{
		Handler: n.obs.m.Handler(), Creds: n.creds, Revocations: n.revocations, Log: n.log.With("component", "metrics"),
	})
	if err != nil {
		return nil, fmt.Errorf("%w (set --metrics-listen HOST:PORT, or off)", err)
	}
	n.obs.url = srv.URL()
	goFn("metrics listener", func(context.Context) error { return srv.Serve() })
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// enrollRateLimited counts the enrolment listener's refusals, which never
// reach the control handlers.
func (n *node) enrollRateLimited(fullMethod string) {
	kind := label.KindNode
	if fullMethod == unumv1.Enrollment_Login_FullMethodName {
		kind = label.KindUser
	}
	n.obs.m.Enrollment(kind, label.OutcomeRateLimited)
}
