package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/policy"
	"github.com/streamconductor/stream-conductor/resolve"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// fakeResolver answers every name with 192.0.2.1 unless set otherwise,
// and counts how often it is asked.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string]resolve.Answer
	gen     uint64
	calls   int
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{answers: map[string]resolve.Answer{}}
}

func (f *fakeResolver) Answers(_ context.Context, names []string) map[string]resolve.Answer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	out := make(map[string]resolve.Answer, len(names))
	for _, n := range names {
		a, ok := f.answers[n]
		if !ok {
			a = resolve.Answer{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
		}
		out[n] = a
	}
	return out
}

func (f *fakeResolver) Generation() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen
}

func (f *fakeResolver) Retain(map[string]bool) {}

// set changes what name resolves to, as a refresh that saw it move would.
func (f *fakeResolver) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var a resolve.Answer
	for _, s := range addrs {
		a.Addrs = append(a.Addrs, netip.MustParseAddr(s))
	}
	if a.Addrs == nil {
		a.Err = errors.New("no such host")
	}
	f.answers[name] = a
	f.gen++
}

func (f *fakeResolver) takeCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = 0
	return c
}

// A name becomes the addresses it resolved to, one server each; nginx is
// never given the name; a pass with nothing changed asks the resolver
// nothing; a name that moves is followed without a write.
func TestNamesRenderAsAddressesAndMovesAreFollowed(t *testing.T) {
	h := newHarness(t)
	h.resolver.set("db.test", "10.0.0.5", "10.0.0.6")
	h.put(9000, "db.test:5432")
	h.put(9001, "10.0.0.9:22")
	h.mustPass("test", "start")
	f := h.files()["stream-tcp-9000.conf"]
	if !strings.Contains(f, "server 10.0.0.5:5432;") || !strings.Contains(f, "server 10.0.0.6:5432;") || strings.Contains(f, "proxy_pass db.test") {
		t.Fatalf("file of a name with two addresses:\n%s", f)
	}
	h.resolver.takeCalls()
	h.mustPass()
	if n := h.resolver.takeCalls(); n != 0 {
		t.Fatalf("an in-sync pass asked the resolver %d times", n)
	}

	h.resolver.set("db.test", "10.0.0.7")
	h.mustPass("test", "reload")
	if f := h.files()["stream-tcp-9000.conf"]; !strings.Contains(f, "proxy_pass 10.0.0.7:5432;") {
		t.Fatalf("file after the name moved:\n%s", f)
	}
	if st := h.state_("tcp/9000"); st.State != stream.Active {
		t.Fatalf("moved stream is %+v", st)
	}
}

// A name that never resolved fails its stream with nginx's words and the
// reason; the others apply.
func TestUnresolvedNameFailsOnlyItsStream(t *testing.T) {
	h := newHarness(t)
	h.resolver.set("nx.test")
	h.put(9000, "nx.test:1")
	h.put(9001, "ok.test:1")
	h.mustPass("test", "start")
	st := h.state_("tcp/9000")
	if st.State != stream.Failed || st.Error != `host not found in upstream "nx.test": no such host` {
		t.Fatalf("unresolved stream: %+v", st)
	}
	if _, ok := h.files()["stream-tcp-9000.conf"]; ok {
		t.Fatal("a stream that never resolved has a file")
	}
	if st := h.state_("tcp/9001"); st.State != stream.Active {
		t.Fatalf("other stream: %+v", st)
	}
	h.resolver.set("nx.test", "10.0.0.1")
	h.mustPass("test", "reload")
	if st := h.state_("tcp/9000"); st.State != stream.Active {
		t.Fatalf("after the name resolved: %+v", st)
	}
}

