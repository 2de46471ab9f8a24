package httpapi

import (
	"fmt"
	"net/http"
	"os"

	"github.com/streamconductor/stream-conductor/stream"
)

// healthz says the process is up; it checks nothing else.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz says whether the node does its job: the store takes writes (its
// file is still the one at its path), nginx runs, the last pass succeeded,
// no pass is stuck, and nginx listens on every port it was given.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	h := s.applier.NodeStatus()
	var reasons []string
	if err := s.store.Check(); err != nil {
		reasons = append(reasons, err.Error())
	}
	if h.Counters.Passes == 0 {
		reasons = append(reasons, "no reconcile pass has finished yet")
	}
	if !h.NginxRunning {
		reasons = append(reasons, "nginx is not running")
	}
	if h.LastError != "" {
		reasons = append(reasons, "last pass failed: "+h.LastError)
	}
	if h.Stuck != "" {
		reasons = append(reasons, h.Stuck)
	}
	if n := len(h.NotListening); n > 0 {
		reasons = append(reasons, fmt.Sprintf("nginx does not listen on the ports of %d applied streams", n))
	}
	if len(reasons) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": reasons})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
	return nil
}

// status reports the node: versions, nginx, the reconciler and how many
// streams are in each state.
func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	specs, rev := s.store.List()
	counts := map[stream.State]int{stream.Active: 0, stream.Pending: 0, stream.Failed: 0}
	var failed []map[string]string
	total := 0
	for _, sp := range specs {
		if !sp.Targets(s.cfg.NodeName) {
			continue // not served here: another node's
		}
		total++
		st := s.applier.Status(sp.ID(), sp.Revision)
		counts[st.State]++
		if st.State == stream.Failed {
			failed = append(failed, map[string]string{"id": sp.ID().String(), "error": st.Error})
		}
	}
	h := s.applier.NodeStatus()
	out := map[string]any{
		"version":        s.cfg.Version,
		"pid":            os.Getpid(),
		"nginx_mode":     s.cfg.NginxMode,
		"port_range":     map[string]int{"min": s.cfg.PortMin, "max": s.cfg.PortMax},
		"store_revision": rev,
		"streams":        map[string]any{"total": total, "by_state": counts, "failed": failed},
		"reconciler":     h,
	}
	if s.cfg.Events != nil {
		out["events"] = s.cfg.Events.Stats()
	}
	if s.cfg.Bans != nil {
		current, total := s.cfg.Bans.Stats()
		out["bans"] = map[string]any{"current": current, "total": total}
	}
	if c := s.condition(); c.Stale != nil || c.Alarm != nil {
		out["stale"], out["alarm"] = c.Stale, c.Alarm
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
