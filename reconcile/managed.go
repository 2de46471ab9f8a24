package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// ManagedConfig places managed mode's files.
type ManagedConfig struct {
	Bin string
	// Dir holds nginx.conf, nginx.pid, error.log (DATA_DIR/nginx).
	Dir string
	// IncludeDir is STREAM_CONFIG_PATH.
	IncludeDir string
	// WorkerShutdownTimeout, in nginx time syntax ("" = nginx's default).
	WorkerShutdownTimeout string
	// TrafficLog, when set, is the address nginx sends its session log
	// to (see package traffic), and TrafficLogFormat its format.
	TrafficLog, TrafficLogFormat string
	// WorkerConnections fixes nginx's worker_connections (0: sized by
	// the number of streams, see connections).
	WorkerConnections int
	// ApplyTimeout bounds how long Start and Reload wait for nginx.
	ApplyTimeout time.Duration
	Log          zerolog.Logger
}

// Managed runs nginx itself with -p/-c on a main configuration it writes.
// nginx daemonizes, so it outlives stream-conductor; the next start adopts
// the master from its pid file.
type Managed struct {
	cfg      ManagedConfig
	conf     string
	pidFile  string
	errorLog string
	main     []byte
	build    nginxconf.BuildInfo
	module   string
	streams  int // how many streams the main configuration is sized for
	// mainRepaired: the main configuration was rewritten under a running
	// nginx (see ensureMain).
	mainRepaired bool
	// logMark is how far Signalled read the error log.
	logMark logMark
}

// NewManaged places managed mode's files under cfg.Dir. It runs nothing:
// the nginx binary is checked by Prepare, at every pass until it passes, so
// that a missing or broken nginx leaves the API up and /readyz saying why.
func NewManaged(cfg ManagedConfig) (*Managed, error) {
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	include, err := filepath.Abs(cfg.IncludeDir)
	if err != nil {
		return nil, err
	}
	cfg.Dir, cfg.IncludeDir = dir, include
	return &Managed{
		cfg:      cfg,
		conf:     filepath.Join(dir, "nginx.conf"),
		pidFile:  filepath.Join(dir, "nginx.pid"),
		errorLog: filepath.Join(dir, "error.log"),
	}, nil
}

// Prepare inspects the nginx binary (`nginx -V`) and finds the stream
// module, once; then, at every call, it makes sure the main configuration
// on disk is ours (ensureMain): a file edited or removed by hand is written
// again, and the next apply reloads it (TakeMainRepaired).
func (m *Managed) Prepare(ctx context.Context) error {
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
	m.build, m.module = build, module
	m.cfg.Log.Info().Str("nginx", m.cfg.Bin).Str("version", build.Version).Msg("managed nginx")
	return nil
}

// renderMain renders the main configuration.
func (m *Managed) renderMain() []byte {
	nofile := noFile()
	return nginxconf.RenderMain(nginxconf.MainOptions{
		StreamModule:          m.module,
		PIDFile:               m.pidFile,
		ErrorLog:              m.errorLog,
		IncludeDir:            m.cfg.IncludeDir,
		WorkerShutdownTimeout: m.cfg.WorkerShutdownTimeout,
		NoFile:                nofile,
		WorkerConnections:     m.connections(nofile),
		TrafficLog:            m.cfg.TrafficLog,
		TrafficLogFormat:      m.cfg.TrafficLogFormat,
	})
}

// MainDrifted reports whether the main configuration on disk is not ours
// (edited, replaced or removed). It reads one small file.
func (m *Managed) MainDrifted() bool {
	if m.main == nil {
		return false
	}
	cur, err := readRegular(m.conf)
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
	if err := writeAtomic(m.cfg.Dir, "nginx.conf", m.main); err != nil {
		return fmt.Errorf("write %s: %w", m.conf, err)
	}
	return syncDir(m.cfg.Dir)
}

// connections sizes worker_connections: at least 8,192 slots (4,096
// sessions of two slots each, per worker), and twice the listening
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
	for n < need {
		n *= 2
	}
	if nofile > 0 && n > nofile/2 {
		n = max(1024, nofile/2)
	}
	return n
}

