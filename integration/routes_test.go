package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Shared TLS ports routed by server name (issue 15): real TLS clients (Go's
// crypto/tls and openssl s_client) through the real nginx to real TLS
// backends, each with a certificate of its own; which backend answered is
// read from the certificate the client saw and from the line it echoed.

// noProbes turns the health probes off for the tests that count the
// connections a backend accepts (a probe is one) or compare GET answers
// (a probe's result is in them).
const noProbes = "HEALTH_INTERVAL=0"

// TestRoutesSNI: each name reaches its own backend; a leading wildcard
// takes sub-domains at any depth but not the bare name; an unknown name
// and a client without SNI reach the default when there is one, and are
// closed without reaching any backend when there is none; two streams on
// one nginx with the same names keep their own backends.
func TestRoutesSNI(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	d := startDaemon(t, 2, noProbes)
	withDefault, closed := d.portMin, d.portMin+1

	db := startTLSBackend(t, "db.example.com", false)
	wild := startTLSBackend(t, "wild.example.org", false)
	def := startTLSBackend(t, "default.example.net", false)
	d.mustPut("tcp", withDefault, routedBody(t, def, nil,
		route("db.example.com", db), route("*.example.org", wild)))

	// The same names on a second stream, other backends, no default.
	db2 := startTLSBackend(t, "db.second.example.com", false)
	wild2 := startTLSBackend(t, "wild.second.example.org", false)
	d.mustPut("tcp", closed, routedBody(t, nil, nil,
		route("db.example.com", db2), route("*.example.org", wild2)))
	all := []*tlsBackend{db, wild, def, db2, wild2}

	t.Run("names", func(t *testing.T) {
		mustReach(t, withDefault, tlsOpts{sni: "db.example.com"}, db)
		db.sawSNI(t, "db.example.com")
		mustReach(t, withDefault, tlsOpts{sni: "DB.Example.COM"}, db)
		mustReach(t, closed, tlsOpts{sni: "db.example.com"}, db2)
		mustReach(t, closed, tlsOpts{sni: "a.example.org"}, wild2)
	})
	t.Run("wildcard", func(t *testing.T) {
		mustReach(t, withDefault, tlsOpts{sni: "a.example.org"}, wild)
		mustReach(t, withDefault, tlsOpts{sni: "x.y.example.org"}, wild)
		mustReach(t, withDefault, tlsOpts{sni: "example.org"}, def)
		mustBeClosed(t, closed, tlsOpts{sni: "example.org"}, all...)
	})
	t.Run("unknown name", func(t *testing.T) {
		mustReach(t, withDefault, tlsOpts{sni: "nobody.example.com"}, def)
		def.sawSNI(t, "nobody.example.com")
		mustBeClosed(t, closed, tlsOpts{sni: "nobody.example.com"}, all...)
	})
	t.Run("no SNI", func(t *testing.T) {
		mustReach(t, withDefault, tlsOpts{}, def)
		def.sawSNI(t, "") // the clients really sent none
		mustBeClosed(t, closed, tlsOpts{}, all...)
	})
	// The second stream's map did not replace the first's (nginx takes a
	// duplicate map variable silently).
	mustReach(t, withDefault, tlsOpts{sni: "db.example.com"}, db)

	// The API shows the routes and the default, not "backends".
	code, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", withDefault), "")
	if code != 200 {
		t.Fatalf("GET: %d %v", code, m)
	}
	if _, ok := m["routes"].([]any); !ok {
		t.Errorf("GET shows no routes: %v", m)
	}
	if !sameAddrs(m["default"], def.addr()) {
		t.Errorf("GET shows default %v, want %s", m["default"], def.addr())
	}
	if b, ok := m["backends"]; ok {
		t.Errorf("GET of a routed stream shows backends %v; the contract says \"default\"", b)
	}
	// What GET shows of the routes and the default can be PUT back.
	back, err := json.Marshal(map[string]any{"routes": m["routes"], "default": m["default"]})
	if err != nil {
		t.Fatal(err)
	}
	again := d.mustPut("tcp", withDefault, string(back))
	if a, b := fmt.Sprint(again["routes"], again["default"]), fmt.Sprint(m["routes"], m["default"]); a != b {
		t.Errorf("PUT of what GET showed: %s, GET showed %s", a, b)
	}
	mustReach(t, withDefault, tlsOpts{sni: "x.y.example.org"}, wild)
}

// sameAddrs reports whether v, a JSON string or list of one string, is
// addr.
func sameAddrs(v any, addr string) bool {
	switch x := v.(type) {
	case string:
		return x == addr
	case []any:
		return len(x) == 1 && x[0] == addr
	}
	return false
}

// TestRoutesLongName: a route for a name of 253 characters (the DNS
// maximum) is accepted and routes: the managed nginx.conf sizes the
// names' hash for it.
func TestRoutesLongName(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	d := startDaemon(t, 1)
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 53) + ".example"
	if len(long) != 253 {
		t.Fatalf("name of %d characters", len(long))
	}
	be := startTLSBackend(t, "long.example.net", false)
	other := startTLSBackend(t, "other.example.net", false)
	d.mustPut("tcp", d.portMin, routedBody(t, other, nil, route(long, be)))
	mustReach(t, d.portMin, tlsOpts{sni: long}, be)
	mustReach(t, d.portMin, tlsOpts{sni: "x" + long[1:]}, other)
}

