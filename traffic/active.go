package traffic

import (
	"sync"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// Active counts the TCP sessions open right now on each local port, from
// the kernel's socket table (ESTABLISHED sockets whose local port is the
// stream's): nginx logs a session only when it ends. Reading the table
// costs O(sockets on the host), so counts are kept for a second.
type Active struct {
	mu     sync.Mutex
	at     time.Time
	counts map[int]int
}

// Count returns the open TCP sessions on port.
func (a *Active) Count(port int) int {
	return a.All()[port]
}

// All returns the open TCP sessions by local port. The map must not be
// changed.
func (a *Active) All() map[int]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.at) > time.Second || a.counts == nil {
		a.counts = procfs.Host.Established()
		a.at = time.Now()
	}
	return a.counts
}
