package httpapi

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/streamconductor/stream-conductor/ui"
)

// mountUI serves the dashboard at /ui/ to anyone (its files hold no
// secret: every answer it shows comes from the API, with the caller's
// token), sends /ui to /ui/ so that its relative links resolve, and a
// browser that asks for / to /ui/.
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
	// A browser pointed at the API's address finds the dashboard; other
	// clients get the JSON 404 of any unknown route.
	r.Handle("/", s.handle("/", Open, func(w http.ResponseWriter, r *http.Request) error {
		if !strings.Contains(r.Header.Get("Accept"), "text/html") {
			return errNotFound("no route for %s %s; the API is under /v1/, the dashboard at /ui/", r.Method, r.URL.Path)
		}
		http.Redirect(w, r, "/ui/", http.StatusFound)
		return nil
	})).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/ui/").Handler(s.handle("/ui/", Open, serve)).Methods(http.MethodGet, http.MethodHead)
}
