package reconcile

import (
	"slices"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// Events. The pool tells what changed in the desired state (specDiff),
// each shard's reconciler what it did with it: the statuses it records
// (finish), every start and reload of its master (try), and the drift it
// found and repaired. Publish never blocks (events.Bus), so the calls
// below never wait on a client.

// publish hands an event to Config.Events, if any.
func (r *Reconciler) publish(typ string, data any) {
	if r.cfg.Events != nil {
		r.cfg.Events.Publish(typ, data)
	}
}

// specDiff tells the desired state's changes from one listing to the
// next: created, updated (its revision moved) and deleted streams. Its
// first listing is the baseline and tells nothing. Owned by the pool's
// Run goroutine.
type specDiff struct {
	known  map[stream.ID]*knownSpec // nil until the first listing
	rev    uint64
	tl     uint64
	listed uint64 // counts the listings compared
}

// knownSpec is a stream as last listed, and the listing that last saw it.
type knownSpec struct {
	spec stream.Spec
	seen uint64
}

// next compares specs, the whole desired state at revision rev of
// timeline tl, with the last listing and publishes what changed: an
// event per stream, or one events.Bulk when more than events.MaxEach
// changed at once. It costs a map lookup per stream and an allocation
// per stream created or updated, and nothing when the revision did not
// move.
func (d *specDiff) next(pub events.Publisher, specs []stream.Spec, rev, tl uint64) {
	if pub == nil || d.known != nil && rev == d.rev && tl == d.tl {
		return
	}
	baseline := d.known == nil
	if baseline {
		d.known = make(map[stream.ID]*knownSpec, len(specs))
	}
	// Revisions of another timeline (a restore) may match by chance: the
	// specs themselves are compared then.
	newTimeline := !baseline && tl != d.tl
	d.rev, d.tl = rev, tl
	d.listed++
	var changes []changed
	counts := map[string]int{"created": 0, "updated": 0, "deleted": 0}
	add := func(typ string, c events.StreamChange) {
		counts[strings.TrimPrefix(typ, "stream.")]++
		if !baseline && len(changes) <= events.MaxEach {
			changes = append(changes, changed{typ, c})
		}
	}
	for _, s := range specs {
		id := s.ID()
		k, ok := d.known[id]
		switch {
		case !ok:
			d.known[id] = &knownSpec{spec: s, seen: d.listed}
			add(events.StreamCreated, events.StreamChange{ID: id, Revision: s.Revision, Spec: s.Shown()})
			continue
		case k.spec.Revision != s.Revision && !newTimeline, newTimeline && !k.spec.SameDesired(s):
			prev := k.spec.Shown()
			d.known[id] = &knownSpec{spec: s, seen: d.listed}
			add(events.StreamUpdated, events.StreamChange{ID: id, Revision: s.Revision, Spec: s.Shown(), Previous: &prev})
			continue
		}
		k.seen = d.listed
	}
	if len(d.known) > len(specs) { // every listed stream is known: the others are deleted
		now := time.Now()
		for id, k := range d.known {
			if k.seen != d.listed {
				delete(d.known, id)
				add(deletedType(k.spec, now), events.StreamChange{ID: id, Revision: rev, Spec: k.spec.ShownAt(now)})
			}
		}
	}
	if baseline {
		return
	}
	if len(changes) > events.MaxEach {
		pub.Publish(events.Bulk, events.BulkChange{What: "streams", Revision: rev, Counts: counts})
		return
	}
	for _, c := range changes {
		pub.Publish(c.typ, c.data)
	}
}

// deletedType is the event of sp's deletion noticed at now:
// events.StreamExpired when its deadline had passed (whether this
// node's timer, another node's or etcd's lease removed it), else
// events.StreamDeleted.
func deletedType(sp stream.Spec, now time.Time) string {
	if sp.Expired(now) {
		return events.StreamExpired
	}
	return events.StreamDeleted
}

// changed is one event of a listing.
type changed struct {
	typ  string
	data events.StreamChange
}

// publishStatuses publishes the statuses a pass changed: an event each,
// or one events.Bulk counting them by state when more than
// events.MaxEach changed.
func (r *Reconciler) publishStatuses(changes []events.StatusChange) {
	if len(changes) == 0 {
		return
	}
	if len(changes) > events.MaxEach {
		counts := map[string]int{}
		for _, c := range changes {
			counts[string(c.State)]++
		}
		shard := r.cfg.Shard
		r.publish(events.Bulk, events.BulkChange{What: "statuses", Shard: &shard, Counts: counts})
		return
	}
	for _, c := range changes {
		r.publish(events.StreamStatus, c)
	}
}

// statusChange returns the event of a stream whose status went from old
// (ok: it had one) to st, and whether there is one: its state or its
// error changed, or it is of a new revision (pending until now).
func (r *Reconciler) statusChange(id stream.ID, old stream.Status, ok bool, st stream.Status) (events.StatusChange, bool) {
	prev := stream.Pending
	if ok && old.Revision == st.Revision {
		if old.State == st.State && old.Error == st.Error {
			return events.StatusChange{}, false
		}
		prev = old.State
	}
	return events.StatusChange{ID: id, Node: r.cfg.Node, Shard: r.cfg.Shard, State: st.State, Previous: prev,
		Revision: st.Revision, Error: st.Error}, true
}

// publishApply publishes a start, restart or reload of nginx (not a test)
// and its outcome.
func (r *Reconciler) publishApply(op string, ms float64, err error, streams int) {
	ev := events.Reloaded{Node: r.cfg.Node, Shard: r.cfg.Shard, Op: op, DurationMS: ms, Outcome: "ok", Streams: streams}
	if err != nil {
		ev.Outcome, ev.Error = "failed", err.Error()
	}
	r.publish(events.Reload, ev)
}

// Drift kinds (events.Drift.Kind).
const (
	driftFiles  = "files"
	driftListen = "listen"
	driftMaster = "master"
)

// driftFound publishes drift of kind found by this shard and, when the
// next pass repairs it (repair), remembers it until a pass does
// (driftRepaired). Drift of a kind already waiting for its repair is
// published again only when it concerns other streams. Called from the
// Run goroutine only.
func (r *Reconciler) driftFound(kind string, streams []stream.ID, detail string, repair bool) {
	if known, ok := r.repairing[kind]; ok && containsAll(known, streams) {
		return
	}
	if repair {
		if r.repairing == nil {
			r.repairing = map[string][]stream.ID{}
		}
		r.repairing[kind] = union(r.repairing[kind], streams)
	}
	r.publish(events.DriftDetected, events.Drift{Node: r.cfg.Node, Shard: r.cfg.Shard, Kind: kind, Streams: streams, Detail: detail})
}

// driftRepaired publishes, after a pass that applied the desired state,
// the drift found since the last such pass: that pass repaired it.
func (r *Reconciler) driftRepaired() {
	for _, kind := range []string{driftFiles, driftListen, driftMaster} {
		streams, ok := r.repairing[kind]
		if !ok {
			continue
		}
		delete(r.repairing, kind)
		r.publish(events.DriftRepaired, events.Drift{Node: r.cfg.Node, Shard: r.cfg.Shard, Kind: kind, Streams: streams})
	}
}

// fileStreams returns the streams of our file names.
func (r *Reconciler) fileStreams(names []string) []stream.ID {
	var ids []stream.ID
	for _, name := range names {
		if id, ok := nginxconf.ParseFileName(r.cfg.Render.Prefix, name); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// parseIDs reads ids such as "tcp/9000".
func parseIDs(names []string) []stream.ID {
	ids := make([]stream.ID, 0, len(names))
	for _, n := range names {
		if id, err := stream.ParseID(n); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// containsAll reports whether set holds every one of ids.
func containsAll(set, ids []stream.ID) bool {
	for _, id := range ids {
		if !slices.Contains(set, id) {
			return false
		}
	}
	return true
}

// union adds to set those of ids it does not hold.
func union(set, ids []stream.ID) []stream.ID {
	for _, id := range ids {
		if !slices.Contains(set, id) {
			set = append(set, id)
		}
	}
	return set
}
