package httpapi

import (
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
)

// Entries recorded before token ids were keyed hashes show "write:" and
// 32 bits of the token's SHA-256; /v1/audit shows them as "write" or
// "read" only. Present ids pass as they are.
func TestAuditHidesLegacyTokenIDs(t *testing.T) {
	srv, st, _ := newTestServer(t)
	for _, tok := range []string{"write:1a2b3c4d", "read:DEADBEEF", "write:hmac-0123456789ab", "none", "write:xyzxyzxy", "other:1a2b3c4d"} {
		if err := st.AppendAudit(desired.AuditRecord{Time: time.Now(), Actor: tok, Request: "PUT /v1/streams/tcp/9000", Outcome: 200}); err != nil {
			t.Fatal(err)
		}
	}
	rec, body := do(t, srv, call{method: "GET", path: "/v1/audit"})
	if rec.Code != 200 {
		t.Fatalf("/v1/audit: %d %s", rec.Code, rec.Body)
	}
	var got []string
	for _, e := range body["entries"].([]any) {
		got = append(got, e.(map[string]any)["token"].(string))
	}
	want := []string{"other:1a2b3c4d", "write:xyzxyzxy", "none", "write:hmac-0123456789ab", "read", "write"} // newest first
	if len(got) != len(want) {
		t.Fatalf("tokens %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("tokens %v, want %v", got, want)
		}
	}
}

func TestRedactLegacyTokenID(t *testing.T) {
	for in, want := range map[string]string{
		"write:1a2b3c4d": "write", "read:00000000": "read", "write:hmac-1a2b3c4d5e6f": "write:hmac-1a2b3c4d5e6f",
		"none": "none", "write:1a2b3c4": "write:1a2b3c4", "": "",
	} {
		if got := redactLegacyTokenID(in); got != want {
			t.Errorf("redactLegacyTokenID(%q) = %q, want %q", in, got, want)
		}
	}
}

// A dry run changes nothing, and its audit entry says it was one.
func TestAuditMarksDryRuns(t *testing.T) {
	srv, _, _ := newTestServer(t)
	rec, _ := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001?dry_run=true", body: `{"backend":"127.0.0.1:2000"}`})
	if rec.Code != 200 {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	_, body := do(t, srv, call{method: "GET", path: "/v1/audit?limit=1"})
	entries, _ := body["entries"].([]any)
	if len(entries) != 1 {
		t.Fatalf("audit after a dry run: %v", body)
	}
	e := entries[0].(map[string]any)
	if e["path"] != "/v1/streams/tcp/9001?dry_run=true" || e["after"] != nil {
		t.Fatalf("the dry run's entry: path %v, after %v; want the path marked and no change", e["path"], e["after"])
	}
}
