package fleet

import (
	"fmt"
	"strings"

	"github.com/streamconductor/stream-conductor/stream"
)

// View is a stream's status as the API shows it: across the live nodes
// that serve it in a fleet, and on each of them.
type View struct {
	stream.Status
	// Summary says how many live nodes that serve the stream have it
	// active, such as "active on 2 of 3 nodes" (fleet only).
	Summary string `json:"summary,omitempty"`
	// OnNodes is the stream's state on each node that serves it, live
	// or gone, by name (fleet only).
	OnNodes []stream.OnNode `json:"on_nodes,omitempty"`
}

// Of is sp's status. In a fleet: active when every live node that serves
// it has it active; pending while one has not applied its revision, or
// when no live node serves it; failed otherwise, with the first failing
// node's nginx message. On a single node: the reconciler's, and for a
// stream that names other nodes only, pending with an error that says it
// is not served here.
func (f *Fleet) Of(sp stream.Spec) View {
	nodes := f.onNodes(sp)
	if f.cfg.Registry == nil {
		if len(nodes) == 0 {
			return View{Status: stream.Status{State: stream.Pending, Revision: sp.Revision, Error: notServed(f.cfg.Self, sp)}}
		}
		return View{Status: stream.Status{State: nodes[0].State, Revision: sp.Revision, Error: nodes[0].Error, Since: nodes[0].since}}
	}
	v := View{Status: stream.Status{State: stream.Active, Revision: sp.Revision}, OnNodes: make([]stream.OnNode, len(nodes))}
	var live, active int
	var failed *nodeState
	var gone []string
	for i, ns := range nodes {
		v.OnNodes[i] = ns.OnNode
		if ns.since.After(v.Since) {
			v.Since = ns.since
		}
		switch ns.State {
		case stream.Gone:
			gone = append(gone, ns.Node)
			continue
		case stream.Active:
			active++
		case stream.Pending:
			v.State = stream.Pending
		case stream.Failed:
			if failed == nil {
				failed = &nodes[i]
			}
		}
		live++
	}
	switch {
	case live == 0:
		v.State, v.Error = stream.Pending, notServed(f.cfg.Self, sp)
	case v.State == stream.Pending:
	case failed != nil:
		v.State, v.Error = stream.Failed, failed.Node+": "+failed.Error
	}
	v.Summary = fmt.Sprintf("active on %d of %d nodes", active, live)
	if len(gone) > 0 {
		v.Summary += "; gone: " + strings.Join(gone, ", ")
	}
	return v
}

// notServed says why no live node serves sp.
func notServed(self string, sp stream.Spec) string {
	return fmt.Sprintf("stored but not served: no live node of %s (this node is %s)", strings.Join(sp.Nodes, ", "), self)
}
