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
// (changeable) preloaded port, and each create a distinct port past the
// preloaded ones; updateOrder takes one shard after the other when it
// knows the placement, and spans the ports when it does not.
func TestSpreadJobs(t *testing.T) {
	const lo, preload, updates, creates = 10000, 1024, 50, 25
	for name, byShard := range map[string]map[int][]int{
		"placement unknown": nil,
		"three shards":      {0: {10001, 10002, 10003}, 4: {10005, 10007, 10010}, 9: {10009, 10011}},
	} {
		order := updateOrder(lo, preload, byShard)
		jobs := spreadJobs(order, lo+preload, updates, creates)
		if len(jobs) != updates+creates {
			t.Fatalf("%s: %d jobs, want %d", name, len(jobs), updates+creates)
		}
		u, c := 0, 0
		seen := map[int]bool{}
		for _, j := range jobs {
			switch {
			case j.create && j.port >= lo+preload && !seen[j.port]:
				c++
			case !j.create && j.port < lo+preload && (j.port-lo)%2 == 1:
				u++
			default:
				t.Fatalf("%s: job %+v: an update must be an odd preloaded port, a create a new port past them", name, j)
			}
			seen[j.port] = true
		}
		if u != updates || c != creates {
			t.Fatalf("%s: %d updates and %d creates, want %d and %d", name, u, c, updates, creates)
		}
		if byShard == nil {
			if got := len(order); got != preload/2 || order[1]-order[0] < 2*30 {
				t.Fatalf("%s: %d ports, first two %v: want all %d odd ports, spanned", name, got, order[:2], preload/2)
			}
		} else if want := []int{10001, 10005, 10009, 10003, 10007, 10011}; !slices.Equal(order[:6], want) {
			t.Fatalf("%s: order %v, want %v (one shard after the other)", name, order[:6], want)
		}
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
