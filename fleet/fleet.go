// Package fleet is what one node knows of its streams across a fleet:
// its own reconciler's status, and the status every other live node
// publishes in the node registry. It serves the write path (wait until
// every live node that serves a stream applied it; a refusal is one that
// all of them refused) and the API (a stream's state on each node). On a
// single node (no registry) it is the reconciler, and the streams that
// name other nodes only.
package fleet

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// Local is this node's reconciler.
type Local interface {
	WaitApplied(ctx context.Context, rev uint64, specs []stream.Spec) error
	Status(id stream.ID, rev uint64) stream.Status
	NodeStatus() stream.NodeStatus
	BindConflict(s stream.Spec) error
	Leftover(id stream.ID) error
}

// Registry is the node registry as this node sees it.
type Registry interface {
	// Nodes returns the live nodes by name, the nodes seen leaving (when),
	// and a channel closed at the next change. The maps are not changed
	// by the caller nor, once returned, by the registry.
	Nodes() (live map[string]stream.NodeInfo, gone map[string]time.Time, changed <-chan struct{})
	// Generation changes at every change.
	Generation() uint64
}

// Config wires a Fleet.
type Config struct {
	// Self is this node's name (NODE_NAME).
	Self string
	// Local is this node's reconciler.
	Local Local
	// Registry is the fleet's node registry; nil on a single node.
	Registry Registry
	// Lookup reads a stream from this node's copy of the desired state
	// (no network), to learn which nodes serve it.
	Lookup func(id stream.ID) (stream.Spec, bool)
	// Epoch is this node's stream.NodeInfo.Epoch (nil: always 0). A
	// peer's applied revision counts only within this node's epoch.
	Epoch func() uint64
}

// epoch is this node's epoch.
func (f *Fleet) epoch() uint64 {
	if f.cfg.Epoch == nil {
		return 0
	}
	return f.cfg.Epoch()
}

// applied reports whether peer ni applied revision rev of this node's
// epoch: an applied revision of another epoch (before or after an
// operator's confirmation) says nothing of this one's.
func (f *Fleet) applied(ni stream.NodeInfo, rev uint64) bool {
	return ni.Epoch == f.epoch() && ni.AppliedRevision >= rev
}

// Fleet answers for the streams across the live nodes that serve them.
type Fleet struct {
	cfg Config
}

// New returns the Fleet of cfg.
func New(cfg Config) *Fleet { return &Fleet{cfg: cfg} }

// Generation changes whenever another node published a change (0 on a
// single node).
func (f *Fleet) Generation() uint64 {
	if f.cfg.Registry == nil {
		return 0
	}
	return f.cfg.Registry.Generation()
}

// nodeState is a stream's state on one node, with since when (zero when
// the node does not say).
type nodeState struct {
	stream.OnNode
	since time.Time
}

// onNodes is sp's state on each node that serves it, by name: this node
// from its reconciler, the other live nodes from what they published, and
// the nodes it names (or, for a stream of every node, the nodes seen
// leaving) that are not live, as gone.
func (f *Fleet) onNodes(sp stream.Spec) []nodeState {
	var out []nodeState
	if sp.Targets(f.cfg.Self) {
		st := f.cfg.Local.Status(sp.ID(), sp.Revision)
		out = append(out, nodeState{OnNode: stream.OnNode{Node: f.cfg.Self, State: st.State, Error: st.Error,
			AppliedRevision: f.cfg.Local.NodeStatus().AppliedRevision}, since: st.Since})
	}
	if f.cfg.Registry == nil {
		return out
	}
	live, gone, _ := f.cfg.Registry.Nodes()
	for name, ni := range live {
		if name != f.cfg.Self && sp.Targets(name) {
			out = append(out, f.peerState(name, ni, sp))
		}
	}
	for name, at := range gone {
		if _, ok := live[name]; !ok && name != f.cfg.Self && sp.Targets(name) {
			out = append(out, goneState(name, "left the fleet at "+at.Format(time.RFC3339)+" (it stopped, or its lease expired); not waited for"))
		}
	}
	for _, name := range sp.Nodes {
		_, isLive := live[name]
		_, isGone := gone[name]
		if !isLive && !isGone && name != f.cfg.Self {
			out = append(out, goneState(name, "no live node of that name is in the fleet; not waited for"))
		}
	}
	slices.SortFunc(out, func(a, b nodeState) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// peerState is sp's state on the live node name, from what it published:
// pending until it applied sp's revision (in this node's epoch), then failed if it lists sp
// among its streams not active at that revision, active otherwise.
func (f *Fleet) peerState(name string, ni stream.NodeInfo, sp stream.Spec) nodeState {
	ns := nodeState{OnNode: stream.OnNode{Node: name, State: stream.Active, AppliedRevision: ni.AppliedRevision}}
	if !f.applied(ni, sp.Revision) {
		ns.State = stream.Pending
		return ns
	}
	for _, st := range ni.NotActive {
		if st.ID == sp.ID() && st.Revision == sp.Revision {
			ns.State, ns.Error, ns.since = st.State, st.Error, st.Since
		}
	}
	return ns
}

func goneState(name, why string) nodeState {
	return nodeState{OnNode: stream.OnNode{Node: name, State: stream.Gone, Error: why}}
}

// spec is the stream id at revision rev as this node's copy has it, so
// that its nodes are known; a stream not found there (deleted since) is
// taken as served by every node.
func (f *Fleet) spec(id stream.ID, rev uint64) stream.Spec {
	sp, ok := f.cfg.Lookup(id)
	if !ok {
		sp = stream.Spec{Protocol: id.Protocol, Listen: id.Port}
	}
	sp.Revision = rev
	return sp
}
