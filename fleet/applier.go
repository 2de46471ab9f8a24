package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/streamconductor/stream-conductor/stream"
)

// The write path's side of the fleet (writes.Applier).

// WaitApplied blocks until this node applied revision rev and every other
// live node that serves one of specs (every live node when specs is
// empty) published an applied revision at least rev, or ctx ends; its
// error then names the nodes that did not. A node that leaves the fleet
// meanwhile is no longer waited for.
func (f *Fleet) WaitApplied(ctx context.Context, rev uint64, specs []stream.Spec) error {
	if err := f.cfg.Local.WaitApplied(ctx, rev, specs); err != nil {
		return fmt.Errorf("not applied by %s: %w", f.cfg.Self, err)
	}
	if f.cfg.Registry == nil {
		return nil
	}
	for {
		lagging, changed := f.lagging(rev, specs)
		if len(lagging) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not applied by %s: %w", strings.Join(lagging, ", "), ctx.Err())
		case <-changed:
		}
	}
}

// Lagging names the live nodes that serve one of specs (any, when specs
// is empty) and have not applied revision rev, this one included, each
// with the revision it applied: what a write that timed out waits for.
func (f *Fleet) Lagging(rev uint64, specs []stream.Spec) []string {
	var out []string
	if h := f.cfg.Local.NodeStatus(); h.AppliedRevision < rev && servesAny(f.cfg.Self, specs) {
		out = append(out, fmt.Sprintf("%s (applied revision %d)", f.cfg.Self, h.AppliedRevision))
	}
	if f.cfg.Registry == nil {
		return out
	}
	live, _, _ := f.cfg.Registry.Nodes()
	for _, name := range f.peersLagging(live, rev, specs) {
		out = append(out, fmt.Sprintf("%s (applied revision %d)", name, live[name].AppliedRevision))
	}
	return out
}

// lagging names the other live nodes that serve one of specs and have
// not applied rev, with the registry's next-change channel.
func (f *Fleet) lagging(rev uint64, specs []stream.Spec) ([]string, <-chan struct{}) {
	live, _, changed := f.cfg.Registry.Nodes()
	return f.peersLagging(live, rev, specs), changed
}

func (f *Fleet) peersLagging(live map[string]stream.NodeInfo, rev uint64, specs []stream.Spec) []string {
	var out []string
	for name, ni := range live {
		if name != f.cfg.Self && !f.applied(ni, rev) && servesAny(name, specs) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// servesAny reports whether node serves one of specs (or specs is empty).
func servesAny(node string, specs []stream.Spec) bool {
	return len(specs) == 0 || slices.ContainsFunc(specs, func(s stream.Spec) bool { return s.Targets(node) })
}

// Refused says whether nginx refused stream id at revision rev on every
// live node that serves it, and why (nginx's message; with several nodes,
// each node's). A stream refused on some nodes only is not refused: it
// stays, and its status says where it failed. A stream no live node
// serves is not refused either.
func (f *Fleet) Refused(id stream.ID, rev uint64) (string, bool) {
	var live, failed []nodeState
	for _, ns := range f.onNodes(f.spec(id, rev)) {
		if ns.State == stream.Gone {
			continue
		}
		live = append(live, ns)
		if ns.State == stream.Failed {
			failed = append(failed, ns)
		}
	}
	if len(live) == 0 || len(failed) < len(live) {
		return "", false
	}
	if len(failed) == 1 {
		return failed[0].Error, true
	}
	msgs := make([]string, len(failed))
	for i, ns := range failed {
		msgs[i] = ns.Node + ": " + ns.Error
	}
	return "refused on every node that serves it: " + strings.Join(msgs, "; "), true
}

// BindConflict is this node's answer for a stream that it serves: another
// process holds its address here. A stream of other nodes only is not
// checked here.
func (f *Fleet) BindConflict(s stream.Spec) error {
	if !s.Targets(f.cfg.Self) {
		return nil
	}
	return f.cfg.Local.BindConflict(s)
}

// Leftover is this node's: whether nginx here still serves the deleted
// stream id.
func (f *Fleet) Leftover(id stream.ID) error { return f.cfg.Local.Leftover(id) }
