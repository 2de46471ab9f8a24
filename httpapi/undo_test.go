package httpapi

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// A write nginx refuses is undone by the write path whether or not the
// client waits for the answer: with ?wait=false, and when the client went
// away before the apply. The audit log has an entry for each undo, with
// the request id of the refused write.
func TestRefusedWriteUndoneWhoeverWaits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		path  string
		gone  bool
		code  int
		errCd string
	}{
		{"wait=false", "/v1/streams/tcp/9001?wait=false", false, 202, ""},
		{"client went away", "/v1/streams/tcp/9001", true, 503, CodeApplyTimeout},
		{"client waits", "/v1/streams/tcp/9001", false, 422, CodeNginxRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, st, _ := newTestServer(t)
			req := httptest.NewRequest("PUT", tc.path, strings.NewReader(`{"backend":"bad.invalid:1"}`))
			req.Header.Set("Content-Type", "application/json")
			if tc.gone {
				ctx, cancel := context.WithCancel(req.Context())
				cancel()
				req = req.WithContext(ctx)
			}
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != tc.code || (tc.errCd != "" && !strings.Contains(rec.Body.String(), `"code": "`+tc.errCd+`"`)) {
				t.Fatalf("%d %s, want %d %s", rec.Code, rec.Body, tc.code, tc.errCd)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				entries, err := st.Audit(0, 10)
				if err != nil {
					t.Fatal(err)
				}
				var undo, request int
				for _, e := range entries {
					if e.Operation == desired.OpUndo && e.Stream == "tcp/9001" && strings.HasPrefix(e.Result, UndoResult+": host not found") &&
						e.RequestID == rec.Header().Get("X-Request-Id") && e.After == nil && e.Before.Backends[0] == "bad.invalid:1" {
						undo++
					}
					if strings.HasPrefix(e.Request, "PUT ") && e.Stream == "tcp/9001" {
						request++
					}
				}
				_, gerr := st.Get(stream.MustParseID("tcp/9001"))
				if undo == 1 && request == 1 && errors.Is(gerr, desired.ErrNotFound) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("within 5s: %d undo entries, %d request entries, stream: %v; want 1, 1, gone", undo, request, gerr)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
