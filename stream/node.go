package stream

import (
	"errors"
	"time"
)

// NodeStatus is what a node's reconciler knows about itself and its
// nginx: the status of the node as a whole, beside each stream's Status.
type NodeStatus struct {
	NginxRunning    bool      `json:"nginx_running"`
	LastPass        time.Time `json:"last_pass"`
	LastError       string    `json:"last_error,omitempty"`
	AppliedRevision uint64    `json:"applied_revision"`
	// Drifted lists our files that someone else changed and that are left
	// as they are (DRIFT_POLICY=alert, or repairs rate-limited).
	Drifted []string `json:"drifted"`
	// NotListening lists applied streams whose port had no listening
	// socket at the last look (a repair is under way or rate-limited).
	NotListening []string `json:"not_listening,omitempty"`
	// Unremovable lists files of ours, of no stream, that could not be
	// removed (nginx keeps serving them).
	Unremovable []string `json:"unremovable,omitempty"`
	// Stuck, when set, says that a pass has run for longer than
	// the reconciler's StuckAfter.
	Stuck    string       `json:"stuck,omitempty"`
	Counters NodeCounters `json:"counters"`
	// OpenFiles, in managed mode, is nginx's open-file limit and the
	// streams it allows.
	OpenFiles *OpenFiles `json:"open_files,omitempty"`
	// Streams counts this node's streams (those that target it) by state
	// at AppliedRevision, and NotActive lists those that are not active:
	// what the node publishes to its fleet.
	Streams   NodeStreams    `json:"-"`
	NotActive []StreamStatus `json:"-"`
	// NginxPID is the managed master's pid (0: none, or external mode).
	NginxPID int `json:"nginx_pid,omitempty"`
	// Shards, with a pool of nginx masters (NGINX_SHARDS) running more
	// than one, says what each runs.
	Shards []ShardStatus `json:"shards,omitempty"`
}

// ShardStatus is one nginx master of the pool.
type ShardStatus struct {
	Shard     int    `json:"shard"`
	PID       int    `json:"pid"`
	Running   bool   `json:"running"`
	Streams   int    `json:"streams"`
	Reloads   uint64 `json:"reloads"`
	LastError string `json:"last_error,omitempty"`
	// Draining: a shard at or above NGINX_SHARDS whose streams move to
	// the others, after which it is stopped.
	Draining bool `json:"draining,omitempty"`
}

// NodeCounters count what the reconciler did since the process started.
type NodeCounters struct {
	Passes       uint64 `json:"passes"`
	FailedPasses uint64 `json:"failed_passes"`
	Tests        uint64 `json:"nginx_tests"`
	Reloads      uint64 `json:"nginx_reloads"`
	Starts       uint64 `json:"nginx_starts"`
	FilesWritten uint64 `json:"files_written"`
	FilesRemoved uint64 `json:"files_removed"`
	Quarantined  uint64 `json:"quarantined"`
	// DriftDetected counts files found changed by someone else;
	// DriftRepairs counts the passes that repaired drift.
	DriftDetected uint64 `json:"drift_detected"`
	DriftRepairs  uint64 `json:"drift_repairs"`
	// ListenDrift counts looks that found applied streams whose port
	// nginx does not listen on; MainConfigRepairs counts rewrites of the
	// main configuration found changed under a running nginx.
	ListenDrift       uint64 `json:"listen_drift"`
	MainConfigRepairs uint64 `json:"main_config_repairs"`
}

// OpenFiles is the open-file limit (RLIMIT_NOFILE) the daemon gives the
// nginx master it starts, and how many streams that lets it listen on.
type OpenFiles struct {
	Soft       uint64 `json:"soft"`
	Hard       uint64 `json:"hard"`
	MaxStreams int    `json:"max_streams"`
}

// ErrStreamLimit means a new stream would take nginx past the number of
// streams its open-file limit allows (OpenFiles.MaxStreams): nginx would
// fail to open its socket with "Too many open files". The error that
// wraps it names the limit and how to raise it.
var ErrStreamLimit = errors.New("stream limit reached")