// DNS rebinding: a name that later resolves where a backend rule forbids
// is never rendered to that address; the stream fails with the rule and
// keeps the file nginx runs (its last good address) until the name comes
// back.
func TestRebindingNeverRendersAForbiddenAddress(t *testing.T) {
	h := newHarness(t)
	h.policy = &policy.Backends{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, APIPort: 8080,
		LocalAddrs: func() []netip.Addr { return nil }}
	h.rec = h.newReconciler()
	h.resolver.set("rb.test", "10.0.0.5")
	h.put(9000, "rb.test:80")
	h.mustPass("test", "start")
	good := h.files()["stream-tcp-9000.conf"]

	h.resolver.set("rb.test", "127.0.0.1")
	h.mustPass()
	st := h.state_("tcp/9000")
	if st.State != stream.Failed || !strings.Contains(st.Error, "rule: BACKEND_ALLOW") || !strings.Contains(st.Error, "127.0.0.1") {
		t.Fatalf("rebound stream: %+v", st)
	}
	if f := h.files()["stream-tcp-9000.conf"]; f != good {
		t.Fatalf("file after rebinding:\n%s\nwant the last good one:\n%s", f, good)
	}

	h.resolver.set("rb.test", "10.0.0.6")
	h.mustPass("test", "reload")
	if st := h.state_("tcp/9000"); st.State != stream.Active || !strings.Contains(h.files()["stream-tcp-9000.conf"], "10.0.0.6:80") {
		t.Fatalf("after the name came back: %+v", st)
	}
}

// BenchmarkInSyncPass10000Named is BenchmarkInSyncPass10000 with every
// backend a host name: an in-sync pass must not ask the resolver at all.
func BenchmarkInSyncPass10000Named(b *testing.B) {
	tmp := b.TempDir()
	st, err := store.Open(filepath.Join(tmp, "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	specs := make([]stream.Spec, 10000)
	for i := range specs {
		specs[i] = stream.Spec{Protocol: stream.TCP, Listen: 10000 + i, Backends: []string{fmt.Sprintf("b%d.internal:2000", i%100)}}
	}
	if _, err := st.Import(specs, false); err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(tmp, "stream.d")
	os.Mkdir(dir, 0o755)
	ngx := newFakeNginx(dir)
	res := newFakeResolver()
	rec := New(Config{Dir: dir, Render: nginxconf.RenderOptions{Prefix: "stream-"}, StateFile: filepath.Join(tmp, "applied"),
		Ports: &fakePorts{nginx: ngx, busy: map[int]bool{}}, Resolver: res, Log: zerolog.Nop()}, st, ngx)
	if err := rec.runPass(context.Background()); err != nil {
		b.Fatal(err)
	}
	ngx.takeActions()
	res.takeCalls()
	rec.watching.Store(true)
	b.ResetTimer()
	for range b.N {
		if err := rec.runPass(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if a := ngx.takeActions(); len(a) != 0 {
		b.Fatalf("an in-sync pass did %v", a)
	}
	if n := res.takeCalls(); n != 0 {
		b.Fatalf("in-sync passes asked the resolver %d times", n)
	}
}

// A restart while a backend name does not resolve keeps the stream's file
// (what nginx runs) and reloads nothing: before the first apply of the
// process, the files on disk are the last good ones.
func TestRestartDuringDNSOutageKeepsTheFile(t *testing.T) {
	h := newHarness(t)
	h.resolver.set("db.test", "10.0.0.5")
	h.put(9000, "db.test:5432")
	h.mustPass("test", "start")
	before := h.files()
	h.resolver = newFakeResolver()
	h.resolver.set("db.test") // no such host
	h.rec = h.newReconciler()
	got, err := h.pass()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("actions after the restart: %v, want none", got)
	}
	if after := h.files(); !maps.Equal(before, after) {
		t.Fatalf("files changed: %v -> %v", before, after)
	}
	if st := h.state_("tcp/9000"); st.State != stream.Failed || !strings.Contains(st.Error, "db.test") {
		t.Fatalf("status %+v, want failed naming the name", st)
	}
}
