// Package resolve resolves backend host names for the reconciler, so that
// nginx's configuration holds addresses only and nginx never resolves a
// name (glibc's resolver in nginx blocks a reload for as long as a lookup
// hangs, reads numbers where we see names, and is asked again at every
// reload). Every lookup is bounded in time and in how many run at once;
// answers are cached, the last good answer is kept when a lookup fails,
// and names are looked up again on a schedule (Run), which reports a
// change of addresses so that backends that move are followed.
//
// Go's resolver does not expose TTLs: the refresh interval, not the
// record's TTL, bounds how stale an answer may be.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Defaults and bounds of Config.
const (
	DefaultTimeout  = 2 * time.Second
	DefaultInterval = 30 * time.Second
	DefaultParallel = 16
	// MaxAddrs is how many addresses of one name are kept (the lowest,
	// sorted), so that a name cannot blow up an upstream block.
	MaxAddrs = 16
	// retainGrace keeps a name looked up by a write that is not stored
	// yet from being forgotten by a pass that does not know it.
	retainGrace = time.Minute
	// minRetry is the first retry of a name that failed; retries double
	// up to the interval.
	minRetry = time.Second
)

// Config tunes a Resolver.
type Config struct {
	// Timeout bounds one lookup, including the wait for a free slot
	// (default DefaultTimeout).
	Timeout time.Duration
	// Interval is how often every name in use is looked up again
	// (default DefaultInterval). Names that never resolved are retried
	// sooner: after 1s, doubling up to Interval.
	Interval time.Duration
	// Parallel bounds the lookups in flight (default DefaultParallel).
	Parallel int
	// Lookup resolves one name (default: Go's own resolver, which reads
	// /etc/hosts and /etc/resolv.conf and honours the context).
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// OnChange is called, outside any lock, when a lookup changed the
	// addresses of a name (the reconciler's Trigger).
	OnChange func()
	Log      zerolog.Logger
}

// Answer is what is known of one name: its last good addresses, or, when
// it never resolved, why.
type Answer struct {
	// Addrs are sorted and unique; nil when the name never resolved.
	Addrs []netip.Addr
	// Err is the last lookup's error when Addrs is nil.
	Err error
}

// Resolver caches answers. Its methods are safe from any goroutine.
type Resolver struct {
	cfg Config
	log zerolog.Logger
	sem chan struct{}
	gen atomic.Uint64

	mu       sync.Mutex
	names    map[string]*entry
	inflight map[string]*call
}

type entry struct {
	addrs    []netip.Addr // last good answer
	err      error        // last lookup's error, nil if it succeeded
	failures int          // failed lookups in a row
	next     time.Time    // when the schedule looks it up again
	seen     time.Time    // when it was last asked for
}

type call struct {
	done chan struct{}
	ans  Answer
}

// New returns a Resolver; Run refreshes its answers.
func New(cfg Config) *Resolver {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.Lookup == nil {
		res := &net.Resolver{PreferGo: true}
		cfg.Lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return res.LookupNetIP(ctx, "ip", host)
		}
	}
	return &Resolver{
		cfg:      cfg,
		log:      cfg.Log.With().Str("component", "resolve").Logger(),
		sem:      make(chan struct{}, cfg.Parallel),
		names:    make(map[string]*entry),
		inflight: make(map[string]*call),
	}
}

// Lookup looks host up now (joining a lookup of the same name in flight)
// and returns its addresses: the new answer, or the last good one if this
// lookup failed. It is the API's check of a backend being written.
func (r *Resolver) Lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	ans := r.lookup(ctx, host)
	r.mu.Lock()
	if e, ok := r.names[host]; ok {
		e.seen = time.Now()
	}
	r.mu.Unlock()
	if ans.Addrs == nil {
		return nil, ans.Err
	}
	return slices.Clone(ans.Addrs), nil
}

// Answers returns what is known of each name. Names known already are
// answered from the cache, with no lookup; names never looked up are
// looked up now, in parallel, each bounded by the timeout. The answers'
// slices are shared: read them, never change them.
func (r *Resolver) Answers(ctx context.Context, names []string) map[string]Answer {
	out := make(map[string]Answer, len(names))
	var missing []string
	now := time.Now()
	r.mu.Lock()
	for _, n := range names {
		if e, ok := r.names[n]; ok {
			e.seen = now
			out[n] = e.answer()
		} else {
			missing = append(missing, n)
		}
	}
	r.mu.Unlock()
	if len(missing) == 0 {
		return out
	}
	answers := make([]Answer, len(missing))
	var wg sync.WaitGroup
	for i, n := range missing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = r.lookup(ctx, n)
		}()
	}
	wg.Wait()
	for i, n := range missing {
		out[n] = answers[i]
	}
	return out
}

// Generation changes whenever the addresses of a name change: a reader
// that saw the same generation can trust the answers it had.
func (r *Resolver) Generation() uint64 { return r.gen.Load() }

// Retain forgets the names not in use (and not asked for within a minute),
// so that the schedule refreshes only what streams need.
func (r *Resolver) Retain(inUse map[string]bool) {
	cutoff := time.Now().Add(-retainGrace)
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, e := range r.names {
		if !inUse[n] && e.seen.Before(cutoff) {
			delete(r.names, n)
		}
	}
}

