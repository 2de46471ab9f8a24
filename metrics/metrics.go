// Package metrics exposes stream-conductor's state and activity to
// Prometheus. Counters that the reconciler keeps anyway are read at scrape
// time (a Collector), so nothing is counted twice; what needs a histogram
// (pass, reload and request durations) is observed through hooks.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/health"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
)

// Source is what the collector reads at scrape time.
type Source interface {
	NodeStatus() stream.NodeStatus
	Status(id stream.ID, rev uint64) stream.Status
}

// Store is the part of the store the collector reads.
type Store interface {
	List() ([]stream.Spec, uint64)
	BackupSize() int64
}

// Traffic is what nginx carried per stream (nil when unknown).
type Traffic interface {
	All() map[stream.ID]traffic.Stats
}

// Metrics holds the registry and the histograms fed by hooks.
type Metrics struct {
	reg      *prometheus.Registry
	passes   *prometheus.HistogramVec
	applies  *prometheus.HistogramVec
	requests *prometheus.HistogramVec
}

// Health is the probed health of backends (nil when disabled).
type Health interface {
	All() []health.Backend
}

// New registers every stream-conductor metric, plus Go's and the
// process's, in a registry of its own; tr and hl may be nil. node is this
// node's name (NODE_NAME): stream_conductor_streams counts only the streams
// it serves.
func New(src Source, st Store, tr Traffic, hl Health, node string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.passes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "stream_conductor_reconcile_pass_duration_seconds",
		Help:    "Duration of reconcile passes, by result (ok or error).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"result"})
	m.applies = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "stream_conductor_nginx_apply_duration_seconds",
		Help:    "Duration of nginx tests, starts and reloads, by operation and result.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"op", "result"})
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "stream_conductor_http_request_duration_seconds",
		Help:    "Duration of API requests, by route and status code.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "code"})
	m.reg.MustRegister(m.passes, m.applies, m.requests, &collector{src: src, st: st, tr: tr, hl: hl, node: node},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObservePass is the reconciler's hook after every pass.
func (m *Metrics) ObservePass(d time.Duration, err error) {
	m.passes.WithLabelValues(result(err)).Observe(d.Seconds())
}

// ObserveApply is the reconciler's hook after every nginx test, start or
// reload.
func (m *Metrics) ObserveApply(op string, d time.Duration, err error) {
	m.applies.WithLabelValues(op, result(err)).Observe(d.Seconds())
}

// ObserveRequest is the API's hook after every request.
func (m *Metrics) ObserveRequest(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Observe(d.Seconds())
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// collector turns what the reconciler and the store know into metrics at
// scrape time.
type collector struct {
	src Source
	st  Store
	tr  Traffic
	hl  Health
	// node is this node's name: streams that name other nodes only are
	// not this node's to count.
	node string
}

var (
	descStreams  = prometheus.NewDesc("stream_conductor_streams", "Streams by state.", []string{"state"}, nil)
	descCounter  = prometheus.NewDesc("stream_conductor_events_total", "What the reconciler did since start, by event.", []string{"event"}, nil)
	descNginxUp  = prometheus.NewDesc("stream_conductor_nginx_up", "1 when the nginx master runs.", nil, nil)
	descReady    = prometheus.NewDesc("stream_conductor_last_pass_ok", "1 when the last reconcile pass succeeded.", nil, nil)
	descDrifted  = prometheus.NewDesc("stream_conductor_drifted_files", "Files of ours changed by someone else and left as they are.", nil, nil)
	descRevision = prometheus.NewDesc("stream_conductor_store_revision", "The store's revision.", nil, nil)
	descApplied  = prometheus.NewDesc("stream_conductor_applied_revision", "The store revision nginx has applied.", nil, nil)
	descDBBytes  = prometheus.NewDesc("stream_conductor_store_bytes", "Size of the state database.", nil, nil)
	descSessions = prometheus.NewDesc("stream_conductor_stream_sessions_total", "Sessions a stream carried since the daemon started (from nginx's session log).", []string{"stream"}, nil)
	descBytes    = prometheus.NewDesc("stream_conductor_stream_bytes_total", "Bytes a stream carried, by direction (in: from clients).", []string{"stream", "direction"}, nil)
	descBackend  = prometheus.NewDesc("stream_conductor_backend_up", "1 when a connect to the backend succeeded at the last probe, 0 when it failed.", []string{"backend"}, nil)
	descFailures = prometheus.NewDesc("stream_conductor_stream_connect_failures_total", "Sessions nginx could not connect upstream (status 502).", []string{"stream"}, nil)
	descRefused  = prometheus.NewDesc("stream_conductor_stream_sessions_refused_total", "Sessions nginx refused before proxying, by reason: limit (max_connections or max_connections_per_client, status 503) or deny (deny, or a source outside allow, status 403).", []string{"stream", "reason"}, nil)
	descHeld     = prometheus.NewDesc("stream_conductor_state_held", "1 while the node holds its copy of the fleet's state until an operator confirms (STATE_STORE=etcd).", nil, nil)
	descShardUp  = prometheus.NewDesc("stream_conductor_nginx_shard_up", "1 when the nginx master of a shard of the pool (NGINX_SHARDS) runs; only while more than one runs.", []string{"shard"}, nil)
	descShardN   = prometheus.NewDesc("stream_conductor_nginx_shard_streams", "Streams placed on a shard of the pool.", []string{"shard"}, nil)
	descShardRel = prometheus.NewDesc("stream_conductor_nginx_shard_reloads_total", "Reloads and starts of a shard's nginx master since the daemon started.", []string{"shard"}, nil)
	descStale    = prometheus.NewDesc("stream_conductor_state_stale", "1 while the node serves its local copy because etcd does not answer or the copy is held (STATE_STORE=etcd).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStreams, descCounter, descNginxUp, descReady, descDrifted, descRevision, descApplied, descDBBytes, descSessions, descBytes, descFailures, descRefused, descBackend, descHeld, descStale, descShardUp, descShardN, descShardRel} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	specs, rev := c.st.List()
	counts := map[stream.State]int{stream.Active: 0, stream.Pending: 0, stream.Failed: 0}
	for _, s := range specs {
		if s.Targets(c.node) {
			counts[c.src.Status(s.ID(), s.Revision).State]++
		}
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(n), string(state))
	}
	h := c.src.NodeStatus()
	for event, v := range map[string]uint64{
		"pass": h.Counters.Passes, "failed_pass": h.Counters.FailedPasses, "nginx_test": h.Counters.Tests,
		"nginx_reload": h.Counters.Reloads, "nginx_start": h.Counters.Starts, "file_written": h.Counters.FilesWritten,
		"file_removed": h.Counters.FilesRemoved, "quarantine": h.Counters.Quarantined,
		"drift_detected": h.Counters.DriftDetected, "drift_repair": h.Counters.DriftRepairs,
		"listen_drift": h.Counters.ListenDrift, "main_config_repair": h.Counters.MainConfigRepairs,
	} {
		ch <- prometheus.MustNewConstMetric(descCounter, prometheus.CounterValue, float64(v), event)
	}
	ch <- prometheus.MustNewConstMetric(descNginxUp, prometheus.GaugeValue, bool01(h.NginxRunning))
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, bool01(h.LastError == "" && h.Stuck == "" && h.Counters.Passes > 0))
	ch <- prometheus.MustNewConstMetric(descDrifted, prometheus.GaugeValue, float64(len(h.Drifted)))
	ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(rev))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(h.AppliedRevision))
	ch <- prometheus.MustNewConstMetric(descDBBytes, prometheus.GaugeValue, float64(c.st.BackupSize()))
	for _, sh := range h.Shards {
		k := strconv.Itoa(sh.Shard)
		ch <- prometheus.MustNewConstMetric(descShardUp, prometheus.GaugeValue, bool01(sh.Running), k)
		ch <- prometheus.MustNewConstMetric(descShardN, prometheus.GaugeValue, float64(sh.Streams), k)
		ch <- prometheus.MustNewConstMetric(descShardRel, prometheus.CounterValue, float64(sh.Reloads), k)
	}
	if cs, ok := c.st.(interface{ Condition() desired.Condition }); ok {
		cond := cs.Condition()
		ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, bool01(cond.Alarm != nil))
		ch <- prometheus.MustNewConstMetric(descStale, prometheus.GaugeValue, bool01(cond.Stale != nil))
	}
	if hp, ok := c.hl.(*health.Prober); c.hl != nil && !(ok && hp == nil) {
		for _, b := range c.hl.All() {
			ch <- prometheus.MustNewConstMetric(descBackend, prometheus.GaugeValue, bool01(b.State == health.Up), b.Backend)
		}
	}
	if c.tr == nil || reflectNil(c.tr) {
		return
	}
	for sid, t := range c.tr.All() {
		id := sid.String()
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.CounterValue, float64(t.Sessions), id)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(t.BytesIn), id, "in")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(t.BytesOut), id, "out")
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(t.ConnectFailures), id)
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(t.Refused.Limit), id, "limit")
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(t.Refused.Deny), id, "deny")
	}
}

// reflectNil catches a typed nil (*traffic.Collector)(nil) in the
// interface: external mode has no collector.
func reflectNil(v any) bool {
	tc, ok := v.(*traffic.Collector)
	return ok && tc == nil
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
