package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// nginxRSS reads the memory of the managed nginx of the daemon under test
// (same host only), with preload streams present, imported at once: VmRSS
// and Pss summed over every master of its pool (one per shard: the pid
// files under DATA_DIR/nginx/) and their workers. RSS counts shared pages
// once per process; Pss splits them. It waits (at most 10 s) for the
// workers of earlier configurations to exit, so that only the serving
// ones count. dataDir is the daemon's DATA_DIR; empty: read from the
// daemon's environment.
func (b *bench) nginxRSS(preload int, dataDir string) (map[string]any, error) {
	if b.hi-b.lo+1 < preload {
		return nil, fmt.Errorf("-ports has fewer than %d ports", preload)
	}
	if err := b.importStreams(b.lo, preload); err != nil {
		return nil, err
	}
	counters, pid, err := b.counters()
	if err != nil {
		return nil, err
	}
	if dataDir == "" {
		if dataDir, err = envOf(pid, "DATA_DIR"); err != nil {
			return nil, fmt.Errorf("find the daemon's DATA_DIR (set -data-dir): %w", err)
		}
	}
	masters, procs := poolProcs(dataDir)
	if len(masters) == 0 {
		return nil, fmt.Errorf("no nginx master of %s (managed mode, on this host?)", dataDir)
	}
	var rssKB, pssKB, maxMasterKB int
	for _, p := range procs {
		rss, err := statusKB(p, "status", "VmRSS:")
		if err != nil {
			return nil, err
		}
		pss, err := statusKB(p, "smaps_rollup", "Pss:")
		if err != nil {
			return nil, err
		}
		rssKB, pssKB = rssKB+rss, pssKB+pss
		if slices.Contains(masters, p) {
			maxMasterKB = max(maxMasterKB, rss)
		}
	}
	res := map[string]any{"streams": preload, "masters": len(masters), "processes": len(procs),
		"rss_mb": float64(rssKB) / 1024, "pss_mb": float64(pssKB) / 1024, "largest_master_rss_mb": float64(maxMasterKB) / 1024,
		"nginx_starts": counters["nginx_starts"], "nginx_reloads": counters["nginx_reloads"]}
	if shards, err := b.shards(); err == nil && len(shards) > 0 {
		res["shard_streams_min"], res["shard_streams_max"] = shardSpread(shards)
	}
	return res, nil
}

// poolProcs returns the nginx masters of dataDir's pool and every process
// to count: the masters and their children. It waits (at most 10 s) until
// no child is a worker of an earlier configuration still finishing.
func poolProcs(dataDir string) (masters, procs []int) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		masters, procs = nginxMasters(dataDir), nil
		for _, m := range masters {
			procs = append(append(procs, m), procfs.Children(m)...)
		}
		if !anyShuttingDown(procs) || time.Now().After(deadline) {
			return masters, procs
		}
	}
}

// shardSpread is the fewest and the most streams a shard holds.
func shardSpread(shards []shardStatus) (lo, hi int) {
	for i, s := range shards {
		if i == 0 || s.Streams < lo {
			lo = s.Streams
		}
		hi = max(hi, s.Streams)
	}
	return lo, hi
}

// anyShuttingDown reports whether one of pids is an nginx worker of an
// earlier configuration, still finishing.
func anyShuttingDown(pids []int) bool {
	for _, p := range pids {
		if bytes.Contains(procfs.Cmdline(p), []byte("shutting down")) {
			return true
		}
	}
	return false
}

// statusKB reads the "key  N kB" line of /proc/pid/file.
func statusKB(pid int, file, key string) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + file)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/%s", key, pid, file)
}

// envOf returns variable name of process pid's environment.
func envOf(pid int, name string) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return "", err
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(name+"=")); ok {
			return string(v), nil
		}
	}
	return "", fmt.Errorf("%s is not in the environment of pid %d", name, pid)
}
