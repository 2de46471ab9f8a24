package metrics

import "github.com/prometheus/client_golang/prometheus"

var (
	descBans      = prometheus.NewDesc("stream_conductor_bans", "Source addresses banned from a stream on this node now (automatic bans).", nil, nil)
	descBansTotal = prometheus.NewDesc("stream_conductor_bans_total", "Automatic bans made on this node since start.", nil, nil)
)

// WatchBans adds the counts of this node's automatic bans (package
// bans): those in force and those made since start.
func (m *Metrics) WatchBans(stats func() (current int, total uint64)) {
	m.reg.MustRegister(bansCollector(stats))
}

type bansCollector func() (int, uint64)

func (c bansCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBans
	ch <- descBansTotal
}

func (c bansCollector) Collect(ch chan<- prometheus.Metric) {
	current, total := c()
	ch <- prometheus.MustNewConstMetric(descBans, prometheus.GaugeValue, float64(current))
	ch <- prometheus.MustNewConstMetric(descBansTotal, prometheus.CounterValue, float64(total))
}
