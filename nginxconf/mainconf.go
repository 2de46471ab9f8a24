package nginxconf

import (
	"bytes"
	"fmt"
	"strings"
)

// MainOptions shape the nginx.conf that managed mode writes.
type MainOptions struct {
	// StreamModule is the path of ngx_stream_module.so to load; empty when
	// nginx has the module built in.
	StreamModule string
	PIDFile      string
	ErrorLog     string
	// IncludeDir is STREAM_CONFIG_PATH; every *.conf in it is included
	// inside stream {}.
	IncludeDir string
	// WorkerShutdownTimeout bounds how long old workers keep serving open
	// connections after a reload, in nginx time syntax ("" = nginx default).
	WorkerShutdownTimeout string
	// TrafficLog, when set, is the syslog server nginx sends one line per
	// session to, in TrafficLogFormat: "unix:/path/to/socket" (a path
	// without commas, nginx's parameter separator) or "HOST:PORT".
	TrafficLog string
	// TrafficLogFormat is the log_format of those lines.
	TrafficLogFormat string
	// NoFile is the open-file limit each worker may use; it sets
	// worker_rlimit_nofile (0: nginx's default).
	NoFile int
	// WorkerConnections sizes each worker's connection table: every
	// listening port and every proxied session (two descriptors) takes a
	// slot (0: 1024). Each worker allocates the whole table when it
	// starts, after every reload, so it costs reload time.
	WorkerConnections int
	// Workers is worker_processes (0: auto, one per CPU). A shard of the
	// pool runs one.
	Workers int
}

// RenderMain returns the main nginx.conf for managed mode. The error log is
// kept at level notice: the reconciler reads the master's "reconfiguring"
// and "start worker processes" lines to verify every reload.
func RenderMain(o MainOptions) []byte {
	var b bytes.Buffer
	b.WriteString(headerMarker + ": the main configuration of managed mode.\n")
	if o.StreamModule != "" {
		fmt.Fprintf(&b, "load_module %s;\n", quote(o.StreamModule))
	}
	fmt.Fprintf(&b, "pid %s;\n", quote(o.PIDFile))
	fmt.Fprintf(&b, "error_log %s notice;\n", quote(o.ErrorLog))
	if o.Workers > 0 {
		fmt.Fprintf(&b, "worker_processes %d;\n", o.Workers)
	} else {
		b.WriteString("worker_processes auto;\n")
	}
	if o.WorkerShutdownTimeout != "" {
		fmt.Fprintf(&b, "worker_shutdown_timeout %s;\n", o.WorkerShutdownTimeout)
	}
	conns := 1024
	if o.WorkerConnections > 0 {
		conns = o.WorkerConnections
	}
	if o.NoFile > 0 {
		fmt.Fprintf(&b, "worker_rlimit_nofile %d;\n", o.NoFile)
	}
	fmt.Fprintf(&b, "events {\n    worker_connections %d;\n}\n", conns)
	b.WriteString("stream {\n")
	if o.TrafficLog != "" {
		fmt.Fprintf(&b, "    log_format stream_conductor %s;\n", quote(o.TrafficLogFormat))
		fmt.Fprintf(&b, "    access_log %s stream_conductor;\n", quote("syslog:server="+o.TrafficLog+",tag=stream_conductor,nohostname"))
	}
	// Routed streams map TLS server names of up to 253 characters; the
	// default bucket (64) holds names of about 44. It must come before
	// the include, and only once.
	fmt.Fprintf(&b, "    map_hash_bucket_size %d;\n", ManagedMapHashBucketSize)
	fmt.Fprintf(&b, "    include %s;\n", quote(strings.TrimSuffix(o.IncludeDir, "/")+"/*.conf"))
	b.WriteString("}\n")
	return b.Bytes()
}

// quote makes a path safe as one nginx token.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
