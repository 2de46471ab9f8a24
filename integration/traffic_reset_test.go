package integration

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A stream deleted and created again on the same port is a new stream: its
// traffic (in its answer and in /metrics) starts from zero, not from the
// deleted one's counts, and then counts only its own sessions.
func TestTrafficResetWhenStreamCreatedAgain(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	be := startEcho(t, "")
	id := fmt.Sprintf("tcp/%d", d.portMin)
	path := "/v1/streams/" + id
	body := `{"backend":"` + be.addr() + `"}`
	traffic := func() map[string]any {
		code, m := d.api("GET", path, "")
		if code != 200 {
			t.Fatalf("GET %s: %d %v", path, code, m)
		}
		tr, _ := m["traffic"].(map[string]any)
		return tr
	}
	session := func(size int) {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, err := roundTrip(c, strings.Repeat("x", size-1)+"\n"); err != nil || len(got) != size {
			t.Fatalf("echo: %d bytes, %v", len(got), err)
		}
	}

	d.mustPut("tcp", d.portMin, body)
	const old, oldSize = 3, 1000
	for range old {
		session(oldSize)
	}
	eventually(t, "the first stream's sessions counted", 10*time.Second, func() bool {
		tr := traffic()
		return tr != nil && tr["sessions"] == float64(old) && tr["bytes_in"] == float64(old*oldSize)
	})

	if code, m := d.api("DELETE", path, ""); code != 204 {
		t.Fatalf("delete: %d %v", code, m)
	}
	d.mustPut("tcp", d.portMin, body)
	if tr := traffic(); tr != nil && (tr["sessions"] != float64(0) || tr["bytes_in"] != float64(0) || tr["bytes_out"] != float64(0)) {
		t.Fatalf("the stream created again shows the deleted one's traffic: %v", tr)
	}
	_, raw := d.apiRaw("GET", "/metrics", "")
	series := regexp.MustCompile(`(?m)^stream_conductor_stream_sessions_total\{stream="` + regexp.QuoteMeta(id) + `"\} (\S+)$`)
	if m := series.FindStringSubmatch(string(raw)); m != nil && m[1] != "0" {
		t.Fatalf("/metrics shows %s sessions for the stream created again, before any", m[1])
	}

	const newSize = 300
	session(newSize)
	eventually(t, "the new stream's own session counted", 10*time.Second, func() bool {
		tr := traffic()
		return tr != nil && tr["sessions"] == float64(1)
	})
	if tr := traffic(); tr["bytes_in"] != float64(newSize) || tr["bytes_out"] != float64(newSize) {
		t.Fatalf("the new stream's traffic %v, want its one session of %d bytes each way", tr, newSize)
	}
}