// TestRoutesProxyProtocol: with proxy_protocol, the backend a name routes
// to reads a PROXY v1 line naming the client's address and port, then the
// TLS handshake goes through.
func TestRoutesProxyProtocol(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	d := startDaemon(t, 1)
	port := d.portMin
	db := startTLSBackend(t, "db.example.com", true)
	def := startTLSBackend(t, "default.example.net", true)
	d.mustPut("tcp", port, routedBody(t, def, map[string]any{"proxy_protocol": true},
		route("db.example.com", db)))

	for _, tc := range []struct {
		sni string
		be  *tlsBackend
	}{{"db.example.com", db}, {"nobody.example.com", def}, {"", def}} {
		a, err := goTLS(port, tlsOpts{sni: tc.sni})
		if err != nil {
			t.Fatalf("sni %q: %v", tc.sni, err)
		}
		checkAnswer(t, "go", port, tlsOpts{sni: tc.sni}, a, tc.be)
		want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n", a.local.Port, port)
		if got := tc.be.proxyLine(a.local.Port); got != want {
			tc.be.mu.Lock()
			t.Fatalf("sni %q: backend %s read PROXY line %q, want %q (all: %q)", tc.sni, tc.be.name, got, want, tc.be.proxyLines)
		}
	}
	// openssl too: the handshake after the PROXY line is a real one.
	mustReach(t, port, tlsOpts{sni: "db.example.com"}, db)
}

// TestRoutesAllow: a routed stream's allow list refuses a client from
// another address before any backend is contacted, and serves one from an
// allowed address by name.
func TestRoutesAllow(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	d := startDaemon(t, 1, noProbes)
	port := d.portMin
	db := startTLSBackend(t, "db.example.com", false)
	def := startTLSBackend(t, "default.example.net", false)
	d.mustPut("tcp", port, routedBody(t, def, map[string]any{"allow": []string{"127.0.0.2/32"}},
		route("db.example.com", db)))

	mustBeClosed(t, port, tlsOpts{sni: "db.example.com", local: "127.0.0.1"}, db, def)
	mustBeClosed(t, port, tlsOpts{local: "127.0.0.1"}, db, def)
	mustReach(t, port, tlsOpts{sni: "db.example.com", local: "127.0.0.2"}, db)
	mustReach(t, port, tlsOpts{sni: "nobody.example.com", local: "127.0.0.2"}, def)
}

