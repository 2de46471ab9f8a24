package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/rs/zerolog"
	"github.com/streamconductor/stream-conductor/nginx"
	"github.com/streamconductor/stream-conductor/reconcile"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
)

// newNginx returns the nginx drivers of NGINX_MODE, one per shard of the
// pool (see reconcile.Pool), and, in managed mode, the collector of
// nginx's session log (not yet running), which every shard logs to.
// of, the open-file limit, is lowered to an adopted master's own.
func newNginx(cfg config, st stateStore, of *stream.OpenFiles, log zerolog.Logger) (func(k int) (reconcile.Nginx, string, error), *traffic.Collector, error) {
	if cfg.NginxMode != "managed" {
		x := &nginx.External{Bin: cfg.NginxBin, Timeout: cfg.ApplyTimeout}
		return func(int) (reconcile.Nginx, string, error) { return x, filepath.Join(cfg.DataDir, "applied"), nil }, nil, nil
	}
	tc, err := listenTraffic(cfg.DataDir, cfg.NginxBin, createdAt(localReads(st), cfg.StreamBindAddress), log)
	if err != nil {
		return nil, nil, err
	}
	driver := func(k int) (reconcile.Nginx, string, error) {
		dir, stateFile := filepath.Join(cfg.DataDir, "nginx"), filepath.Join(cfg.DataDir, "applied")
		nlog := log.With().Str("component", "nginx").Logger()
		if k > 0 {
			dir = filepath.Join(dir, "shard-"+strconv.Itoa(k))
			stateFile = filepath.Join(dir, "applied")
			nlog = nlog.With().Int("shard", k).Logger()
		}
		m, err := nginx.NewManaged(nginx.ManagedConfig{
			Bin:                   cfg.NginxBin,
			Dir:                   dir,
			IncludeDir:            reconcile.ShardDir(cfg.StreamConfigPath, k),
			WorkerShutdownTimeout: cfg.WorkerShutdownTimeout,
			WorkerConnections:     cfg.WorkerConnections,
			Workers:               shardWorkers(cfg.Shards),
			TrafficLog:            tc.Addr(),
			TrafficLogFormat:      traffic.LogFormat,
			ApplyTimeout:          cfg.ApplyTimeout,
			Log:                   nlog,
		})
		if err != nil {
			return nil, "", fmt.Errorf("managed nginx: %w", err)
		}
		if pid := m.PID(); pid != 0 {
			nlog.Info().Int("pid", pid).Msg("adopting the running nginx master")
			if lower, ok := nginx.ForMaster(*of, pid, shardWorkers(cfg.Shards)); ok {
				*of = lower
				nlog.Warn().Int("pid", pid).Uint64("nofile_soft", lower.Soft).Int("max_streams", lower.MaxStreams).
					Msg("the running nginx master was started under a lower open-file limit and keeps it: writes beyond max_streams are refused until it restarts (stop it; the daemon starts a new one under its own limit)")
			}
		}
		return m, stateFile, nil
	}
	return driver, tc, nil
}

// shardWorkers is each master's worker_processes: one per shard in a
// pool (the shards use the cores), auto for a lone master.
func shardWorkers(shards int) int {
	if shards > 1 {
		return 1
	}
	return 0
}

// foundShards lists the shards k ≥ 1 an earlier run left on disk: a
// directory DATA_DIR/nginx/shard-k or STREAM_CONFIG_PATH/shard-k. In
// external mode there are none: the operator's nginx is one.
func foundShards(cfg config) []int {
	if cfg.NginxMode != "managed" {
		return nil
	}
	var found []int
	for _, dir := range []string{filepath.Join(cfg.DataDir, "nginx"), cfg.StreamConfigPath} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if k, ok := reconcile.ShardIndex(e.Name()); ok && e.IsDir() && !slices.Contains(found, k) {
				found = append(found, k)
			}
		}
	}
	slices.Sort(found)
	return found
}
