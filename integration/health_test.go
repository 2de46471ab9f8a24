package integration

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// Backend health: a connect probe per backend, reported per stream and in
// /metrics, following the backend as it goes down and comes up.
func TestBackendHealth(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1, "HEALTH_INTERVAL=100ms", "HEALTH_TIMEOUT=1s")
	up := startEcho(t, "A:")
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := ln.Addr().String()
	ln.Close()
	d.mustPut("tcp", d.portMin, `{"backends":["`+up.addr()+`","`+downAddr+`"]}`)
	states := func() (string, string) {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		h, _ := m["health"].([]any)
		if len(h) != 2 {
			return "", ""
		}
		return h[0].(map[string]any)["state"].(string), h[1].(map[string]any)["state"].(string)
	}
	eventually(t, "one backend up, one down", 10*time.Second, func() bool {
		a, b := states()
		return a == "up" && b == "down"
	})
	_, raw := d.apiRaw("GET", "/metrics", "")
	if v := metricValue(t, string(raw), `stream_conductor_backend_up{backend="`+downAddr+`"}`); v != 0 {
		t.Fatalf("backend_up of the down backend: %v", v)
	}
	// The down backend comes up.
	ln, err = net.Listen("tcp4", downAddr)
	if err != nil {
		t.Skipf("could not listen on %s again: %v", downAddr, err)
	}
	defer ln.Close()
	eventually(t, "both backends up", 10*time.Second, func() bool {
		a, b := states()
		return a == "up" && b == "up"
	})
}
