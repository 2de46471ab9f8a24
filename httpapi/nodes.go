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

// LocalNode is what this node knows of itself: name, API address and
// version as given, and from its reconciler's last pass the revision it
// applied, whether its nginx runs, how many of its streams are active or
// failed, and the status of those not active.
func LocalNode(ap Applier, name, api, version string) stream.NodeInfo {
	h := ap.NodeStatus()
	return stream.NodeInfo{Name: name, API: api, Version: version, AppliedRevision: h.AppliedRevision,
		NginxRunning: h.NginxRunning, Streams: h.Streams, NotActive: h.NotActive, LastSeen: time.Now().UTC()}
}

// listNodes answers GET /v1/nodes: the fleet's registered nodes, or this
// node alone when there is no registry (STATE_STORE=bbolt).
func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Nodes == nil {
		local := LocalNode(s.applier, s.cfg.NodeName, s.cfg.APIAddress, s.cfg.Version)
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
