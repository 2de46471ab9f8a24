package ui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// Every file the page names is embedded, served with its type and the
// headers that keep it from being framed, sniffed or leaking its address.
func TestUIHandlerServesEveryFileThePageNames(t *testing.T) {
	h := Handler("/ui")
	page := get(t, h, "/ui/", "text/html")
	refs := regexp.MustCompile(`(?:src|href)="([^"#:]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("the page names %d files, want its script, style sheet and icon:\n%s", len(refs), page)
	}
	types := map[string]string{".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
	for _, ref := range refs {
		name := ref[1]
		if _, err := fs.Stat(Files, name); err != nil {
			t.Errorf("the page names %s, which is not embedded: %v", name, err)
			continue
		}
		get(t, h, "/ui/"+name, types[name[strings.LastIndex(name, "."):]])
	}
}

// The policy allows no inline script, so the page must hold none.
func TestUIPageHoldsNoInlineCode(t *testing.T) {
	page, err := fs.ReadFile(Files, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).Match(page) || regexp.MustCompile(`\son[a-z]+=|\sstyle=|<style`).Match(page) {
		t.Fatalf("index.html holds inline code or style, which the policy blocks:\n%s", page)
	}
}

func get(t *testing.T, h http.Handler, path, wantType string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), wantType) {
		t.Fatalf("GET %s: %d %q, want 200 %s", path, rec.Code, rec.Header().Get("Content-Type"), wantType)
	}
	for k, want := range map[string]string{
		"Content-Security-Policy": ContentSecurityPolicy,
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("GET %s: %s %q, want %q", path, k, got, want)
		}
	}
	return rec.Body.String()
}
