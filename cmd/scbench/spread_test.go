package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// spreadJobs makes the changes asked for: each update a distinct odd
// (changeable) preloaded port, evenly spaced, and each create a distinct
// port past the preloaded ones.
func TestSpreadJobs(t *testing.T) {
	const lo, preload, updates, creates = 10000, 1024, 50, 25
	jobs := spreadJobs(lo, preload, updates, creates)
	if len(jobs) != updates+creates {
		t.Fatalf("%d jobs, want %d", len(jobs), updates+creates)
	}
	seen := map[int]bool{}
	u, c := 0, 0
	for _, j := range jobs {
		if seen[j.port] {
			t.Fatalf("port %d twice", j.port)
		}
		seen[j.port] = true
		switch {
		case j.create && j.port >= lo+preload:
			c++
		case !j.create && j.port < lo+preload && (j.port-lo)%2 == 1:
			u++
		default:
			t.Fatalf("job %+v: an update must be an odd preloaded port, a create past them", j)
		}
	}
	if u != updates || c != creates {
		t.Fatalf("%d updates and %d creates, want %d and %d", u, c, updates, creates)
	}
	if first, last := jobs[0].port, jobs[len(jobs)-2].port; last-first < preload/2 {
		t.Fatalf("updates span ports %d-%d: not spread over the %d preloaded", first, last, preload)
	}
}

// touched counts the shards that reloaded, including one started since.
func TestTouched(t *testing.T) {
	before := []shardStatus{{Shard: 0, Reloads: 3}, {Shard: 1, Reloads: 5}, {Shard: 2, Reloads: 1}}
	after := []shardStatus{{Shard: 0, Reloads: 4}, {Shard: 1, Reloads: 5}, {Shard: 2, Reloads: 2}, {Shard: 3, Reloads: 1}}
	if got := touched(before, after); got != 3 {
		t.Fatalf("touched = %d, want 3", got)
	}
	if lo, hi := shardSpread([]shardStatus{{Streams: 64}, {Streams: 70}, {Streams: 63}}); lo != 63 || hi != 70 {
		t.Fatalf("shardSpread = %d, %d, want 63, 70", lo, hi)
	}
}

// nginxMasters finds the master of every shard from its pid file and,
// like nginxMaster, trusts none that names a process other than an nginx
// master on the data dir.
func TestNginxMastersEveryShard(t *testing.T) {
	dir := t.TempDir()
	fake := func(sub string) int {
		// A process whose command line reads like a master's on dir.
		cmd := exec.Command("bash", "-c", `exec -a "nginx: master process /usr/sbin/nginx -c $0/nginx.conf" sleep 30`, filepath.Join(dir, sub))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		return cmd.Process.Pid
	}
	pids := map[string]int{"nginx": fake("nginx"), "nginx/shard-1": 1, "nginx/shard-12": fake("nginx/shard-12")}
	for d, pid := range pids {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "nginx.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := []int{pids["nginx"], pids["nginx/shard-12"]}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := nginxMasters(dir)
		slices.Sort(got)
		slices.Sort(want)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginxMasters = %v, want %v (shard 0 and 12; shard 1's pid file names init)", got, want)
		}
	}
}
