package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// config is every setting, each from a flag, else its environment
// variable, else the default.
type config struct {
	DataDir           string
	StreamConfigPath  string
	NginxBin          string
	NginxMode         string
	StreamPrefix      string
	PortRange         string
	PortMin, PortMax  int
	BindAddress       string
	BindPort          int
	StreamBindAddress string
	ApplyTimeout      time.Duration
	ResyncInterval    time.Duration
	StuckAfter        time.Duration // how long a pass may run before /readyz says stuck
	DriftPolicy       string
	// RepairBurst repairs per RepairPer, from DRIFT_REPAIR_RATE.
	RepairBurst int
	RepairPer   time.Duration
	// WorkerShutdownTimeout in nginx time syntax, "" for none.
	WorkerShutdownTimeout string
	WorkerConnections     int
	// MapHashBucketSize is nginx's map_hash_bucket_size in the stream {}
	// that includes our files: it bounds the server names of routes.
	MapHashBucketSize int
	// Shards is NGINX_SHARDS: the most nginx masters managed mode runs.
	Shards          int
	APIToken        string
	APITokenFile    string
	ReadToken       string
	ReadTokenFile   string
	AllowInsecure   bool
	BackendAllow    string
	BanExempt       []netip.Prefix // BAN_EXEMPT
	AuditRetention  int
	AuditMaxBytes   int64
	AllowEmptyState bool
	HealthInterval  time.Duration
	HealthTimeout   time.Duration
	ResolveInterval time.Duration
	ResolveTimeout  time.Duration
	LogLevel        string
	LogFormat       string
	ShowVersion     bool
	// State is where the desired state lives (STATE_STORE and ETCD_*).
	State stateConfig
	// NodeAPIURL is the API's address as the fleet's node list shows it
	// (NODE_API_URL, else derived from BIND_ADDRESS and BIND_PORT).
	NodeAPIURL string
}

// setting is one flag with its environment variable and default.
type setting struct {
	flag, env, def, usage string
}

