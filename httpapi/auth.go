package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
)

// Access is what a route needs from the caller.
type Access int

// The access levels of routes.
const (
	// Open routes need no token (/healthz).
	Open Access = iota
	// Read routes need the read or the write token.
	Read
	// Write routes need the write token.
	Write
)

// TokenSource holds the API tokens: each from its file (preferred: it can
// be re-read on SIGHUP without a restart, and stays out of `ps` and the
// environment of child processes) or its value. Empty means no token.
type TokenSource struct {
	WriteToken, WriteFile string
	ReadToken, ReadFile   string
	cur                   atomic.Pointer[tokens]
}

type tokens struct {
	write, read     [32]byte // SHA-256 of the tokens
	hasWrite, hasRd bool
	writeID, readID string
}

// Load reads the token files (again). On error the tokens in force stay.
func (ts *TokenSource) Load() error {
	w, err := tokenFrom(ts.WriteToken, ts.WriteFile, "API_TOKEN")
	if err != nil {
		return err
	}
	r, err := tokenFrom(ts.ReadToken, ts.ReadFile, "API_READ_TOKEN")
	if err != nil {
		return err
	}
	if r != "" && w == "" {
		return fmt.Errorf("API_READ_TOKEN needs API_TOKEN: a read-only token alone would leave writes open")
	}
	if r != "" && r == w {
		return fmt.Errorf("API_READ_TOKEN must differ from API_TOKEN")
	}
	t := &tokens{hasWrite: w != "", hasRd: r != ""}
	t.write, t.read = sha256.Sum256([]byte(w)), sha256.Sum256([]byte(r))
	t.writeID, t.readID = "write:"+hex.EncodeToString(t.write[:4]), "read:"+hex.EncodeToString(t.read[:4])
	ts.cur.Store(t)
	return nil
}

// Enabled reports whether a write token is set.
func (ts *TokenSource) Enabled() bool {
	t := ts.cur.Load()
	return t != nil && t.hasWrite
}

func tokenFrom(value, file, name string) (string, error) {
	if file == "" {
		return strings.TrimSpace(value), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %w", name, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s_FILE %s is empty", name, file)
	}
	if len(tok) < 16 {
		return "", fmt.Errorf("%s_FILE %s: a token must be at least 16 characters", name, file)
	}
	return tok, nil
}

// authorize checks the request's credentials for a route needing need,
// and returns the id of the token used ("write:1a2b3c4d", never the token
// itself) for the audit log.
func (ts *TokenSource) authorize(r *http.Request, need Access) (string, error) {
	if q := r.URL.Query(); q.Has("token") || q.Has("access_token") || q.Has("api_token") || q.Has("auth") {
		return "", &Error{Status: http.StatusBadRequest, Code: CodeInvalid, Field: "token",
			Message: "tokens go in the Authorization header, never in the URL (URLs end up in logs)"}
	}
	t := ts.cur.Load()
	if need == Open || t == nil || !t.hasWrite {
		return "none", nil
	}
	h := r.Header.Values("Authorization")
	if len(h) == 0 {
		return "", errUnauthorized("this API needs a token: send Authorization: Bearer <token>")
	}
	if len(h) > 1 {
		return "", errUnauthorized("send one Authorization header, not several")
	}
	scheme, tok, ok := strings.Cut(h[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errUnauthorized("the Authorization header must be Bearer <token>")
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	switch {
	case subtle.ConstantTimeCompare(sum[:], t.write[:]) == 1:
		return t.writeID, nil
	case t.hasRd && subtle.ConstantTimeCompare(sum[:], t.read[:]) == 1:
		if need == Write {
			return t.readID, &Error{Status: http.StatusForbidden, Code: CodeForbidden, Message: "the read-only token may not change anything"}
		}
		return t.readID, nil
	}
	return "", errUnauthorized("the token is not valid")
}

func errUnauthorized(msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: msg}
}

// checkHost defends an API bound to loopback against DNS rebinding: a
// browser page from elsewhere that resolves its own name to 127.0.0.1
// sends its own Host (and Origin), which must not be accepted.
func checkHost(r *http.Request) error {
	if !isLocalName(r.Host) {
		return &Error{Status: http.StatusForbidden, Code: CodeForbidden,
			Message: fmt.Sprintf("host %q is not allowed: the API listens on loopback and answers only to localhost, 127.0.0.1 or [::1]", truncate(r.Host))}
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !isLocalName(u.Host) {
			return &Error{Status: http.StatusForbidden, Code: CodeForbidden, Message: fmt.Sprintf("origin %q is not allowed", truncate(o))}
		}
	}
	return nil
}

func isLocalName(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
