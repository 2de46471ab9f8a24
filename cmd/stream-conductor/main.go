// Command stream-conductor is the daemon: it serves the HTTP API, keeps the
// desired state in bbolt and drives nginx to match it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/bans"
	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/health"
	"github.com/streamconductor/stream-conductor/httpapi"
	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/metrics"
	"github.com/streamconductor/stream-conductor/nginx"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/policy"
	"github.com/streamconductor/stream-conductor/reconcile"
	"github.com/streamconductor/stream-conductor/resolve"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
	"github.com/streamconductor/stream-conductor/writes"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if safeArg(1) == "migrate" {
		os.Exit(runMigrate(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	if _, ok := subcommands[safeArg(1)]; ok {
		os.Exit(runClient(os.Args[1], os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stream-conductor:", err)
		os.Exit(2)
	}
	if cfg.ShowVersion {
		fmt.Println("stream-conductor", version)
		return
	}
	log := newLogger(cfg)
	if os.Getenv("GOGC") == "" {
		// An appliance daemon: trade a little CPU for a smaller footprint.
		debug.SetGCPercent(50)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("stream-conductor stopped")
		os.Exit(1)
	}
}

func newLogger(cfg config) zerolog.Logger {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil || cfg.LogLevel == "" {
		level = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	var w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			format = "console"
		}
	}
	if format == "console" {
		return zerolog.New(w).Level(level).With().Timestamp().Logger()
	}
	return zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
}

// eventsWindow is how many of the latest events GET /v1/events keeps for
// clients that reconnect with Last-Event-ID.
const eventsWindow = 1024

// run wires the daemon in start-up order: tokens, the desired state,
// nginx, the resolver and the reconciler, the write path and the API; then
// it serves until ctx ends. nginx keeps forwarding after it returns.
func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	if err := ensureDir(cfg.DataDir); err != nil {
		return err
	}
	tokens, err := loadTokens(cfg, log)
	if err != nil {
		return err
	}
	cidrs, suffixes, err := policy.ParseAllow(cfg.BackendAllow)
	if err != nil {
		return err
	}
	st, err := openState(cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	of := raiseOpenFiles(cfg, log)
	ngx, tc, err := newNginx(cfg, st, of, log)
	if err != nil {
		return err
	}
	// The node's events (GET /v1/events): every component tells the
	// one bus what happens.
	bus := events.New(eventsWindow)
	var rec *reconcile.Pool
	bm := newBans(cfg, st, tc, bus, func() { rec.Trigger() }, log) // before tc runs: it feeds the bans
	if tc != nil {
		defer tc.Close()
		go tc.Run()
	}

	// Backend names are resolved here, never by nginx: the API's check,
	// the rules and the rendered files all see the same addresses.
	resolver := resolve.New(resolve.Config{
		Timeout: cfg.ResolveTimeout, Interval: cfg.ResolveInterval,
		OnChange: func() { rec.Trigger() },
		Log:      log,
	})
	backends := &policy.Backends{AllowCIDRs: cidrs, AllowSuffixes: suffixes, APIPort: cfg.BindPort,
		PortMin: cfg.PortMin, PortMax: cfg.PortMax, StreamBind: cfg.StreamBindAddress, Lookup: resolver.Lookup}
	var mx *metrics.Metrics
	pub := &publisher{}
	rec = newReconciler(cfg, st, ngx, resolver, backends, &mx, pub.Publish, bus, of, tc, bm, log)
	var prober *health.Prober
	if cfg.HealthInterval > 0 {
		prober = health.New(st)
		prober.Interval, prober.Timeout = cfg.HealthInterval, cfg.HealthTimeout
		prober.Events = bus
	}
	mx = metrics.New(rec, st, tc, prober, cfg.State.NodeName)
	mx.WatchEvents(bus.Stats)
	if bm != nil {
		mx.WatchBans(bm.Stats)
	}

	addr := net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.BindPort))
	nodes, node, err := registerNode(ctx, cfg, st, func() stream.NodeInfo {
		return httpapi.LocalNode(rec, cfg.State.NodeName, cfg.NodeAPIURL, version)
	}, log)
	if err != nil {
		return err
	}
	if node != nil {
		defer node.Close()
		pub.node = node
	}
	reg := watchNodes(st, bus, log)
	if reg != nil {
		defer reg.close()
	}
	fl := newFleet(cfg, st, rec, reg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("API listen on %s: %w (set BIND_ADDRESS/BIND_PORT)", addr, err)
	}
	ephemeral, kernelReserved, err := procfs.EphemeralPorts()
	if err != nil {
		log.Warn().Err(err).Msg("the kernel's ephemeral port range is unknown: port ranges are not kept out of it")
	}
	wp := writes.New(writes.Config{
		PortMin: cfg.PortMin, PortMax: cfg.PortMax, Reserved: []int{cfg.BindPort}, MapHashBucketSize: cfg.MapHashBucketSize,
		NoSessionLog: tc == nil, Ephemeral: ephemeral, KernelReserved: kernelReserved,
		ApplyTimeout: cfg.ApplyTimeout, OnUndo: httpapi.AuditUndos(st, log), Log: log,
	}, st, fl, backends)
	defer wp.Close()
	defer startExpiry(wp, log)()
	api := httpapi.New(httpapi.Config{
		PortMin: cfg.PortMin, PortMax: cfg.PortMax,
		ApplyTimeout: cfg.ApplyTimeout, Version: version, NginxMode: cfg.NginxMode,
		Tokens: tokens, LoopbackOnly: isLoopback(cfg.BindAddress),
		Metrics:    mx.Handler(),
		Traffic:    trafficSource(tc),
		Health:     healthSource(prober),
		OnRequest:  mx.ObserveRequest,
		Fleet:      fl,
		Nodes:      nodes,
		NodeName:   cfg.State.NodeName,
		APIAddress: cfg.NodeAPIURL,
		Events:     bus,
		Bans:       banSource(bm),
		Log:        log,
	}, st, rec, wp)
	defer reloadTokensOnHUP(tokens, log)()

	defer startBackground(rec, resolver, prober, tc, bus)()
	defer startBans(bm, tc)()
	log.Info().Str("api", "http://"+addr).Str("port_range", cfg.PortRange).Str("nginx_mode", cfg.NginxMode).
		Str("data_dir", cfg.DataDir).Str("stream_config_path", cfg.StreamConfigPath).Str("version", version).
		Bool("auth", tokens.Enabled()).Str("backend_allow", cfg.BackendAllow).Msg("stream-conductor started")
	if !tokens.Enabled() {
		log.Warn().Msg("no API token is set: the API is open to every local user; set API_TOKEN_FILE to require one")
	}
	srv := newHTTPServer(api, cfg)
	srv.RegisterOnShutdown(api.CloseEvents)
	srv.ConnContext = httpapi.ConnContext
	return serve(ctx, srv, ln, log)
}

// startBackground runs the reconciler, the resolver's refreshes, the
// prober (if any) and the traffic events (managed mode) until the
// returned stop, which waits for the reconciler's pass to end.
func startBackground(rec *reconcile.Pool, resolver *resolve.Resolver, prober *health.Prober, tc *traffic.Collector, bus *events.Bus) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	recDone := make(chan struct{})
	go func() {
		defer close(recDone)
		rec.Run(ctx)
	}()
	go resolver.Run(ctx)
	if prober != nil {
		go prober.Run(ctx)
	}
	if tc != nil {
		go tc.PublishEvery(ctx, bus, events.TrafficEvery)
	}
	return func() {
		cancel()
		<-recDone
	}
}

