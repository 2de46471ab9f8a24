// Package ui is the dashboard served at /ui/: static files embedded in the
// binary (one page, one script, one style sheet) that use only the public
// API. It holds no secret and no server logic; the token is the browser's.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Files are the dashboard's files, index.html at the root.
var Files = mustSub(static, "static")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embedded directory is always there
	}
	return sub
}

// ContentSecurityPolicy lets the page load only its own files and talk
// only to its own origin, and no other page frame it.
const ContentSecurityPolicy = "default-src 'self'; frame-ancestors 'none'"

// Handler serves Files for requests whose path has had prefix removed
// ("/ui/app.js" with prefix "/ui" is app.js), with headers that keep
// the page from being framed, sniffed or leaking its address.
func Handler(prefix string) http.Handler {
	files := http.StripPrefix(prefix, http.FileServerFS(Files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// The files change with the binary, which sends no validators:
		// ask again each time (they are small).
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
