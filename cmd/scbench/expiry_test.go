package main

import (
	"testing"
	"time"
)

// sinceOrigin keeps every time that was seen, negative when before the
// origin (and counts those), and counts the ports never refused.
func TestSinceOrigin(t *testing.T) {
	origin := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	at := []time.Time{origin.Add(200 * time.Millisecond), {}, origin.Add(-30 * time.Millisecond), origin.Add(time.Second), {}}
	ds, early, never := sinceOrigin(at, origin)
	want := []time.Duration{200 * time.Millisecond, -30 * time.Millisecond, time.Second}
	if len(ds) != len(want) || early != 1 || never != 2 {
		t.Fatalf("ds %v early %d never %d; want %v, 1, 2", ds, early, never, want)
	}
	for i := range want {
		if ds[i] != want[i] {
			t.Fatalf("ds %v, want %v", ds, want)
		}
	}
}

// durationStats gives p50, p95 and max in milliseconds; none: zeros.
func TestDurationStats(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // 100 ms … 1 ms, out of order on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := durationStats(ds)
	if got["p50_ms"] != 50.0 || got["p95_ms"] != 95.0 || got["max_ms"] != 100.0 {
		t.Fatalf("durationStats = %v; want p50 50, p95 95, max 100", got)
	}
	if got := durationStats(nil); got["p50_ms"] != 0.0 || got["max_ms"] != 0.0 {
		t.Fatalf("durationStats(nil) = %v; want zeros", got)
	}
}

func TestMerge(t *testing.T) {
	dst := map[string]any{"streams": 3}
	merge(dst, "prune_", map[string]any{"p50_ms": 1.5, "reloads": 2.0})
	if len(dst) != 3 || dst["prune_p50_ms"] != 1.5 || dst["prune_reloads"] != 2.0 || dst["streams"] != 3 {
		t.Fatalf("merge: %v", dst)
	}
}
