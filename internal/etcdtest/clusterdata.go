package etcdtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// KillAll kills every member (SIGKILL): the cluster is down.
func (c *Cluster) KillAll() {
	for i := range c.members {
		c.Kill(i)
	}
}

// RestartAll starts every killed member again on its data and ports, all
// at once (one alone has no quorum), and waits (at most 30s) until every
// member reports healthy.
func (c *Cluster) RestartAll() error {
	for _, m := range c.members {
		if m.Running() {
			continue
		}
		if err := m.launch(); err != nil {
			return err
		}
	}
	return c.WaitHealthy(30 * time.Second)
}

// CopyData copies every member's data directory under dst (a directory
// that does not exist yet), one per member: an offline backup of the
// whole cluster, taken with every member killed (KillAll).
func (c *Cluster) CopyData(dst string) error {
	for _, m := range c.members {
		if m.Running() {
			return fmt.Errorf("copy the data of etcd member %s: %w", m.Name, errRunning)
		}
		if err := copyTree(m.data, filepath.Join(dst, m.Name)); err != nil {
			return err
		}
	}
	return nil
}

// ReplaceData replaces every killed member's data directory with its
// copy under src (CopyData's), moving it into place: the cluster comes
// back (RestartAll) at src's state, with the same cluster id.
func (c *Cluster) ReplaceData(src string) error {
	for _, m := range c.members {
		if m.Running() {
			return fmt.Errorf("replace the data of etcd member %s: %w", m.Name, errRunning)
		}
		if err := os.RemoveAll(m.data); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(src, m.Name), m.data); err != nil {
			return err
		}
	}
	return nil
}

var errRunning = errors.New("it runs: KillAll first")
