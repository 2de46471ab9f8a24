package desired

import (
	"errors"
	"testing"
)

// Past twice HistorySize changes the oldest are dropped; asking for them
// says so, also when a dropped revision had several changes (an import).
func TestHistoryForgetsTheOldest(t *testing.T) {
	var h History
	for rev := uint64(1); rev <= 2*HistorySize-1; rev++ {
		h.Add(Change{Revision: rev})
	}
	h.Add(Change{Revision: 2 * HistorySize}, Change{Revision: 2 * HistorySize}) // one revision, two changes
	if _, err := h.Since(0); !errors.Is(err, ErrCompacted) {
		t.Fatalf("since 0 after dropping: %v, want ErrCompacted", err)
	}
	got, err := h.Since(h.Base)
	if err != nil || len(got) == 0 || got[0].Revision != h.Base+1 || got[len(got)-1].Revision != 2*HistorySize {
		t.Fatalf("since the base %d: %d changes, %v", h.Base, len(got), err)
	}
	if _, err := h.Since(h.Base - 1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("since just before the base: %v", err)
	}
	if got, err := h.Since(2 * HistorySize); err != nil || len(got) != 0 {
		t.Fatalf("since the last revision: %v, %v", got, err)
	}
}
