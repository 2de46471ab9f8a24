package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// create -ttl / -expires-at put them in the body.
func TestCreateWithExpiry(t *testing.T) {
	code, req, body, out := createRequest(t, "tcp/443", "10.0.0.5:443", "-ttl", "2h")
	if code != exitOK || req != "PUT /v1/streams/tcp/443" || !reflect.DeepEqual(body, map[string]any{"backends": []any{"10.0.0.5:443"}, "ttl": "2h"}) {
		t.Fatalf("exit %d, %s %v: %s", code, req, body, out)
	}
	code, _, body, out = createRequest(t, "tcp/443", "10.0.0.5:443", "-expires-at", "2030-01-01T00:00:00Z")
	if code != exitOK || body["expires_at"] != "2030-01-01T00:00:00Z" {
		t.Fatalf("exit %d, %v: %s", code, body, out)
	}
}

// renew sends POST .../renew with -ttl, -expires-at or no body, and
// prints the stream with the time it has left.
func TestRenewCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		body string
	}{
		{[]string{"tcp/9000", "-ttl", "30m"}, `{"ttl":"30m"}`},
		{[]string{"9000", "-expires-at", "2030-01-01T00:00:00Z"}, `{"expires_at":"2030-01-01T00:00:00Z"}`},
		{[]string{"tcp/9000"}, ``},
	} {
		var got, gotBody string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got, gotBody = r.Method+" "+r.URL.RequestURI(), string(b)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"tcp/9000","protocol":"tcp","listen":9000,"backends":["a:1"],"status":{"state":"active"},"expires_in_seconds":7140}`)
		}))
		var out, errOut bytes.Buffer
		env := map[string]string{"STREAM_CONDUCTOR_URL": srv.URL}
		code := runClient("renew", tc.args, func(k string) string { return env[k] }, &out, &errOut)
		srv.Close()
		if code != exitOK || got != "POST /v1/streams/tcp/9000/renew" || gotBody != tc.body {
			t.Fatalf("renew %v: exit %d, %s %q (want body %q): %s", tc.args, code, got, gotBody, tc.body, errOut.String())
		}
		if !strings.Contains(out.String(), "EXPIRES") || !strings.Contains(out.String(), "1h59m") {
			t.Fatalf("renew %v printed %s, want the time left", tc.args, out.String())
		}
	}
	if code, reqs, _ := runAgainst(t, "{}", "renew", "tcp/9000", "-ttl", "1h", "-expires-at", "2030-01-01T00:00:00Z"); code != exitUsage || len(reqs) != 0 {
		t.Fatalf("renew with both: exit %d, sent %v", code, reqs)
	}
}

// ls shows an EXPIRES column with the time left when a stream expires,
// and the table as before when none does.
func TestLsShowsTimeLeft(t *testing.T) {
	list := map[string]any{"streams": []any{
		map[string]any{"id": "tcp/9000", "listen": 9000, "backends": []string{"a:1"}, "status": map[string]any{"state": "active"}, "expires_in_seconds": 45},
		map[string]any{"id": "tcp/9001", "listen": 9001, "backends": []string{"a:1"}, "status": map[string]any{"state": "active"}},
	}}
	b, _ := json.Marshal(list)
	code, _, out := runAgainst(t, string(b), "ls")
	lines := strings.Split(out, "\n")
	if code != exitOK || !strings.Contains(lines[0], "EXPIRES") || !strings.Contains(lines[1], "45s") || !strings.Contains(lines[2], " - ") {
		t.Fatalf("ls: exit %d\n%s", code, out)
	}
	b, _ = json.Marshal(map[string]any{"streams": list["streams"].([]any)[1:]})
	if _, _, out = runAgainst(t, string(b), "ls"); strings.Contains(out, "EXPIRES") {
		t.Fatalf("ls without an expiring stream shows EXPIRES:\n%s", out)
	}
	for secs, want := range map[int64]string{0: "now", 59: "59s", 61: "1m1s", 7140: "1h59m", 3*86400 + 4*3600: "3d4h"} {
		if got := timeLeft(&secs); got != want {
			t.Errorf("timeLeft(%d) = %q, want %q", secs, got, want)
		}
	}
}