// Resize sizes the main configuration for n streams; when that changes
// worker_connections, the main configuration changes and the next apply
// reloads it.
func (m *Managed) Resize(n int) error {
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

// Version is the nginx version `nginx -V` reported.
func (m *Managed) Version() string { return m.build.Version }

// PIDFile is where the master's pid is kept.
func (m *Managed) PIDFile() string { return m.pidFile }

// Confirms is true: Start returns once nginx has bound every port (it does
// so before it daemonizes), Reload once the master has started workers on
// the new configuration (it binds new ports and closes dropped ones
// before that) and, when asked, the old workers stopped accepting.
func (m *Managed) Confirms() bool { return true }

// MainConfig returns the main nginx.conf.
func (m *Managed) MainConfig() []byte { return m.main }

func (m *Managed) args(extra ...string) []string {
	return append([]string{"-p", filepath.Dir(m.conf), "-c", m.conf, "-e", m.errorLog}, extra...)
}

// PID returns the master's pid if a live nginx master serving our
// configuration has it, and 0 otherwise. A stale pid file, or one whose pid
// now belongs to another process, is not trusted.
func (m *Managed) PID() int {
	b, err := os.ReadFile(m.pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !isNginxMaster(pid, m.conf) {
		return 0
	}
	return pid
}

// isNginxMaster reports whether pid is a live (not zombie) nginx master
// running on the configuration file conf: a pid file may name a process
// that exited, or whose pid now belongs to another program or to another
// nginx.
func isNginxMaster(pid int, conf string) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.HasPrefix(cmdline, []byte("nginx: master process")) && bytes.Contains(cmdline, []byte(" -c "+conf))
}

// Running reports whether our nginx master is alive.
func (m *Managed) Running() bool { return m.PID() != 0 }

// Start starts nginx. nginx binds every listen socket before it
// daemonizes, so a zero exit means the ports accept connections.
func (m *Managed) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ApplyTimeout)
	defer cancel()
	os.Remove(m.pidFile) // a stale one would be mistaken for the new master
	out, err := run(ctx, m.cfg.Bin, m.args()...)
	if err != nil {
		return &Error{Op: "start", Output: out + err.Error(), Diags: nginxconf.ParseDiagnostics(out)}
	}
	// The daemonized child writes the pid file after the parent exits.
	for m.PID() == 0 {
		if ctx.Err() != nil {
			return &Error{Op: "start", Output: "nginx started but wrote no pid file to " + m.pidFile}
		}
		time.Sleep(2 * time.Millisecond)
	}
	m.cfg.Log.Info().Int("pid", m.PID()).Msg("nginx started")
	return nil
}

// Test runs `nginx -t` on our configuration.
func (m *Managed) Test(ctx context.Context) error {
	out, err := run(ctx, m.cfg.Bin, m.args("-t", "-q")...)
	if err != nil {
		return &Error{Op: "test", Output: out + err.Error(), Diags: nginxconf.ParseDiagnostics(out)}
	}
	return nil
}

// Reload signals the master (what `nginx -s reload` does) and follows its
// error log until it has either started workers on the new configuration
// or logged why it kept the old one, e.g. a failed bind(): `nginx -s
// reload` alone exits 0 in both cases.
func (m *Managed) Reload(ctx context.Context, retire bool) error {
	pid := m.PID()
	if pid == 0 {
		return &Error{Op: "reload", Output: "nginx is not running"}
	}
	var old []int
	if retire {
		old = children(pid)
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ApplyTimeout)
	defer cancel()
	log, err := m.openLog(ctx, pid)
	if err != nil {
		return err
	}
	defer log.Close()
	if _, err := log.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("seek nginx error log: %w", err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal nginx master %d: %w", pid, err)
	}
	var (
		pending  []byte
		seen     bytes.Buffer
		diags    []nginxconf.Diagnostic
		reconfig bool
		buf      = make([]byte, 64<<10)
	)
	for {
		n, err := log.Read(buf)
		if n > 0 {
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				line := string(pending[:i])
				pending = pending[i+1:]
				ds := nginxconf.ParseDiagnostics(line)
				if len(ds) == 0 || ds[0].PID != pid {
					continue
				}
				d := ds[0]
				seen.WriteString(line + "\n")
				switch {
				case strings.HasSuffix(d.Message, "reconfiguring"):
					reconfig = true
				case !reconfig:
				case d.Message == "start worker processes":
					return m.retire(ctx, old, pid)
				case d.IsFatal():
					diags = append(diags, d)
					if _, isBind := d.BindFailure(); !isBind {
						return &Error{Op: "reload", Output: seen.String(), Diags: diags}
					}
				}
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read nginx error log: %w", err)
		}
		if n == 0 {
			if ctx.Err() != nil {
				return &Error{Op: "reload", Output: "nginx did not finish reloading within " + m.cfg.ApplyTimeout.String() + "\n" + seen.String(), Diags: diags}
			}
			if m.PID() != pid {
				return &Error{Op: "reload", Output: "nginx master exited during reload\n" + seen.String(), Diags: diags}
			}
			time.Sleep(250 * time.Microsecond) // a reload takes ~1 ms at 10 streams

		}
	}
}