var settings = []setting{
	{"data-dir", "DATA_DIR", "./data", "directory for the state database (state.db) and, in managed mode, nginx's files"},
	{"stream-config-path", "STREAM_CONFIG_PATH", "", "directory of the per-stream nginx files (default: $DATA_DIR/stream.d in managed mode, /etc/nginx/streams.d in external mode)"},
	{"nginx-bin", "NGINX_BIN", "", "nginx binary (default: nginx from PATH, else /usr/sbin/nginx)"},
	{"nginx-mode", "NGINX_MODE", "managed", "managed: run nginx on a main config of our own; external: a system nginx that includes STREAM_CONFIG_PATH/*.conf inside stream {}"},
	{"stream-prefix", "STREAM_PREFIX", "stream-", "file name prefix of the files stream-conductor owns in STREAM_CONFIG_PATH; others are never touched"},
	{"port-range", "PORT_RANGE", "9000-9009", "inclusive range of ports streams may listen on"},
	{"bind-address", "BIND_ADDRESS", "127.0.0.1", "address the HTTP API listens on"},
	{"bind-port", "BIND_PORT", "8080", "port the HTTP API listens on (never given to a stream)"},
	{"stream-bind-address", "STREAM_BIND_ADDRESS", "", "listen address of streams that name none (empty: every IPv4 address)"},
	{"apply-timeout", "APPLY_TIMEOUT", "10s", "how long a write waits to be applied before it answers 503"},
	{"resync-interval", "RESYNC_INTERVAL", "30s", "period of full reconcile passes, which also retry failed streams"},
	{"stuck-after", "STUCK_AFTER", "0", "how long a reconcile pass may run before /readyz reports the reconciler stuck (0: 3 × APPLY_TIMEOUT, at least 30s)"},
	{"drift-policy", "DRIFT_POLICY", "repair", "what to do with files of ours that someone else changed: repair (rewrite them from the store) or alert (log, count, show in /v1/status, leave them)"},
	{"drift-repair-rate", "DRIFT_REPAIR_RATE", "6/1m", "at most N drift repairs per duration (N/duration), so that a tool fighting us cannot cause a reload storm; drift beyond it waits"},
	{"nginx-map-hash-bucket-size", "NGINX_MAP_HASH_BUCKET_SIZE", "", "external mode: the map_hash_bucket_size of the stream {} that includes STREAM_CONFIG_PATH (default: nginx's 64); it bounds the server names of routes (managed mode writes 512)"},
	{"nginx-worker-connections", "NGINX_WORKER_CONNECTIONS", "0", "managed mode: each nginx worker's worker_connections (0: sized by the number of streams, at least 4096 per shard, 8192 with NGINX_SHARDS=1)"},
	{"nginx-shards", "NGINX_SHARDS", "", "managed mode: the most nginx masters to run, 1-64 (default 16; started as needed): a change reloads only its stream's master"},
	{"nginx-worker-shutdown-timeout", "NGINX_WORKER_SHUTDOWN_TIMEOUT", "10m", "managed mode: how long old nginx workers may keep serving open connections after a reload (0 = until they close)"},
	{"api-token", "API_TOKEN", "", "token every API request but /healthz must carry (Authorization: Bearer ...); prefer API_TOKEN_FILE"},
	{"api-token-file", "API_TOKEN_FILE", "", "file holding API_TOKEN, re-read on SIGHUP"},
	{"api-read-token", "API_READ_TOKEN", "", "a second token that may only read (GET)"},
	{"api-read-token-file", "API_READ_TOKEN_FILE", "", "file holding API_READ_TOKEN, re-read on SIGHUP"},
	{"allow-insecure-remote", "ALLOW_INSECURE_REMOTE", "false", "let the API listen beyond loopback without a token (an open relay: never on a network you do not trust)"},
	{"backend-allow", "BACKEND_ALLOW", "", "comma-separated CIDRs and DNS suffixes (.internal) that backends must be in; empty: anywhere but this host's API, its stream ports and link-local addresses"},
	{"ban-exempt", "BAN_EXEMPT", "", "comma-separated CIDRs that automatic bans never ban (127.0.0.1 and ::1 never are)"},
	{"audit-retention", "AUDIT_RETENTION", "10000", "how many entries the audit log keeps (oldest dropped first)"},
	{"audit-max-bytes", "AUDIT_MAX_BYTES", "16MiB", "how much the audit log's entries may take in all, such as 16MiB or 1GiB (oldest dropped first)"},
	{"allow-empty-state", "ALLOW_EMPTY_STATE", "false", "start even when the state database holds no stream but STREAM_CONFIG_PATH holds stream files of ours, and remove them (a lost or replaced state.db is otherwise refused)"},
	{"health-interval", "HEALTH_INTERVAL", "10s", "how often every TCP backend is probed with a connect (0: never); the result is reported, not acted on"},
	{"health-timeout", "HEALTH_TIMEOUT", "2s", "how long a backend probe may take"},
	{"resolve-interval", "RESOLVE_INTERVAL", "30s", "how often backend host names are looked up again (1s-24h); a name that moved is followed, one that fails keeps its last good addresses"},
	{"resolve-timeout", "RESOLVE_TIMEOUT", "2s", "how long one lookup of a backend host name may take (100ms-1m)"},
	{"state-store", "STATE_STORE", "bbolt", "where the desired state lives: bbolt (a file in DATA_DIR, one node) or etcd (ETCD_ENDPOINTS, shared by a fleet)"},
	{"etcd-endpoints", "ETCD_ENDPOINTS", "", "STATE_STORE=etcd: comma-separated client URLs of the etcd cluster, such as https://10.0.0.1:2379"},
	{"etcd-prefix", "ETCD_PREFIX", "/stream-conductor", "STATE_STORE=etcd: the key prefix the fleet's state lives under"},
	{"etcd-cacert", "ETCD_CACERT", "", "STATE_STORE=etcd: CA certificate (PEM) that signed the etcd servers' certificates"},
	{"etcd-cert", "ETCD_CERT", "", "STATE_STORE=etcd: client certificate (PEM) for etcd's client-cert authentication, with ETCD_KEY"},
	{"etcd-key", "ETCD_KEY", "", "STATE_STORE=etcd: the key of ETCD_CERT (PEM)"},
	{"etcd-username", "ETCD_USERNAME", "", "STATE_STORE=etcd: etcd user, with ETCD_PASSWORD_FILE"},
	{"etcd-password-file", "ETCD_PASSWORD_FILE", "", "STATE_STORE=etcd: file holding the etcd user's password"},
	{"node-name", "NODE_NAME", "", "this node's name in a fleet (default: the host name)"},
	{"node-ttl", "NODE_TTL", "10s", "STATE_STORE=etcd: the lease of this node's entry in GET /v1/nodes, so how long a node that died stays listed (2s-5m)"},
	{"node-api-url", "NODE_API_URL", "", "this node's API address as GET /v1/nodes shows it, such as http://10.0.0.5:8080 (default: http://BIND_ADDRESS:BIND_PORT, with this host's address when BIND_ADDRESS is 0.0.0.0 or ::)"},
	{"log-level", "LOG_LEVEL", "info", "debug, info, warn or error"},
	{"log-format", "LOG_FORMAT", "auto", "json, console, or auto (console on a terminal, json otherwise)"},
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// parseConfig reads flags from args and the environment from getenv. It is
// long because it checks one setting after another, each with its own message.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("stream-conductor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	values := make(map[string]*string, len(settings))
	for _, s := range settings {
		def := s.def
		if v := getenv(s.env); v != "" {
			def = v
		}
		values[s.flag] = fs.String(s.flag, def, s.usage+" ["+s.env+"]")
	}
	var c config
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	fs.Usage = func() { usage(fs, stderr) }
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (settings are flags such as -port-range or environment variables)", fs.Arg(0))
	}
	v := func(name string) string { return strings.TrimSpace(*values[name]) }
	c.DataDir = v("data-dir")
	c.StreamConfigPath = v("stream-config-path")
	c.NginxBin = v("nginx-bin")
	c.NginxMode = v("nginx-mode")
	c.StreamPrefix = v("stream-prefix")
	c.PortRange = v("port-range")
	c.BindAddress = v("bind-address")
	c.StreamBindAddress = v("stream-bind-address")
	c.LogLevel = v("log-level")
	c.APIToken = v("api-token")
	c.APITokenFile = v("api-token-file")
	c.ReadToken = v("api-read-token")
	c.ReadTokenFile = v("api-read-token-file")
	c.BackendAllow = v("backend-allow")
	c.LogFormat = v("log-format")

	var err error
	if c.NginxMode != "managed" && c.NginxMode != "external" {
		return c, fmt.Errorf("NGINX_MODE must be managed or external, not %q", c.NginxMode)
	}
	if c.StreamConfigPath == "" {
		c.StreamConfigPath = filepath.Join(c.DataDir, "stream.d")
		if c.NginxMode == "external" {
			c.StreamConfigPath = "/etc/nginx/streams.d"
		}
	}
	if c.NginxBin == "" {
		c.NginxBin = "nginx"
		if _, err := exec.LookPath("nginx"); err != nil {
			c.NginxBin = "/usr/sbin/nginx"
		}
	}
	if !prefixRE.MatchString(c.StreamPrefix) {
		return c, fmt.Errorf("STREAM_PREFIX %q must be letters, digits, '.', '_' or '-' (it starts file names)", c.StreamPrefix)
	}
	if c.PortMin, c.PortMax, err = parseRange(c.PortRange); err != nil {
		return c, err
	}
	if c.BindPort, err = strconv.Atoi(v("bind-port")); err != nil || !stream.ValidPort(c.BindPort) {
		return c, fmt.Errorf("BIND_PORT must be a port 1-65535, not %q", v("bind-port"))
	}
	if _, err := netip.ParseAddr(strings.Trim(c.BindAddress, "[]")); err != nil && c.BindAddress != "localhost" {
		return c, fmt.Errorf("BIND_ADDRESS must be an IP address, not %q", c.BindAddress)
	}
	if c.StreamBindAddress != "" {
		a, err := netip.ParseAddr(strings.Trim(c.StreamBindAddress, "[]"))
		if err != nil {
			return c, fmt.Errorf("STREAM_BIND_ADDRESS must be an IP address, not %q", c.StreamBindAddress)
		}
		c.StreamBindAddress = a.String()
	}
	if c.ApplyTimeout, err = parseDuration("APPLY_TIMEOUT", v("apply-timeout")); err != nil {
		return c, err
	}
	if c.ResyncInterval, err = parseDuration("RESYNC_INTERVAL", v("resync-interval")); err != nil {
		return c, err
	}
	if c.StuckAfter, err = time.ParseDuration(v("stuck-after")); err != nil || c.StuckAfter < 0 {
		return c, fmt.Errorf("STUCK_AFTER must be a duration such as 30s, or 0, not %q", v("stuck-after"))
	}
	if c.StuckAfter == 0 {
		c.StuckAfter = max(30*time.Second, 3*c.ApplyTimeout)
	}
	c.DriftPolicy = v("drift-policy")
	if c.DriftPolicy != "repair" && c.DriftPolicy != "alert" {
		return c, fmt.Errorf("DRIFT_POLICY must be repair or alert, not %q", c.DriftPolicy)
	}
	n, per, ok := strings.Cut(v("drift-repair-rate"), "/")
	c.RepairBurst, err = strconv.Atoi(n)
	if c.RepairPer, _ = time.ParseDuration(per); !ok || err != nil || c.RepairBurst < 1 || c.RepairPer <= 0 {
		return c, fmt.Errorf("DRIFT_REPAIR_RATE must be N/duration such as 6/1m, not %q", v("drift-repair-rate"))
	}
	wst, err := time.ParseDuration(v("nginx-worker-shutdown-timeout"))
	if err != nil || wst < 0 || (wst > 0 && wst < time.Second) {
		return c, fmt.Errorf("NGINX_WORKER_SHUTDOWN_TIMEOUT must be 0 or a duration of at least 1s such as 10m, not %q", v("nginx-worker-shutdown-timeout"))
	}
	if c.WorkerConnections, err = strconv.Atoi(v("nginx-worker-connections")); err != nil || c.WorkerConnections < 0 {
		return c, fmt.Errorf("NGINX_WORKER_CONNECTIONS must be 0 or a positive number, not %q", v("nginx-worker-connections"))
	}
	if c.MapHashBucketSize, err = parseBucketSize(v("nginx-map-hash-bucket-size"), c.NginxMode); err != nil {
		return c, err
	}
	if c.Shards, err = parseShards(v("nginx-shards"), c.NginxMode); err != nil {
		return c, err
	}
	if wst > 0 {
		c.WorkerShutdownTimeout = strconv.FormatInt(int64(wst/time.Second), 10) + "s"
	}
	if c.BanExempt, err = parseBanExempt(v("ban-exempt")); err != nil {
		return c, err
	}
	if c.AllowInsecure, err = strconv.ParseBool(v("allow-insecure-remote")); err != nil {
		return c, fmt.Errorf("ALLOW_INSECURE_REMOTE must be true or false, not %q", v("allow-insecure-remote"))
	}
	if c.HealthInterval, err = time.ParseDuration(v("health-interval")); err != nil || c.HealthInterval < 0 {
		return c, fmt.Errorf("HEALTH_INTERVAL must be a duration such as 10s, or 0, not %q", v("health-interval"))
	}
	if c.HealthTimeout, err = parseDuration("HEALTH_TIMEOUT", v("health-timeout")); err != nil {
		return c, err
	}
	if c.ResolveInterval, err = time.ParseDuration(v("resolve-interval")); err != nil || c.ResolveInterval < time.Second || c.ResolveInterval > 24*time.Hour {
		return c, fmt.Errorf("RESOLVE_INTERVAL must be a duration from 1s to 24h such as 30s, not %q", v("resolve-interval"))
	}
	if c.ResolveTimeout, err = time.ParseDuration(v("resolve-timeout")); err != nil || c.ResolveTimeout < 100*time.Millisecond || c.ResolveTimeout > time.Minute {
		return c, fmt.Errorf("RESOLVE_TIMEOUT must be a duration from 100ms to 1m such as 2s, not %q", v("resolve-timeout"))
	}
	if c.AuditRetention, err = strconv.Atoi(v("audit-retention")); err != nil || c.AuditRetention < 1 {
		return c, fmt.Errorf("AUDIT_RETENTION must be a positive number, not %q", v("audit-retention"))
	}
	if c.AuditMaxBytes, err = parseBytes(v("audit-max-bytes")); err != nil || c.AuditMaxBytes < minAuditBytes {
		return c, fmt.Errorf("AUDIT_MAX_BYTES must be a size of at least 64KiB such as 16MiB, not %q", v("audit-max-bytes"))
	}
	if c.AllowEmptyState, err = strconv.ParseBool(v("allow-empty-state")); err != nil {
		return c, fmt.Errorf("ALLOW_EMPTY_STATE must be true or false, not %q", v("allow-empty-state"))
	}
	if c.APIToken != "" && c.APITokenFile != "" || c.ReadToken != "" && c.ReadTokenFile != "" {
		return c, fmt.Errorf("give a token or its file, not both")
	}
	for _, tok := range []struct{ name, value string }{{"API_TOKEN", c.APIToken}, {"API_READ_TOKEN", c.ReadToken}} {
		if tok.value != "" && len(tok.value) < minTokenLength {
			return c, fmt.Errorf("%s is too short (%d characters): a token must be at least %d characters (make one with: head -c 32 /dev/urandom | base64)", tok.name, len(tok.value), minTokenLength)
		}
	}
	switch c.LogFormat {
	case "json", "console", "auto":
	default:
		return c, fmt.Errorf("LOG_FORMAT must be json, console or auto, not %q", c.LogFormat)
	}
	if c.NodeAPIURL, err = nodeAPIURL(v("node-api-url"), c.BindAddress, c.BindPort); err != nil {
		return c, err
	}
	c.State, err = parseStateConfig(v)
	return c, err
}

