package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Real TLS for the SNI routing tests (issue 15): backends that complete the
// handshake with a certificate of their own, and two clients (Go's
// crypto/tls and openssl s_client) that report which backend answered.

// selfSigned makes a certificate whose CommonName and only DNS name are
// name, signed by its own key.
func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsBackend is a TLS server on 127.0.0.1 that presents its own
// certificate (CommonName = name), sends "backend <name>\n" once the
// handshake is done, answers the first line it reads with
// "<name> echo <line>" and closes. With proxy it first reads a PROXY v1
// line and records it.
type tlsBackend struct {
	name  string
	ln    net.Listener
	cert  tls.Certificate
	proxy bool
	// conns counts the TCP connections accepted, handshake or not.
	conns atomic.Int64

	mu         sync.Mutex
	proxyLines []string
	snis       []string
}

func startTLSBackend(t *testing.T, name string, proxy bool) *tlsBackend {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tlsBackend{name: name, ln: ln, cert: selfSigned(t, name), proxy: proxy}
	t.Cleanup(func() { ln.Close() })
	acceptEach(ln, &b.conns, b.serve)
	return b
}

func (b *tlsBackend) addr() string { return b.ln.Addr().String() }

// bufConn reads through r, which holds what a PROXY line reader read past
// the line.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (b *tlsBackend) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var raw net.Conn = c
	if b.proxy {
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		b.mu.Lock()
		b.proxyLines = append(b.proxyLines, line)
		b.mu.Unlock()
		raw = &bufConn{Conn: c, r: br}
	}
	tc := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{b.cert}})
	if err := tc.Handshake(); err != nil {
		return
	}
	b.mu.Lock()
	b.snis = append(b.snis, tc.ConnectionState().ServerName)
	b.mu.Unlock()
	if _, err := fmt.Fprintf(tc, "backend %s\n", b.name); err != nil {
		return
	}
	line, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil {
		return
	}
	fmt.Fprintf(tc, "%s echo %s", b.name, line)
	tc.Close()
}

// proxyLine returns the PROXY line this backend read for the client
// connection from local port clientPort, "" if none.
func (b *tlsBackend) proxyLine(clientPort int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.proxyLines {
		f := strings.Fields(l)
		if len(f) == 6 && f[4] == strconv.Itoa(clientPort) {
			return l
		}
	}
	return ""
}

// sawSNI requires that the last connection each client made to b carried
// the server name sni ("" for none) in the ClientHello b read.
func (b *tlsBackend) sawSNI(t *testing.T, sni string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(tlsClients)
	if len(b.snis) < n {
		t.Fatalf("backend %s saw %d handshakes, want at least %d", b.name, len(b.snis), n)
	}
	for _, got := range b.snis[len(b.snis)-n:] {
		if got != sni {
			t.Fatalf("backend %s read server name %q in a ClientHello, want %q (last: %q)", b.name, got, sni, b.snis[len(b.snis)-n:])
		}
	}
}

// tlsAnswer is what a client saw of one connection through nginx.
type tlsAnswer struct {
	cn       string // the peer certificate's CommonName
	raw      []byte // the peer certificate (DER), Go client only
	greeting string // the backend's first line
	echo     string // its answer to our line
	local    *net.TCPAddr
}

// tlsOpts are the options of one client connection.
type tlsOpts struct {
	sni   string // "" sends no server name
	local string // source address; "" lets the kernel choose
}

// goTLS connects to 127.0.0.1:port with Go's crypto/tls, sends the SNI
// of o (none when empty: the address dialed is an IP), and returns the
// certificate, the greeting and the echo of a line. Any failure (refused,
// handshake cut, no greeting) is an error.
func goTLS(port int, o tlsOpts) (tlsAnswer, error) {
	var a tlsAnswer
	dialer := net.Dialer{Timeout: 3 * time.Second}
	if o.local != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.local)}
	}
	c, err := dialer.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return a, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	a.local = c.LocalAddr().(*net.TCPAddr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: o.sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		return a, fmt.Errorf("handshake: %w", err)
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		a.cn, a.raw = certs[0].Subject.CommonName, certs[0].Raw
	}
	br := bufio.NewReader(tc)
	if a.greeting, err = br.ReadString('\n'); err != nil {
		return a, fmt.Errorf("greeting: %q, %w", a.greeting, err)
	}
	msg := fmt.Sprintf("ping %d\n", time.Now().UnixNano())
	if _, err := tc.Write([]byte(msg)); err != nil {
		return a, fmt.Errorf("write: %w", err)
	}
	if a.echo, err = br.ReadString('\n'); err != nil {
		return a, fmt.Errorf("echo: %q, %w", a.echo, err)
	}
	if want := "echo " + msg; !strings.HasSuffix(a.echo, want) {
		return a, fmt.Errorf("echo %q does not end with %q", a.echo, want)
	}
	return a, nil
}

// opensslSubject finds the CommonName of the "subject=" line s_client
// prints for the server's certificate.
var opensslSubject = regexp.MustCompile(`(?m)^subject=.*CN\s*=\s*([^,/\n]+)`)