// retire waits until each old worker has exited or closed its listening
// sockets: the master tells them to stop only ~100 ms after it started the
// new ones, and until then they still accept new connections with the old
// configuration. Open connections are left to finish. When master is not
// 0 and dies meanwhile, it gives up at once: a dead master never tells its
// workers to stop, and the next pass recovers.
func (m *Managed) retire(ctx context.Context, old []int, master int) error {
	if len(old) == 0 {
		return nil
	}
	// The accepting sockets, read once: the old workers can only hold
	// ones that exist now, and the socket table is O(sockets on the host).
	listeners := listenInodes()
	for {
		var left []int
		for _, pid := range old {
			if holdsAny(pid, listeners) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if master != 0 && !isNginxMaster(master, m.conf) {
			return &Error{Op: "reload", Output: "nginx master exited during reload"}
		}
		if ctx.Err() != nil {
			return &Error{Op: "reload", Output: fmt.Sprintf("old nginx workers %v still accepted connections when the wait ended (%v)", left, ctx.Err())}
		}
		old = left
		time.Sleep(time.Millisecond)
	}
}

// holdsAny reports whether process pid has one of the sockets in inodes
// open.
func holdsAny(pid int, inodes map[string]bool) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false // gone
	}
	for _, fd := range fds {
		target, err := os.Readlink(dir + "/" + fd.Name())
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			return true
		}
	}
	return false
}

// children returns the pids whose parent is pid.
func children(pid int) []int {
	return scanProcs(func(st procStat, _ []byte) bool { return st.ppid == pid })
}

// procStat is what scanProcs reads of /proc/<pid>/stat.
type procStat struct {
	pid, ppid int
	state     byte
}

// scanProcs returns the pids of the processes for which keep is true,
// given their stat and command line.
func scanProcs(keep func(st procStat, cmdline []byte) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		// After the command name: state ppid ...
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		st := procStat{pid: pid, state: f[0][0]}
		st.ppid, _ = strconv.Atoi(f[1])
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if keep(st, cmdline) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Recover retires the workers of a master that died without stopping
// them (kill -9): they keep our ports open and would keep serving the old
// configuration beside a new master. They are told to stop gracefully, so
// their open connections finish; Recover returns once they no longer
// accept. They are found by what they have open: every nginx process holds
// our error log, and any that is not the live master or its child is an
// orphan of ours, whatever the pid file says.
func (m *Managed) Recover(ctx context.Context) error {
	reapZombies()
	live := m.PID()
	orphans := scanProcs(func(st procStat, cmdline []byte) bool {
		if st.state == 'Z' || !bytes.HasPrefix(cmdline, []byte("nginx: ")) {
			return false
		}
		if live != 0 && (st.pid == live || st.ppid == live) {
			return false
		}
		return holdsFile(st.pid, m.errorLog)
	})
	if len(orphans) == 0 {
		return nil
	}
	for _, pid := range orphans {
		syscall.Kill(pid, syscall.SIGQUIT)
	}
	m.cfg.Log.Warn().Ints("processes", orphans).Msg("nginx master died; its workers were told to finish their connections and stop")
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ApplyTimeout)
	defer cancel()
	return m.retire(ctx, orphans, 0)
}

// holdsFile reports whether process pid has the file at path open.
func holdsFile(pid int, path string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		// A removed file reads "path (deleted)".
		if target, err := os.Readlink(dir + "/" + fd.Name()); err == nil && strings.TrimSuffix(target, " (deleted)") == path {
			return true
		}
	}
	return false
}

// noFile is the open-file limit for nginx's workers: 65536, or as much as
// the hard limit nginx inherits from us allows when it does not run as root
// (as root, workers raise their own limit before dropping privileges). Each
// stream costs a listening socket in every worker, each session two
// descriptors.
func noFile() int {
	const want = 65536
	if os.Geteuid() == 0 {
		return want
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Max == 0 {
		return 0
	}
	return int(min(rl.Max, want))
}

// HeldPorts returns the streams' ids (tcp/9000) whose ports the nginx
// master holds a listening socket for.
func (m *Managed) HeldPorts() map[string]bool {
	pid := m.PID()
	if pid == 0 {
		return nil
	}
	held := map[string]bool{}
	for _, p := range []stream.Protocol{stream.TCP, stream.UDP} {
		byInode := map[string]int{}
		scanSockets(p, func(port int, inode string) { byInode[inode] = port })
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			target, err := os.Readlink(dir + "/" + fd.Name())
			if err != nil {
				continue
			}
			if inode, ok := strings.CutPrefix(target, "socket:["); ok {
				if port, ok := byInode[strings.TrimSuffix(inode, "]")]; ok {
					held[stream.MakeID(p, port)] = true
				}
			}
		}
	}
	return held
}

// reapZombies collects the exit status of nginx processes that were
// reparented to us and exited, when we run as PID 1 (a container's
// entrypoint): the daemonized master and its orphaned workers become our
// children, and nobody else would reap them. It runs on the reconciler's
// goroutine, which also runs every nginx command, so it never takes the
// exit status of a command that exec is still waiting for.
func reapZombies() {
	if os.Getpid() != 1 {
		return
	}
	for _, pid := range scanProcs(func(st procStat, _ []byte) bool { return st.ppid == 1 && st.state == 'Z' }) {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}
