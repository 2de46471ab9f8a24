package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestCreateWithBan(t *testing.T) {
	code, req, body, out := createRequest(t, "tcp/443", "10.0.0.9:443", "-ban", "10/1m/1h")
	if code != exitOK || req != "PUT /v1/streams/tcp/443" {
		t.Fatalf("exit %d, %s: %s", code, req, out)
	}
	want := map[string]any{"after": 10.0, "within": "1m", "for": "1h"}
	if !reflect.DeepEqual(body["ban"], want) {
		t.Fatalf("ban %v, want %v", body["ban"], want)
	}
	for _, bad := range []string{"10/1m", "x/1m/1h", "10/1m/1h/2h"} {
		if code, _, _, out := createRequest(t, "tcp/443", "10.0.0.9:443", "-ban", bad); code != exitUsage || !strings.Contains(out, "AFTER/WITHIN/FOR") {
			t.Errorf("-ban %s: exit %d: %s", bad, code, out)
		}
	}
}

// banClient runs a client subcommand against a fake API that records the
// request and answers with answer.
func banClient(t *testing.T, answer string, args ...string) (int, string, string) {
	t.Helper()
	var req string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req = r.Method + " " + r.URL.RequestURI()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	env := map[string]string{"STREAM_CONDUCTOR_URL": srv.URL}
	code := runClient(args[0], args[1:], func(k string) string { return env[k] }, &out, &errOut)
	return code, req, errOut.String() + out.String()
}

func TestBansAndUnbanCommands(t *testing.T) {
	list := `{"bans":[{"stream":"tcp/9000","address":"127.0.0.3","expires_in_seconds":3599,"failures":3}]}`
	code, req, out := banClient(t, list, "bans", "-stream", "9000")
	if code != exitOK || req != "GET /v1/bans?stream=tcp%2F9000" || !strings.Contains(out, "tcp/9000  127.0.0.3  59m59s      3") {
		t.Fatalf("bans: exit %d, %s:\n%s", code, req, out)
	}
	lifted := `{"stream":"tcp/9000","lifted":["2001:db8::7"],"applied":true}`
	code, req, out = banClient(t, lifted, "unban", "tcp/9000", "2001:db8::7")
	if code != exitOK || req != "DELETE /v1/bans/tcp/9000/2001:db8::7" || !strings.Contains(out, "unbanned 2001:db8::7 from tcp/9000") {
		t.Fatalf("unban: exit %d, %s: %s", code, req, out)
	}
	code, req, _ = banClient(t, lifted, "unban", "-all", "tcp/9000")
	if code != exitOK || req != "DELETE /v1/bans/tcp/9000" {
		t.Fatalf("unban -all: exit %d, %s", code, req)
	}
	for _, args := range [][]string{{"unban", "tcp/9000"}, {"unban", "tcp/9000", "127.0.0.3", "-all"}} {
		if code, _, out := banClient(t, lifted, args...); code != exitUsage {
			t.Errorf("%v: exit %d: %s", args, code, out)
		}
	}
}

func TestParseBanExempt(t *testing.T) {
	got, err := parseBanExempt(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,")
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32")}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, %v", got, err)
	}
	if _, err := parseBanExempt("10.0.0.0/33"); err == nil || !strings.Contains(err.Error(), "BAN_EXEMPT") {
		t.Errorf("bad CIDR: %v", err)
	}
}
