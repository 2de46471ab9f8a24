package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/writes"
)

// importStreams makes the desired state hold every stream of the body
// (and, with ?prune=true, no other) in one revision, through the write
// path, which checks all of them first: one bad stream refuses the whole
// import. ?dry_run=true only says what would change. The answer lists the
// imported streams nginx refused; the write path undoes them.
func (s *Server) importStreams(w http.ResponseWriter, r *http.Request) error {
	var doc exportDoc
	if err := decodeJSONLimit(w, r, &doc, MaxImportBytes); err != nil {
		return err
	}
	specs := make([]stream.Spec, 0, len(doc.Streams))
	for i, q := range doc.Streams {
		field := fmt.Sprintf("streams[%d]", i)
		if q.Protocol == nil || q.Listen == nil {
			return errInvalid(field, "every stream needs protocol and listen")
		}
		sp, err := q.toSpec(stream.Protocol(*q.Protocol), q.Listen.first, q.Listen.first)
		if err != nil {
			return prefixField(err, field)
		}
		specs = append(specs, sp)
	}
	prune := r.URL.Query().Get("prune") == "true"
	if r.URL.Query().Get("dry_run") == "true" {
		plan, err := s.writes.PlanImport(r.Context(), specs, prune)
		if err != nil {
			return importError(err)
		}
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "changes": plan})
		return nil
	}
	res, err := s.writes.Import(r.Context(), specs, prune, requestID(r))
	if err != nil {
		return importError(err)
	}
	noteChange(r, fmt.Sprintf("import: %d created, %d updated, %d deleted", len(res.Create), len(res.Update), len(res.Delete)), nil, nil)
	out := map[string]any{"dry_run": false, "changes": res.ImportResult}
	if noWait(r) {
		writeJSON(w, http.StatusAccepted, out)
		return nil
	}
	refused, err := s.await(r, res.Pending)
	if err != nil {
		return err
	}
	var failed []map[string]string
	for _, f := range refused {
		failed = append(failed, map[string]string{"id": f.ID.String(), "error": f.Reason})
	}
	out["failed"] = failed
	writeJSON(w, http.StatusOK, out)
	return nil
}

// importError turns the write path's refusal of an import into the
// client's error, naming the element of the body it is about.
func importError(err error) error {
	var ie *writes.ItemError
	if !errors.As(err, &ie) {
		return writesError(err, "")
	}
	field := fmt.Sprintf("streams[%d]", ie.Index)
	if errors.Is(ie.Err, desired.ErrDuplicate) {
		return errInvalid(field, "stream %s is listed twice", ie.ID)
	}
	return prefixField(writesError(ie.Err, ie.ID), field)
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
