package nginx

import (
	"bytes"
	"context"
	"os"
	"syscall"

	"github.com/streamconductor/stream-conductor/internal/procfs"
	"github.com/streamconductor/stream-conductor/stream"
)

// Recover retires the workers of a master that died without stopping
// them (kill -9): they keep our ports open and would keep serving the old
// configuration beside a new master. They are told to stop gracefully, so
// their open connections finish; Recover returns once they no longer
// accept. They are found by what they have open: every nginx process holds
// our error log, and any that is not the live master or its child is an
// orphan of ours, whatever the pid file says.
func (m *Managed) Recover(ctx context.Context) error {
	_, err := m.retireOrphans(ctx)
	return err
}

// retireOrphans does Recover's work and returns how many orphans it told
// to stop.
func (m *Managed) retireOrphans(ctx context.Context) (int, error) {
	reapZombies()
	live := m.PID()
	orphans := procfs.Scan(func(p procfs.Proc, cmdline []byte) bool {
		if p.Zombie() || !bytes.HasPrefix(cmdline, []byte("nginx: ")) {
			return false
		}
		if live != 0 && (p.PID == live || p.PPID == live) {
			return false
		}
		return procfs.HoldsFile(p.PID, m.errorLog)
	})
	if len(orphans) == 0 {
		return 0, nil
	}
	for _, pid := range orphans {
		syscall.Kill(pid, syscall.SIGQUIT)
	}
	m.cfg.Log.Warn().Ints("processes", orphans).Msg("nginx master died; its workers were told to finish their connections and stop")
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ApplyTimeout)
	defer cancel()
	return len(orphans), m.retire(ctx, orphans, 0)
}

// reapZombies collects the exit status of nginx processes that were
// reparented to us and exited, when we run as PID 1 (a container's
// entrypoint): the daemonized master and its orphaned workers become our
// children, and nobody else would reap them. It waits for the nginx
// commands running (reaping), so that it never takes the exit status of
// a command that exec is still waiting for.
func reapZombies() {
	if os.Getpid() != 1 {
		return
	}
	reaping.Lock()
	defer reaping.Unlock()
	for _, pid := range procfs.Scan(func(p procfs.Proc, _ []byte) bool { return p.PPID == 1 && p.Zombie() }) {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}

// HeldPorts returns the streams' ids (tcp/9000) whose ports the nginx
// master holds an accepting socket for (nil when it is not running).
func (m *Managed) HeldPorts() map[stream.ID]bool {
	pid := m.PID()
	if pid == 0 {
		return nil
	}
	held := map[stream.ID]bool{}
	for _, p := range []stream.Protocol{stream.TCP, stream.UDP} {
		byInode := map[string]int{}
		procfs.Host.Accepting(p == stream.UDP, func(s procfs.Socket) { byInode[s.Inode] = s.Port })
		procfs.Sockets(pid, func(inode string) {
			if port, ok := byInode[inode]; ok {
				held[stream.ID{Protocol: p, Port: port}] = true
			}
		})
	}
	return held
}