// TestRoutesAddRoute: PUT the stream again with a third route; the new
// name routes to its backend, the old names still reach theirs, and no
// connection made during the change fails.
func TestRoutesAddRoute(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	d := startDaemon(t, 1)
	port := d.portMin
	db := startTLSBackend(t, "db.example.com", false)
	wild := startTLSBackend(t, "wild.example.org", false)
	def := startTLSBackend(t, "default.example.net", false)
	fresh := startTLSBackend(t, "new.example.net", false)
	two := []routeIn{route("db.example.com", db), route("*.example.org", wild)}
	d.mustPut("tcp", port, routedBody(t, def, nil, two...))
	mustReach(t, port, tlsOpts{sni: "new.example.net"}, def)

	// Two clients loop on the old names during the change.
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		done     [2]atomic.Int64
	)
	clients := []struct {
		sni string
		be  *tlsBackend
	}{{"db.example.com", db}, {"a.example.org", wild}}
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(60 * time.Second)
			for n := 0; n < 2000 && time.Now().Before(deadline); n++ {
				select {
				case <-stop:
					return
				default:
				}
				a, err := goTLS(port, tlsOpts{sni: c.sni})
				if err == nil && (a.cn != c.be.name || a.greeting != "backend "+c.be.name+"\n") {
					err = fmt.Errorf("reached %q (greeting %q)", a.cn, a.greeting)
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s #%d: %v", c.sni, n, err))
					mu.Unlock()
				}
				done[i].Add(1)
			}
		}()
	}
	atLeast := func(what string, n [2]int64) {
		eventually(t, what, 30*time.Second, func() bool {
			return done[0].Load() >= n[0] && done[1].Load() >= n[1]
		})
	}
	atLeast("clients before the change", [2]int64{5, 5})
	beforePut := done[0].Load() + done[1].Load()
	d.mustPut("tcp", port, routedBody(t, def, nil, append(two, route("new.example.net", fresh))...))
	t.Logf("%d connections while the PUT was applied", done[0].Load()+done[1].Load()-beforePut)
	mustReach(t, port, tlsOpts{sni: "new.example.net"}, fresh)
	atLeast("clients after the change", [2]int64{done[0].Load() + 5, done[1].Load() + 5})
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed during the change: %q", len(failures), done[0].Load()+done[1].Load(), failures)
	}
	mustReach(t, port, tlsOpts{sni: "db.example.com"}, db)
	mustReach(t, port, tlsOpts{sni: "x.y.example.org"}, wild)
	t.Logf("%d connections during the change, none failed", done[0].Load()+done[1].Load())

	// From routes to one backend and back: changes like any other.
	d.mustPut("tcp", port, `{"backend":"`+def.addr()+`"}`)
	mustReach(t, port, tlsOpts{sni: "db.example.com"}, def)
	d.mustPut("tcp", port, routedBody(t, nil, nil, two...))
	mustReach(t, port, tlsOpts{sni: "db.example.com"}, db)
	mustBeClosed(t, port, tlsOpts{sni: "new.example.net"}, db, wild, def, fresh)
}

// TestRoutesBackends: a route with several backends is an upstream of its
// own: a backend that is down is passed over, the others share the
// connections; backends named by host name are resolved.
func TestRoutesBackends(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	d := startDaemon(t, 1)
	port := d.portMin
	w1 := startTLSBackend(t, "w1.example.org", false)
	w2 := startTLSBackend(t, "w2.example.org", false)
	db := startTLSBackend(t, "db.example.com", false)
	down, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := down.Addr().String()
	down.Close() // nothing listens there: refused
	byName := func(b *tlsBackend) string { return "localhost:" + strconv.Itoa(b.ln.Addr().(*net.TCPAddr).Port) }
	named := startTLSBackend(t, "named.example.net", false)
	def := startTLSBackend(t, "default.example.net", false)
	d.mustPut("tcp", port, routedBody(t, nil, map[string]any{"default": byName(def)},
		routeIn{ServerName: "db.example.com", Backends: []string{dead, db.addr()}},
		route("*.example.org", w1, w2),
		routeIn{ServerName: "named.example.net", Backends: []string{byName(named)}}))
	// Backends given by host name are resolved, in routes and default
	// alike (nginx has no resolver: a name reaching it fails each
	// connection).
	mustReach(t, port, tlsOpts{sni: "named.example.net"}, named)
	mustReach(t, port, tlsOpts{sni: "nobody.example.net"}, def)
	seen := map[string]int{}
	for i := 0; i < 8; i++ {
		a, err := goTLS(port, tlsOpts{sni: "db.example.com"})
		if err != nil || a.cn != db.name {
			t.Fatalf("db.example.com #%d: %q, %v; want %s past the dead backend", i, a.cn, err, db.name)
		}
		if a, err = goTLS(port, tlsOpts{sni: "a.example.org"}); err != nil {
			t.Fatalf("a.example.org #%d: %v", i, err)
		}
		seen[a.cn]++
	}
	if seen[w1.name] == 0 || seen[w2.name] == 0 || len(seen) != 2 {
		t.Fatalf("*.example.org's connections went to %v; want both %s and %s", seen, w1.name, w2.name)
	}
}

