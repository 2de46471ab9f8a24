package nginx

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/internal/safefile"
	"github.com/streamconductor/stream-conductor/nginxconf"
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
	// Workers is nginx's worker_processes (0: auto, one per CPU); a
	// shard of the pool runs 1, with a table of at least 4,096 slots
	// rather than 8,192 (see connections).
	Workers int
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
	module   string
	streams  int // how many streams the main configuration is sized for
	// mainRepaired: the main configuration was rewritten under a running
	// nginx (see ensureMain).
	mainRepaired bool
	// logMark is how far Signalled read the error log.
	logMark logMark
	// reopenAsked: the master was told to reopen its logs and has not
	// been seen holding the file at the path since.
	reopenAsked bool
	// selfPID is the pid our signals come from in nginx's log (0:
	// this process's).
	selfPID int
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

// Supervises is true: Managed starts nginx, restarts it when it died and
// cleans up after it.
func (m *Managed) Supervises() bool { return true }

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
	if pid := m.pidFromFile(); pid != 0 {
		return pid
	}
	// The pid file is gone, damaged or lying: look for the master itself,
	// and put the file right for the operator's `kill $(cat nginx.pid)`.
	pid := m.findMaster()
	if pid != 0 {
		if err := safefile.Write(filepath.Dir(m.pidFile), filepath.Base(m.pidFile), []byte(strconv.Itoa(pid)+"\n")); err == nil {
			m.cfg.Log.Warn().Int("pid", pid).Str("file", m.pidFile).Msg("nginx's pid file did not name its master; found the master and rewrote the file")
		}
	}
	return pid
}

// pidFromFile returns the pid the pid file names if that is our live
// master, and 0 otherwise. It never blocks on a FIFO put in its place.
func (m *Managed) pidFromFile() int {
	b, err := safefile.ReadRegular(m.pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !isNginxMaster(pid, m.conf) {
		return 0
	}
	return pid
}

// findMaster returns the pid of the one live nginx master running on our
// configuration, found in /proc, or 0. A worker just forked still carries
// its master's title for a moment, so a match whose parent also matches is
// not a master.
func (m *Managed) findMaster() int {
	matches := procfs.Scan(func(p procfs.Proc, cmdline []byte) bool {
		return !p.Zombie() && isMasterCmdline(cmdline, m.conf)
	})
	var masters []int
	for _, pid := range matches {
		if p, err := procfs.Stat(pid); err == nil && !slices.Contains(matches, p.PPID) {
			masters = append(masters, pid)
		}
	}
	if len(masters) != 1 {
		return 0
	}
	return masters[0]
}

// isNginxMaster reports whether pid is a live (not zombie) nginx master
// running on the configuration file conf: a pid file may name a process
// that exited, or whose pid now belongs to another program or to another
// nginx.
func isNginxMaster(pid int, conf string) bool {
	p, err := procfs.Stat(pid)
	if err != nil || p.Zombie() {
		return false
	}
	return isMasterCmdline(procfs.Cmdline(pid), conf)
}

// isMasterCmdline reports whether a command line is an nginx master's on
// the configuration file conf.
func isMasterCmdline(cmdline []byte, conf string) bool {
	return bytes.HasPrefix(cmdline, []byte("nginx: master process")) && bytes.Contains(cmdline, []byte(" -c "+conf))
}

// Running reports whether our nginx master is alive. As PID 1 it first
// reaps the nginx processes that exited (reapZombies).
func (m *Managed) Running() bool {
	reapZombies()
	return m.PID() != 0
}

// Start starts nginx and returns once a worker serves: nginx binds every
// listen socket before it daemonizes, so the ports take connections at
// once, and its workers accept them once they are initialised.
func (m *Managed) Start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ApplyTimeout)
	defer cancel()
	os.Remove(m.pidFile) // a stale one would be mistaken for the new master
	m.removeOddLog()     // nginx would block opening a FIFO there
	out, err := run(ctx, m.cfg.Bin, m.args()...)
	if err != nil && bindFailed(out) {
		// Our own orphans may hold the ports: workers of a master that
		// died after Recover looked, or that Recover missed. They are
		// not the streams' fault: retire them and start once more.
		if n, rerr := m.retireOrphans(ctx); rerr == nil && n > 0 {
			out, err = run(ctx, m.cfg.Bin, m.args()...)
		}
	}
	if err != nil {
		return failed("start", out, err)
	}
	// The daemonized child writes the pid file after the parent exits.
	for m.PID() == 0 {
		if ctx.Err() != nil {
			return &Error{Op: "start", Output: "nginx started but wrote no pid file to " + m.pidFile}
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := m.awaitWorker(ctx, "start", m.PID(), nil); err != nil {
		return err
	}
	m.cfg.Log.Info().Int("pid", m.PID()).Msg("nginx started")
	return nil
}

// bindFailed reports whether nginx's output says it could not bind a
// listen address.
func bindFailed(out string) bool {
	for _, d := range nginxconf.ParseDiagnostics(out) {
		if _, ok := d.BindFailure(); ok {
			return true
		}
	}
	return false
}

// Test runs `nginx -t` on our configuration.
func (m *Managed) Test(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ApplyTimeout)
	defer cancel()
	out, err := run(ctx, m.cfg.Bin, m.args("-t", "-q")...)
	if err != nil {
		return failed("test", out, err)
	}
	return nil
}