// opensslTLS connects with `openssl s_client` (-servername o.sni, or
// -noservername), sends a line and returns the CommonName of the
// certificate it printed, the backend's greeting and echo as read from its
// output; the error carries s_client's output when it saw no certificate.
func opensslTLS(port int, o tlsOpts) (tlsAnswer, error) {
	var a tlsAnswer
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	args := []string{"s_client", "-connect", "127.0.0.1:" + strconv.Itoa(port), "-ign_eof"}
	if o.sni == "" {
		args = append(args, "-noservername")
	} else {
		args = append(args, "-servername", o.sni)
	}
	if o.local != "" {
		args = append(args, "-bind", o.local+":0")
	}
	msg := fmt.Sprintf("ping %d\n", time.Now().UnixNano())
	cmd := exec.CommandContext(ctx, "openssl", args...)
	cmd.Stdin = strings.NewReader(msg)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	runErr := cmd.Run()
	text := out.String()
	if m := opensslSubject.FindStringSubmatch(text); m != nil {
		a.cn = strings.TrimSpace(m[1])
	}
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "backend "):
			a.greeting = line + "\n"
		case strings.Contains(line, " echo ping "):
			a.echo = line + "\n"
		}
	}
	if a.cn == "" || a.greeting == "" {
		return a, fmt.Errorf("openssl s_client %s: %v; no certificate or greeting:\n%s%s", strings.Join(args[1:], " "), runErr, text, stderr.String())
	}
	if want := "echo " + msg; !strings.HasSuffix(a.echo, want) {
		return a, fmt.Errorf("openssl s_client %s: echo %q does not end with %q:\n%s", strings.Join(args[1:], " "), a.echo, want, text)
	}
	return a, nil
}

// tlsClient is one of the two clients.
type tlsClient struct {
	name string
	dial func(port int, o tlsOpts) (tlsAnswer, error)
}

var tlsClients = []tlsClient{{"go", goTLS}, {"openssl", opensslTLS}}

// mustReach requires that a connection with o through port reaches b,
// with each client: b's certificate, b's greeting, b's echo.
func mustReach(t *testing.T, port int, o tlsOpts, b *tlsBackend) {
	t.Helper()
	for _, c := range tlsClients {
		a, err := c.dial(port, o)
		if err != nil {
			t.Fatalf("%s client, port %d, sni %q: want backend %s: %v", c.name, port, o.sni, b.name, err)
		}
		checkAnswer(t, c.name, port, o, a, b)
	}
}

// checkAnswer requires that a shows b: certificate, greeting and echo.
func checkAnswer(t *testing.T, client string, port int, o tlsOpts, a tlsAnswer, b *tlsBackend) {
	t.Helper()
	if a.cn != b.name {
		t.Fatalf("%s client, port %d, sni %q: certificate of %q, want %q", client, port, o.sni, a.cn, b.name)
	}
	if a.raw != nil && !bytes.Equal(a.raw, b.cert.Certificate[0]) {
		t.Fatalf("%s client, port %d, sni %q: a certificate named %q that is not backend %s's", client, port, o.sni, a.cn, b.name)
	}
	if want := "backend " + b.name + "\n"; a.greeting != want {
		t.Fatalf("%s client, port %d, sni %q: greeting %q, want %q", client, port, o.sni, a.greeting, want)
	}
	if !strings.HasPrefix(a.echo, b.name+" echo ") {
		t.Fatalf("%s client, port %d, sni %q: echo %q, not from %s", client, port, o.sni, a.echo, b.name)
	}
}

// mustBeClosed requires that a connection with o through port gets no
// TLS session with either client, and that none of bs saw a connection
// meanwhile.
func mustBeClosed(t *testing.T, port int, o tlsOpts, bs ...*tlsBackend) {
	t.Helper()
	before := make([]int64, len(bs))
	for i, b := range bs {
		before[i] = b.conns.Load()
	}
	for _, c := range tlsClients {
		a, err := c.dial(port, o)
		if err == nil {
			t.Fatalf("%s client, port %d, sni %q: reached %q (greeting %q); want the connection closed", c.name, port, o.sni, a.cn, a.greeting)
		}
		if a.cn != "" || a.greeting != "" {
			t.Fatalf("%s client, port %d, sni %q: saw certificate %q, greeting %q; want no handshake: %v", c.name, port, o.sni, a.cn, a.greeting, err)
		}
		var netErr *net.OpError
		if (errors.As(err, &netErr) && netErr.Op == "dial") || strings.Contains(strings.ToLower(err.Error()), "connection refused") {
			t.Fatalf("%s client, port %d: connection refused (%v); want nginx to accept, then close", c.name, port, err)
		}
	}
	for i, b := range bs {
		if n := b.conns.Load(); n != before[i] {
			t.Fatalf("port %d, sni %q: backend %s accepted %d connection(s); want none", port, o.sni, b.name, n-before[i])
		}
	}
}

// routeIn is one route of a stream as the API takes it.
type routeIn struct {
	ServerName string   `json:"server_name"`
	Backends   []string `json:"backends"`
	Balance    string   `json:"balance,omitempty"`
}

// route is a route to backends bs.
func route(name string, bs ...*tlsBackend) routeIn {
	r := routeIn{ServerName: name}
	for _, b := range bs {
		r.Backends = append(r.Backends, b.addr())
	}
	return r
}

// routedBody is the JSON of a stream with routes rs, default def (none
// when nil) and the other fields of extra.
func routedBody(t *testing.T, def *tlsBackend, extra map[string]any, rs ...routeIn) string {
	t.Helper()
	m := map[string]any{"routes": rs}
	if def != nil {
		m["default"] = def.addr()
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
