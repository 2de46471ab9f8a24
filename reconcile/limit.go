package reconcile

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/stream"
)

// limitError says which limit a new stream hits and how to raise it.
func limitError(of *stream.OpenFiles) error {
	return fmt.Errorf("%w: the open-file limit (RLIMIT_NOFILE, soft %d, hard %d) lets nginx listen on at most %d streams on this node (a range counts one per port); "+
		"raise it (ulimit -n, systemd LimitNOFILE=, compose ulimits: nofile) and restart stream-conductor and its nginx, or delete streams",
		stream.ErrStreamLimit, of.Soft, of.Hard, of.MaxStreams)
}

// overLimit returns limitError when a new stream of ports ports (a
// range's count, 1 for one port) would not fit beside the n ports nginx
// listens on: every listening port is an open file in each nginx process
// and a worker_connections slot, so MaxStreams counts ports.
func (r *Reconciler) overLimit(n, ports int) error {
	of := r.cfg.OpenFiles
	if of == nil || n+ports <= of.MaxStreams {
		return nil
	}
	return limitError(of)
}

// listeningPorts is how many ports specs listen on (a range counts each).
func listeningPorts(specs []stream.Spec) int {
	n := 0
	for _, s := range specs {
		n += s.PortCount()
	}
	return n
}

// capStreams fails the streams that nginx does not serve yet (not in
// owned) beyond the limit, in the store's order: two writes that each fit
// alone, or streams stored while the daemon ran under a higher limit,
// fail one by one with the limit's words instead of failing the whole
// reload with nginx's "socket() failed (24: Too many open files)".
func (r *Reconciler) capStreams(log zerolog.Logger, specs []stream.Spec, owned map[stream.ID]bool, onDisk map[string][]byte) {
	if r.cfg.OpenFiles == nil || listeningPorts(specs) <= r.cfg.OpenFiles.MaxStreams {
		return
	}
	n := 0
	for _, s := range specs {
		if owned[s.ID()] {
			n += s.PortCount()
		}
	}
	for _, s := range specs {
		if _, q := r.quarantine[s.ID()]; q || owned[s.ID()] {
			continue
		}
		if err := r.overLimit(n, s.PortCount()); err != nil {
			r.quarantineStream(log, s, err.Error(), onDisk)
			continue
		}
		n += s.PortCount()
	}
}
