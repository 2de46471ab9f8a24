package conformance

import (
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
		Stream: before.ID().String(), Before: &before, After: &after, Outcome: 200, Result: "ok",
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

func ptr(sp stream.Spec) *stream.Spec { return &sp }
