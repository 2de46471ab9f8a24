package resolve

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDNS answers from a table that tests change; a name mapped to nil
// hangs until the lookup's context ends.
type fakeDNS struct {
	mu       sync.Mutex
	table    map[string][]netip.Addr
	fail     map[string]error
	calls    atomic.Int64
	inflight atomic.Int64
	peak     atomic.Int64
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{table: map[string][]netip.Addr{}, fail: map[string]error{}}
}

func (f *fakeDNS) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.fail, name)
	f.table[name] = nil
	for _, a := range addrs {
		f.table[name] = append(f.table[name], netip.MustParseAddr(a))
	}
}

func (f *fakeDNS) setErr(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[name] = err
}

func (f *fakeDNS) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	f.calls.Add(1)
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	f.mu.Lock()
	addrs, ok := f.table[host]
	err := f.fail[host]
	f.mu.Unlock()
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	case addrs == nil:
		<-ctx.Done() // a server that never answers
		return nil, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
	}
	return addrs, nil
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestAnswersAreCachedSortedAndKeptOnFailure(t *testing.T) {
	dns := newFakeDNS()
	dns.set("db.test", "10.0.0.9", "10.0.0.5", "10.0.0.9", "::ffff:10.0.0.7")
	r := New(Config{Lookup: dns.lookup})
	got := r.Answers(context.Background(), []string{"db.test"})["db.test"]
	if !slices.Equal(got.Addrs, addrs("10.0.0.5", "10.0.0.7", "10.0.0.9")) || got.Err != nil {
		t.Fatalf("first answer %+v", got)
	}
	gen := r.Generation()
	r.Answers(context.Background(), []string{"db.test"})
	if n := dns.calls.Load(); n != 1 {
		t.Fatalf("%d lookups for a cached name", n)
	}

	// A failing lookup keeps the last good answer, and changes nothing.
	dns.setErr("db.test", &net.DNSError{Err: "server misbehaving", Name: "db.test"})
	a, err := r.Lookup(context.Background(), "db.test")
	if err != nil || !slices.Equal(a, addrs("10.0.0.5", "10.0.0.7", "10.0.0.9")) || r.Generation() != gen {
		t.Fatalf("lookup during a failure: %v %v (generation %d, was %d)", a, err, r.Generation(), gen)
	}
	dns.set("db.test", "10.0.0.6")
	if a, _ := r.Lookup(context.Background(), "db.test"); !slices.Equal(a, addrs("10.0.0.6")) || r.Generation() == gen {
		t.Fatalf("a moved name: %v, generation %d", a, r.Generation())
	}
}

func TestNeverResolvedNamesSayWhy(t *testing.T) {
	dns := newFakeDNS()
	dns.setErr("broken.test", &net.DNSError{Err: "server misbehaving", Name: "broken.test"})
	r := New(Config{Lookup: dns.lookup})
	got := r.Answers(context.Background(), []string{"nx.test", "broken.test"})
	if a := got["nx.test"]; a.Addrs != nil || a.Err == nil || a.Err.Error() != "no such host" {
		t.Errorf("nx.test: %+v", a)
	}
	if a := got["broken.test"]; a.Addrs != nil || a.Err == nil || a.Err.Error() != "DNS lookup failed: server misbehaving" {
		t.Errorf("broken.test: %+v", a)
	}
}

// A server that never answers costs one timeout, not more; lookups of the
// same name share it; a cached failure is answered at once.
func TestHangingLookupIsBoundedAndShared(t *testing.T) {
	dns := newFakeDNS()
	dns.set("hang.test") // hangs
	r := New(Config{Lookup: dns.lookup, Timeout: 200 * time.Millisecond})
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.Lookup(context.Background(), "hang.test")
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("hanging lookups took %v", took)
	}
	for _, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "timed out after 200ms") {
			t.Fatalf("error %v", err)
		}
	}
	if n := dns.calls.Load(); n != 1 {
		t.Fatalf("%d lookups of one name at once", n)
	}
	start = time.Now()
	if a := r.Answers(context.Background(), []string{"hang.test"})["hang.test"]; a.Err == nil || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("cached failure: %+v after %v", a, time.Since(start))
	}
}