// loadTokens reads the API tokens and refuses an API beyond loopback
// without one, unless ALLOW_INSECURE_REMOTE says so.
func loadTokens(cfg config, log zerolog.Logger) (*httpapi.TokenSource, error) {
	tokens := &httpapi.TokenSource{WriteToken: cfg.APIToken, WriteFile: cfg.APITokenFile, ReadToken: cfg.ReadToken, ReadFile: cfg.ReadTokenFile,
		IDKeyFile: filepath.Join(cfg.DataDir, "token-id.key")}
	if err := tokens.Load(); err != nil {
		return nil, err
	}
	if !tokens.Enabled() && !isLoopback(cfg.BindAddress) {
		if !cfg.AllowInsecure {
			return nil, fmt.Errorf("BIND_ADDRESS %s is not loopback and no API token is set: anyone who reaches it could open ports into your network; set API_TOKEN_FILE, or ALLOW_INSECURE_REMOTE=true if you really mean it", cfg.BindAddress)
		}
		log.Warn().Str("bind_address", cfg.BindAddress).Msg("INSECURE: the API listens beyond loopback WITHOUT a token (ALLOW_INSECURE_REMOTE=true); anyone who reaches it can open ports to anywhere")
	}
	return tokens, nil
}

// openState opens the desired state and refuses an empty one over stream
// files of ours (see checkEmptyState).
func openState(cfg config, log zerolog.Logger) (stateStore, error) {
	st, where, err := openStore(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := ensureDir(cfg.StreamConfigPath); err != nil {
		st.Close()
		return nil, err
	}
	specs, rev := st.List()
	if err := checkEmptyState(len(specs), rev, cfg.StreamConfigPath, cfg.StreamPrefix, where, cfg.AllowEmptyState, log); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// newReconciler builds the pool of reconcilers; its metrics hooks read
// *mx, which is set once the metrics exist (they need the reconciler).
// After every pass, passed is called (the fleet's node registry).
func newReconciler(cfg config, st stateStore, driver func(k int) (reconcile.Nginx, string, error), resolver *resolve.Resolver, backends *policy.Backends, mx **metrics.Metrics, passed func(), pub events.Publisher, of *stream.OpenFiles, tc *traffic.Collector, bm *bans.Manager, log zerolog.Logger) *reconcile.Pool {
	banned, bansApplied := banHooks(bm)
	return reconcile.NewPool(reconcile.PoolConfig{
		Config: reconcile.Config{
			Dir:            cfg.StreamConfigPath,
			Render:         nginxconf.RenderOptions{Prefix: cfg.StreamPrefix, DefaultBind: cfg.StreamBindAddress},
			StateFile:      filepath.Join(cfg.DataDir, "applied"),
			ResyncInterval: cfg.ResyncInterval,
			DriftPolicy:    reconcile.DriftPolicy(cfg.DriftPolicy),
			RepairRate:     reconcile.RepairRate{Burst: cfg.RepairBurst, Per: cfg.RepairPer},
			VerifyTimeout:  cfg.ApplyTimeout / 2,
			StuckAfter:     cfg.StuckAfter,
			OnPass: func(d time.Duration, err error) {
				(*mx).ObservePass(d, err)
				passed()
			},
			OnApply:   func(op string, d time.Duration, err error) { (*mx).ObserveApply(op, d, err) },
			Resolver:  resolver,
			Policy:    backends,
			Node:      cfg.State.NodeName,
			OpenFiles: of,
			Events:    pub,
			Log:       log,
			Bans:      banned, OnBansApplied: bansApplied,
		},
		Shards: cfg.Shards,
		Driver: driver,
		Found:  foundShards(cfg),
		OnList: listHook(tc, bm),
	}, st)
}

// raiseOpenFiles, in managed mode, sets the soft open-file limit to the
// hard one before nginx is started, so that its master inherits it, and
// says how many streams that allows: a warning when it is fewer than
// PORT_RANGE holds.
func raiseOpenFiles(cfg config, log zerolog.Logger) *stream.OpenFiles {
	if cfg.NginxMode != "managed" {
		return nil
	}
	of, err := nginx.RaiseOpenFiles(shardWorkers(cfg.Shards))
	if err != nil {
		log.Warn().Err(err).Msg("could not raise the open-file limit; nginx gets the current one")
	}
	// Each master of the pool holds its own streams' sockets under the
	// limit it inherits.
	total := of.MaxStreams * cfg.Shards
	ev := log.Info()
	msg := "open-file limit: nginx may listen on this many streams"
	if span := cfg.PortMax - cfg.PortMin + 1; cfg.PortMax > 0 && total < span {
		ev = log.Warn().Int("port_range_size", span)
		msg = "the open-file limit caps the number of streams below PORT_RANGE; writes beyond max_streams are refused. Raise it: ulimit -n, systemd LimitNOFILE=, compose ulimits: nofile"
	}
	ev.Uint64("nofile_soft", of.Soft).Uint64("nofile_hard", of.Hard).Int("max_streams", total).
		Int("max_streams_per_master", of.MaxStreams).Int("nginx_shards", cfg.Shards).Msg(msg)
	return &of
}

// newHTTPServer bounds what a client may take: header and body time,
// header size, and a write deadline past the longest wait for an apply.
func newHTTPServer(h http.Handler, cfg config) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      cfg.ApplyTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          stdlog.New(io.Discard, "", 0),
	}
}

