package nginx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/nginxconf"
)

// Reload signals the master (what `nginx -s reload` does) and follows its
// error log until it has either started workers on the new configuration
// or logged why it kept the old one, e.g. a failed bind(): `nginx -s
// reload` alone exits 0 in both cases. With retire it also tells the old
// workers to stop as soon as a new worker serves (quitOld) and waits until
// they stopped accepting (retire).
func (m *Managed) Reload(ctx context.Context, retire bool) error {
	pid := m.PID()
	if pid == 0 {
		return &Error{Op: "reload", Output: "nginx is not running"}
	}
	old := procfs.Children(pid)
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
	if err := m.follow(ctx, log, pid); err != nil {
		return err
	}
	if err := m.awaitWorker(ctx, "reload", pid, old); err != nil {
		return err
	}
	if !retire {
		return nil
	}
	m.quitOld(pid, old)
	return m.retire(ctx, old, pid)
}

// workerTitle begins the command line of an nginx worker that serves: a
// worker sets it once its initialisation is over, after it registered
// every listening socket in its event loop (ngx_worker_process_cycle).
// Until then it carries its master's title, and a connection to a port
// only the new configuration has waits in the kernel's backlog.
var workerTitle = []byte("nginx: worker process")

// awaitWorker waits until master has a worker that is not one of old and
// accepts connections (its title says so): the master's "start worker
// processes" line comes before it forks them, so a reply at that line
// could come before any worker serves a new port. One new worker is
// enough for bytes to flow.
func (m *Managed) awaitWorker(ctx context.Context, op string, master int, old []int) error {
	var wait poll
	for {
		for _, pid := range procfs.Children(master) {
			if !slices.Contains(old, pid) && bytes.HasPrefix(procfs.Cmdline(pid), workerTitle) {
				return nil
			}
		}
		if !isNginxMaster(master, m.conf) {
			return &Error{Op: op, Output: "nginx master exited before its new workers served"}
		}
		if ctx.Err() != nil {
			return &Error{Op: op, Output: "nginx started no worker that serves within " + m.cfg.ApplyTimeout.String()}
		}
		wait.sleep()
	}
}

// follow reads the master's lines that log adds until the reload it was
// signalled for has started workers (nil) or failed.
func (m *Managed) follow(ctx context.Context, log *os.File, pid int) error {
	a := answer{pid: pid}
	var wait poll
	var pending []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := log.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			line := string(pending[:i])
			pending = pending[i+1:]
			if done, err := a.line(line); done {
				return err
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read nginx error log: %w", err)
		}
		if n > 0 {
			continue
		}
		if ctx.Err() != nil {
			return a.fail("nginx did not finish reloading within " + m.cfg.ApplyTimeout.String() + "\n")
		}
		if wait.n%8 == 7 && m.PID() != pid {
			return a.fail("nginx master exited during reload\n")
		}
		wait.sleep()
	}
}

// answer reads the master's answer to a reload from its error log lines.
type answer struct {
	pid      int
	seen     bytes.Buffer // the master's lines
	diags    []nginxconf.Diagnostic
	reconfig bool // the master began the reload
}

// line takes one line of the log; done is set once the reload is over,
// with err nil when the master started workers on the new configuration.
// A failed bind() does not end it: nginx goes on and says more.
func (a *answer) line(line string) (done bool, err error) {
	ds := nginxconf.ParseDiagnostics(line)
	if len(ds) == 0 || ds[0].PID != a.pid {
		return false, nil
	}
	d := ds[0]
	a.seen.WriteString(line + "\n")
	switch {
	case strings.HasSuffix(d.Message, "reconfiguring"):
		a.reconfig = true
	case !a.reconfig:
	case d.Message == "start worker processes":
		return true, nil
	case d.IsFatal():
		a.diags = append(a.diags, d)
		if _, isBind := d.BindFailure(); !isBind {
			return true, &Error{Op: "reload", Output: a.seen.String(), Diags: a.diags}
		}
	}
	return false, nil
}

// fail is the reload's *Error when the master never answered: why, and
// what it said meanwhile.
func (a *answer) fail(why string) error {
	return &Error{Op: "reload", Output: why + a.seen.String(), Diags: a.diags}
}

// retire waits until each old worker has exited or closed its listening
// sockets: until then they still accept new connections with the old
// configuration. quitOld told the serving ones to stop; the master tells
// them only ~100 ms after it started the new ones. Open connections are left to finish. When master is not
// 0 and dies meanwhile, it gives up at once: a dead master never tells its
// workers to stop, and the next pass recovers.
func (m *Managed) retire(ctx context.Context, old []int, master int) error {
	if len(old) == 0 {
		return nil
	}
	// The accepting sockets, read once: the old workers can only hold
	// ones that exist now, and the socket table is O(sockets on the host).
	listeners := listenInodes()
	var wait poll
	for {
		var left []int
		for _, pid := range old {
			if procfs.HoldsSocket(pid, listeners) {
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
		wait.sleep()
	}
}

// listenInodes returns the inodes of every accepting TCP and UDP socket.
func listenInodes() map[string]bool {
	inodes := make(map[string]bool)
	add := func(s procfs.Socket) { inodes[s.Inode] = true }
	procfs.Host.Accepting(false, add)
	procfs.Host.Accepting(true, add)
	return inodes
}

// poll paces a loop that waits for nginx: 250 µs at first, then half as
// often again at each turn up to every 2 ms. A reload at a few streams is
// seen within a fraction of a millisecond, and many shards reloading at
// once do not spend the cores nginx needs on looking at it.
type poll struct {
	n int
	d time.Duration
}

func (p *poll) sleep() {
	p.n++
	p.d = min(2*time.Millisecond, max(250*time.Microsecond, p.d*3/2))
	time.Sleep(p.d)
}
