package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamconductor/stream-conductor/events"
)

var (
	descEventClients   = prometheus.NewDesc("stream_conductor_event_stream_clients", "Clients reading GET /v1/events now.", nil, nil)
	descEventPublished = prometheus.NewDesc("stream_conductor_event_stream_published_total", "Events published on GET /v1/events since start.", nil, nil)
	descEventDropped   = prometheus.NewDesc("stream_conductor_event_stream_dropped_clients_total", "Clients of GET /v1/events dropped for not reading fast enough.", nil, nil)
)

// WatchEvents adds the counts of the events bus (GET /v1/events).
func (m *Metrics) WatchEvents(stats func() events.Stats) {
	m.reg.MustRegister(eventsCollector(stats))
}

type eventsCollector func() events.Stats

func (c eventsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descEventClients
	ch <- descEventPublished
	ch <- descEventDropped
}

func (c eventsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c()
	ch <- prometheus.MustNewConstMetric(descEventClients, prometheus.GaugeValue, float64(st.Subscribers))
	ch <- prometheus.MustNewConstMetric(descEventPublished, prometheus.CounterValue, float64(st.Published))
	ch <- prometheus.MustNewConstMetric(descEventDropped, prometheus.CounterValue, float64(st.Dropped))
}
