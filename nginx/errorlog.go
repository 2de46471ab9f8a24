package nginx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// nginx's error log is how managed mode hears nginx: Reload follows the
// master's answer in it, and the watch tick reads the lines it added to
// learn whether someone signalled nginx. The master writes to the file it
// holds open, which stops being the file at the path when that is removed
// or rotated (mv and a new file); then it is told to reopen its logs.

// logMark is a position in a file.
type logMark struct {
	ino uint64
	off int64
}

// Signalled reports whether nginx logged a signal from another process
// than ours (a reload, a reopen, a binary upgrade, an exit) or a worker's
// death since the last call: what nginx serves may have changed. Our own
// reloads and reopens, and the exits of the workers they retire, are not
// reported (othersSignal). It reads only the lines added since, and
// answers true when it cannot tell (the log was removed, rotated,
// truncated, or grew by more than 1 MB). A log that the master no longer
// writes to (removed, or rotated by mv) is reopened: the master is sent
// SIGUSR1, which creates the file at the path.
func (m *Managed) Signalled() bool {
	prev := m.logMark
	m.logMark = logMark{}
	f, err := m.openLogFile()
	if err != nil {
		m.reopenLog()
		return true
	}
	defer f.Close()
	fi, err := f.Stat()
	ino, ok := inodeOf(f)
	if err != nil || !ok {
		return true
	}
	m.logMark = logMark{ino: ino, off: fi.Size()}
	// Checked again at every tick until the master holds the file: a
	// reopen it ignored (a lost signal, a rotation racing it) is asked
	// for again.
	if pid := m.PID(); pid != 0 && (ino != prev.ino || m.reopenAsked) && !procfs.HoldsInode(pid, ino) {
		m.reopenLog()
		return true
	}
	m.reopenAsked = false
	grew := fi.Size() - prev.off
	if ino != prev.ino || grew < 0 || grew > 1<<20 {
		return true
	}
	if grew == 0 {
		return false
	}
	buf := make([]byte, grew)
	if _, err := f.ReadAt(buf, prev.off); err != nil && !errors.Is(err, io.EOF) {
		return true
	}
	// Whole lines only: a line nginx is still writing is read next time.
	end := bytes.LastIndexByte(buf, '\n') + 1
	m.logMark.off = prev.off + int64(end)
	return othersSignal(buf[:end], m.self())
}

// self is the pid nginx logs for signals we send it.
func (m *Managed) self() int {
	if m.selfPID != 0 {
		return m.selfPID
	}
	return os.Getpid()
}

// othersSignal reports whether lines of nginx's error log say that a
// process other than self signalled nginx (someone's `nginx -s reload`, a
// kill), or that a process of nginx died other than by exiting with code
// 0. Our own signals (Reload's SIGHUP, a reopen's SIGUSR1, a SIGQUIT) are
// logged "received from <self>" and are not news: we know what we asked.
// SIGCHLD and SIGIO are the master hearing its children exit; the line
// that follows says how each did: "exited with code 0" after a reload or
// a graceful stop, "exited on signal 9" or a non-zero code when one died.
func othersSignal(lines []byte, self int) bool {
	for len(lines) > 0 {
		var line []byte
		line, lines, _ = bytes.Cut(lines, []byte("\n"))
		if _, sig, ok := bytes.Cut(line, []byte(": signal ")); ok {
			if !ownOrChild(sig, self) {
				return true
			}
			continue
		}
		if _, how, ok := bytes.Cut(line, []byte(" exited ")); ok && bytes.Contains(line, []byte(" process ")) &&
			!bytes.HasPrefix(how, []byte("with code 0")) {
			return true
		}
	}
	return false
}

// ownOrChild reports whether the rest of a signal line ("1 (SIGHUP)
// received from 123, reconfiguring") is a signal self sent, or a SIGCHLD
// or SIGIO.
func ownOrChild(sig []byte, self int) bool {
	if bytes.Contains(sig, []byte("(SIGCHLD)")) || bytes.Contains(sig, []byte("(SIGIO)")) {
		return true
	}
	_, from, ok := bytes.Cut(sig, []byte(" received from "))
	if !ok {
		return false
	}
	n := 0
	for n < len(from) && from[n] >= '0' && from[n] <= '9' {
		n++
	}
	pid, err := strconv.Atoi(string(from[:n]))
	return err == nil && pid == self
}

// reopenLog asks the master to reopen its logs, without waiting.
func (m *Managed) reopenLog() {
	if pid := m.PID(); pid != 0 {
		if err := syscall.Kill(pid, syscall.SIGUSR1); err == nil {
			if !m.reopenAsked {
				m.cfg.Log.Warn().Str("file", m.errorLog).Msg("nginx error log removed or rotated; nginx told to reopen it")
			}
			m.reopenAsked = true
		}
	}
}

// openLog opens nginx's error log to follow the master's answer to a
// reload. The master writes the first line of a reload ("reconfiguring")
// to the log file it holds open, which is no longer the file at the path
// once that was removed, or rotated by mv and a new file. Then the master
// is told to reopen its logs (SIGUSR1; it creates the file when missing),
// and openLog waits until it holds the file at the path.
func (m *Managed) openLog(ctx context.Context, pid int) (*os.File, error) {
	signalled := false
	for {
		f, err := m.openLogFile()
		switch {
		case err == nil:
			if ino, ok := inodeOf(f); !ok || procfs.HoldsInode(pid, ino) {
				return f, nil
			}
			f.Close()
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("open nginx error log: %w", err)
		}
		if !signalled {
			if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
				return nil, fmt.Errorf("signal nginx master %d to reopen its logs: %w", pid, err)
			}
			signalled = true
			m.cfg.Log.Warn().Str("file", m.errorLog).Msg("nginx error log removed or rotated; nginx told to reopen it")
		}
		if ctx.Err() != nil || !isNginxMaster(pid, m.conf) {
			return nil, &Error{Op: "reload", Output: "nginx did not reopen its error log " + m.errorLog}
		}
		time.Sleep(time.Millisecond)
	}
}

// inodeOf returns the inode of an open file.
func inodeOf(f *os.File) (uint64, bool) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}

// openLogFile opens the error log at its path for reading. It never
// follows a symlink and never blocks on a FIFO put there: such an entry is
// removed (the path is ours) and reads as missing, so that nginx is told
// to create the file again, as when it was deleted. A FIFO left there
// would also hang nginx itself, which opens the log for writing.
func (m *Managed) openLogFile() (*os.File, error) {
	f, err := os.OpenFile(m.errorLog, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	switch {
	case err == nil:
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			return f, nil
		}
		f.Close()
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENXIO): // a symlink, a socket
	default:
		return nil, err
	}
	m.removeOddLog()
	return nil, fs.ErrNotExist
}

// removeOddLog removes whatever is at the error log's path unless it is a
// regular file (or nothing).
func (m *Managed) removeOddLog() {
	fi, err := os.Lstat(m.errorLog)
	if err != nil || fi.Mode().IsRegular() {
		return
	}
	if err := os.Remove(m.errorLog); err == nil {
		m.cfg.Log.Warn().Str("file", m.errorLog).Str("type", fi.Mode().Type().String()).Msg("nginx error log was not a regular file; removed it")
	}
}
