package reconcile

import (
	"bytes"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/internal/safefile"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// DriftPolicy says what a pass does with files of ours that someone else
// changed.
type DriftPolicy string

// The drift policies.
const (
	// DriftRepair rewrites drifted files from the store (the default).
	DriftRepair DriftPolicy = "repair"
	// DriftAlert reports drift and leaves the drifted files alone until
	// their stream is written through the API.
	DriftAlert DriftPolicy = "alert"
)

// RepairRate limits drift repairs so that a configuration-management tool
// fighting us cannot drive a reload storm: Burst repair passes at once,
// then Burst per Per. Drift found beyond that is held (left alone) and
// repaired once a repair is allowed again.
type RepairRate struct {
	Burst int
	Per   time.Duration
}

// DefaultRepairRate allows 6 repair passes a minute.
var DefaultRepairRate = RepairRate{Burst: 6, Per: time.Minute}

// every is the time one repair token takes to come back.
func (r RepairRate) every() time.Duration { return r.Per / time.Duration(r.Burst) }

// held is a drifted file the reconciler keeps its hands off.
type held struct {
	body     []byte // nil: the file was removed
	revision uint64 // the stream's revision when the drift was found
	reason   string // "alert" or "rate-limited"
}

// limiter is a token bucket.
type limiter struct {
	rate   RepairRate
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newLimiter(rate RepairRate, now func() time.Time) *limiter {
	return &limiter{rate: rate, tokens: float64(rate.Burst), last: now(), now: now}
}

// allow takes a token if there is one.
func (l *limiter) allow() bool {
	t := l.now()
	l.tokens = min(float64(l.rate.Burst), l.tokens+t.Sub(l.last).Seconds()/l.rate.every().Seconds())
	l.last = t
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// handleDrift compares the files on disk with what the reconciler last
// left there. Drift is logged once and counted; under DriftRepair (and
// within the rate limit) the pass repairs it, otherwise the drifted files
// are held: taken out of onDisk so that the pass neither rewrites nor
// removes them. Holds end when their stream is written again, when the file
// is back to what the store says, or when a repair is allowed again.
func (r *Reconciler) handleDrift(log zerolog.Logger, specs []stream.Spec, desired map[string]file, onDisk map[string][]byte) {
	revs := make(map[string]uint64, len(specs))
	for _, s := range specs {
		revs[nginxconf.FileName(r.cfg.Render.Prefix, s.ID())] = s.Revision
	}
	// Release holds whose reason has gone.
	for name, h := range r.held {
		want, wanted := desired[name]
		cur, exists := onDisk[name]
		switch {
		case revs[name] != h.revision, // written through the API since
			wanted && exists && bytes.Equal(cur, want.body), // put back by hand
			!wanted && !exists:
			delete(r.held, name)
		}
	}
	var drifted []string
	if r.lastWritten != nil {
		for _, name := range diffNames(r.lastWritten, onDisk) {
			if h, ok := r.held[name]; ok && bytes.Equal(h.body, onDisk[name]) {
				continue // known and still held
			}
			drifted = append(drifted, name)
		}
	}
	rateLimited := false
	for _, h := range r.held {
		rateLimited = rateLimited || h.reason == "rate-limited"
	}
	if len(drifted) == 0 && !rateLimited {
		r.hideHeld(onDisk)
		return
	}
	if len(drifted) > 0 {
		r.count(func(c *stream.NodeCounters) { c.DriftDetected += uint64(len(drifted)) })
	}
	if r.cfg.DriftPolicy == DriftRepair && r.repairs.allow() {
		for name, h := range r.held {
			if h.reason == "rate-limited" {
				drifted = append(drifted, name)
				delete(r.held, name)
			}
		}
		r.count(func(c *stream.NodeCounters) { c.DriftRepairs++ })
		log.Warn().Strs("files", drifted).Msg("config files changed by someone else; repairing them from the store")
		r.driftFound(driftFiles, r.fileStreams(drifted), "config files changed by someone else; repairing them from the store", true)
		return
	}
	reason := "alert"
	if r.cfg.DriftPolicy == DriftRepair {
		reason = "rate-limited"
	}
	var replaced []string
	for _, name := range drifted {
		body, ok := onDisk[name]
		if !ok {
			body = nil
		}
		if bytes.Equal(body, safefile.NotRegular) {
			// A FIFO, symlink or socket is never left for nginx to open
			// (a FIFO would hang it), whatever the policy or the rate.
			replaced = append(replaced, name)
			continue
		}
		r.held[name] = held{body: body, revision: revs[name], reason: reason}
	}
	if len(replaced) > 0 {
		log.Warn().Strs("files", replaced).Msg("config files of ours that are not regular files; replacing them whatever the drift policy")
		r.driftFound(driftFiles, r.fileStreams(replaced), "config files of ours that are not regular files; replacing them", true)
		drifted = slices.DeleteFunc(drifted, func(n string) bool { return slices.Contains(replaced, n) })
	}
	if len(drifted) > 0 {
		log.Warn().Strs("files", drifted).Str("reason", reason).Msg("config files changed by someone else; leaving them as they are")
		r.driftFound(driftFiles, r.fileStreams(drifted), "config files changed by someone else; left as they are ("+reason+")", false)
	}
	r.hideHeld(onDisk)
}

// hideHeld takes held files out of onDisk so that the pass leaves them be.
func (r *Reconciler) hideHeld(onDisk map[string][]byte) {
	for name := range r.held {
		delete(onDisk, name)
	}
}

// waitingForRepair reports whether some drift waits for the rate limit.
func (r *Reconciler) waitingForRepair() bool {
	for _, h := range r.held {
		if h.reason == "rate-limited" {
			return true
		}
	}
	return false
}

// heldNames returns the held files, sorted, for status.
func (r *Reconciler) heldNames() []string {
	var names []string
	for name := range r.held {
		names = append(names, name)
	}
	return sortStrings(names)
}