// No more than Parallel lookups run at once; those that wait longer than
// the timeout for a slot give up.
func TestLookupsInFlightAreCapped(t *testing.T) {
	dns := newFakeDNS()
	names := make([]string, 20)
	for i := range names {
		names[i] = "slow" + string(rune('a'+i)) + ".test"
		dns.set(names[i]) // hangs
	}
	r := New(Config{Lookup: dns.lookup, Timeout: 150 * time.Millisecond, Parallel: 3})
	got := r.Answers(context.Background(), names)
	if p := dns.peak.Load(); p > 3 {
		t.Fatalf("%d lookups in flight at once, want at most 3", p)
	}
	busy := 0
	for _, a := range got {
		if a.Err != nil && strings.Contains(a.Err.Error(), "in flight") {
			busy++
		}
	}
	if busy == 0 {
		t.Fatal("no lookup gave up waiting for a slot")
	}
}

// Run looks names up again: a move is reported through OnChange and the
// generation; a name that never resolved is retried within seconds.
func TestRunFollowsMovesAndRetriesFailures(t *testing.T) {
	dns := newFakeDNS()
	dns.set("mv.test", "10.0.0.1")
	var changes atomic.Int64
	r := New(Config{Lookup: dns.lookup, Interval: time.Second, OnChange: func() { changes.Add(1) }})
	r.Answers(context.Background(), []string{"mv.test", "later.test"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	dns.set("mv.test", "10.0.0.2")
	dns.set("later.test", "10.0.0.3")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		got := r.Answers(context.Background(), []string{"mv.test", "later.test"})
		if slices.Equal(got["mv.test"].Addrs, addrs("10.0.0.2")) && slices.Equal(got["later.test"].Addrs, addrs("10.0.0.3")) {
			if changes.Load() < 2 {
				t.Fatalf("OnChange called %d times for 2 changes", changes.Load())
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the schedule did not pick up the new answers within 5s")
}

func TestRetainForgetsUnusedNames(t *testing.T) {
	dns := newFakeDNS()
	dns.set("a.test", "10.0.0.1")
	r := New(Config{Lookup: dns.lookup})
	r.Answers(context.Background(), []string{"a.test"})
	r.mu.Lock()
	r.names["a.test"].seen = time.Now().Add(-2 * retainGrace)
	r.mu.Unlock()
	r.Retain(map[string]bool{})
	r.Answers(context.Background(), []string{"a.test"})
	if n := dns.calls.Load(); n != 2 {
		t.Fatalf("%d lookups: a forgotten name must be looked up again", n)
	}
}

func TestCanonicalCapsAddresses(t *testing.T) {
	var many []netip.Addr
	for i := 40; i > 0; i-- {
		many = append(many, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	got := canonical(many)
	if len(got) != MaxAddrs || got[0] != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("canonical: %v", got)
	}
	if _, err := New(Config{Lookup: func(context.Context, string) ([]netip.Addr, error) { return nil, nil }}).Lookup(context.Background(), "x"); err == nil || err.Error() != "no addresses" {
		t.Fatalf("empty answer: %v", err)
	}
}

// Waiting for a free slot does not count against a lookup's timeout: 64
// names that each take a little under it all resolve, 16 at a time.
func TestQueuedLookupsGetTheirWholeTimeout(t *testing.T) {
	var inflight, peak atomic.Int64
	lookup := func(ctx context.Context, host string) ([]netip.Addr, error) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case <-time.After(60 * time.Millisecond):
			return addrs("10.0.0.1"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r := New(Config{Lookup: lookup, Timeout: 100 * time.Millisecond, Parallel: 16})
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprintf("n%d.test", i)
	}
	failed := 0
	for _, a := range r.Answers(context.Background(), names) {
		if a.Err != nil {
			failed++
		}
	}
	if failed != 0 || peak.Load() > 16 {
		t.Fatalf("%d of 64 lookups failed (peak %d in flight); want none, at most 16 at once", failed, peak.Load())
	}
}
