package httpapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	// IDKeyFile holds the secret key of the token ids (see tokenID); it
	// is created with a random key when missing. Empty: a random key kept
	// in memory, so ids change at every start.
	IDKeyFile string
	cur       atomic.Pointer[tokens]

	keyOnce sync.Once
	key     []byte
	keyErr  error
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
	ts.keyOnce.Do(func() { ts.key, ts.keyErr = loadIDKey(ts.IDKeyFile) })
	if ts.keyErr != nil {
		return ts.keyErr
	}
	t := &tokens{hasWrite: w != "", hasRd: r != ""}
	t.write, t.read = sha256.Sum256([]byte(w)), sha256.Sum256([]byte(r))
	t.writeID, t.readID = tokenID(ts.key, "write", w), tokenID(ts.key, "read", r)
	ts.cur.Store(t)
	return nil
}

// tokenID names a token in the audit log and the request log, which
// read-token holders and log readers see. It was "write:" plus the first
// 32 bits of the token's SHA-256: anyone who could read the audit log
// could test guesses of the write token offline, at billions a second,
// against those bits. The id is now "write:hmac-" plus 48 bits of
// HMAC-SHA256 under a key that never leaves the node (IDKeyFile, outside
// the state database, so neither /v1/backup nor /v1/export carries it):
// without the key it reveals nothing about the token, yet it still tells
// a rotated token from the one before, also across restarts. The key is
// not a credential: losing it only changes the ids.
func tokenID(key []byte, kind, token string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("stream-conductor token id\x00" + kind + "\x00" + token))
	return kind + ":hmac-" + hex.EncodeToString(m.Sum(nil)[:6])
}

// idKeySize is the length of the token-id key.
const idKeySize = 32

// loadIDKey reads the token-id key from file, creating it with a random
// key when it does not exist; with no file, the key is random and kept in
// memory.
func loadIDKey(file string) ([]byte, error) {
	if file == "" {
		return randomKey()
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return createIDKey(file)
	}
	if err != nil {
		return nil, fmt.Errorf("token id key: %w", err)
	}
	if len(b) != idKeySize {
		return nil, fmt.Errorf("token id key %s holds %d bytes, not %d: remove it and restart (only the token ids in the audit log change)", file, len(b), idKeySize)
	}
	return b, nil
}

// createIDKey writes a new random key to file, whole or not at all: it is
// written to a temporary file and linked into place, so that a crash
// leaves no half key and a concurrent start keeps the first key made.
func createIDKey(file string) ([]byte, error) {
	key, err := randomKey()
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".token-id-key-*")
	if err != nil {
		return nil, fmt.Errorf("token id key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(key)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), file)
	}
	if errors.Is(err, fs.ErrExist) {
		return loadIDKey(file)
	}
	if err != nil {
		return nil, fmt.Errorf("token id key %s: %w", file, err)
	}
	return key, nil
}

func randomKey() ([]byte, error) {
	key := make([]byte, idKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("token id key: %w", err)
	}
	return key, nil
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
// and returns the id of the token used ("write:hmac-1a2b3c4d5e6f", never
// the token itself, see tokenID) for the audit log.
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

// checkSameOrigin refuses a write that a browser sent on behalf of a page
// of another origin (cross-site request forgery). The routes of the
// original service change state on GET, so `<img
// src="http://127.0.0.1:8080/createstream/9001/10.0.0.5:22">` on any web
// page would open a port: it carries the API's own Host and no Origin, so
// the Host check passes it, and no token is needed by default. Browsers
// say where a request comes from, and a page cannot forge it:
//
//   - Sec-Fetch-Site must be same-origin or none (typed in the address
//     bar, a bookmark); cross-site, same-site (another port of the same
//     host is same-site) and anything else are refused;
//   - Origin and Referer, when present, must be the request's own origin:
//     the scheme this server answers on and the Host header, port
//     included ("null" and unparsable values are refused).
//
// curl, the CLI and scripts send none of these headers and are not
// affected. It applies to every write, GET or not, with or without a
// token: a cross-site POST with a body of no declared type (a Blob) is
// not stopped by the JSON content-type rule, and the rule costs nothing.
// A browser that sends neither Sec-Fetch-Site nor a Referer (old ones,
// under a no-referrer policy) is not caught: set a token, which no page
// can send.
func checkSameOrigin(r *http.Request) error {
	for _, v := range r.Header.Values("Sec-Fetch-Site") {
		if v != "same-origin" && v != "none" {
			return errCrossSite("Sec-Fetch-Site", v)
		}
	}
	self := requestOrigin(r)
	for _, name := range []string{"Origin", "Referer"} {
		for _, v := range r.Header.Values(name) {
			if o, ok := originOf(v); !ok || o != self {
				return errCrossSite(name, v)
			}
		}
	}
	return nil
}

func errCrossSite(header, value string) *Error {
	return &Error{Status: http.StatusForbidden, Code: CodeForbidden, Field: header,
		Message: fmt.Sprintf("%s %q: a page of another site may not change anything here; scripts and curl send no such header", header, truncate(value))}
}

// requestOrigin is the origin the client addressed: scheme, host and
// port, the port made explicit.
func requestOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	o, _ := originOf(scheme + "://" + r.Host)
	return o
}

// originOf reduces a URL to its origin, "scheme://host:port" with the
// host in lower case and the port explicit; ok is false for anything
// that is not an http(s) URL with a host (including "null").
func originOf(v string) (string, bool) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Opaque != "" {
		return "", false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port), true
}
