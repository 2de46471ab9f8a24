package main

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// The sources are 127.0.2.1 on, never 127.0.0.1, at most 254 of them.
func TestSourceAddrs(t *testing.T) {
	got, err := sourceAddrs(3)
	if err != nil || len(got) != 3 || got[0] != "127.0.2.1" || got[2] != "127.0.2.3" {
		t.Fatalf("sourceAddrs(3) = %v, %v", got, err)
	}
	if got, err := sourceAddrs(254); err != nil || got[253] != "127.0.2.254" {
		t.Fatalf("sourceAddrs(254): %v", err)
	}
	for _, n := range []int{0, -1, 255} {
		if _, err := sourceAddrs(n); err == nil {
			t.Errorf("sourceAddrs(%d): no error", n)
		}
	}
}

// between measures each source from its own start, and counts those that
// never got there.
func TestBetween(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	from := []time.Time{t0, t0.Add(time.Second), t0}
	to := []time.Time{t0.Add(300 * time.Millisecond), t0.Add(1500 * time.Millisecond), {}}
	ds, never := between(from, to)
	if len(ds) != 2 || ds[0] != 300*time.Millisecond || ds[1] != 500*time.Millisecond || never != 1 {
		t.Fatalf("between = %v, %d; want [300ms 500ms], 1", ds, never)
	}
}

func TestLatest(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	if got := latest([]time.Time{t0, {}, t0.Add(time.Minute), t0.Add(time.Second)}); !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("latest = %v", got)
	}
	if got := latest(nil); !got.IsZero() {
		t.Fatalf("latest(nil) = %v", got)
	}
}

// A stopped switchEcho refuses connects; started again on the same
// address, it echoes.
func TestSwitchEcho(t *testing.T) {
	e, err := newSwitchEcho()
	if err != nil {
		t.Fatal(err)
	}
	defer e.stop()
	if !echoes(e.addr) {
		t.Fatal("a new switchEcho does not echo")
	}
	e.stop()
	if echoes(e.addr) {
		t.Fatal("a stopped switchEcho echoes")
	}
	if err := e.start(); err != nil {
		t.Fatal(err)
	}
	if !echoes(e.addr) {
		t.Fatal("a restarted switchEcho does not echo")
	}
}

// echoes reports whether a round trip to addr works now.
func echoes(addr string) bool {
	host, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return echoAt(host, port)
}