// Run looks names up again when they are due (every Interval, sooner for
// names that never resolved) until ctx ends.
func (r *Resolver) Run(ctx context.Context) {
	tick := time.NewTicker(min(time.Second, r.cfg.Interval))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var wg sync.WaitGroup
		for _, n := range r.due(time.Now()) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.lookup(ctx, n)
			}()
		}
		wg.Wait() // a hanging server never piles up lookups
	}
}

func (r *Resolver) due(now time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var due []string
	for n, e := range r.names {
		if !e.next.After(now) {
			due = append(due, n)
		}
	}
	return due
}

// lookup runs one lookup of host, or joins the one in flight, and records
// the result. ctx only stops the wait: the lookup itself is bounded by
// the timeout, so that a client that goes away does not poison the cache.
func (r *Resolver) lookup(ctx context.Context, host string) Answer {
	r.mu.Lock()
	c, ok := r.inflight[host]
	if !ok {
		c = &call{done: make(chan struct{})}
		r.inflight[host] = c
		go r.run(host, c)
	}
	r.mu.Unlock()
	select {
	case <-c.done:
		return c.ans
	case <-ctx.Done():
		return Answer{Err: fmt.Errorf("lookup of %s: %w", host, ctx.Err())}
	}
}

func (r *Resolver) run(host string, c *call) {
	addrs, err := r.query(host)
	r.mu.Lock()
	var changed bool
	var ans Answer
	if errors.Is(err, errBusy) {
		// Not an answer about the name: nothing is cached, and the next
		// lookup tries again.
		ans = Answer{Err: err}
	} else {
		changed, ans = r.record(host, addrs, err)
	}
	delete(r.inflight, host)
	c.ans = ans
	r.mu.Unlock()
	close(c.done)
	if changed && r.cfg.OnChange != nil {
		r.cfg.OnChange()
	}
}

// errBusy: no lookup slot came free in time; it says nothing about the
// name.
var errBusy = errors.New("too many DNS lookups at once")

// query asks the resolver once a slot is free (waiting at most four
// timeouts for one), within the timeout, which starts with the lookup.
func (r *Resolver) query(host string) ([]netip.Addr, error) {
	wait := time.NewTimer(4 * r.cfg.Timeout)
	defer wait.Stop()
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	case <-wait.C:
		return nil, fmt.Errorf("%w (%d in flight); try again", errBusy, r.cfg.Parallel)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	addrs, err := r.cfg.Lookup(ctx, host)
	if err != nil {
		return nil, r.explain(ctx, err)
	}
	addrs = canonical(addrs)
	if len(addrs) == 0 {
		return nil, errors.New("no addresses")
	}
	return addrs, nil
}

// explain turns a resolver error into words for a stream's status.
func (r *Resolver) explain(ctx context.Context, err error) error {
	var de *net.DNSError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("DNS lookup timed out after %v", r.cfg.Timeout)
	case errors.As(err, &de) && de.IsTimeout:
		return errors.New("DNS lookup timed out: no answer from the DNS server")
	case errors.As(err, &de) && de.IsNotFound:
		return errors.New("no such host")
	case errors.As(err, &de):
		return fmt.Errorf("DNS lookup failed: %s", de.Err)
	}
	return fmt.Errorf("DNS lookup failed: %w", err)
}

// record stores a lookup's result under r.mu and reports whether the
// name's addresses changed.
func (r *Resolver) record(host string, addrs []netip.Addr, err error) (bool, Answer) {
	now := time.Now()
	e, ok := r.names[host]
	if !ok {
		e = &entry{seen: now}
		r.names[host] = e
	}
	if err != nil {
		e.err = err
		e.failures++
		retry := r.cfg.Interval
		if e.addrs == nil {
			retry = min(r.cfg.Interval, minRetry<<min(e.failures-1, 16))
		}
		e.next = now.Add(retry)
		if e.failures == 1 {
			ev := r.log.Warn().Str("host", host).Err(err)
			if e.addrs != nil {
				ev = ev.Str("kept", fmt.Sprint(e.addrs))
			}
			ev.Msg("backend name lookup failed")
		}
		return false, e.answer()
	}
	changed := !slices.Equal(e.addrs, addrs)
	if changed && e.addrs != nil {
		r.log.Info().Str("host", host).Str("was", fmt.Sprint(e.addrs)).Str("now", fmt.Sprint(addrs)).Msg("backend name moved")
	}
	e.addrs, e.err, e.failures = addrs, nil, 0
	e.next = now.Add(r.cfg.Interval)
	if changed {
		r.gen.Add(1)
	}
	return changed, e.answer()
}

func (e *entry) answer() Answer {
	if e.addrs != nil {
		return Answer{Addrs: e.addrs}
	}
	return Answer{Err: e.err}
}

// canonical unmaps, sorts, de-duplicates and caps addrs.
func canonical(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a = a.Unmap(); a.IsValid() && a.Zone() == "" {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	out = slices.Compact(out)
	if len(out) > MaxAddrs {
		out = out[:MaxAddrs]
	}
	return out
}
