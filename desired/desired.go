// Package desired defines the desired state as its consumers use it: the
// write path stores specs with preconditions and allocates ports, the
// reconciler lists them at a revision and follows their changes, the API
// exports them, reads and appends the audit log and takes backups. Every
// implementation (bbolt on one node, etcd for a fleet) returns the errors
// below and passes the suite in package conformance.
package desired

import (
	"errors"
	"io"

	"github.com/streamconductor/stream-conductor/stream"
)

var (
	// ErrNotFound: no stream has the id.
	ErrNotFound = errors.New("stream not found")
	// ErrExists: a create-only write found a stream with the id.
	ErrExists = errors.New("stream already exists")
	// ErrRevisionMismatch: the stream's revision is not the one the write
	// expected (optimistic concurrency).
	ErrRevisionMismatch = errors.New("revision mismatch")
	// ErrNoFreePort: Allocate found no free port in the range.
	ErrNoFreePort = errors.New("no free port in range")
	// ErrCompacted: the changes asked for are older than the ones kept;
	// the caller lists the whole state again.
	ErrCompacted = errors.New("changes no longer kept")
	// ErrDuplicate: an import names the same stream twice.
	ErrDuplicate = errors.New("stream listed twice")
	// ErrUnavailable: the state takes no writes now (its storage was
	// deleted or replaced, or cannot be reached). Implementations wrap it
	// in an error that says why and how to recover.
	ErrUnavailable = errors.New("desired state unavailable")
)

// Match is a precondition on a write. The zero value matches anything.
type Match struct {
	// Absent requires that no stream has the id (create only).
	Absent bool
	// Present requires that a stream has the id (If-Match: *).
	Present bool
	// Revision, when not zero, requires the stream to be at it.
	Revision uint64
}

// Check returns the error a write with m gets when the stream now stored
// is cur (nil: none).
func (m Match) Check(cur *stream.Spec) error {
	switch {
	case m.Absent && cur != nil:
		return ErrExists
	case m.Present && cur == nil:
		return ErrNotFound
	case m.Revision != 0 && cur == nil:
		return ErrNotFound
	case m.Revision != 0 && cur.Revision != m.Revision:
		return ErrRevisionMismatch
	}
	return nil
}

// Conditional is one stream of a DeleteMany: its id and the revision it
// must still be at to be deleted (0: any).
type Conditional struct {
	ID       stream.ID
	Revision uint64
}

// Change is one stream's change at one revision: Spec is what it became,
// nil when it was deleted. One revision may carry several changes (an
// import).
type Change struct {
	Revision uint64
	ID       stream.ID
	Spec     *stream.Spec
}

// ImportResult says what an import changed, by stream id.
type ImportResult struct {
	Create    []stream.ID `json:"create"`
	Update    []stream.ID `json:"update"`
	Delete    []stream.ID `json:"delete"`
	Unchanged []stream.ID `json:"unchanged"`
	// Revision is the revision after the import (0 for a plan).
	Revision uint64 `json:"revision"`
}

// State is the contract every implementation keeps. Writes are durable
// when they return; every successful write or delete takes a revision
// greater than all before it; reads see a write once it has returned.
type State interface {
	// Get returns the stream with id, or ErrNotFound.
	Get(id stream.ID) (stream.Spec, error)
	// List returns every stream, sorted by protocol then port, and the
	// revision they reflect. The slice is shared: callers must not
	// modify it.
	List() ([]stream.Spec, uint64)
	// Put creates or replaces sp (keyed by its id) if m holds, and
	// returns the stored spec (with its revision) and the one it
	// replaced (nil on create).
	Put(sp stream.Spec, m Match) (stream.Spec, *stream.Spec, error)
	// Delete removes the stream with id if m holds, and returns it with
	// the revision of the delete.
	Delete(id stream.ID, m Match) (stream.Spec, uint64, error)
	// DeleteMany removes, in one revision where it can (see the
	// implementation for its limits), every stream of items still at
	// its item's revision, and returns them and the revision of the
	// delete. An item whose stream is gone or at another revision is
	// skipped, not an error; when none is left it returns no stream,
	// revision 0 and no error, and takes no revision.
	DeleteMany(items []Conditional) ([]stream.Spec, uint64, error)
	// Allocate stores sp on the first port in [lo, hi] that has no stream
	// of sp's protocol and for which busy (if not nil) is false,
	// atomically: two concurrent calls never get the same port.
	Allocate(sp stream.Spec, lo, hi int, busy func(port int) bool) (stream.Spec, error)
	// Import creates or replaces every spec and, with prune, deletes the
	// streams specs does not name: all of it or none, never seen half
	// done by a reader.
	Import(specs []stream.Spec, prune bool) (ImportResult, error)
	// Since returns the changes after revision after, in revision order,
	// or ErrCompacted when some of them are no longer kept.
	Since(after uint64) ([]Change, error)
	// Updated returns a channel that is closed at the next commit. Take
	// it before calling Since, and no change is missed.
	Updated() <-chan struct{}

	// AppendAudit adds rec to the audit log with the next sequence
	// number (rec.Seq is ignored), durably, and drops the oldest records
	// beyond the retention the implementation was opened with. A record
	// is not desired state: it takes no revision and wakes no watcher.
	AppendAudit(rec AuditRecord) error
	// Audit returns up to limit records older than before (the newest
	// when before is 0), newest first: the last one's Seq is the cursor
	// of the next page.
	Audit(before uint64, limit int) ([]AuditRecord, error)
	// Backup writes a consistent snapshot of the whole state (streams
	// and audit log) to w, in the implementation's own format, one it
	// can be restored from; it calls begin once, before the first byte,
	// with the snapshot's size and revision. Writes go on meanwhile.
	Backup(w io.Writer, begin func(BackupInfo)) error
	// Check returns nil while the state takes writes; else the reason,
	// wrapping ErrUnavailable when it lasts until an operator acts.
	Check() error
}
