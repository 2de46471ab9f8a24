package integration

import (
	"fmt"
	"sort"
	"strconv"
	"testing"
	"time"
)

// Sessions on 5 ports of a 20-port range (port_mode same) all count for
// the range stream, GET /v1/streams/tcp/A-B shows them in its totals and,
// port by port, under traffic.ports; a single-port stream beside it shows
// no ports.
func TestRangesTrafficCountsEveryPort(t *testing.T) {
	d := startDaemon(t, 22, rangeBackendAllow)
	a, b := d.portMin, d.portMin+19
	startPortEchoes(t, a, b)
	ref := fmt.Sprintf("tcp/%d-%d", a, b)
	if code, m := d.api("PUT", "/v1/streams/"+ref, `{"backend":"127.0.0.2","port_mode":"same"}`); code != 201 {
		t.Fatalf("PUT the range: %d %v", code, m)
	}
	single := startEcho(t, "single ")
	d.mustPut("tcp", b+1, fmt.Sprintf(`{"backends":[%q]}`, single.addr()))

	used := []int{a, a + 3, a + 7, a + 12, b} // not only the first port
	sent := map[int]int{}
	for _, port := range used {
		msg := fmt.Sprintf("ping %d\n", port)
		eventually(t, fmt.Sprintf("bytes through port %d", port), 5*time.Second, func() bool {
			got, err := echo(t, port, msg)
			return err == nil && got == fmt.Sprintf("port %d: ", port)+msg
		})
		sent[port] = len(msg)
	}
	mustEcho(t, b+1, "single ")

	var tr map[string]any
	eventually(t, "the 5 sessions counted for "+ref, 10*time.Second, func() bool {
		_, m := d.api("GET", "/v1/streams/"+ref, "")
		tr, _ = m["traffic"].(map[string]any)
		return tr != nil && tr["sessions"] == float64(len(used))
	})
	ports, _ := tr["ports"].(map[string]any)
	var keys []string
	for k := range ports {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var want []string
	for _, port := range used {
		want = append(want, strconv.Itoa(port))
	}
	sort.Strings(want)
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Fatalf("traffic.ports has %v, want %v: %v", keys, want, tr)
	}
	totalIn := 0
	for _, port := range used {
		p, _ := ports[strconv.Itoa(port)].(map[string]any)
		if p["sessions"] != float64(1) || p["bytes_in"] != float64(sent[port]) {
			t.Errorf("port %d: %v, want 1 session of %d bytes in", port, p, sent[port])
		}
		totalIn += sent[port]
	}
	if tr["bytes_in"] != float64(totalIn) {
		t.Errorf("bytes_in %v, want the ports' %d", tr["bytes_in"], totalIn)
	}
	eventually(t, "the single stream's session counted", 10*time.Second, func() bool {
		_, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", b+1), "")
		st, _ := m["traffic"].(map[string]any)
		if st == nil || st["sessions"] != float64(1) {
			return false
		}
		if _, has := st["ports"]; has {
			t.Fatalf("a single-port stream shows ports: %v", st)
		}
		return true
	})
}
