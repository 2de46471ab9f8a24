package httpapi

import (
	"net/http"
)

// exportDoc is the JSON of GET /v1/export and POST /v1/import: every
// stream's desired fields, nothing the daemon sets.
type exportDoc struct {
	Streams []specRequest `json:"streams"`
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) error {
	specs, _ := s.store.List()
	doc := exportDoc{Streams: make([]specRequest, len(specs))}
	for i, sp := range specs {
		p, l := string(sp.Protocol), sp.Listen
		doc.Streams[i] = specRequest{Protocol: &p, Listen: &l, Bind: sp.Bind, Backends: sp.Backends,
			Balance: sp.Balance, MaxFails: sp.MaxFails, FailTimeout: sp.FailTimeout, ProxyProtocol: sp.ProxyProtocol,
			ConnectTimeout: sp.ConnectTimeout, IdleTimeout: sp.IdleTimeout, Allow: sp.Allow, Description: sp.Description}
	}
	writeJSON(w, http.StatusOK, doc)
	return nil
}