// TestRoutesHostileServerName: server names that are not a host name (or
// a leading wildcard of one) are refused with 400 naming the route's
// field, on a new stream and on a routed one, and change nothing: the
// streams, the stream files, nginx -t, the traffic.
func TestRoutesHostileServerName(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	d := startDaemon(t, 2, noProbes)
	db := startTLSBackend(t, "db.example.com", false)
	def := startTLSBackend(t, "default.example.net", false)
	existing, fresh := d.portMin, d.portMin+1
	d.mustPut("tcp", existing, routedBody(t, def, nil, route("db.example.com", db)))
	_, before := d.apiRaw("GET", "/v1/streams", "")
	filesBefore := streamFiles(t, d)
	if err := d.nginxTest(); err != nil {
		t.Fatalf("nginx -t before: %v", err)
	}

	label63 := strings.Repeat("a", 63)
	names := []string{
		"", " ", "*", "*.", "**.example.org", "*.*.example.org", "a.*.example.org", "example.*", "*example.org",
		"a*.example.org", ".example.org", "~^re\\d+$", "-a.example.org", "a..example.org", "..",
		"10.0.0.1", "127.0.0.1", "::1", "[::1]", "10.0.0.1.",
		strings.Repeat(label63+".", 3) + strings.Repeat("d", 54) + ".example", // 254
		strings.Repeat("a", 64) + ".example.org",
		"dé.example.org", "ａ.example.org", "🙂.example.org", "b\u0430d.example.org",
		"$x", "a$host.example.org", "a;b.example.org", "a; include /etc/passwd", "a{b", "a}b",
		"a b.example.org", "a\nb.example.org", "a\tb", "a\x00b", "a\"b", "a'b", "a\\b", "a#b", "a/b", "a:443",
		"db.example.com default",
	}
	// Names that are each fine, but not together: the second is refused.
	dupes := [][2]string{
		{"db.example.com", "DB.Example.COM"},
		{"db.example.com", "db.example.com."},
		{"*.example.org", "*.EXAMPLE.org"},
	}

	type attempt struct {
		what, body, field string
	}
	var attempts []attempt
	for _, n := range names {
		body := routedBody(t, def, nil, routeIn{ServerName: n, Backends: []string{db.addr()}})
		attempts = append(attempts, attempt{fmt.Sprintf("server_name %q", n), body, "routes[0].server_name"})
	}
	for _, p := range dupes {
		body := routedBody(t, def, nil, routeIn{ServerName: p[0], Backends: []string{db.addr()}},
			routeIn{ServerName: p[1], Backends: []string{def.addr()}})
		attempts = append(attempts, attempt{fmt.Sprintf("%q then %q", p[0], p[1]), body, "routes[1].server_name"})
	}

	// On a new stream, on the routed one, and as dry runs of both.
	var paths []string
	for _, port := range []int{fresh, existing} {
		p := fmt.Sprintf("/v1/streams/tcp/%d", port)
		paths = append(paths, p, p+"?dry_run=true")
	}
	for _, path := range paths {
		for _, a := range attempts {
			code, m := d.api("PUT", path, a.body)
			e, _ := m["error"].(map[string]any)
			if code != 400 || e == nil || e["field"] != a.field || e["code"] != "invalid" || e["message"] == "" {
				t.Errorf("PUT %s, %s: %d %v; want 400 invalid with field %s", path, a.what, code, m, a.field)
			}
		}
	}

	if _, after := d.apiRaw("GET", "/v1/streams", ""); string(after) != string(before) {
		t.Errorf("the streams changed:\n%s\n->\n%s", before, after)
	}
	if filesAfter := streamFiles(t, d); filesAfter != filesBefore {
		t.Errorf("the stream files changed:\n%s\n->\n%s", filesBefore, filesAfter)
	}
	if err := d.nginxTest(); err != nil {
		t.Errorf("nginx -t after: %v", err)
	}
	mustReach(t, existing, tlsOpts{sni: "db.example.com"}, db)
	mustReach(t, existing, tlsOpts{sni: "nobody.example.com"}, def)

	// Words of nginx's map block are host names too: each is refused, or
	// taken and routed as a name (never handed to nginx as the keyword:
	// "default" would take every unknown name, "include" would read a
	// file).
	for _, kw := range []string{"default", "include", "hostnames", "volatile"} {
		path := fmt.Sprintf("/v1/streams/tcp/%d", fresh)
		code, m := d.api("PUT", path, routedBody(t, def, nil, route(kw, db)))
		t.Logf("server_name %q: %d", kw, code)
		switch code {
		case 400:
			if e, _ := m["error"].(map[string]any); e["field"] != "routes[0].server_name" {
				t.Errorf("server_name %q: 400 %v; want field routes[0].server_name", kw, m)
			}
		case 200, 201:
			mustReach(t, fresh, tlsOpts{sni: kw}, db)
			mustReach(t, fresh, tlsOpts{sni: "nobody.example.com"}, def)
			if code, m := d.api("DELETE", path, ""); code != 200 && code != 204 {
				t.Fatalf("DELETE %s: %d %v", path, code, m)
			}
		default:
			t.Errorf("server_name %q: %d %v; want 400, or the name routed", kw, code, m)
		}
	}
	if err := d.nginxTest(); err != nil {
		t.Errorf("nginx -t after the map's words: %v", err)
	}

	// The same body with a proper name is taken, canonical: lower case,
	// without the trailing dot.
	m := d.mustPut("tcp", fresh, routedBody(t, def, nil, route("Db.Example.COM.", db)))
	rs, _ := m["routes"].([]any)
	if len(rs) != 1 || rs[0].(map[string]any)["server_name"] != "db.example.com" {
		t.Errorf("routes stored as %v; want server_name \"db.example.com\"", m["routes"])
	}
	mustReach(t, fresh, tlsOpts{sni: "db.example.com"}, db)
}