// reloadTokensOnHUP re-reads the token files at every SIGHUP until the
// returned stop is called.
func reloadTokensOnHUP(tokens *httpapi.TokenSource, log zerolog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := tokens.Load(); err != nil {
				log.Error().Err(err).Msg("SIGHUP: token files not reloaded; the tokens in force stay")
				continue
			}
			log.Info().Msg("SIGHUP: token files reloaded")
		}
	}()
	return func() { signal.Stop(hup) }
}

// serve answers the API on ln, tells systemd it is ready, and returns when
// ctx ends (after a graceful shutdown) or the server fails.
func serve(ctx context.Context, srv *http.Server, ln net.Listener, log zerolog.Logger) error {
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	if err := sdNotify("READY=1"); err != nil {
		log.Warn().Err(err).Msg("could not tell systemd we are ready")
	}
	select {
	case <-ctx.Done():
		log.Info().Msg("shutting down; nginx keeps forwarding")
		sdNotify("STOPPING=1")
	case err := <-srvErr:
		return fmt.Errorf("API server: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn().Err(err).Msg("API shutdown")
	}
	return nil
}

// healthSource is p as the API's optional source (nil when disabled).
func healthSource(p *health.Prober) httpapi.HealthSource {
	if p == nil {
		return nil
	}
	return p
}

// trafficSource is tc as the API's optional source (nil in external mode).
func trafficSource(tc *traffic.Collector) httpapi.TrafficSource {
	if tc == nil {
		return nil
	}
	return tc
}

func safeArg(i int) string {
	if len(os.Args) > i {
		return os.Args[i]
	}
	return ""
}

// isLoopback reports whether the API's bind address reaches only this
// host.
func isLoopback(addr string) bool {
	if addr == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(addr, "[]"))
	return err == nil && a.IsLoopback()
}
