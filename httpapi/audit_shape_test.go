package httpapi

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// volatile matches what differs from run to run in an audit answer: the
// times and the clients' ports.
var volatile = regexp.MustCompile(`"(time|created_at|updated_at)": "[^"]*"|"remote": "192\.0\.2\.1:[0-9]+"`)

// The JSON of /v1/audit is a contract: every kind of entry the daemon
// records (a create, a replace, a refused write, a delete, a seed route, an
// import, an undo of what nginx refused, an entry compacted to fit) is
// answered in exactly the bytes of testdata/audit.golden, times and ports
// aside. It pins the shape across changes of how entries are stored.
func TestAuditAnswerShape(t *testing.T) {
	srv, _, _ := newTestServer(t)
	big := make([]string, 64)
	for i := range big {
		big[i] = fmt.Sprintf(`"[2001:db8:3333:4444:5555:6666:7777:%04x]:65000"`, i)
	}
	for _, c := range []call{
		{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1","description":"first"}`},
		{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backends":["b:1","c:2"],"allow":["10.0.0.0/8"]}`, header: map[string]string{"If-Match": "*"}},
		{method: "PUT", path: "/v1/streams/tcp/9002", body: `{"backend":"bad;"}`},
		{method: "PUT", path: "/v1/streams/tcp/9003", body: `{"backend":"bad.invalid:1"}`},
		{method: "DELETE", path: "/v1/streams/tcp/9001"},
		{method: "GET", path: "/createstream/9004/d:4"},
		{method: "POST", path: "/v1/import", body: `{"streams":[{"protocol":"udp","listen":9006,"backend":"e:5"}]}`},
		{method: "PUT", path: "/v1/streams/tcp/9007", body: `{"backends":[` + strings.Join(big, ",") + `],"description":"` + strings.Repeat("d", 1000) + `"}`},
		{method: "PUT", path: "/v1/streams/tcp/9007", body: `{"backends":[` + strings.Join(big[1:], ",") + `],"description":"` + strings.Repeat("e", 1000) + `"}`},
	} {
		do(t, srv, c)
	}
	// The client waited for tcp/9003: its undo is recorded before its
	// answer, so before the request's own entry.
	rec, _ := do(t, srv, call{method: "GET", path: "/v1/audit?limit=9"})
	if rec.Code != 200 {
		t.Fatalf("/v1/audit: %d %s", rec.Code, rec.Body)
	}
	got := volatile.ReplaceAllStringFunc(rec.Body.String(), func(s string) string {
		name, _, _ := strings.Cut(s, ":")
		return name + `: "X"`
	})
	golden := filepath.Join("testdata", "audit.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("/v1/audit answered\n%s\nwant (%s)\n%s", got, golden, want)
	}
}
