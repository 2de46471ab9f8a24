package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
)

// fakeSource says every stream is active at its revision.
type fakeSource struct{}

func (fakeSource) NodeStatus() stream.NodeStatus { return stream.NodeStatus{} }
func (fakeSource) Status(id stream.ID, rev uint64) stream.Status {
	return stream.Status{State: stream.Active, Revision: rev}
}

type fakeStore []stream.Spec

func (f fakeStore) List() ([]stream.Spec, uint64) { return f, 3 }
func (fakeStore) BackupSize() int64               { return 0 }

// In a fleet, a node counts the streams it serves: one that names other
// nodes only is neither active nor pending here.
func TestStreamsGaugeCountsThisNodesStreams(t *testing.T) {
	st := fakeStore{
		{Protocol: stream.TCP, Listen: 9000, Revision: 1},
		{Protocol: stream.TCP, Listen: 9001, Revision: 2, Nodes: []string{"edge-1"}},
		{Protocol: stream.TCP, Listen: 9002, Revision: 3, Nodes: []string{"edge-2"}},
	}
	m := New(fakeSource{}, st, nil, nil, "edge-1")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{`stream_conductor_streams{state="active"} 2`, `stream_conductor_streams{state="pending"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(string(body), "stream_conductor_streams"))
		}
	}
}

func grep(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// shardSource runs two shards of the pool, the second one down.
type shardSource struct{ fakeSource }

func (shardSource) NodeStatus() stream.NodeStatus {
	return stream.NodeStatus{Shards: []stream.ShardStatus{
		{Shard: 0, Running: true, Streams: 3, Reloads: 7},
		{Shard: 1, Running: false, Streams: 2, Reloads: 1},
	}}
}

func TestShardMetricsPerShard(t *testing.T) {
	m := New(shardSource{}, fakeStore{}, nil, nil, "")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`stream_conductor_nginx_shard_up{shard="0"} 1`, `stream_conductor_nginx_shard_up{shard="1"} 0`,
		`stream_conductor_nginx_shard_streams{shard="1"} 2`, `stream_conductor_nginx_shard_reloads_total{shard="0"} 7`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(string(body), "stream_conductor_nginx_shard"))
		}
	}
}

func TestEventStreamMetrics(t *testing.T) {
	m := New(fakeSource{}, fakeStore{}, nil, nil, "")
	m.WatchEvents(func() events.Stats { return events.Stats{Subscribers: 3, Published: 41, Dropped: 2} })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"stream_conductor_event_stream_clients 3", "stream_conductor_event_stream_published_total 41",
		"stream_conductor_event_stream_dropped_clients_total 2",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(string(body), "stream_conductor_event_stream"))
		}
	}
}

type fakeTraffic map[stream.ID]traffic.Stats

func (f fakeTraffic) All() map[stream.ID]traffic.Stats { return f }

// Sessions nginx refused are counted per stream and reason.
func TestLimits16RefusedSessions(t *testing.T) {
	tr := fakeTraffic{stream.MustParseID("tcp/9000"): {Sessions: 9, Refused: traffic.Refused{Limit: 3, Deny: 2}}}
	m := New(fakeSource{}, fakeStore{}, tr, nil, "")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`stream_conductor_stream_sessions_refused_total{reason="limit",stream="tcp/9000"} 3`,
		`stream_conductor_stream_sessions_refused_total{reason="deny",stream="tcp/9000"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(string(body), "stream_conductor_stream_sessions"))
		}
	}
}
