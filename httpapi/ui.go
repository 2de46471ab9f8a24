package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/streamconductor/stream-conductor/ui"
)

// mountUI serves the dashboard at /ui/ to anyone (its files hold no
// secret: every answer it shows comes from the API, with the caller's
// token), and sends /ui to /ui/ so that its relative links resolve.
func (s *Server) mountUI(r *mux.Router) {
	files := ui.Handler("/ui")
	serve := func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Path == "/ui" {
			http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
			return nil
		}
		files.ServeHTTP(w, r)
		return nil
	}
	r.Handle("/ui", s.handle("/ui", Open, serve)).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/ui/").Handler(s.handle("/ui/", Open, serve)).Methods(http.MethodGet, http.MethodHead)
}
