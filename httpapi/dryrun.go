package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// isDryRun reports whether the client asked only to see what a write would
// do (?dry_run=true).
func isDryRun(r *http.Request) bool {
	v := r.URL.Query().Get("dry_run")
	return v == "true" || v == "1"
}

// dryRun answers a validated write with the file it would write, the
// rendered configuration and a line diff against the file on disk,
// changing nothing.
func (s *Server) dryRun(w http.ResponseWriter, sp stream.Spec) error {
	plan, err := s.planPut(sp)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, plan)
	return nil
}

// planPut is what writing the validated sp would change: the dry-run
// answer of a create or a replace.
func (s *Server) planPut(sp stream.Spec) (map[string]any, error) {
	name, body, current, err := s.applier.Preview(sp)
	if errors.Is(err, nginxconf.ErrNotRenderable) {
		return nil, &Error{Status: http.StatusUnprocessableEntity, Code: CodeNginxRejected, Message: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	change := "update"
	switch {
	case current == nil:
		change = "create"
	case string(current) == string(body):
		change = "none"
	}
	return map[string]any{
		"dry_run": true, "change": change, "file": name, "config": string(body),
		"diff": lineDiff(string(current), string(body)), "stream": struct {
			ID stream.ID `json:"id"`
			specJSON
		}{sp.ID(), showSpec(sp)},
	}, nil
}

// planDelete is what deleting the stored stream cur would change: the
// dry-run answer of a delete.
func (s *Server) planDelete(cur stream.Spec) (map[string]any, error) {
	name, _, current, err := s.applier.Preview(cur)
	if err != nil && !errors.Is(err, nginxconf.ErrNotRenderable) { // a delete renders nothing
		return nil, err
	}
	return map[string]any{"dry_run": true, "change": "delete", "file": name, "config": "",
		"diff": lineDiff(string(current), ""), "stream": s.view(cur)}, nil
}

// lineDiff is a unified-style diff of two short texts: lines only in a
// start with "-", lines only in b with "+", common lines with " ". It
// uses the longest common subsequence, fine for files of a few dozen lines.
func lineDiff(a, b string) string {
	x, y := splitLines(a), splitLines(b)
	n, m := len(x), len(y)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			out.WriteString(" " + x[i] + "\n")
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out.WriteString("-" + x[i] + "\n")
			i++
		default:
			out.WriteString("+" + y[j] + "\n")
			j++
		}
	}
	return out.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
