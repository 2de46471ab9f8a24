package conformance

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
)

// stateAt replays the changes up to revision rev.
func stateAt(changes []desired.Change, rev uint64) map[string]string {
	state := map[string]string{}
	for _, c := range changes {
		if c.Revision <= rev {
			replay(state, []desired.Change{c})
		}
	}
	return state
}

// writeOn keeps writing streams until stop is closed, and returns when it
// stopped.
func writeOn(t *testing.T, st desired.State, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100000 {
			select {
			case <-stop:
				return
			default:
			}
			port := 9000 + i%30
			if i%4 == 3 {
				st.Delete(tcp(port), desired.Match{})
				continue
			}
			if _, _, err := st.Put(spec(port, fmt.Sprintf("10.0.%d.%d:1", i/250%250, i%250+1)), desired.Match{}); err != nil {
				t.Errorf("put: %v", err)
				return
			}
		}
	}()
	return done
}

// A list taken while writes go on is the state at its revision: what the
// changes up to it make, no more, no less (an export is such a list).
func listIsOneRevision(t *testing.T, st desired.State) {
	_, start := st.List()
	stop := make(chan struct{})
	done := writeOn(t, st, stop)
	type snap struct {
		state map[string]string
		rev   uint64
	}
	var snaps []snap
	for range 50 {
		list, rev := st.List()
		m := make(map[string]string, len(list))
		for _, sp := range list {
			if sp.Revision > rev {
				t.Errorf("the list at revision %d holds %s at revision %d", rev, sp.ID(), sp.Revision)
			}
			m[sp.ID().String()] = sp.Backends[0]
		}
		snaps = append(snaps, snap{m, rev})
	}
	close(stop)
	<-done
	changes, err := st.Since(start)
	if err != nil {
		t.Fatalf("since %d: %v", start, err)
	}
	for _, s := range snaps {
		if want := stateAt(changes, s.rev); !mapsEqual(s.state, want) {
			t.Fatalf("the list at revision %d is %v; the changes up to it make %v", s.rev, s.state, want)
		}
	}
}

// countingWriter checks that begin came before the first byte.
type countingWriter struct {
	buf   bytes.Buffer
	begun bool
	early bool
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if !w.begun {
		w.early = true
	}
	return w.buf.Write(p)
}

// A backup taken while writes go on is told its size and revision first,
// writes that many bytes, and restores to the state at that revision,
// audit log included.
func backupAtItsRevision(t *testing.T, st desired.State, restore func(*testing.T, []byte) desired.State) {
	_, start := st.List()
	for i := range 3 {
		if err := st.AppendAudit(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	done := writeOn(t, st, stop)
	for { // some writes first
		if _, rev := st.List(); rev > start+20 {
			break
		}
		select {
		case <-done:
			t.Fatal("the writer stopped")
		default:
		}
	}
	var w countingWriter
	var info desired.BackupInfo
	begins := 0
	err := st.Backup(&w, func(i desired.BackupInfo) { info, w.begun = i, true; begins++ })
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if begins != 1 || w.early || int64(w.buf.Len()) != info.Size {
		t.Fatalf("begin called %d times (before the first byte: %v), told size %d, wrote %d", begins, !w.early, info.Size, w.buf.Len())
	}
	changes, err := st.Since(start)
	if err != nil {
		t.Fatalf("since %d: %v", start, err)
	}
	restored := restore(t, w.buf.Bytes())
	list, rev := restored.List()
	if rev != info.Revision {
		t.Fatalf("the restored state is at revision %d, the backup said %d", rev, info.Revision)
	}
	got := listed(restored)
	if want := stateAt(changes, rev); !mapsEqual(got, want) || len(list) != len(got) {
		t.Fatalf("the backup at revision %d restores %v; the changes up to it make %v", rev, got, want)
	}
	recs := mustAudit(t, restored, 0, 10)
	if len(recs) != 3 || sameRecord(recs[0], record(2)) != "" {
		t.Fatalf("the restored audit log: %+v", recs)
	}
}
