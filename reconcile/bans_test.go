package reconcile

import (
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// fakeBans is Config.Bans and Config.OnBansApplied over a map.
type fakeBans struct {
	mu      sync.Mutex
	addrs   map[stream.ID][]string
	version map[stream.ID]uint64
	applied map[stream.ID]uint64
}

func (b *fakeBans) set(id stream.ID, addrs ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addrs[id] = addrs
	b.version[id]++
}

func (b *fakeBans) banned(id stream.ID) ([]string, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addrs[id], b.version[id]
}

func (b *fakeBans) onApplied(id stream.ID, v uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applied[id] = v
}

// A change of a stream's bans re-renders that stream only, reloads once,
// leaves the spec's revision alone, and is reported applied; a pass with
// the same bans does nothing.
func TestBansRenderOnlyTheStreamsWhoseBansChanged(t *testing.T) {
	h := newHarness(t)
	bans := &fakeBans{addrs: map[stream.ID][]string{}, version: map[stream.ID]uint64{}, applied: map[stream.ID]uint64{}}
	h.rec = New(Config{
		Dir: h.dir, Render: nginxconf.RenderOptions{Prefix: "stream-"}, StateFile: h.state,
		VerifyTimeout: 50 * time.Millisecond, Ports: h.ports, Resolver: h.resolver, Log: zerolog.Nop(),
		Bans: bans.banned, OnBansApplied: bans.onApplied,
	}, h.store, h.nginx)
	a, _, err := h.store.Put(stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"127.0.0.1:1"},
		Ban: &stream.BanPolicy{After: 3, Within: "1m0s", For: "1h0m0s"}}, store.Match{})
	if err != nil {
		t.Fatal(err)
	}
	h.put(9001, "127.0.0.1:2")
	h.mustPass("test", "start")
	before := h.files()

	id := a.ID()
	bans.set(id, "127.0.0.3", "2001:db8::7")
	h.mustPass("test", "reload")
	after := h.files()
	if !strings.Contains(after["stream-tcp-9000.conf"], "    deny 127.0.0.3;\n    deny 2001:db8::7;\n") {
		t.Fatalf("tcp/9000:\n%s", after["stream-tcp-9000.conf"])
	}
	delete(before, "stream-tcp-9000.conf")
	delete(after, "stream-tcp-9000.conf")
	if !maps.Equal(before, after) {
		t.Error("a stream without bans was rewritten")
	}
	if got, _ := h.store.Get(id); got.Revision != a.Revision {
		t.Errorf("a ban changed the revision: %d, was %d", got.Revision, a.Revision)
	}
	if bans.applied[id] != 1 {
		t.Errorf("applied = %v", bans.applied)
	}
	h.mustPass() // nothing changed

	bans.set(id) // lifted
	h.mustPass("test", "reload")
	if strings.Contains(h.files()["stream-tcp-9000.conf"], "deny") || bans.applied[id] != 2 {
		t.Errorf("not lifted: %s, applied %v", h.files()["stream-tcp-9000.conf"], bans.applied)
	}
	// Bans still listed for a stream without a policy (removed, and the
	// bans' flush not yet come) are not rendered: its file, and a dry
	// run's preview of it, has none.
	other := stream.ID{Protocol: stream.TCP, Port: 9001}
	bans.set(other, "127.0.0.9")
	h.mustPass()
	if strings.Contains(h.files()["stream-tcp-9001.conf"], "deny") {
		t.Errorf("bans rendered for a stream without a policy:\n%s", h.files()["stream-tcp-9001.conf"])
	}
}
