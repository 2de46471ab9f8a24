package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// backup streams a consistent snapshot of the bbolt file: stop the daemon,
// put it in place of DATA_DIR/state.db and start again to restore.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) error {
	_, rev := s.store.List()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="stream-conductor-%d.db"`, rev))
	w.Header().Set("Content-Length", strconv.FormatInt(s.store.BackupSize(), 10))
	if _, err := s.store.Backup(w); err != nil {
		// Headers are gone; the client sees a short body.
		s.log.Error().Err(err).Msg("backup")
	}
	return nil
}

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

// importStreams makes the store hold every stream of the body (and, with
// ?prune=true, no other) in one transaction, after validating all of them:
// one bad stream refuses the whole import. ?dry_run=true only says what
// would change.
func (s *Server) importStreams(w http.ResponseWriter, r *http.Request) error {
	var doc exportDoc
	if err := decodeJSONLimit(w, r, &doc, MaxImportBytes); err != nil {
		return err
	}
	specs := make([]stream.Spec, 0, len(doc.Streams))
	seen := map[string]bool{}
	for i, q := range doc.Streams {
		field := fmt.Sprintf("streams[%d]", i)
		if q.Protocol == nil || q.Listen == nil {
			return errInvalid(field, "every stream needs protocol and listen")
		}
		sp, err := q.toSpec(stream.Protocol(*q.Protocol), *q.Listen)
		if err != nil {
			return prefixField(err, field)
		}
		sp, err = nginxconf.Validate(sp, s.rules())
		if err != nil {
			return prefixField(validationError(err), field)
		}
		if err := s.checkBackends(r.Context(), sp.Backends); err != nil {
			return prefixField(err, field)
		}
		if seen[sp.ID()] {
			return errInvalid(field, "stream %s is listed twice", sp.ID())
		}
		seen[sp.ID()] = true
		specs = append(specs, sp)
	}
	prune := r.URL.Query().Get("prune") == "true"
	if r.URL.Query().Get("dry_run") == "true" {
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "changes": s.store.PlanImport(specs, prune)})
		return nil
	}
	res, err := s.store.Import(specs, prune)
	if err != nil {
		return err
	}
	noteChange(r, fmt.Sprintf("import: %d created, %d updated, %d deleted", len(res.Create), len(res.Update), len(res.Delete)), nil, nil)
	out := map[string]any{"dry_run": false, "changes": res}
	if noWait(r) {
		writeJSON(w, http.StatusAccepted, out)
		return nil
	}
	if err := s.waitApplied(r, res.Revision); err != nil {
		return err
	}
	var failed []map[string]string
	for _, sp := range specs {
		cur, err := s.store.Get(sp.ID())
		if err != nil {
			continue
		}
		if st := s.applier.Status(cur.ID(), cur.Revision); st.State == stream.Failed {
			failed = append(failed, map[string]string{"id": cur.ID(), "error": st.Error})
		}
	}
	out["failed"] = failed
	writeJSON(w, http.StatusOK, out)
	return nil
}

// prefixField qualifies a field error with the element it is in.
func prefixField(err error, prefix string) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	if e.Field == "" {
		e.Field = prefix
	} else {
		e.Field = prefix + "." + e.Field
	}
	return e
}
