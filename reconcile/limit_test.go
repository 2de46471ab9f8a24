package reconcile

import (
	"errors"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// Under an open-file limit that allows two streams, a third is refused
// before it is stored (BindConflict) and, stored anyway (a race, or a
// lower limit after a restart), fails alone with the limit's words while
// the others are applied.
func TestStreamsBeyondTheOpenFileLimitFailAlone(t *testing.T) {
	h := newHarness(t)
	h.rec.cfg.OpenFiles = &stream.OpenFiles{Soft: 80, Hard: 80, MaxStreams: 2}
	h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")

	err := h.rec.BindConflict(stream.Spec{Protocol: stream.TCP, Listen: 9002, Backends: []string{"c:1"}})
	if !errors.Is(err, stream.ErrStreamLimit) || !strings.Contains(err.Error(), "ulimit -n") || !strings.Contains(err.Error(), "at most 2 streams") {
		t.Fatalf("a third stream: %v, want ErrStreamLimit naming the limit and how to raise it", err)
	}
	if err := h.rec.BindConflict(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"z:1"}}); err != nil {
		t.Errorf("an update of a stream nginx serves: %v", err)
	}

	h.put(9002, "c:1")
	h.mustPass() // nothing for nginx to do: the new stream does not fit
	if st := h.state_("tcp/9002"); st.State != stream.Failed || !strings.Contains(st.Error, "open-file limit") {
		t.Errorf("tcp/9002: %+v, want failed with the limit", st)
	}
	for _, id := range []string{"tcp/9000", "tcp/9001"} {
		if st := h.state_(id); st.State != stream.Active {
			t.Errorf("%s: %+v, want active", id, st)
		}
	}
	if _, ok := h.files()["stream-tcp-9002.conf"]; ok {
		t.Error("the stream beyond the limit has a file")
	}
}
