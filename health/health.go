// Package health probes every TCP backend of every stream with a connect,
// on an interval with jitter and bounded concurrency, and reports what it
// saw. It reports only: nginx's own passive checks (max_fails) decide
// where traffic goes.
package health

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

// States of a backend.
const (
	Up      = "up"
	Down    = "down"
	Unknown = "unknown" // not probed yet, or UDP (a connect proves nothing)
)

// Backend is what the prober knows of one backend address.
type Backend struct {
	Backend string    `json:"backend"`
	State   string    `json:"state"`
	Since   time.Time `json:"since,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// Lister is the desired state as the prober reads it.
type Lister interface {
	List() ([]stream.Spec, uint64)
}

// Prober probes backends and keeps their states.
type Prober struct {
	Interval    time.Duration // between rounds (default 10s)
	Timeout     time.Duration // per connect (default 2s)
	Concurrency int           // probes at once (default 16)
	// Events, when set, is told when a backend goes down or comes back
	// up (events.BackendHealth); a backend's first result only when it
	// is down.
	Events events.Publisher
	store  Lister
	dial   func(ctx context.Context, addr string) error
	mu     sync.Mutex
	states map[string]Backend
}

// New returns a prober of st's backends.
func New(st Lister) *Prober {
	return &Prober{store: st, states: map[string]Backend{}, dial: func(ctx context.Context, addr string) error {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}}
}

// Run probes every Interval (with ±10% jitter) until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	if p.Interval <= 0 {
		p.Interval = 10 * time.Second
	}
	for {
		p.Round(ctx)
		jitter := time.Duration(rand.Int64N(int64(p.Interval/5))) - p.Interval/10
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.Interval + jitter):
		}
	}
}

// Round probes every TCP backend once.
func (p *Prober) Round(ctx context.Context) {
	if p.Timeout <= 0 {
		p.Timeout = 2 * time.Second
	}
	if p.Concurrency <= 0 {
		p.Concurrency = 16
	}
	specs, _ := p.store.List()
	seen := map[string]bool{}
	var targets []string
	var users map[string][]stream.ID // the streams of each backend, for events
	if p.Events != nil {
		users = map[string][]stream.ID{}
	}
	for _, s := range specs {
		if s.Protocol != stream.TCP {
			continue
		}
		for _, b := range s.AllBackends() {
			if users != nil {
				users[b] = append(users[b], s.ID())
			}
			if !seen[b] {
				seen[b] = true
				targets = append(targets, b)
			}
		}
	}
	sem := make(chan struct{}, p.Concurrency)
	var wg sync.WaitGroup
	for _, addr := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, p.Timeout)
			err := p.dial(cctx, addr)
			cancel()
			p.set(addr, err, users[addr])
		}()
	}
	wg.Wait()
	p.mu.Lock()
	for addr := range p.states {
		if !seen[addr] {
			delete(p.states, addr) // no stream points there any more
		}
	}
	p.mu.Unlock()
}

// set records a probe's result for addr, which streams use, and
// publishes a change of state.
func (p *Prober) set(addr string, err error, streams []stream.ID) {
	state, msg := Up, ""
	if err != nil {
		state, msg = Down, err.Error()
	}
	p.mu.Lock()
	old, ok := p.states[addr]
	b := Backend{Backend: addr, State: state, Error: msg, Since: time.Now().UTC()}
	if ok && old.State == state {
		b.Since = old.Since
	}
	p.states[addr] = b
	p.mu.Unlock()
	if ev, changed := healthChange(addr, old, ok, b, streams); changed && p.Events != nil {
		p.Events.Publish(events.BackendHealth, ev)
	}
}

// healthChange returns the event of a backend whose state went from old
// (ok: it had one) to b, and whether there is one: up to down or back,
// or a first result that is down.
func healthChange(addr string, old Backend, ok bool, b Backend, streams []stream.ID) (events.HealthChange, bool) {
	up := b.State == Up
	ev := events.HealthChange{Address: addr, Up: up, Error: b.Error, Streams: streams}
	if !ok || old.State == Unknown {
		return ev, !up
	}
	if old.State == b.State {
		return ev, false
	}
	was := old.State == Up
	ev.Previous = &was
	return ev, true
}

// Of returns the health of each backend of s, in order (a routed
// stream's default, then every route's, each once).
func (p *Prober) Of(s stream.Spec) []Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := s.AllBackends()
	out := make([]Backend, len(all))
	for i, addr := range all {
		b, ok := p.states[addr]
		if !ok || s.Protocol != stream.TCP {
			b = Backend{Backend: addr, State: Unknown}
		}
		out[i] = b
	}
	return out
}

// All returns every probed backend.
func (p *Prober) All() []Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Backend, 0, len(p.states))
	for _, b := range p.states {
		out = append(out, b)
	}
	return out
}
