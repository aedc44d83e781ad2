package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// nodeCollector computes the node's gauges at scrape time, so a scrape
// always shows the state of that moment and nothing needs a timer to keep
// gauges current.
type nodeCollector struct {
	src Sources

	nodeSVID, caCert, revAge, revBound, revSize, etcdHealthy, etcdLeader, etcdDB *prometheus.Desc
	polRev, polLatest, polAge                                                    *prometheus.Desc
}

func newNodeCollector(src Sources) *nodeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &nodeCollector{
		src:      src,
		nodeSVID: d(NameNodeSVIDExpiry, "Seconds until this node's SVID expires (negative once expired)."),
		caCert: d(NameCACertExpiry, "Seconds until a CA certificate this node holds expires: the trust bundle's roots and, on control nodes, its intermediate.",
			LabelKind, LabelFingerprint),
		revAge:      d(NameRevocationAge, "Seconds since this node's revocation view was last confirmed current; -1 before it first loaded."),
		revBound:    d(NameRevocationBound, "How old the revocation view may get before this node refuses privileged actions."),
		revSize:     d(NameRevocationSetSize, "Revocations in this node's view."),
		etcdHealthy: d(NameEtcdHealthy, "1 when the local etcd member has a leader and answered a linearizable read within the probe deadline."),
		etcdLeader:  d(NameEtcdHasLeader, "1 when the local etcd member knows a leader."),
		etcdDB:      d(NameEtcdDBSize, "Size of the local etcd member's database file."),
		polRev:      d(NamePolicyRevision, "The policy revision this node decides with; 0 before it loaded one."),
		polLatest:   d(NamePolicyLatest, "The latest policy revision this node knows the store holds."),
		polAge:      d(NamePolicyAge, "Seconds since this node last confirmed it serves the latest policy revision; -1 when never."),
	}
}

// Describe implements prometheus.Collector.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodeSVID, c.caCert, c.revAge, c.revBound, c.revSize, c.etcdHealthy, c.etcdLeader, c.etcdDB, c.polRev, c.polLatest, c.polAge} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.src.Clock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.src.NodeSVIDExpiry != nil {
		gauge(c.nodeSVID, c.src.NodeSVIDExpiry().Sub(now).Seconds())
	}
	if c.src.CACerts != nil {
		// A bundle can list the same certificate twice (never in practice);
		// a duplicate series would fail the whole scrape.
		seen := map[[2]string]bool{}
		for _, cert := range c.src.CACerts() {
			k := [2]string{cert.Kind, cert.Fingerprint}
			if seen[k] {
				continue
			}
			seen[k] = true
			gauge(c.caCert, cert.NotAfter.Sub(now).Seconds(), cert.Kind, cert.Fingerprint)
		}
	}
	if v := c.src.Revocations; v != nil {
		age := -1.0
		if a, ok := v.Age(); ok {
			age = a.Seconds()
		}
		gauge(c.revAge, age)
		gauge(c.revBound, v.Bound().Seconds())
		size := 0
		if set, _, loaded := v.Snapshot(); loaded && set != nil {
			size = set.Len()
		}
		gauge(c.revSize, float64(size))
	}
	if v := c.src.Policy; v != nil {
		st := v.Status(now)
		age := -1.0
		if st.Age >= 0 {
			age = st.Age.Seconds()
		}
		gauge(c.polRev, float64(st.Revision))
		gauge(c.polLatest, float64(st.Latest))
		gauge(c.polAge, age)
	}
	if c.src.Etcd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.src.EtcdTimeout)
		h := c.src.Etcd(ctx)
		cancel()
		gauge(c.etcdHealthy, b2f(h.Healthy))
		gauge(c.etcdLeader, b2f(h.HasLeader))
		gauge(c.etcdDB, float64(h.DBSizeBytes))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
