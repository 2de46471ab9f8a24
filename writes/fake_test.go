package writes

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// fakeApplier applies every revision at once, unless gate is set: then
// WaitApplied waits until gate is closed. nginx refuses the streams that
// name a backend in reject (at the revision stored now) and every stream
// at a revision in rejectRev.
type fakeApplier struct {
	mu        sync.Mutex
	st        desired.State
	reject    map[string]string // backend -> nginx's message
	rejectRev map[uint64]string // revision -> nginx's message
	busy      map[int]bool
	gate      chan struct{}
	leftover  map[stream.ID]string // deleted stream -> why its file stays
}

func (f *fakeApplier) WaitApplied(ctx context.Context, rev uint64, _ []stream.Spec) error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Refused is what the write path asks: failed at rev.
func (f *fakeApplier) Refused(id stream.ID, rev uint64) (string, bool) {
	st := f.Status(id, rev)
	return st.Error, st.State == stream.Failed
}

func (f *fakeApplier) Status(id stream.ID, rev uint64) stream.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg, ok := f.rejectRev[rev]; ok {
		return stream.Status{State: stream.Failed, Revision: rev, Error: msg}
	}
	if sp, err := f.st.Get(id); err == nil && sp.Revision == rev {
		for _, b := range sp.Backends {
			if msg, ok := f.reject[b]; ok {
				return stream.Status{State: stream.Failed, Revision: rev, Error: msg}
			}
		}
	}
	return stream.Status{State: stream.Active, Revision: rev}
}

func (f *fakeApplier) Leftover(id stream.ID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if why, ok := f.leftover[id]; ok {
		return errors.New(why)
	}
	return nil
}

func (f *fakeApplier) BindConflict(s stream.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for port := s.Listen; port <= s.LastPort(); port++ { // every port of a range
		if f.busy[port] {
			return errors.New("address already in use")
		}
	}
	return nil
}

// errRefusedBackend is the fake policy's refusal.
var errRefusedBackend = errors.New("backend refused by the policy")

// errLoop is the fake policy's refusal of a stream that forwards to
// itself.
var errLoop = errors.New("the stream forwards to itself (rule: loop)")

// fakePolicy refuses the backends it lists, and calls those it lists as
// "loop <backend>" a stream's own address when they are on its own port.
type fakePolicy map[string]bool

func (p fakePolicy) Check(ctx context.Context, backends []string) error {
	for _, b := range backends {
		if p[b] {
			return errRefusedBackend
		}
	}
	return nil
}

func (p fakePolicy) CheckLoop(ctx context.Context, sp stream.Spec, backends []string) error {
	for _, s := range backends {
		if b, err := stream.ParseBackend(s); err == nil && p["loop "+s] && sp.Covers(b.Port) {
			return errLoop
		}
	}
	return nil
}

// undos records what OnUndo was told.
type undos struct {
	mu   sync.Mutex
	list []Undo
}

func (u *undos) add(x Undo) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.list = append(u.list, x)
}

func (u *undos) get() []Undo {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.list)
}

type fixture struct {
	p     *Path
	st    *store.Store
	ap    *fakeApplier
	undos *undos
}

// newFixture: range 9000-9009, 9005 reserved (the API's port), 9008 held
// by another process, backend "bad.invalid:1" refused by nginx,
// "10.0.0.1:22" by the policy, and "127.0.0.9:9001" the policy's loop to
// a stream's own address when the stream has port 9001.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, func(st desired.State) desired.State { return st })
}

// newFixtureWith is newFixture with the write path over wrap(store).
func newFixtureWith(t *testing.T, wrap func(desired.State) desired.State) *fixture {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ap := &fakeApplier{st: st, reject: map[string]string{"bad.invalid:1": `host not found in upstream "bad.invalid:1"`},
		rejectRev: map[uint64]string{}, busy: map[int]bool{9008: true}}
	u := &undos{}
	p := New(Config{PortMin: 9000, PortMax: 9009, Reserved: []int{9005}, ApplyTimeout: time.Second, OnUndo: u.add, Log: zerolog.Nop()},
		wrap(st), ap, fakePolicy{"10.0.0.1:22": true, "loop 127.0.0.9:9001": true})
	t.Cleanup(p.Close)
	return &fixture{p: p, st: st, ap: ap, undos: u}
}

func tcp(port int, backend string) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{backend}}
}

// eventually polls cond until it holds, for at most five seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wait(t *testing.T, w *Pending) []Refusal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	refused, err := w.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return refused
}
