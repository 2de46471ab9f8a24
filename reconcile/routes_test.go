package reconcile

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/policy"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// A route's backend names are resolved and rendered as addresses like a
// stream's, and one that resolves where a backend rule forbids fails the
// stream instead of reaching nginx.
func TestRouteBackendNamesResolveAndObeyThePolicy(t *testing.T) {
	h := newHarness(t)
	h.policy = &policy.Backends{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, APIPort: 8080,
		LocalAddrs: func() []netip.Addr { return nil }}
	h.rec = h.newReconciler()
	h.resolver.set("a.test", "10.0.0.5")
	h.resolver.set("b.test", "10.0.0.6")
	sp := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"10.0.0.9:443"}, Routes: []stream.Route{
		{ServerName: "a.example", Backends: []string{"a.test:443"}},
		{ServerName: "*.b.example", Backends: []string{"b.test:443"}},
	}}
	if _, _, err := h.store.Put(sp, store.Match{}); err != nil {
		t.Fatal(err)
	}
	h.mustPass("test", "start")
	f := h.files()["stream-tcp-9000.conf"]
	if !strings.Contains(f, "server 10.0.0.5:443;") || !strings.Contains(f, "server 10.0.0.6:443;") || strings.Contains(f, "server b.test") {
		t.Fatalf("route backends not rendered as their addresses:\n%s", f)
	}
	h.resolver.set("b.test", "127.0.0.1")
	h.mustPass()
	if st := h.state_("tcp/9000"); st.State != stream.Failed || !strings.Contains(st.Error, "rule: BACKEND_ALLOW") {
		t.Fatalf("a route backend rebound to a forbidden address: %+v", st)
	}
	if f2 := h.files()["stream-tcp-9000.conf"]; f2 != f {
		t.Fatalf("the forbidden address reached the file:\n%s", f2)
	}
}
