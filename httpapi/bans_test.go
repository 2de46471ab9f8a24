package httpapi

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/bans"
	"github.com/streamconductor/stream-conductor/policy"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/writes"
)

// fakeBans is a BanSource over a list; lifts are applied at once unless
// stuck.
type fakeBans struct {
	mu    sync.Mutex
	bans  []bans.Ban
	stuck bool
}

func (f *fakeBans) List(id *stream.ID) []bans.Ban {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bans.Ban
	for _, b := range f.bans {
		if id == nil || b.Stream == *id {
			out = append(out, b)
		}
	}
	return out
}

func (f *fakeBans) Stats() (int, uint64) { return len(f.bans), uint64(len(f.bans)) }

func (f *fakeBans) Lift(id stream.ID, addr netip.Addr) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, b := range f.bans {
		if b.Stream == id && b.Address == addr {
			f.bans = append(f.bans[:i], f.bans[i+1:]...)
			return 1, nil
		}
	}
	return 0, bans.ErrNotFound
}

func (f *fakeBans) LiftAll(id stream.ID) (int, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	kept := f.bans[:0]
	for _, b := range f.bans {
		if b.Stream == id {
			n++
			continue
		}
		kept = append(kept, b)
	}
	f.bans = kept
	return n, 1
}

func (f *fakeBans) WaitApplied(ctx context.Context, _ stream.ID, _ uint64) error {
	if f.stuck {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func newBanServer(t *testing.T) (*Server, *fakeBans) {
	t.Helper()
	srv, st, _ := newTestServer(t)
	for _, sp := range []stream.Spec{
		{Protocol: stream.TCP, Listen: 9000, ListenEnd: 9009, PortMode: stream.PortModeFixed, Backends: []string{"127.0.0.1:2000"}},
		{Protocol: stream.UDP, Listen: 53, Backends: []string{"127.0.0.1:5353"}},
	} {
		if _, _, err := st.Put(sp, store.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	fb := &fakeBans{bans: []bans.Ban{
		{Stream: stream.MustParseID("tcp/9000"), Address: netip.MustParseAddr("127.0.0.3"), Since: now, Until: now.Add(90 * time.Second), Failures: 3},
		{Stream: stream.MustParseID("tcp/9000"), Address: netip.MustParseAddr("2001:db8::7"), Since: now, Until: now.Add(time.Hour), Failures: 5},
		{Stream: stream.MustParseID("udp/53"), Address: netip.MustParseAddr("127.0.0.4"), Since: now, Until: now.Add(time.Hour), Failures: 3},
	}}
	srv.cfg.Bans = fb
	return srv, fb
}

func TestBansList(t *testing.T) {
	srv, _ := newBanServer(t)
	rec, body := do(t, srv, call{method: "GET", path: "/v1/bans"})
	list, _ := body["bans"].([]any)
	if rec.Code != 200 || len(list) != 3 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	first := list[0].(map[string]any)
	if first["stream"] != "tcp/9000" || first["address"] != "127.0.0.3" || first["failures"] != 3.0 {
		t.Errorf("first = %v", first)
	}
	if e := first["expires_in_seconds"].(float64); e < 85 || e > 90 {
		t.Errorf("expires_in_seconds = %v", e)
	}
	_, body = do(t, srv, call{method: "GET", path: "/v1/bans?stream=udp/53"})
	if list := body["bans"].([]any); len(list) != 1 || list[0].(map[string]any)["address"] != "127.0.0.4" {
		t.Errorf("filtered: %v", body)
	}
	_, body = do(t, srv, call{method: "GET", path: "/v1/bans?stream=tcp/9000-9009"})
	if list := body["bans"].([]any); len(list) != 2 {
		t.Errorf("a range's bans by its ports: %v", body)
	}
	// A stream that does not exist, a range's wrong end, a port inside a
	// range: 404, as for the stream's own routes.
	for _, ref := range []string{"tcp/9500", "tcp/9000-9004", "tcp/9003"} {
		if rec, _ := do(t, srv, call{method: "GET", path: "/v1/bans?stream=" + ref}); rec.Code != 404 {
			t.Errorf("bans of %s: %d %s; want 404", ref, rec.Code, rec.Body)
		}
	}
	rec, body = do(t, srv, call{method: "GET", path: "/v1/bans?stream=tcp/x"})
	if code, field := errorOf(body); rec.Code != 400 || code != CodeInvalid || field != "stream" {
		t.Errorf("bad filter: %d %s", rec.Code, rec.Body)
	}
	// Without bans (external mode) the list is empty, not an error.
	plain, _, _ := newTestServer(t)
	if rec, body := do(t, plain, call{method: "GET", path: "/v1/bans"}); rec.Code != 200 || len(body["bans"].([]any)) != 0 {
		t.Errorf("no bans: %d %s", rec.Code, rec.Body)
	}
}

func TestBansLift(t *testing.T) {
	srv, fb := newBanServer(t)
	for _, tc := range []struct {
		name, path string
		status     int
		field      string
	}{
		{"bad address", "/v1/bans/tcp/9000/127.0.0.300", 400, "address"},
		{"zone", "/v1/bans/tcp/9000/fe80::1%25eth0", 400, "address"},
		{"bad protocol", "/v1/bans/sctp/9000/127.0.0.3", 400, "protocol"},
		{"bad port", "/v1/bans/tcp/0/127.0.0.3", 400, "listen"},
		{"not banned", "/v1/bans/tcp/9000/127.0.0.9", 404, ""},
		{"a port inside the range", "/v1/bans/tcp/9001/127.0.0.3", 404, ""},
		{"no such stream", "/v1/bans/tcp/9500/127.0.0.3", 404, ""},
		{"the range's wrong end", "/v1/bans/tcp/9000-9004/127.0.0.3", 404, ""},
		{"all of no such stream", "/v1/bans/tcp/9500", 404, ""},
	} {
		rec, body := do(t, srv, call{method: "DELETE", path: tc.path})
		if _, field := errorOf(body); rec.Code != tc.status || field != tc.field {
			t.Errorf("%s: %d %s", tc.name, rec.Code, rec.Body)
		}
	}
	if len(fb.bans) != 3 {
		t.Fatal("a refused lift lifted")
	}
	// A dry run says what would be lifted, and lifts nothing.
	for _, path := range []string{"/v1/bans/tcp/9000-9009/127.0.0.3?dry_run=true", "/v1/bans/tcp/9000?dry_run=true"} {
		rec, body := do(t, srv, call{method: "DELETE", path: path})
		if rec.Code != 200 || body["dry_run"] != true || len(body["lifted"].([]any)) == 0 || len(fb.bans) != 3 {
			t.Fatalf("dry run %s: %d %s, %d bans left", path, rec.Code, rec.Body, len(fb.bans))
		}
	}
	rec, body := do(t, srv, call{method: "DELETE", path: "/v1/bans/tcp/9000/::ffff:127.0.0.3"})
	if rec.Code != 200 || body["applied"] != true || body["lifted"].([]any)[0] != "127.0.0.3" || len(fb.bans) != 2 {
		t.Fatalf("lift: %d %s", rec.Code, rec.Body)
	}
	rec, body = do(t, srv, call{method: "DELETE", path: "/v1/bans/tcp/9000"})
	if rec.Code != 200 || len(body["lifted"].([]any)) != 1 || len(fb.List(nil)) != 1 {
		t.Fatalf("lift all: %d %s", rec.Code, rec.Body)
	}
	rec, body = do(t, srv, call{method: "DELETE", path: "/v1/bans/tcp/9000"})
	if rec.Code != 200 || len(body["lifted"].([]any)) != 0 {
		t.Fatalf("lift all of none: %d %s", rec.Code, rec.Body)
	}
	// nginx does not apply the lift in time: 503 apply_timeout, saying
	// what was lifted; wait=false answers 202 at once.
	fb.stuck = true
	rec, body = do(t, srv, call{method: "DELETE", path: "/v1/bans/udp/53/127.0.0.4"})
	if code, _ := errorOf(body); rec.Code != 503 || code != CodeApplyTimeout || body["applied"] != false {
		t.Fatalf("stuck: %d %s", rec.Code, rec.Body)
	}
	fb.bans = append(fb.bans, bans.Ban{Stream: stream.MustParseID("udp/53"), Address: netip.MustParseAddr("127.0.0.4")})
	if rec, _ := do(t, srv, call{method: "DELETE", path: "/v1/bans/udp/53/127.0.0.4?wait=false"}); rec.Code != 202 {
		t.Fatalf("wait=false: %d %s", rec.Code, rec.Body)
	}
}

// The ban policy is a field like the others: validated with its field
// named, shown, exported, imported and dry-run.
func TestBanPolicyThroughTheAPI(t *testing.T) {
	srv, st, _ := newTestServer(t)
	for _, tc := range []struct{ body, field string }{
		{`{"backend":"a:1","ban":{"after":0,"within":"1m","for":"1h"}}`, "ban.after"},
		{`{"backend":"a:1","ban":{"after":"ten","within":"1m","for":"1h"}}`, "ban.after"},
		{`{"backend":"a:1","ban":{"after":3,"within":"forever","for":"1h"}}`, "ban.within"},
		{`{"backend":"a:1","ban":{"after":3,"within":"1m"}}`, "ban.for"},
		{`{"backend":"a:1","ban":{"after":3,"within":"1m","for":"1h","until":"x"}}`, "until"}, // as for every nested object: json names the key only,
		{`{"backend":"a:1","ban":"10/1m/1h"}`, "ban"},
	} {
		rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: tc.body})
		if code, field := errorOf(body); rec.Code != 400 || code != CodeInvalid || field != tc.field {
			t.Errorf("%s: %d %s", tc.body, rec.Code, rec.Body)
		}
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatal("a refused ban was stored")
	}
	put := `{"backend":"a:1","ban":{"after":10,"within":"60s","for":"1h"}}`
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: put})
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"within": "1m0s"`) {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	if rec, _ = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: put}); rec.Code != 201 {
		t.Fatalf("put: %d %s", rec.Code, rec.Body)
	}
	_, body = do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	if b, _ := body["ban"].(map[string]any); b["after"] != 10.0 || b["within"] != "1m0s" || b["for"] != "1h0m0s" {
		t.Fatalf("shown: %v", body)
	}
	rec, _ = do(t, srv, call{method: "GET", path: "/v1/export"})
	exported := rec.Body.String()
	if !strings.Contains(exported, `"ban"`) {
		t.Fatalf("export lacks ban: %s", exported)
	}
	srv2, st2, _ := newTestServer(t)
	if rec, _ := do(t, srv2, call{method: "POST", path: "/v1/import", body: exported}); rec.Code != 200 {
		t.Fatalf("import: %d %s", rec.Code, rec.Body)
	}
	a, _ := st.List()
	b, _ := st2.List()
	if len(b) != 1 || b[0].Ban == nil || !a[0].SameDesired(b[0]) {
		t.Fatalf("round trip: %+v", b)
	}
}

// External mode has no session log: a ban policy is refused there, with
// the reason.
func TestBanPolicyRefusedInExternalMode(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ap := &fakeApplier{st: st}
	wp := writes.New(writes.Config{PortMin: 9000, PortMax: 9009, NoSessionLog: true, ApplyTimeout: 200 * time.Millisecond, Log: zerolog.Nop()},
		st, ap, &policy.Backends{})
	t.Cleanup(wp.Close)
	srv := New(Config{PortMin: 9000, PortMax: 9009, ApplyTimeout: 200 * time.Millisecond, NginxMode: "external", Log: zerolog.Nop()}, st, ap, wp)
	rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1","ban":{"after":3,"within":"1m","for":"1h"}}`})
	if code, field := errorOf(body); rec.Code != 400 || code != CodeInvalid || field != "ban" || !strings.Contains(rec.Body.String(), "NGINX_MODE") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}
