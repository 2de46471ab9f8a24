package reconcile

import (
	"bytes"
	"context"
	"fmt"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// rendered is a spec's file, rendered once per revision and, for specs
// with host names, again when the resolver's answers change.
type rendered struct {
	revision uint64
	gen      uint64 // the resolver's generation it was rendered at
	named    bool   // some backend is a host name
	bans     uint64 // the version of the bans it was rendered with (Config.Bans)
	name     string
	body     []byte
	// fail, when set, says why the spec cannot be rendered: a name that
	// never resolved, or an address a backend rule refuses.
	fail string
}

// render returns s's file from the cache, rendering it only when its
// revision is new or, for a spec with host names, when the resolver's
// answers changed: a pass over 10,000 unchanged streams renders nothing
// and looks nothing up.
func (r *Reconciler) render(s stream.Spec) rendered {
	id := s.ID()
	gen := r.resolver.Generation()
	if c, fresh := r.cached(id, s, gen); fresh {
		return c
	}
	c, ok := r.renderCache[id]
	n := r.renderNow(s, gen)
	if ok && c.revision == n.revision && c.fail == n.fail && bytes.Equal(c.body, n.body) {
		n.body = c.body // same bytes: keep the ones whose hash is known
	}
	r.renderCache[id] = n
	return n
}

// renderNow resolves s's host names (from the resolver's cache; a name
// never seen is looked up now, bounded by its timeout), checks every
// address against the backend rules and renders the file.
func (r *Reconciler) renderNow(s stream.Spec, gen uint64) rendered {
	out := rendered{revision: s.Revision, gen: gen, name: nginxconf.FileName(r.cfg.Render.Prefix, s.ID())}
	names := nginxconf.Names(s)
	out.named = len(names) > 0
	addrs := nginxconf.Addrs{}
	if out.named {
		answers := r.resolver.Answers(context.Background(), names)
		for _, n := range names {
			a := answers[n]
			if a.Addrs == nil {
				why := "no address"
				if a.Err != nil {
					why = a.Err.Error()
				}
				// nginx's words, which clients and tests know.
				out.fail = fmt.Sprintf("host not found in upstream %q: %s", n, why)
				return out
			}
			addrs[n] = a.Addrs
		}
	}
	if r.cfg.Policy != nil {
		for _, text := range s.AllBackends() {
			b, err := stream.ParseBackend(text)
			if err == nil {
				err = r.cfg.Policy.CheckResolved(b, addrs[b.Host])
			}
			if err != nil {
				out.fail = err.Error()
				return out
			}
		}
	}
	o := r.cfg.Render
	o.Banned, out.bans = r.banned(s.ID())
	if !s.Bans() {
		// The bans of a stream whose policy went, or that gained an allow
		// list, end at the bans' next flush; its file (and a dry run's
		// preview of it) has none from now on.
		o.Banned = nil
	}
	_, body, err := nginxconf.Render(s, addrs, o)
	if err != nil {
		out.fail = err.Error()
		return out
	}
	out.body = body
	return out
}

// cached returns s's cached render and whether it is still current.
func (r *Reconciler) cached(id stream.ID, s stream.Spec, gen uint64) (rendered, bool) {
	c, ok := r.renderCache[id]
	return c, ok && c.revision == s.Revision && (!c.named || c.gen == gen) && c.bans == r.bansVersion(id)
}

// prefetch has the resolver look up, in parallel, the names of specs
// about to be rendered: names it knows cost a map lookup, new ones a
// lookup bounded by its timeout.
func (r *Reconciler) prefetch(specs []stream.Spec) {
	var names []string
	for _, s := range specs {
		names = append(names, nginxconf.Names(s)...)
	}
	if len(names) > 0 {
		r.resolver.Answers(context.Background(), names)
	}
}

// retainNames tells the resolver which names the streams use, when the
// store changed since it was last told, so that only those are refreshed.
func (r *Reconciler) retainNames(specs []stream.Spec, rev uint64) {
	if r.inPool || rev == r.retainedRev {
		return
	}
	r.retainedRev = rev
	r.resolver.Retain(namesInUse(specs))
}

// namesInUse returns the backend host names specs use.
func namesInUse(specs []stream.Spec) map[string]bool {
	inUse := map[string]bool{}
	for _, s := range specs {
		for _, n := range nginxconf.Names(s) {
			inUse[n] = true
		}
	}
	return inUse
}

// hashed is a remembered content hash.
type hashed struct {
	n   int
	sum [32]byte
}

// pruneRenderCache forgets streams that are gone.
func (r *Reconciler) pruneRenderCache(specs []stream.Spec) {
	if len(r.renderCache) <= len(specs) {
		return
	}
	live := make(map[stream.ID]bool, len(specs))
	for _, s := range specs {
		live[s.ID()] = true
	}
	for id := range r.renderCache {
		if !live[id] {
			delete(r.renderCache, id)
		}
	}
}
