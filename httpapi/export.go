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
		doc.Streams[i] = exportSpec(sp)
	}
	writeJSON(w, http.StatusOK, doc)
	return nil
}