// minTokenLength is the shortest token taken, as the token files require.
const minTokenLength = 16

// minAuditBytes is the smallest audit byte budget: a few of the largest
// entries.
const minAuditBytes = 64 << 10

// parseBytes reads a size: a number of bytes, or one with a KiB, MiB or
// GiB suffix.
func parseBytes(v string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("not a size: %q", v)
	}
	return n * mult, nil
}

func parseRange(r string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(r, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || !stream.ValidPort(lo) || !stream.ValidPort(hi) || lo > hi {
		return 0, 0, fmt.Errorf("PORT_RANGE must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535, e.g. 9000-9009, not %q", r)
	}
	return lo, hi, nil
}

func parseDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s must be a positive duration such as 10s, not %q", name, v)
	}
	return d, nil
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, `stream-conductor: forward TCP/UDP ports of this host to backends through nginx.

Usage: stream-conductor [flags]                    run the daemon
       stream-conductor ls|get|create|rm|status|apply|export|import ...
                                                  talk to a running daemon (each -h for its usage)
       stream-conductor migrate --from FILE|etcd --to etcd|FILE [--apply] [--prune]
                                                  copy the desired state between bbolt and etcd

Every flag can also be set by the environment variable in brackets; a flag
wins over its variable. Flags:

`)
	fs.PrintDefaults()
}

