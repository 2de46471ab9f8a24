package nginx

import (
	"bytes"
	"errors"
	"slices"
	"syscall"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// titleServing is the whole process title of an nginx worker that serves
// and is not shutting down ("nginx: worker process is shutting down");
// ngx_setproctitle pads the rest of its argv with NULs.
const titleServing = "nginx: worker process"

// quitOld sends SIGQUIT, nginx's own graceful stop (the signal sets the
// worker's ngx_quit as the master's channel command does), to the old
// workers of a reload that succeeded, instead of leaving them to the
// master, which tells them only after a blind 100 ms sleep: a removed
// port then closes as soon as nginx serves without them. Open
// connections are left to finish, as nginx always does.
//
// Call it only once the master logged "start worker processes" for this
// reload and a new worker serves (awaitWorker): after a failed reload the
// master keeps its old workers and respawns one that exits. A worker quit
// during the master's sleep is never respawned: the master reaps only
// after it marked its old workers exiting (ngx_master_process_cycle).
//
// Targets are pids of old (the children before our SIGHUP: never a new
// worker, never the master) that are still children of master and titled
// as serving: one shutting down already (after an earlier reload, or the
// master was first) is left alone.
//
// It does not wait until every new worker serves (worker_processes auto
// starts one per core), for three reasons. One serving worker is enough:
// a worker sets its title only after it registered every listening socket,
// and the workers of one port share one accept queue, so every port has an
// acceptor, and what it queues meanwhile is delayed, never refused.
// Waiting would not close nginx's own window either: with EPOLLEXCLUSIVE
// a wake-up the kernel gave to an old worker that then closes its sockets
// is not passed on, whichever new workers are registered (stock nginx has
// the same window at its own quit), while a worker that registers later
// finds queued connections at once. And it would mostly lose the race
// to the master: measured in one run each under load
// (TestRetireDropsNothing, load average ~10 on 2 cores), waiting for both
// new workers retired early in 10 of 60 reloads, waiting for the first in
// 24 of 60. The cost is a few
// milliseconds with fewer acceptors than before the reload.
func (m *Managed) quitOld(master int, old []int) {
	var quit []int
	for _, pid := range procfs.Children(master) {
		if !slices.Contains(old, pid) || string(bytes.TrimRight(procfs.Cmdline(pid), "\x00")) != titleServing {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil && !errors.Is(err, syscall.ESRCH) {
			m.cfg.Log.Warn().Err(err).Int("pid", pid).Msg("could not tell an old nginx worker to stop; its master will")
			continue
		}
		quit = append(quit, pid)
	}
	m.cfg.Log.Debug().Ints("pids", quit).Msg("told old nginx workers to stop: a new worker serves")
}
