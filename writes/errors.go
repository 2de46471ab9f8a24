package writes

import (
	"fmt"

	"github.com/streamconductor/stream-conductor/nginxconf"
)

// PortHeldError: another process holds the port a write would listen on;
// nothing was written.
type PortHeldError struct {
	Port int
	// Range is a range's ports ("10000-10099"), of which Err names the
	// held ones; empty for one port.
	Range string
	Err   error
}

func (e *PortHeldError) Error() string {
	if e.Range != "" {
		return fmt.Sprintf("a port of %s is held by another process: %v", e.Range, e.Err)
	}
	return fmt.Sprintf("port %d is held by another process: %v", e.Port, e.Err)
}

func (e *PortHeldError) Unwrap() error { return e.Err }

// PolicyError: the backend policy refused a backend; nothing was written.
// Err is the policy's own error, whose message names the rule.
type PolicyError struct {
	// Field names the backends refused: "backends", "default" or
	// "routes[N].backends".
	Field string
	Err   error
}

func (e *PolicyError) Error() string { return e.Err.Error() }

func (e *PolicyError) Unwrap() error { return e.Err }

// ItemError: the Index-th spec of an import (stream ID, when known) is
// refused; nothing was written.
type ItemError struct {
	Index int
	ID    string
	Err   error
}

func (e *ItemError) Error() string { return fmt.Sprintf("streams[%d]: %v", e.Index, e.Err) }

func (e *ItemError) Unwrap() error { return e.Err }

// errNoRange: a create that must allocate a port, on a node without
// PORT_RANGE.
var errNoRange = &nginxconf.FieldError{Field: "listen", Message: "PORT_RANGE is not set, so there is no port to allocate"}
