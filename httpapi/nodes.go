package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// NodeLister lists the nodes of a fleet (the etcd node registry).
type NodeLister interface {
	Nodes(ctx context.Context) ([]stream.NodeInfo, error)
}

// StreamLister is what LocalNode reads of the desired state.
type StreamLister interface {
	List() ([]stream.Spec, uint64)
}

// LocalNode is what this node knows of itself: name, API address and
// version as given, the revision its reconciler applied, whether its
// nginx runs and how many streams are active or failed on it.
func LocalNode(st StreamLister, ap Applier, name, api, version string) stream.NodeInfo {
	h := ap.NodeStatus()
	ni := stream.NodeInfo{Name: name, API: api, Version: version, AppliedRevision: h.AppliedRevision,
		NginxRunning: h.NginxRunning, LastSeen: time.Now().UTC()}
	specs, _ := st.List()
	for _, sp := range specs {
		switch ap.Status(sp.ID(), sp.Revision).State {
		case stream.Active:
			ni.Streams.Active++
		case stream.Failed:
			ni.Streams.Failed++
		}
	}
	return ni
}

// listNodes answers GET /v1/nodes: the fleet's registered nodes, or this
// node alone when there is no registry (STATE_STORE=bbolt).
func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Nodes == nil {
		local := LocalNode(s.store, s.applier, s.cfg.NodeName, s.cfg.APIAddress, s.cfg.Version)
		writeJSON(w, http.StatusOK, map[string]any{"nodes": []stream.NodeInfo{local}})
		return nil
	}
	nodes, err := s.cfg.Nodes.Nodes(r.Context())
	if err != nil {
		return err // the registry is in the desired state's store: 503 store_unavailable
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": nodes})
	return nil
}
