package main

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
)

// listenTraffic opens the Unix datagram socket nginx's workers send their
// session log to, DATA_DIR/traffic.sock (the same path at every start, so
// that the main nginx.conf does not change), writable by the workers' user
// alone, and counting lines only for streams that exist, as lookup says.
func listenTraffic(dataDir, nginxBin string, lookup traffic.Lookup, log zerolog.Logger) (*traffic.Collector, error) {
	path, err := filepath.Abs(filepath.Join(dataDir, "traffic.sock"))
	if err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(dataDir, "traffic.addr")) // the UDP port of older versions
	uid, gid, who := workerUser(nginxBin, log)
	tc, err := traffic.Listen(path, uid, lookup)
	if err != nil {
		return nil, err
	}
	if uid >= 0 {
		if err := traffic.Reachable(path, uid, gid); err != nil {
			log.Warn().Err(err).Str("socket", path).Str("worker_user", who).
				Msg("nginx's workers cannot reach the traffic log socket: traffic counts will stay at zero; let them search every directory above DATA_DIR (chmod o+x)")
		}
	}
	log.Debug().Str("socket", path).Str("worker_user", who).Msg("traffic log socket")
	return tc, nil
}

// createdAt tells the traffic collector whether a stream exists, when it
// was created (so that a stream created again on a port counts from zero),
// its last port (a range's sessions count for it) and the address it
// listens on, defaultBind for a stream that names none (its open sessions
// are the sockets on an address it accepts on).
func createdAt(st interface {
	Get(id stream.ID) (stream.Spec, error)
}, defaultBind string) traffic.Lookup {
	return func(id stream.ID) (traffic.Stream, bool) {
		sp, err := st.Get(id)
		return traffic.Stream{Created: sp.CreatedAt, Last: sp.LastPort(), Listen: sp.ListenAddr(defaultBind).Addr()}, err == nil
	}
}

// workerUser is the user nginx's workers run as, who alone may write to
// the traffic socket (uid -1: the daemon's own user). nginx changes users
// only when its master runs as root: then the workers run as the user
// nginx was built with (nobody, on Debian), since the managed nginx.conf
// names none.
func workerUser(nginxBin string, log zerolog.Logger) (uid, gid int, name string) {
	if os.Geteuid() != 0 {
		return -1, -1, "the daemon's own"
	}
	name = "nobody"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, nginxBin, "-V").CombinedOutput(); err == nil {
		name = nginxconf.ParseBuildInfo(string(out)).User
	}
	u, err := user.Lookup(name)
	if err != nil {
		log.Warn().Err(err).Str("user", name).Msg("nginx's worker user is unknown: the traffic log socket is root's alone, traffic counts will stay at zero")
		return -1, -1, name
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		log.Warn().Str("user", name).Str("uid", u.Uid).Msg("nginx's worker user has no numeric uid: the traffic log socket is root's alone, traffic counts will stay at zero")
		return -1, -1, name
	}
	return uid, gid, name
}
