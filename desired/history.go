package desired

// HistorySize is how many changes an implementation keeps in memory for
// Since; a consumer that falls further behind lists the whole state again.
const HistorySize = 10000

// History is the latest changes, oldest first, for an implementation's
// Since. Everything up to Base is forgotten: at open, Base is the revision
// the state was at. It is not safe for concurrent use.
type History struct {
	Base    uint64
	changes []Change
}

// Add records changes, in revision order.
func (h *History) Add(changes ...Change) {
	h.changes = append(h.changes, changes...)
	if len(h.changes) < 2*HistorySize {
		return
	}
	drop := len(h.changes) - HistorySize
	h.Base = max(h.Base, h.changes[drop-1].Revision)
	h.changes = append([]Change(nil), h.changes[drop:]...)
}

// Since returns a copy of the changes after revision after, or
// ErrCompacted when some of them are no longer kept.
func (h *History) Since(after uint64) ([]Change, error) {
	if after < h.Base {
		return nil, ErrCompacted
	}
	i := len(h.changes)
	for i > 0 && h.changes[i-1].Revision > after {
		i--
	}
	return append([]Change(nil), h.changes[i:]...), nil
}
