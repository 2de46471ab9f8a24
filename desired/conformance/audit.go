package conformance

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// record is the i-th audit record the cases append.
func record(i int) desired.AuditRecord {
	before := spec(9000+i, fmt.Sprintf("10.0.0.%d:1", i%250+1))
	after := spec(9000+i, "10.0.9.9:2")
	return desired.AuditRecord{
		Time:      time.Date(2026, 11, 30, 0, 0, i, 123456789, time.UTC),
		RequestID: fmt.Sprint(1000 + i), Source: "192.0.2.7:40000", Actor: "write:hmac-0123",
		Operation: "/v1/streams/{protocol}/{port}", Request: fmt.Sprintf("PUT /v1/streams/tcp/%d", 9000+i),
		Stream: before.ID(), Before: &before, After: &after, Outcome: 200, Result: "ok",
	}
}

// sameRecord says how got differs from want (Seq aside), or "".
func sameRecord(got, want desired.AuditRecord) string {
	same := func(a, b *stream.Spec) bool {
		return (a == nil) == (b == nil) && (a == nil || a.SameDesired(*b))
	}
	switch {
	case !got.Time.Equal(want.Time):
		return fmt.Sprintf("time %v, want %v", got.Time, want.Time)
	case got.RequestID != want.RequestID || got.Source != want.Source || got.Actor != want.Actor ||
		got.Operation != want.Operation || got.Request != want.Request || got.Stream != want.Stream ||
		got.Outcome != want.Outcome || got.Result != want.Result:
		return fmt.Sprintf("%+v, want %+v", got, want)
	case !same(got.Before, want.Before) || !same(got.After, want.After):
		return fmt.Sprintf("before/after %+v %+v, want %+v %+v", got.Before, got.After, want.Before, want.After)
	}
	return ""
}

func mustAudit(t *testing.T, st desired.State, before uint64, limit int) []desired.AuditRecord {
	t.Helper()
	recs, err := st.Audit(before, limit)
	if err != nil {
		t.Fatalf("audit before %d: %v", before, err)
	}
	return recs
}

// Records come back newest first, each as it was appended, with growing
// sequence numbers; appending one moves no revision, lists no change and
// wakes no watcher.
func auditNewestFirst(t *testing.T, st desired.State) {
	mustPut(t, st, spec(9000, "10.0.0.1:1"), desired.Match{})
	_, rev := st.List()
	updated := st.Updated()
	const n = 10
	for i := range n {
		if err := st.AppendAudit(record(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	undo := desired.AuditRecord{Time: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC), RequestID: "1009",
		Operation: desired.OpUndo, Stream: "tcp/9009", Before: ptr(spec(9009, "10.0.9.9:2")), Result: "undone: nginx refused it"}
	if err := st.AppendAudit(undo); err != nil {
		t.Fatalf("append the undo: %v", err)
	}
	got := mustAudit(t, st, 0, 100)
	if len(got) != n+1 {
		t.Fatalf("%d records, want %d", len(got), n+1)
	}
	if d := sameRecord(got[0], undo); d != "" {
		t.Fatalf("the newest record: %s", d)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq >= got[i-1].Seq {
			t.Fatalf("record %d has seq %d after %d: not newest first", i, got[i].Seq, got[i-1].Seq)
		}
		if d := sameRecord(got[i], record(n-i)); d != "" {
			t.Fatalf("record %d: %s", i, d)
		}
	}
	if _, after := st.List(); after != rev {
		t.Fatalf("appending records moved the revision from %d to %d", rev, after)
	}
	if changes, err := st.Since(rev); err != nil || len(changes) != 0 {
		t.Fatalf("appending records left changes %+v, %v", changes, err)
	}
	select {
	case <-updated:
		t.Fatal("appending records woke the watchers of the desired state")
	default:
	}
}

// Pages taken with the last seq of each as the cursor hold every record
// once, newest first, even while more are appended.
func auditPages(t *testing.T, st desired.State) {
	const n, page = 25, 10
	for i := range n {
		if err := st.AppendAudit(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	first := mustAudit(t, st, 0, page)
	// Records appended after the first page belong to no later page.
	if err := st.AppendAudit(record(99)); err != nil {
		t.Fatal(err)
	}
	all := first
	for cursor := first[len(first)-1].Seq; ; {
		next := mustAudit(t, st, cursor, page)
		if len(next) == 0 {
			break
		}
		if len(next) > page || len(all) > n {
			t.Fatalf("a page of %d records (limit %d), %d in all", len(next), page, len(all)+len(next))
		}
		all = append(all, next...)
		cursor = next[len(next)-1].Seq
	}
	if len(all) != n {
		t.Fatalf("the pages hold %d records, want %d", len(all), n)
	}
	for i, r := range all {
		if d := sameRecord(r, record(n-1-i)); d != "" {
			t.Fatalf("record %d of the pages: %s", i, d)
		}
		if i > 0 && r.Seq >= all[i-1].Seq {
			t.Fatalf("seq %d after %d", r.Seq, all[i-1].Seq)
		}
	}
}

// Opened to keep 5 records, the log keeps the 5 newest, whoever appends.
func auditRetention(t *testing.T, st desired.State) {
	const n = 12
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := st.AppendAudit(record(i)); err != nil {
				t.Errorf("append: %v", err)
			}
		})
	}
	wg.Wait()
	got := mustAudit(t, st, 0, 100)
	if len(got) != 5 {
		t.Fatalf("%d records kept, want 5", len(got))
	}
	if err := st.AppendAudit(record(50)); err != nil {
		t.Fatal(err)
	}
	again := mustAudit(t, st, 0, 100)
	if len(again) != 5 || sameRecord(again[0], record(50)) != "" || again[4].Seq != got[3].Seq {
		t.Fatalf("after one more: %d records, newest %+v, oldest seq %d; want 5, the new one, seq %d", len(again), again[0], again[4].Seq, got[3].Seq)
	}
}

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
				st.Delete(stream.MakeID(stream.TCP, port), desired.Match{})
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
			m[sp.ID()] = sp.Backends[0]
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

func ptr(sp stream.Spec) *stream.Spec { return &sp }
