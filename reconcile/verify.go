package reconcile

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// verify checks the kernel's socket table until every changed file's port
// is listening if the file is desired and closed if it went, when nginx's
// answer does not confirm that by itself (external mode, where reload is
// only a signal). Reading the socket table costs O(sockets on the host),
// so managed mode, whose answers confirm, skips it.
// Streams whose port never opened are quarantined; it returns how many.
// If nginx dies meanwhile it returns an error instead: the ports are shut
// because nginx is gone, not because of the streams.
func (r *Reconciler) verify(ctx context.Context, log zerolog.Logger, specs []stream.Spec, desired map[string]file, changed []string, onDisk, onNow map[string][]byte) (int, error) {
	if len(changed) == 0 || r.nginx.Confirms() {
		return 0, nil
	}
	want := map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}
	owners := portOwners{}
	for _, name := range changed {
		id, ok := nginxconf.ParseFileName(r.cfg.Render.Prefix, name)
		if !ok {
			continue
		}
		f, open := desired[name]
		last := id.Port
		if open {
			last = f.spec.LastPort() // every port of a range must open
		}
		owners.add(id, last)
		for port := id.Port; port <= last; port++ {
			want[id.Protocol][port] = open
		}
	}
	deadline := time.Now().Add(r.cfg.VerifyTimeout)
	for {
		var notOpen, notClosed []string
		for p, ports := range want {
			if len(ports) == 0 {
				continue
			}
			up, err := r.cfg.Ports.Listening(p)
			if err != nil {
				return 0, nil // nothing to verify against on this platform
			}
			for port, open := range ports {
				id := owners[p][port].String()
				switch {
				case open && !up[port] && !slices.Contains(notOpen, id):
					notOpen = append(notOpen, id)
				case !open && up[port] && !slices.Contains(notClosed, id):
					notClosed = append(notClosed, id)
				}
			}
		}
		if len(notOpen)+len(notClosed) == 0 {
			return 0, nil
		}
		if r.nginx.Supervises() && !r.nginx.Running() {
			return 0, errors.New("nginx exited while its ports were being verified")
		}
		if time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err := r.checkIntact(onNow); err != nil {
			return 0, err // nginx loaded someone else's files, not ours
		}
		if len(notClosed) > 0 {
			log.Warn().Strs("streams", notClosed).Msg("ports of removed streams are still open after the reload")
		}
		n := 0
		for _, s := range specs {
			if slices.Contains(notOpen, s.ID().String()) {
				r.quarantineStream(log, s, "nginx reported success but did not open the port within "+r.cfg.VerifyTimeout.String(), onDisk)
				n++
			}
		}
		return n, nil
	}
}