// TestRoutesRefusedShapes: routes on UDP, a backend given beside the
// routes, too many routes, and route backends the policy forbids (a loop
// to a stream port of this node, a link-local address) are refused and
// change nothing.
func TestRoutesRefusedShapes(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	db := startTLSBackend(t, "db.example.com", false)
	r := []routeIn{route("db.example.com", db)}
	var many []routeIn
	for i := 0; i < 257; i++ {
		many = append(many, routeIn{ServerName: fmt.Sprintf("n%d.example.com", i), Backends: []string{db.addr()}})
	}
	loop := fmt.Sprintf("127.0.0.1:%d", d.portMin)
	for _, tc := range []struct {
		what, proto, body, field string
	}{
		{"257 routes", "tcp", routedBody(t, nil, nil, many...), "routes"},
		{"route to a stream port", "tcp", routedBody(t, nil, nil, routeIn{ServerName: "db.example.com", Backends: []string{loop}}), ""},
		{"route to link-local", "tcp", routedBody(t, nil, nil, routeIn{ServerName: "db.example.com", Backends: []string{"169.254.169.254:443"}}), ""},
		{"default to a stream port", "tcp", `{"routes":[{"server_name":"db.example.com","backends":["` + db.addr() + `"]}],"default":"` + loop + `"}`, ""},
		{"routes on udp", "udp", routedBody(t, nil, nil, r...), ""},
		{"backend beside routes", "tcp", routedBody(t, nil, map[string]any{"backend": db.addr()}, r...), "backends"},
		{"backends beside routes", "tcp", routedBody(t, nil, map[string]any{"backends": []string{db.addr()}}, r...), "backends"},
		{"default without routes", "tcp", `{"backend":"` + db.addr() + `","default":"` + db.addr() + `"}`, ""},
		{"route without backends", "tcp", `{"routes":[{"server_name":"db.example.com","backends":[]}]}`, "routes[0].backends"},
	} {
		code, m := d.api("PUT", fmt.Sprintf("/v1/streams/%s/%d", tc.proto, d.portMin), tc.body)
		e, _ := m["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if (code != 400 && code != 403) || e == nil || (tc.field != "" && e["field"] != tc.field) || strings.Contains(msg, "unknown field") {
			t.Errorf("%s: %d %v; want 400 (403 for a policy) with field %q", tc.what, code, m, tc.field)
		}
		t.Logf("%s: %d %v", tc.what, code, e)
	}
	if _, m := d.api("GET", "/v1/streams", ""); len(m["streams"].([]any)) != 0 {
		t.Fatalf("streams after refused writes: %v", m["streams"])
	}
}

