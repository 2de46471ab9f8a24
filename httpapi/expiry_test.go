package httpapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// expiresAt reads a stream answer's expires_at.
func expiresAt(t *testing.T, m map[string]any) time.Time {
	t.Helper()
	s, _ := m["expires_at"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("expires_at %q: %v in %v", s, err, m)
	}
	return at
}

// A write with ttl is stored with its deadline; GET shows ttl,
// expires_at and expires_in_seconds, and its answer PUT back changes
// nothing; the list shows them too.
func TestExpiryShownAndPutBack(t *testing.T) {
	srv, st, _ := newTestServer(t)
	before := time.Now()
	rec, got := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1","ttl":"2h"}`})
	if rec.Code != 201 {
		t.Fatalf("PUT: %d %s", rec.Code, rec.Body)
	}
	at := expiresAt(t, got)
	if at.Before(before.Add(2*time.Hour-time.Second)) || at.After(time.Now().Add(2*time.Hour)) || got["ttl"] != "2h0m0s" {
		t.Fatalf("expires_at %s ttl %v, want 2h from the write", at, got["ttl"])
	}
	if left := got["expires_in_seconds"].(float64); left < 7190 || left > 7200 {
		t.Fatalf("expires_in_seconds %v", left)
	}
	stored, _ := st.Get(stream.MustParseID("tcp/9001"))
	if stored.ExpiresAt == nil || !stored.ExpiresAt.Equal(at) {
		t.Fatalf("stored %v, answered %s", stored.ExpiresAt, at)
	}
	_, got = do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	for _, f := range daemonFields {
		delete(got, f)
	}
	back, _ := json.Marshal(got)
	if rec, _ := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: string(back)}); rec.Code != 200 {
		t.Fatalf("PUT of the GET answer: %d %s\n%s", rec.Code, rec.Body, back)
	}
	if after, _ := st.Get(stream.MustParseID("tcp/9001")); after.Revision != stored.Revision {
		t.Fatalf("the GET answer PUT back wrote a new revision: %+v", after)
	}
	_, list := do(t, srv, call{method: "GET", path: "/v1/streams"})
	item := list["streams"].([]any)[0].(map[string]any)
	if item["expires_at"] == nil || item["expires_in_seconds"] == nil {
		t.Fatalf("list item %v", item)
	}
	// A replace without ttl or expires_at no longer expires.
	rec, got = do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`})
	if _, ok := got["expires_at"]; rec.Code != 200 || ok || got["expires_in_seconds"] != nil {
		t.Fatalf("a replace without a deadline: %d %s", rec.Code, rec.Body)
	}
}

// Hostile ttl and expires_at values are refused with the field named,
// and nothing is stored.
func TestExpiryHostileInputs(t *testing.T) {
	srv, st, _ := newTestServer(t)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name, body, field string
	}{
		{"zero ttl", `{"backend":"a:1","ttl":"0s"}`, "ttl"},
		{"negative ttl", `{"backend":"a:1","ttl":"-2h"}`, "ttl"},
		{"huge ttl", `{"backend":"a:1","ttl":"100000h"}`, "ttl"},
		{"garbage ttl", `{"backend":"a:1","ttl":"soon"}`, "ttl"},
		{"ttl as a number", `{"backend":"a:1","ttl":7200}`, "ttl"},
		{"ttl with a newline", `{"backend":"a:1","ttl":"2h\n"}`, "ttl"},
		{"past expires_at", `{"backend":"a:1","expires_at":"` + past + `"}`, "expires_at"},
		{"expires_at without a zone", `{"backend":"a:1","expires_at":"2030-01-01T00:00:00"}`, "expires_at"},
		{"expires_at as a date", `{"backend":"a:1","expires_at":"2030-01-01"}`, "expires_at"},
		{"expires_at in 9999", `{"backend":"a:1","expires_at":"9999-12-31T23:59:59Z"}`, "expires_at"},
		{"expires_at as a number", `{"backend":"a:1","expires_at":1893456000}`, "expires_at"},
		{"garbage expires_at", `{"backend":"a:1","expires_at":"tomorrow"}`, "expires_at"},
		{"both, ttl bad", `{"backend":"a:1","ttl":"x","expires_at":"` + future + `"}`, "ttl"},
		{"both, expires_at past", `{"backend":"a:1","ttl":"1h","expires_at":"` + past + `"}`, "expires_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, body := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: tc.body})
			if code, field := errorOf(body); rec.Code != 400 || code != CodeInvalid || field != tc.field {
				t.Fatalf("%d %s, want 400 invalid on field %s", rec.Code, rec.Body, tc.field)
			}
			rec, body = do(t, srv, call{method: "POST", path: "/v1/streams/tcp/9001/renew", body: strings.Replace(tc.body, `"backend":"a:1",`, "", 1)})
			if code, _ := errorOf(body); rec.Code != 400 && rec.Code != 404 || code == "" {
				t.Fatalf("renew: %d %s", rec.Code, rec.Body)
			}
		})
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatalf("hostile writes stored %v", l)
	}
}

// POST .../renew: a new lifetime, the stream's own ttl again, a new
// deadline; refusals with the right status; a dry run changes nothing;
// If-Match holds; an audit entry.
func TestRenewRoute(t *testing.T) {
	srv, st, _ := newTestServer(t)
	renew := func(body string, header map[string]string) (int, map[string]any) {
		rec, m := do(t, srv, call{method: "POST", path: "/v1/streams/tcp/9001/renew", body: body, header: header})
		return rec.Code, m
	}
	if code, m := renew(`{"ttl":"1h"}`, nil); code != 404 {
		t.Fatalf("renew of a missing stream: %d %v", code, m)
	}
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1"}`})
	if code, m := renew("", nil); code != 400 || m["error"].(map[string]any)["field"] != "ttl" {
		t.Fatalf("renew without a body of a stream without a ttl: %d %v", code, m)
	}
	code, m := renew(`{"ttl":"10m"}`, nil)
	if code != 200 || m["ttl"] != "10m0s" {
		t.Fatalf("renew that gives a first deadline: %d %v", code, m)
	}
	first := expiresAt(t, m)
	rev := fmt.Sprint(m["revision"])
	code, m = renew("", nil)
	if code != 200 || expiresAt(t, m).Before(first) {
		t.Fatalf("renew by the stream's ttl: %d %v", code, m)
	}
	if code, _ = renew(`{"ttl":"1h"}`, map[string]string{"If-Match": `"` + rev + `"`}); code != 412 {
		t.Fatalf("renew with a stale If-Match: %d", code)
	}
	when := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Millisecond)
	code, m = renew(`{"expires_at":"`+when.Format(time.RFC3339Nano)+`"}`, map[string]string{"If-Match": fmt.Sprintf(`"%v"`, m["revision"])})
	if code != 200 || !expiresAt(t, m).Equal(when) || m["ttl"] != "10m0s" {
		t.Fatalf("renew to a deadline: %d %v", code, m)
	}
	stored, _ := st.Get(stream.MustParseID("tcp/9001"))
	rec, dry := do(t, srv, call{method: "POST", path: "/v1/streams/tcp/9001/renew?dry_run=true", body: `{"ttl":"5h"}`})
	if rec.Code != 200 || dry["dry_run"] != true || dry["stream"].(map[string]any)["ttl"] != "5h0m0s" {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	if after, _ := st.Get(stream.MustParseID("tcp/9001")); after.Revision != stored.Revision {
		t.Fatal("a dry run renewed")
	}
	if code, m = renew(`{"ttl":"1h","expires_at":"`+when.Format(time.RFC3339)+`"}`, nil); code != 400 {
		t.Fatalf("renew with both: %d %v", code, m)
	}
	if code, m = renew(`{"ttl":"1h","backend":"b:1"}`, nil); code != 400 || m["error"].(map[string]any)["field"] != "backend" {
		t.Fatalf("renew with another field: %d %v", code, m)
	}
	rec, _ = do(t, srv, call{method: "POST", path: "/v1/streams/tcp/9001/renew", header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
	if rec.Code != 415 {
		t.Fatalf("renew sent as a form: %d", rec.Code)
	}
}

// Export carries the deadline and the ttl, and an import keeps the same
// deadline; an import of a stream whose deadline passed is refused, naming
// it, and changes nothing.
func TestExpiryExportImport(t *testing.T) {
	srv, st, _ := newTestServer(t)
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1","ttl":"3h"}`})
	want, _ := st.Get(stream.MustParseID("tcp/9001"))
	rec, _ := do(t, srv, call{method: "GET", path: "/v1/export"})
	exported := rec.Body.String()
	if !strings.Contains(exported, `"expires_at"`) || !strings.Contains(exported, `"ttl"`) {
		t.Fatalf("export: %s", exported)
	}
	srv2, st2, _ := newTestServer(t)
	if rec, _ := do(t, srv2, call{method: "POST", path: "/v1/import", body: exported}); rec.Code != 200 {
		t.Fatalf("import: %d %s", rec.Code, rec.Body)
	}
	got, _ := st2.Get(stream.MustParseID("tcp/9001"))
	if got.ExpiresAt == nil || !got.ExpiresAt.Equal(*want.ExpiresAt) || got.TTL != want.TTL {
		t.Fatalf("imported %v %q, exported %v %q", got.ExpiresAt, got.TTL, want.ExpiresAt, want.TTL)
	}
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	body := `{"streams":[{"protocol":"tcp","listen":9002,"backend":"a:1"},{"protocol":"tcp","listen":9003,"backend":"a:1","expires_at":"` + past + `"}]}`
	rec, m := do(t, srv2, call{method: "POST", path: "/v1/import", body: body})
	if _, field := errorOf(m); rec.Code != 400 || field != "streams[1].expires_at" {
		t.Fatalf("import of an expired stream: %d %s", rec.Code, rec.Body)
	}
	if l, _ := st2.List(); len(l) != 1 {
		t.Fatalf("a refused import changed the state: %v", l)
	}
}

// A dry run of a PUT with ttl shows the deadline it would store.
func TestExpiryDryRun(t *testing.T) {
	srv, st, _ := newTestServer(t)
	rec, m := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: `{"backend":"a:1","ttl":"90m"}`})
	if rec.Code != 200 || m["stream"].(map[string]any)["expires_at"] == nil || m["stream"].(map[string]any)["ttl"] != "1h30m0s" {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	if l, _ := st.List(); len(l) != 0 {
		t.Fatal("a dry run stored the stream")
	}
}

// FuzzExpiryBodies drives PUT and renew with arbitrary ttl and expires_at
// values: never a 5xx, always JSON, and every stored deadline is in UTC,
// whole milliseconds, at most stream.MaxTTL ahead.
func FuzzExpiryBodies(f *testing.F) {
	for _, s := range []struct{ ttl, at string }{
		{"2h", ""}, {"", "2030-01-01T00:00:00Z"}, {"-1s", ""}, {"0", ""}, {"1e9h", ""}, {"1h", "2030-01-01T00:00:00+14:00"},
		{"", "2030-01-01T00:00:00.123456789-12:00"}, {"", "0001-01-01T00:00:00Z"}, {"", "9999-12-31T23:59:59Z"},
		{"\x00", ""}, {"", "2030-02-30T00:00:00Z"}, {"1h\";", ""}, {"", "2030-01-01T25:00:00Z"},
	} {
		f.Add(s.ttl, s.at)
	}
	srv, st, _ := newTestServer(f)
	f.Fuzz(func(t *testing.T, ttl, at string) {
		fields := map[string]any{"backend": "a:1"}
		if ttl != "" {
			fields["ttl"] = ttl
		}
		if at != "" {
			fields["expires_at"] = at
		}
		body, _ := json.Marshal(fields)
		rec, _ := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: string(body)})
		checkAnswer(t, srv, rec.Code, rec.Body.Bytes())
		delete(fields, "backend")
		body, _ = json.Marshal(fields)
		rec, _ = do(t, srv, call{method: "POST", path: "/v1/streams/tcp/9001/renew", body: string(body)})
		checkAnswer(t, srv, rec.Code, rec.Body.Bytes())
		list, _ := st.List()
		for _, sp := range list {
			if sp.ExpiresAt == nil {
				continue
			}
			if d := *sp.ExpiresAt; d.Location() != time.UTC || d.Nanosecond()%int(time.Millisecond) != 0 || d.Sub(time.Now()) > stream.MaxTTL {
				t.Fatalf("stored deadline %s", d)
			}
		}
	})
}
