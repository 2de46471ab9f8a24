package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// metricValue returns the value of the sample whose line starts with
// name{labels} (or name, without labels) in a Prometheus text answer.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no sample %s in /metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// /metrics reports the streams by state, what the reconciler did and the
// API's requests, and needs a token like a read.
func TestPrometheusMetrics(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("metrics-token-0123456789abcdef\n"), 0o600)
	d := newDaemon(t, 3, "API_TOKEN_FILE="+file)
	d.client.Transport = &bearer{token: "metrics-token-0123456789abcdef"}
	d.start()
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	d.mustPut("tcp", d.portMin+1, `{"backend":"`+be.addr()+`"}`)
	if code, _ := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), `{"backend":"no-such-host.invalid:1"}`); code != 422 {
		t.Fatalf("unresolvable backend: %d", code)
	}
	code, raw := d.apiRaw("GET", "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	text := string(raw)
	if v := metricValue(t, text, `stream_conductor_streams{state="active"}`); v != 2 {
		t.Errorf("active streams %v, want 2", v)
	}
	if v := metricValue(t, text, `stream_conductor_nginx_up`); v != 1 {
		t.Errorf("nginx_up %v", v)
	}
	if v := metricValue(t, text, `stream_conductor_events_total{event="nginx_reload"}`); v < 2 {
		t.Errorf("reloads %v, want at least 2", v)
	}
	if v := metricValue(t, text, `stream_conductor_events_total{event="quarantine"}`); v < 1 {
		t.Errorf("quarantines %v, want at least 1", v)
	}
	if v := metricValue(t, text, `stream_conductor_http_request_duration_seconds_count{code="201",route="/v1/streams/{protocol}/{port}"}`); v != 2 {
		t.Errorf("201s on PUT %v, want 2", v)
	}
	// The unresolvable name never reaches nginx (the daemon resolves
	// names), so no reload fails here: count the successful ones.
	if v := metricValue(t, text, `stream_conductor_nginx_apply_duration_seconds_count{op="reload",result="ok"}`); v < 2 {
		t.Errorf("successful reloads %v, want at least 2", v)
	}
	if !strings.Contains(text, "process_resident_memory_bytes") {
		t.Error("no process metrics")
	}
	d.client.Transport = nil
	if code, _ := d.apiRaw("GET", "/metrics", ""); code != 401 {
		t.Fatalf("/metrics without a token: %d", code)
	}
}
