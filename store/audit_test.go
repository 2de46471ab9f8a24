package store

import (
	"path/filepath"
	"sync"
	"testing"
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
			if err := s.AppendAudit(AuditEntry{Method: "PUT", Path: "/v1/streams/tcp/9000", Status: 200 + i%2}); err != nil {
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
