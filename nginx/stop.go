package nginx

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// Quit stops the master gracefully (SIGQUIT: its workers finish their
// open connections), waits until it and its workers have exited, and
// removes its files and directory: a shard of the pool that is no longer
// needed. The streams it served must have been taken from it first.
func (m *Managed) Quit(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ApplyTimeout)
	defer cancel()
	if pid := m.PID(); pid != 0 {
		workers := procfs.Children(pid)
		if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
			return fmt.Errorf("stop nginx master %d: %w", pid, err)
		}
		for _, p := range append(workers, pid) {
			for alive(p) {
				if ctx.Err() != nil {
					return fmt.Errorf("nginx process %d did not exit after SIGQUIT: %w", p, ctx.Err())
				}
				reapZombies()
				time.Sleep(2 * time.Millisecond)
			}
		}
		m.cfg.Log.Info().Int("pid", pid).Msg("nginx master stopped: its shard is no longer used")
	}
	for _, f := range []string{m.pidFile, m.conf, m.errorLog} {
		os.Remove(f)
	}
	os.Remove(filepath.Join(m.cfg.Dir, "applied"))
	if err := os.Remove(m.cfg.Dir); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", m.cfg.Dir, err)
	}
	return nil
}

// alive reports whether pid is a process that has not exited.
func alive(pid int) bool {
	p, err := procfs.Stat(pid)
	return err == nil && !p.Zombie()
}
