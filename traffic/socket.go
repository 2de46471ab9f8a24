package traffic

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/streamconductor/stream-conductor/stream"
)

// Listen creates the Unix datagram socket nginx logs to at path (a stale
// socket or file there is replaced), writable only by the user uid (nginx's
// worker user; -1: the daemon's own) and by root: other local users cannot
// forge sessions. The socket is bound in a private directory and renamed
// into place with its final owner and mode, so it is never open to others,
// not even for a moment. Lines are counted only for streams that lookup
// says exist (nil: every stream, all created at once), so made-up ids cost
// nothing, and for the stream created last under each id.
func Listen(path string, uid int, lookup Lookup) (*Collector, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("traffic log socket %s: longer than the %d bytes a Unix socket path may have; use a shorter DATA_DIR", path, maxSocketPath)
	}
	if strings.ContainsAny(path, ",\n") {
		return nil, fmt.Errorf("traffic log socket %q: nginx cannot name a path with a comma or a newline; use another DATA_DIR", path)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".t")
	if err != nil {
		return nil, fmt.Errorf("traffic log socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: bound, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("traffic log socket: %w", err)
	}
	if err := placeSocket(bound, path, uid); err != nil {
		conn.Close()
		return nil, fmt.Errorf("traffic log socket %s: %w", path, err)
	}
	if lookup == nil {
		lookup = func(id stream.ID) (Stream, bool) { return Stream{Last: id.Port}, true }
	}
	return &Collector{conn: conn, path: path, lookup: lookup, stats: map[stream.ID]*counts{}}, nil
}

// Reachable returns nil when the user uid (with primary group gid) may
// reach the socket at path, and else the directory that stops it: a sender needs to search every directory
// above it. A DATA_DIR under a private directory (mode 0700) shuts out
// nginx's workers when they run as another user than the daemon.
func Reachable(path string, uid, gid int) error {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !searchable(fi, uid, gid) {
			return fmt.Errorf("directory %s (mode %v) cannot be searched by uid %d", dir, fi.Mode().Perm(), uid)
		}
		if parent := filepath.Dir(dir); parent == dir {
			return nil
		}
	}
}

func searchable(fi os.FileInfo, uid, gid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	switch {
	case uid == 0 || !ok:
		return true
	case int(st.Uid) == uid:
		return perm&0o100 != 0
	case int(st.Gid) == gid:
		return perm&0o010 != 0
	}
	return perm&0o001 != 0
}

// maxSocketPath is the longest path a Unix socket address holds (sun_path
// is 108 bytes with its NUL).
const maxSocketPath = 107

// placeSocket gives the socket at bound its owner and mode and moves it to
// path.
func placeSocket(bound, path string, uid int) error {
	if err := os.Chmod(bound, 0o600); err != nil {
		return err
	}
	if uid >= 0 && uid != os.Geteuid() {
		if err := os.Chown(bound, uid, -1); err != nil {
			return err
		}
	}
	return os.Rename(bound, path)
}