// streamFiles is the content of every file under the stream directory,
// path by path.
func streamFiles(t *testing.T, d *daemon) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(d.streamDir(), func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "== %s\n%s", path, data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestRoutesPool: with the pool of nginx masters, three routed streams
// with the same names and their own backends each route to their own.
func TestRoutesPool(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	d := startDaemon(t, 3, "NGINX_SHARDS=16")
	type set struct{ db, wild, def *tlsBackend }
	sets := map[int]set{}
	var ports []int
	for i := 0; i < 3; i++ {
		port := d.portMin + i
		s := set{
			db:   startTLSBackend(t, fmt.Sprintf("db.s%d.example.com", i), false),
			wild: startTLSBackend(t, fmt.Sprintf("wild.s%d.example.org", i), false),
			def:  startTLSBackend(t, fmt.Sprintf("default.s%d.example.net", i), false),
		}
		d.mustPut("tcp", port, routedBody(t, s.def, nil, route("db.example.com", s.db), route("*.example.org", s.wild)))
		sets[port] = s
		ports = append(ports, port)
	}
	for _, port := range ports {
		s := sets[port]
		mustReach(t, port, tlsOpts{sni: "db.example.com"}, s.db)
		mustReach(t, port, tlsOpts{sni: "a.example.org"}, s.wild)
		mustReach(t, port, tlsOpts{sni: "example.org"}, s.def)
		mustReach(t, port, tlsOpts{}, s.def)
	}
	shards, _ := json.Marshal(d.byShard(ports))
	t.Logf("streams by shard: %s", shards)

	// A restart adopts the routed files of every shard as they are.
	d.stop()
	d.start()
	for _, port := range ports {
		mustReach(t, port, tlsOpts{sni: "x.example.org"}, sets[port].wild)
	}
}

// TestRoutesExportImport: what /v1/export gives of a routed stream is an
// import that recreates it (the names route again through nginx), and
// importing it once more changes nothing, while a route changed in it is
// an update.
func TestRoutesExportImport(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 1)
	port := d.portMin
	db := startTLSBackend(t, "db.example.com", false)
	wild := startTLSBackend(t, "wild.example.org", false)
	def := startTLSBackend(t, "default.example.net", false)
	d.mustPut("tcp", port, routedBody(t, def, map[string]any{"balance": "least_conn"},
		route("db.example.com", db), routeIn{ServerName: "*.example.org", Backends: []string{wild.addr()}, Balance: "hash_client_ip"}))
	code, export := d.apiRaw("GET", "/v1/export", "")
	if code != 200 {
		t.Fatalf("GET /v1/export: %d %s", code, export)
	}
	if code, m := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", port), ""); code != 200 && code != 204 {
		t.Fatalf("DELETE: %d %v", code, m)
	}
	waitRefused(t, port)

	changes := func(body string) map[string]any {
		t.Helper()
		code, m := d.api("POST", "/v1/import", body)
		if code != 200 {
			t.Fatalf("POST /v1/import: %d %v\n%s", code, m, body)
		}
		if f, _ := m["failed"].([]any); len(f) > 0 {
			t.Fatalf("import failed: %v", f)
		}
		return m["changes"].(map[string]any)
	}
	if c := changes(string(export)); len(c["create"].([]any)) != 1 {
		t.Fatalf("import of the export: %v; want one create", c)
	}
	mustReach(t, port, tlsOpts{sni: "db.example.com"}, db)
	mustReach(t, port, tlsOpts{sni: "a.example.org"}, wild)
	mustReach(t, port, tlsOpts{}, def)
	if c := changes(string(export)); len(c["unchanged"].([]any)) != 1 {
		t.Fatalf("second import of the export: %v; want it unchanged", c)
	}

	// The same export with the first route sent elsewhere is an update.
	var ex map[string]any
	if err := json.Unmarshal(export, &ex); err != nil {
		t.Fatal(err)
	}
	r0 := ex["streams"].([]any)[0].(map[string]any)["routes"].([]any)[0].(map[string]any)
	r0["backends"] = []string{wild.addr()}
	edited, _ := json.Marshal(ex)
	if c := changes(string(edited)); len(c["update"].([]any)) != 1 {
		t.Fatalf("import with a route changed: %v; want one update", c)
	}
	mustReach(t, port, tlsOpts{sni: "db.example.com"}, wild)
}