// ensureDir creates dir (and parents) if it is missing.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return nil
}

// DefaultShards is NGINX_SHARDS's default: at 10,000 streams a shard then
// holds 625, so that a reload costs about a sixteenth of one master's,
// for 1.3-1.4 times one master's memory (docs/nginx-pool-design.md, §3.1).
const DefaultShards = 16

// parseShards reads NGINX_SHARDS: 1-64 in managed mode (default
// DefaultShards); external mode drives one nginx, not ours to multiply.
func parseShards(v, mode string) (int, error) {
	if mode == "external" {
		if v != "" && v != "1" {
			return 0, fmt.Errorf("NGINX_SHARDS is for managed mode: NGINX_MODE=external drives the one nginx you run")
		}
		return 1, nil
	}
	if v == "" {
		return DefaultShards, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 64 {
		return 0, fmt.Errorf("NGINX_SHARDS must be a number from 1 to 64, not %q", v)
	}
	return n, nil
}

// parseBucketSize reads NGINX_MAP_HASH_BUCKET_SIZE: managed mode writes
// nginxconf.ManagedMapHashBucketSize itself; external mode takes the
// operator's word, nginx's default when none.
func parseBucketSize(v, mode string) (int, error) {
	if mode == "managed" {
		if v != "" && v != strconv.Itoa(nginxconf.ManagedMapHashBucketSize) {
			return 0, fmt.Errorf("NGINX_MAP_HASH_BUCKET_SIZE is for external mode; managed mode writes map_hash_bucket_size %d itself", nginxconf.ManagedMapHashBucketSize)
		}
		return nginxconf.ManagedMapHashBucketSize, nil
	}
	if v == "" {
		return nginxconf.DefaultMapHashBucketSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 32 || n > 4096 || n&(n-1) != 0 {
		return 0, fmt.Errorf("NGINX_MAP_HASH_BUCKET_SIZE must be a power of two from 32 to 4096 (as in nginx.conf), not %q", v)
	}
	return n, nil
}
