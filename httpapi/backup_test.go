package httpapi

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

func TestBackupServesAnOpenableDatabase(t *testing.T) {
	srv, _, _ := newTestServer(t)
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`})
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/backup", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/octet-stream" ||
		!strings.Contains(rec.Header().Get("Content-Disposition"), "stream-conductor-1.db") ||
		rec.Header().Get("Content-Length") != strconv.Itoa(rec.Body.Len()) {
		t.Fatalf("backup: %d %v", rec.Code, rec.Header())
	}
	path := filepath.Join(t.TempDir(), "restored.db")
	if err := os.WriteFile(path, rec.Body.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer st.Close()
	if sp, err := st.Get(stream.MustParseID("tcp/9001")); err != nil || sp.Backends[0] != "a:1" {
		t.Fatalf("restored: %+v %v", sp, err)
	}
}