// TestRoutesExternalLongName: in external mode the operator's stream{}
// is nginx's own (map_hash_bucket_size 64): routes work, and a name too
// long for it is refused with 400 saying what to set (nginx -t would
// refuse the whole configuration without naming a file, and hold up
// every change of the node), leaving the other streams serving.
func TestRoutesExternalLongName(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	sn := startSystemNginx(t)
	d := sn.daemon(t, 2)
	d.start()
	db := startTLSBackend(t, "db.example.com", false)
	def := startTLSBackend(t, "default.example.net", false)
	d.mustPut("tcp", d.portMin, routedBody(t, def, nil, route("db.example.com", db)))
	mustReach(t, d.portMin, tlsOpts{sni: "db.example.com"}, db)

	// 63 characters: past what nginx's default bucket of 64 holds (~44).
	long := "a-rather-long-service-name-for-the-database.eu-west.example.com"
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), routedBody(t, def, nil, route(long, db)))
	e, _ := m["error"].(map[string]any)
	msg, _ := e["message"].(string)
	if code != 400 || e["code"] != "invalid" || e["field"] != "routes[0].server_name" ||
		!strings.Contains(msg, "map_hash_bucket_size") || !strings.Contains(msg, "NGINX_MAP_HASH_BUCKET_SIZE") {
		t.Errorf("a %d-character name with the operator's stream{}: %d %v; want 400 on routes[0].server_name naming map_hash_bucket_size and NGINX_MAP_HASH_BUCKET_SIZE", len(long), code, m)
	}
	if code, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMax), ""); code != 404 {
		t.Errorf("the refused stream is still there: %d %v", code, m)
	}
	mustReach(t, d.portMin, tlsOpts{sni: "db.example.com"}, db)
	mustReach(t, d.portMin, tlsOpts{sni: "nobody.example.com"}, def)
	// The other stream still takes changes.
	fresh := startTLSBackend(t, "new.example.net", false)
	d.mustPut("tcp", d.portMin, routedBody(t, def, nil, route("db.example.com", db), route("new.example.net", fresh)))
	// External mode cannot see the system nginx's old workers stop: for a
	// moment after the reply they may still take some of the port's new
	// connections the old way. Wait until 10 in a row are routed anew.
	eventually(t, "new.example.net routed by the system nginx, 10 times in a row", 20*time.Second, func() bool {
		for range 10 {
			if a, err := goTLS(d.portMin, tlsOpts{sni: "new.example.net"}); err != nil || a.cn != fresh.name {
				return false
			}
		}
		return true
	})
	mustReach(t, d.portMin, tlsOpts{sni: "new.example.net"}, fresh)
}

// TestRoutesUnnamedRefusalFailsOnlyItsStream: an operator who states a
// larger NGINX_MAP_HASH_BUCKET_SIZE than their stream{} has lets a long
// name past validation, and nginx refuses the whole configuration without
// naming a file ("could not build map_hash"). The daemon narrows the
// refusal down to the stream at fault: that write is refused with nginx's
// words and undone, and the node keeps taking changes.
func TestRoutesUnnamedRefusalFailsOnlyItsStream(t *testing.T) {
	t.Parallel()
	sn := startSystemNginx(t)
	d := sn.daemon(t, 3, "NGINX_MAP_HASH_BUCKET_SIZE=128")
	d.start()
	db := startTLSBackend(t, "db.example.com", false)
	d.mustPut("tcp", d.portMin, routedBody(t, nil, nil, route("db.example.com", db)))
	mustReach(t, d.portMin, tlsOpts{sni: "db.example.com"}, db)

	long := "a-rather-long-service-name-for-the-database.eu-west.example.com"
	code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1), routedBody(t, nil, nil, route(long, db)))
	if code != 422 || !strings.Contains(fmt.Sprint(m), "could not build map_hash") {
		t.Fatalf("a name the real bucket cannot hold: %d %v; want 422 with nginx's words", code, m)
	}
	if code, m := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+1), ""); code != 404 {
		t.Errorf("the refused stream is still there: %d %v", code, m)
	}
	// Not held up: another stream applies and carries bytes, and the
	// first one still routes.
	be := startEcho(t, "U:")
	d.mustPut("tcp", d.portMax, `{"backend":"`+be.addr()+`"}`)
	mustEcho(t, d.portMax, "U:")
	mustReach(t, d.portMin, tlsOpts{sni: "db.example.com"}, db)
}
