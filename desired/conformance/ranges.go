package conformance

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

func rangeSpec(first, last int) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: first, ListenEnd: last, PortMode: stream.PortModeFixed, Backends: []string{"10.0.0.1:1"}}
}

// wantConflict checks that err is a port conflict naming ports and the
// stream other, and that the state did not change.
func wantConflict(t *testing.T, st desired.State, what string, err error, ports, other string, rev uint64) {
	t.Helper()
	var pc *desired.PortConflictError
	if !errors.As(err, &pc) || !errors.Is(err, desired.ErrPortConflict) || pc.Ports != ports || pc.Other != other {
		t.Errorf("%s: %v, want ports %s taken by %s", what, err, ports, other)
	}
	if _, now := st.List(); now != rev {
		t.Errorf("%s: a refused write took a revision: %d → %d", what, rev, now)
	}
}

// No port of a range belongs to another stream of its protocol, whoever
// writes first; the check follows the range when it grows, shrinks or
// goes, and holds for imports and allocations too.
func portRangesDoNotOverlap(t *testing.T, st desired.State) {
	mustPut(t, st, rangeSpec(10000, 10099), desired.Match{})
	mustPut(t, st, spec(10150, "10.0.0.1:1"), desired.Match{})
	_, rev := st.List()
	_, _, err := st.Put(spec(10050, "10.0.0.1:1"), desired.Match{})
	wantConflict(t, st, "a port inside the range", err, "10050", "tcp/10000-10099", rev)
	if err != nil && !strings.Contains(err.Error(), "port 10050 is taken by stream tcp/10000-10099") {
		t.Errorf("message: %v", err)
	}
	_, _, err = st.Put(rangeSpec(9950, 10000), desired.Match{})
	wantConflict(t, st, "a range ending on its first port", err, "10000", "tcp/10000-10099", rev)
	_, _, err = st.Put(rangeSpec(10090, 10120), desired.Match{})
	wantConflict(t, st, "a range starting inside it", err, "10090-10099", "tcp/10000-10099", rev)
	_, _, err = st.Put(rangeSpec(10100, 10200), desired.Match{})
	wantConflict(t, st, "a range over a single port", err, "10150", "tcp/10150", rev)
	_, _, err = st.Put(rangeSpec(10000, 10150), desired.Match{})
	wantConflict(t, st, "the range grown over a single port", err, "10150", "tcp/10150", rev)
	_, err = st.Import([]stream.Spec{rangeSpec(10120, 10160)}, false)
	wantConflict(t, st, "an import over a single port", err, "10150", "tcp/10120-10160", rev)

	udp := rangeSpec(10000, 10099)
	udp.Protocol = stream.UDP
	mustPut(t, st, udp, desired.Match{})
	mustPut(t, st, spec(9999, "10.0.0.1:1"), desired.Match{})
	mustPut(t, st, spec(10100, "10.0.0.1:1"), desired.Match{})
	mustPut(t, st, rangeSpec(10000, 10049), desired.Match{}) // shrinks
	mustPut(t, st, spec(10050, "10.0.0.1:1"), desired.Match{})
	got, err := st.Allocate(spec(0, "10.0.0.1:1"), 10000, 10200, nil)
	if err != nil || got.Listen != 10051 {
		t.Errorf("allocate past a range: %v %v, want port 10051", got.Listen, err)
	}
	if _, _, err := st.Delete(tcp(10000), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, st, spec(10020, "10.0.0.1:1"), desired.Match{}) // the range is gone
	if _, err := st.Import([]stream.Spec{rangeSpec(10200, 10299), spec(10020, "10.0.0.1:1")}, true); err != nil {
		t.Fatalf("import of a free range, pruning: %v", err)
	}
	_, rev = st.List()
	_, _, err = st.Put(spec(10250, "10.0.0.1:1"), desired.Match{})
	wantConflict(t, st, "a port inside an imported range", err, "10250", "tcp/10200-10299", rev)
	got, err = st.Allocate(spec(0, "10.0.0.1:1"), 10200, 10300, nil)
	if err != nil || got.Listen != 10300 {
		t.Errorf("allocate past an imported range: %v %v, want port 10300", got.Listen, err)
	}
}

// A state restored from a backup keeps its ranges' ports: a port inside
// one is still refused.
func restoredRangesConflict(t *testing.T, st desired.State, restore func(*testing.T, []byte) desired.State) {
	mustPut(t, st, rangeSpec(10000, 10099), desired.Match{})
	var buf bytes.Buffer
	if err := st.Backup(&buf, func(desired.BackupInfo) {}); err != nil {
		t.Fatal(err)
	}
	restored := restore(t, buf.Bytes())
	_, rev := restored.List()
	_, _, err := restored.Put(spec(10050, "10.0.0.1:1"), desired.Match{})
	wantConflict(t, restored, "a port inside a restored range", err, "10050", "tcp/10000-10099", rev)
}
