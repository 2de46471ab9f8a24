package main

import (
	"net"
	"os"
)

// sdNotify tells systemd (Type=notify) about the daemon's state, when it
// runs under systemd: it writes state to $NOTIFY_SOCKET. It does nothing
// elsewhere.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
