package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nginx's own session log, counted per stream: N sessions of known sizes
// give exactly those totals, in the stream's answer and in /metrics.
func TestTrafficCountsFromNginx(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	be := startEcho(t, "") // echoes the bytes as they are
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)
	const sessions, size = 5, 1000
	msg := strings.Repeat("x", size-1) + "\n"
	for range sessions {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := roundTrip(c, msg); err != nil || len(got) != size {
			t.Fatalf("echo: %d bytes, %v", len(got), err)
		}
		c.Close()
	}
	var traffic map[string]any
	eventually(t, "nginx's session log counted", 10*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		traffic, _ = m["traffic"].(map[string]any)
		return traffic != nil && traffic["sessions"] == float64(sessions)
	})
	if traffic["bytes_in"] != float64(sessions*size) || traffic["bytes_out"] != float64(sessions*size) || traffic["connect_failures"] != float64(0) {
		t.Fatalf("traffic %v, want %d bytes each way", traffic, sessions*size)
	}
	if traffic["backends"].(map[string]any)[be.addr()] != float64(sessions) {
		t.Fatalf("per backend: %v", traffic["backends"])
	}
	_, raw := d.apiRaw("GET", "/metrics", "")
	text := string(raw)
	id := fmt.Sprintf("tcp/%d", d.portMin)
	if v := metricValue(t, text, `stream_conductor_stream_bytes_total{direction="in",stream="`+id+`"}`); v != sessions*size {
		t.Fatalf("metrics bytes in %v", v)
	}
	if v := metricValue(t, text, `stream_conductor_stream_sessions_total{stream="`+id+`"}`); v != sessions {
		t.Fatalf("metrics sessions %v", v)
	}

	// Sessions open now: from the kernel's socket table.
	var open []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(c, msg)
		open = append(open, c)
	}
	active := func() float64 {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
		tr, _ := m["traffic"].(map[string]any)
		v, _ := tr["active"].(float64)
		return v
	}
	eventually(t, "3 active sessions", 10*time.Second, func() bool { return active() == 3 })
	for _, c := range open {
		c.Close()
	}
	eventually(t, "no active session", 10*time.Second, func() bool { return active() == 0 })

	// A backend that refuses: a 502 session, counted as a connect failure.
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	d.mustPut("tcp", d.portMax, `{"backend":"`+dead+`"}`)
	if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMax)); err == nil {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Read(make([]byte, 1))
		c.Close()
	}
	eventually(t, "the failed connect counted", 10*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), "")
		tr, _ := m["traffic"].(map[string]any)
		return tr != nil && tr["connect_failures"] == float64(1)
	})
}
