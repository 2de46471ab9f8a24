package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

func TestAuditPagesNewestFirstAndKeepsRetention(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{AuditRetention: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 80 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.AppendAudit(desired.AuditRecord{Request: "PUT /v1/streams/tcp/9000", Outcome: 200 + i%2}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	page, err := s.Audit(0, 20)
	if err != nil || len(page) != 20 || page[0].Seq != 80 || page[19].Seq != 61 {
		t.Fatalf("first page: %d entries, %v", len(page), err)
	}
	next, _ := s.Audit(page[19].Seq, 100)
	if len(next) != 30 || next[0].Seq != 60 || next[29].Seq != 31 {
		t.Fatalf("second page: %d entries from %d to %d", len(next), next[0].Seq, next[len(next)-1].Seq)
	}
}

// The byte budget drops the oldest entries once their total size is over
// it, even below the retention count, and the total survives a reopen.
func TestAuditKeepsWithinTheByteBudget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	const budget = 64 << 10
	s, err := Open(path, Options{AuditRetention: 10000, AuditMaxBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("d", 900)
	for range 300 {
		sp := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"10.0.0.1:1"}, Description: big}
		if err := s.AppendAudit(desired.AuditRecord{Request: "PUT /", After: &sp}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store, newest uint64, when string) {
		t.Helper()
		all, err := s.Audit(0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var total int
		for _, e := range all {
			v, _ := json.Marshal(toDisk(e))
			total += len(v)
		}
		if total > budget || total < budget-2*MaxAuditEntryBytes || all[0].Seq != newest || len(all) >= 300 {
			t.Fatalf("%s: %d entries (newest %d) of %d bytes, budget %d", when, len(all), all[0].Seq, total, budget)
		}
	}
	check(s, 300, "after 300 appends")
	s.Close()
	if s, err = Open(path, Options{AuditRetention: 10000, AuditMaxBytes: budget}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 100 {
		s.AppendAudit(desired.AuditRecord{Request: "DELETE /", Before: &stream.Spec{Description: big}})
	}
	check(s, 400, "after a reopen and 100 more")
}

// An entry over MaxAuditEntryBytes keeps the start of its streams and says
// what it left out.
func TestOversizedAuditEntryIsCompacted(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	huge := func() *stream.Spec {
		sp := stream.Spec{Protocol: stream.TCP, Listen: 9000, Description: strings.Repeat("é", 512)}
		for i := range 64 {
			sp.Backends = append(sp.Backends, fmt.Sprintf("%s-%d.example:2000", strings.Repeat("b", 230), i))
		}
		for i := range 256 {
			sp.Allow = append(sp.Allow, fmt.Sprintf("2001:db8:%x::/48", i))
		}
		return &sp
	}
	if err := s.AppendAudit(desired.AuditRecord{Request: "PUT /v1/streams/tcp/9000", Before: huge(), After: huge(), Outcome: 200, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	e, _ := s.Audit(0, 1)
	v, _ := json.Marshal(toDisk(e[0]))
	if len(v) > MaxAuditEntryBytes {
		t.Fatalf("entry of %d bytes", len(v))
	}
	if len(e[0].After.Backends) != compactListItems || e[0].After.Backends[0] != huge().Backends[0] || !utf8.ValidString(e[0].After.Description) {
		t.Fatalf("compacted after: %+v", e[0].After)
	}
	if !strings.Contains(e[0].Compacted, "before: 56 of 64 backends, 248 of 256 allow entries") || e[0].Outcome != 200 || e[0].Request != "PUT /v1/streams/tcp/9000" {
		t.Fatalf("entry: %+v", e[0])
	}
}

// Entries written before the record named no transport (remote, token,
// method, path, route, status) read back as records: the request is
// "METHOD PATH"; an undo has no request.
func TestLegacyAuditEntriesReadAsRecords(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	legacy := []string{
		`{"seq":1,"time":"2026-11-01T10:00:00.123456789Z","request_id":"7","remote":"127.0.0.1:5000","token":"write:1a2b3c4d","method":"PUT","path":"/v1/streams/tcp/9000","route":"/v1/streams/{protocol}/{port}","stream":"tcp/9000","before":null,"after":{"protocol":"tcp","listen":9000,"backends":["a:1"],"revision":3,"created_at":"2026-11-01T10:00:00Z","updated_at":"2026-11-01T10:00:00Z"},"status":201,"result":"ok"}`,
		`{"seq":2,"time":"2026-11-01T10:00:01Z","request_id":"7","remote":"","token":"","method":"","path":"","route":"undo","stream":"tcp/9000","before":null,"after":null,"status":0,"result":"undone: nginx refused it: x"}`,
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketAudit)
		if err != nil {
			return err
		}
		for i, v := range legacy {
			if err := b.Put(u64(uint64(i+1)), []byte(v)); err != nil {
				return err
			}
		}
		return b.SetSequence(2)
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Audit(0, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("audit: %+v, %v", got, err)
	}
	put := desired.AuditRecord{Seq: 1, Time: time.Date(2026, 11, 1, 10, 0, 0, 123456789, time.UTC), RequestID: "7", Source: "127.0.0.1:5000",
		Actor: "write:1a2b3c4d", Operation: "/v1/streams/{protocol}/{port}", Request: "PUT /v1/streams/tcp/9000", Stream: "tcp/9000", Outcome: 201, Result: "ok"}
	undo := desired.AuditRecord{Seq: 2, Time: time.Date(2026, 11, 1, 10, 0, 1, 0, time.UTC), RequestID: "7", Operation: desired.OpUndo, Stream: "tcp/9000",
		Result: "undone: nginx refused it: x"}
	g := got[1]
	if g.After == nil || g.After.Backends[0] != "a:1" || g.After.Revision != 3 {
		t.Fatalf("legacy after: %+v", g.After)
	}
	g.After = nil
	if !reflect.DeepEqual(g, put) || !reflect.DeepEqual(got[0], undo) {
		t.Fatalf("legacy entries read as\n%+v\n%+v\nwant\n%+v\n%+v", g, got[0], put, undo)
	}
	if err := s.AppendAudit(desired.AuditRecord{Operation: "x"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Audit(0, 1); got[0].Seq != 3 {
		t.Fatalf("the next record after legacy ones has seq %d, want 3", got[0].Seq)
	}
}

// A routed stream with many routes keeps its first routes in an entry
// too big for the log, rather than losing before and after altogether.
func TestAuditCompactsRoutes(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sp := stream.Spec{Protocol: stream.TCP, Listen: 443}
	for i := range 200 {
		sp.Routes = append(sp.Routes, stream.Route{ServerName: fmt.Sprintf("%s-%d.example", strings.Repeat("n", 40), i), Backends: []string{"10.0.0.1:443"}})
	}
	if err := s.AppendAudit(desired.AuditRecord{Request: "PUT /v1/streams/tcp/443", After: &sp, Outcome: 201, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	e, _ := s.Audit(0, 1)
	if e[0].After == nil || len(e[0].After.Routes) != compactListItems || e[0].After.Routes[0].ServerName != sp.Routes[0].ServerName ||
		!strings.Contains(e[0].Compacted, "after: 192 of 200 routes") {
		t.Fatalf("entry: %+v", e[0])
	}
}
