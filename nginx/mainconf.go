package nginx

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/streamconductor/stream-conductor/internal/safefile"
	"github.com/streamconductor/stream-conductor/nginxconf"
)

// The main configuration of managed mode: rendered once nginx's build is
// known, sized for the number of streams, and kept ours on disk.

// Prepare inspects the nginx binary (`nginx -V`) and finds the stream
// module, once; it sizes the main configuration for streams streams (when
// that changes worker_connections, the main configuration changes and the
// next apply reloads it); then, at every call, it makes sure the main
// configuration on disk is ours (ensureMain): a file edited or removed by
// hand is written again, and the next apply reloads it (TakeMainRepaired).
func (m *Managed) Prepare(ctx context.Context, streams int) error {
	if err := m.resize(streams); err != nil {
		return err
	}
	if m.main == nil {
		if err := m.inspect(ctx); err != nil {
			return err
		}
		m.main = m.renderMain()
	}
	return m.ensureMain()
}

// inspect runs `nginx -V` and locates the stream module.
func (m *Managed) inspect(ctx context.Context) error {
	out, err := run(ctx, m.cfg.Bin, "-V")
	if err != nil {
		return fmt.Errorf("run %s -V: %w (is nginx installed? set NGINX_BIN)", m.cfg.Bin, err)
	}
	build := nginxconf.ParseBuildInfo(out)
	module := ""
	switch build.Stream {
	case nginxconf.StreamMissing:
		return fmt.Errorf("%s was built without the stream module", m.cfg.Bin)
	case nginxconf.StreamDynamic:
		module = filepath.Join(build.ModulesPath, "ngx_stream_module.so")
		if _, err := os.Stat(module); err != nil {
			return fmt.Errorf("nginx loads the stream module dynamically but %s is missing: install libnginx-mod-stream", module)
		}
	}
	m.module = module
	m.cfg.Log.Info().Str("nginx", m.cfg.Bin).Str("version", build.Version).Msg("managed nginx")
	return nil
}

// renderMain renders the main configuration.
func (m *Managed) renderMain() []byte {
	nofile := noFile()
	conns := m.connections(nofile)
	if canRaiseHard() && nofile < conns+masterReserve {
		// NGINX_WORKER_CONNECTIONS above the default: a slot is a
		// descriptor, so back every one (root workers may raise their
		// limit past ours).
		nofile = conns + masterReserve
	}
	return nginxconf.RenderMain(nginxconf.MainOptions{
		StreamModule:          m.module,
		PIDFile:               m.pidFile,
		ErrorLog:              m.errorLog,
		IncludeDir:            m.cfg.IncludeDir,
		WorkerShutdownTimeout: m.cfg.WorkerShutdownTimeout,
		NoFile:                nofile,
		WorkerConnections:     conns,
		TrafficLog:            m.cfg.TrafficLog,
		TrafficLogFormat:      m.cfg.TrafficLogFormat,
		Workers:               m.cfg.Workers,
	})
}

// MainDrifted reports whether the main configuration on disk is not ours
// (edited, replaced or removed). It reads one small file.
func (m *Managed) MainDrifted() bool {
	if m.main == nil {
		return false
	}
	cur, err := safefile.ReadRegular(m.conf)
	return err != nil || !bytes.Equal(cur, m.main)
}

// ensureMain writes the main configuration unless the file on disk holds
// it already. When it differs while our nginx runs, someone changed it
// under nginx, which may have loaded it (a reload by hand): that is drift,
// logged once, and TakeMainRepaired tells the next pass to reload.
func (m *Managed) ensureMain() error {
	if !m.MainDrifted() {
		return nil
	}
	if err := m.writeMain(); err != nil {
		return err
	}
	if m.PID() != 0 {
		m.mainRepaired = true
		m.cfg.Log.Warn().Str("file", m.conf).Msg("the main nginx configuration on disk is not ours (edited or removed); rewrote it, nginx will reload it")
	}
	return nil
}

// TakeMainRepaired reports, once, that ensureMain rewrote the main
// configuration under a running nginx.
func (m *Managed) TakeMainRepaired() bool {
	r := m.mainRepaired
	m.mainRepaired = false
	return r
}

// writeMain writes m.main to disk.
func (m *Managed) writeMain() error {
	if err := os.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		return err
	}
	if err := safefile.Write(m.cfg.Dir, "nginx.conf", m.main); err != nil {
		return fmt.Errorf("write %s: %w", m.conf, err)
	}
	return safefile.SyncDir(m.cfg.Dir)
}

// connections sizes worker_connections: at least 8,192 slots (4,096
// sessions of two slots each, per worker; 4,096 for a shard's one worker), and twice the listening
// sockets plus 2,048 as streams grow, in powers of two so that it changes
// rarely, within the descriptors a worker may open. A bigger table than needed costs every reload: each
// new worker allocates it (32,768 slots add ~4 ms to a reload on the
// benchmark machine).
func (m *Managed) connections(nofile int) int {
	if m.cfg.WorkerConnections > 0 {
		return m.cfg.WorkerConnections
	}
	need := 2 * (m.streams + 1024)
	n := 8192
	if m.cfg.Workers == 1 {
		n = 4096 // a shard: one worker, fewer streams, many masters
	}
	for n < need {
		n *= 2
	}
	if c := slotCap(nofile); c > 0 && n > c {
		n = c
	}
	return n
}

// slotCap is the largest worker_connections that nofile descriptors back:
// a slot is a descriptor, and a worker keeps 64 for its logs, epoll and
// channel (0: no limit known).
func slotCap(nofile int) int {
	if nofile <= 0 {
		return 0
	}
	return max(1, nofile-64)
}

// resize sizes the main configuration for n streams; when that changes
// worker_connections, the main configuration is rendered and written
// again.
func (m *Managed) resize(n int) error {
	if n == m.streams {
		return nil
	}
	before := m.connections(noFile())
	m.streams = n
	if m.main == nil || m.connections(noFile()) == before {
		return nil
	}
	m.main = m.renderMain()
	return m.writeMain()
}

// noFile is the open-file limit for nginx's workers (worker_rlimit_nofile):
// 65536, or the hard limit nginx inherits from us when it is lower and the
// workers may not raise theirs past it (workerNoFile). Each stream costs a
// listening socket in every worker, each session two descriptors.
func noFile() int {
	var rl syscall.Rlimit
	if !canRaiseHard() && (syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil || rl.Max == 0) {
		return 0
	}
	return workerNoFile(rl.Max)
}

func isRoot() bool { return os.Geteuid() == 0 }
