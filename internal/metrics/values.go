package metrics

import (
	"sort"
	"strings"
)

// Values gathers every counter and gauge in m's registry, keyed
// `name{label="value",...}` (labels sorted, as Prometheus prints them): a
// reader for tests and tools that want numbers rather than the text format.
func (m *Metrics) Values() (map[string]float64, error) {
	mfs, err := m.reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			var labels []string
			for _, lp := range mt.GetLabel() {
				labels = append(labels, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			sort.Strings(labels)
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case mt.Counter != nil:
				out[key] = mt.GetCounter().GetValue()
			case mt.Gauge != nil:
				out[key] = mt.GetGauge().GetValue()
			}
		}
	}
	return out, nil
}
