package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/streamconductor/stream-conductor/stream"
)

// Exit codes of the client subcommands, for scripts.
const (
	exitOK          = 0 // done
	exitFailed      = 1 // the daemon refused or failed (the message says why)
	exitUsage       = 2 // bad command line
	exitNotFound    = 3 // no such stream
	exitUnreachable = 4 // no daemon answered at the URL
)

// cliError carries an exit code with its message.
type cliError struct {
	code int
	err  error
}

func (e *cliError) Error() string { return e.err.Error() }

func (e *cliError) Unwrap() error { return e.err }

// apiError is an error answer of the API.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

func (e *apiError) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// opts are every client flag; each subcommand uses some.
type opts struct {
	url, tokenFile, output                     string
	dryRun, prune, replace, proxyProtocol, udp bool
	// samePort is -same-port: a range forwards each port to the same
	// port on its backend (port_mode "same").
	samePort bool
	// ports is -ports N: create auto allocates a range of N ports.
	ports                                   int
	file, bind, balance, allow, description string
	connectTimeout, idleTimeout             string
	// ttl and expiresAt are -ttl and -expires-at (create, renew).
	ttl, expiresAt string
	types          string
	count          int
	// routes are the -route NAME=BACKEND[,BACKEND...] flags, in order;
	// defaultBackend is -default.
	routes         routeFlags
	defaultBackend string
	// The limits and deny list (issue 16): -max-connections,
	// -max-connections-per-client, -upload-rate, -download-rate, -deny.
	maxConns, maxConnsPerClient int
	uploadRate, downloadRate    string
	deny                        string
	// ban is -ban AFTER/WITHIN/FOR; stream is bans' -stream filter;
	// all is unban's -all.
	ban, stream string
	all         bool
}

// routeFlags collects the repeatable -route flag.
type routeFlags []string

func (r *routeFlags) String() string { return strings.Join(*r, " ") }

// Set adds one -route.
func (r *routeFlags) Set(v string) error {
	*r = append(*r, v)
	return nil
}

type command struct {
	usage string
	args  func(n int) bool
	run   func(c *client, o *opts, args []string, out io.Writer) error
}

// subcommands talk to a running daemon's API.
var subcommands = map[string]command{
	"ls":  {"ls [-o table|json|yaml]", exactly(0), runLs},
	"get": {"get ID [-o table|json|yaml]          ID: tcp/9000, udp/53, 9000 or a range tcp/10000-10099", exactly(1), runGet},
	"create": {"create ID|auto BACKEND[,BACKEND...] [-udp] [-bind ADDR] [-balance M] [-allow CIDR,...] [-deny CIDR,...] [-max-connections N] [-max-connections-per-client N] [-upload-rate R] [-download-rate R] [-ban AFTER/WITHIN/FOR] [-proxy-protocol] [-connect-timeout D] [-idle-timeout D] [-description TEXT] [-ttl D|-expires-at T] [-replace] [-dry-run]\n" +
		"       create ID|auto [DEFAULT[,BACKEND...]|-] -route NAME=BACKEND[,BACKEND...] [-route ...] [-default BACKEND[,BACKEND...]] [flags as above]\n" +
		"         routes TLS connections by server name (SNI) on one TCP port; NAME may start with *. (sub-domains only); the default (or - for none) takes the rest\n" +
		"       create tcp/FIRST-LAST HOST -same-port [flags as above]   a port range, each port to the same port on HOST\n" +
		"       create tcp/FIRST-LAST BACKEND[,BACKEND...] [flags as above]   a port range, every port to the backends\n" +
		"       create auto HOST -ports N -same-port [flags as above]   a range of N ports on the first free run of PORT_RANGE", between(1, 2), runCreate},
	"rm":      {"rm ID", exactly(1), runRm},
	"renew":   {"renew ID [-ttl D|-expires-at T] [-dry-run]   a new deadline for the stream (neither: its own ttl again, from now)", exactly(1), runRenew},
	"status":  {"status [-o table|json|yaml]", exactly(0), runStatus},
	"nodes":   {"nodes [-o table|json|yaml]          the fleet's nodes (this node alone without etcd)", exactly(0), runNodes},
	"apply":   {"apply -f FILE [-prune] [-dry-run]   FILE: YAML or JSON list of streams (- for stdin)", exactly(0), runApply},
	"export":  {"export [-o json|yaml] > streams.json", exactly(0), runExport},
	"import":  {"import [-dry-run] [-prune] FILE|-", exactly(1), runImport},
	"healthz": {"healthz                              exit 0 if the daemon answers (for health checks)", exactly(0), runHealthz},
	"watch":   {"watch [-types T,T...] [-n N] [-o table|json]   follow the daemon's events (GET /v1/events) until Ctrl-C or N events", exactly(0), runWatch},
	"bans":    {"bans [-stream ID] [-o table|json|yaml]   this node's automatic bans", exactly(0), runBans},
	"unban":   {"unban ID ADDRESS | unban ID -all     lift a ban (or every ban of the stream); answers once nginx lets it in", between(1, 2), runUnban},
	"confirm": {"confirm [-o table|json|yaml]         apply the fleet's state in etcd as it is on every node that holds (see status)", exactly(0), runConfirm},
}

func exactly(n int) func(int) bool { return func(m int) bool { return m == n } }

func between(lo, hi int) func(int) bool { return func(m int) bool { return m >= lo && m <= hi } }

type client struct {
	url, token string
	http       *http.Client
}

// runClient runs subcommand name and returns its exit code.
func runClient(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := subcommands[name]
	fs := flag.NewFlagSet("stream-conductor "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &opts{}
	def := getenv("STREAM_CONDUCTOR_URL")
	if def == "" {
		port := getenv("BIND_PORT")
		if port == "" {
			port = "8080"
		}
		def = "http://127.0.0.1:" + port
	}
	fs.StringVar(&o.url, "url", def, "the daemon's API [STREAM_CONDUCTOR_URL]")
	fs.StringVar(&o.tokenFile, "token-file", getenv("STREAM_CONDUCTOR_TOKEN_FILE"), "file with the API token [STREAM_CONDUCTOR_TOKEN_FILE]; or set STREAM_CONDUCTOR_TOKEN")
	fs.StringVar(&o.output, "o", "table", "output: table, json or yaml")
	fs.BoolVar(&o.dryRun, "dry-run", false, "show what would change, change nothing")
	fs.BoolVar(&o.prune, "prune", false, "apply/import: also delete the streams the file does not name")
	fs.StringVar(&o.file, "f", "", "apply: the file of streams")
	fs.BoolVar(&o.replace, "replace", false, "create: replace a stream that exists (default: refuse)")
	fs.BoolVar(&o.udp, "udp", false, "create auto: a UDP stream")
	fs.IntVar(&o.ports, "ports", 0, "create auto: allocate a range of N ports, the first free run of PORT_RANGE")
	fs.BoolVar(&o.samePort, "same-port", false, "create a range (tcp/10000-10099): each port to the same port on the BACKEND host (port_mode same)")
	fs.StringVar(&o.bind, "bind", "", "create: listen address")
	fs.StringVar(&o.balance, "balance", "", "create: round_robin, least_conn or hash_client_ip")
	fs.StringVar(&o.allow, "allow", "", "create: comma-separated source CIDRs allowed")
	fs.BoolVar(&o.proxyProtocol, "proxy-protocol", false, "create: send a PROXY protocol header")
	fs.StringVar(&o.connectTimeout, "connect-timeout", "", "create: e.g. 5s")
	fs.StringVar(&o.idleTimeout, "idle-timeout", "", "create: e.g. 10m")
	fs.StringVar(&o.description, "description", "", "create: free text")
	fs.IntVar(&o.maxConns, "max-connections", 0, "create: sessions open at once on the whole stream (default: no limit)")
	fs.IntVar(&o.maxConnsPerClient, "max-connections-per-client", 0, "create: sessions open at once from one client address (default: no limit)")
	fs.StringVar(&o.uploadRate, "upload-rate", "", "create: bytes per second read from the client, per connection, e.g. 512k or 1m")
	fs.StringVar(&o.downloadRate, "download-rate", "", "create: bytes per second read from the backend, per connection, e.g. 512k or 1m")
	fs.StringVar(&o.deny, "deny", "", "create: comma-separated source CIDRs refused (checked before -allow)")
	fs.StringVar(&o.ttl, "ttl", "", "create, renew: the stream expires this long from now (e.g. 2h; 1s to 8760h)")
	fs.StringVar(&o.expiresAt, "expires-at", "", "create, renew: the stream expires at this time (RFC 3339, e.g. 2026-12-01T15:00:00Z)")
	fs.Var(&o.routes, "route", "create: NAME=BACKEND[,BACKEND...] routes TLS server name NAME (SNI) to its backends; repeatable")
	fs.StringVar(&o.defaultBackend, "default", "", "create with -route: where names no route matches go (default: closed)")
	fs.StringVar(&o.ban, "ban", "", "create: AFTER/WITHIN/FOR, e.g. 10/1m/1h: ban a source for FOR once AFTER of its sessions failed within WITHIN")
	fs.StringVar(&o.stream, "stream", "", "bans: only this stream's (tcp/9000)")
	fs.BoolVar(&o.all, "all", false, "unban: every ban of the stream")
	fs.StringVar(&o.types, "types", "", "watch: comma-separated event types (default: all)")
	fs.IntVar(&o.count, "n", 0, "watch: stop after N events (default: follow until interrupted)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: stream-conductor %s\n\nExit codes: 0 done, 1 refused or failed, 2 bad usage, 3 no such stream, 4 no daemon at the URL.\n\nFlags:\n", cmd.usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(interleave(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if !cmd.args(fs.NArg()) || (o.output != "table" && o.output != "json" && o.output != "yaml") {
		fs.Usage()
		return exitUsage
	}
	c := &client{url: strings.TrimSuffix(o.url, "/"), http: &http.Client{Timeout: 5 * time.Minute}, token: getenv("STREAM_CONDUCTOR_TOKEN")}
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			fmt.Fprintln(stderr, "stream-conductor "+name+":", err)
			return exitUsage
		}
		c.token = strings.TrimSpace(string(b))
	}
	if err := cmd.run(c, o, fs.Args(), stdout); err != nil {
		fmt.Fprintln(stderr, "stream-conductor "+name+":", err)
		var ce *cliError
		if errors.As(err, &ce) {
			return ce.code
		}
		return exitFailed
	}
	return exitOK
}

// interleave moves flags before positional arguments, so that
// "create tcp/9000 db:5432 -bind 127.0.0.1" parses as users write it.
func interleave(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue(name) && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func takesValue(name string) bool {
	switch name {
	case "dry-run", "prune", "replace", "proxy-protocol", "udp", "same-port", "all", "h", "help":
		return false
	}
	return true
}

// do sends a request and decodes a JSON answer into out (a
// *json.RawMessage keeps it raw). Errors carry the right exit code.
func (c *client) do(method, path string, body []byte, header map[string]string, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &cliError{exitUnreachable, fmt.Errorf("the daemon is not answering at %s: %w", c.url, err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error apiError `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error.Message == "" {
			return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(raw))
		}
		e.Error.Status = resp.StatusCode
		code := exitFailed
		if resp.StatusCode == http.StatusNotFound {
			code = exitNotFound
		}
		return &cliError{code, &e.Error}
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	if b, ok := out.(*json.RawMessage); ok {
		*b = raw
		return nil
	}
	return json.Unmarshal(raw, out)
}

// emit writes v as JSON or YAML.
func emit(out io.Writer, format string, v any) error {
	if format == "yaml" {
		// Through JSON, so that YAML keys are the API's field names.
		var generic any
		b, _ := json.Marshal(v)
		json.Unmarshal(b, &generic)
		return yaml.NewEncoder(out).Encode(generic)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(b))
	return err
}

// streamID turns "tcp/9000", "udp/53", "9000", or a range such as
// "tcp/10000-10099" or "10000-10099", into an API path id, checked as
// the API reads it.
func streamID(arg string) (string, error) {
	ref := arg
	if !strings.Contains(arg, "/") {
		ref = "tcp/" + arg
	}
	id, last, err := stream.ParseRef(ref)
	if err != nil {
		return "", &cliError{exitUsage, fmt.Errorf("%q: want tcp/PORT, udp/PORT, PORT or a range such as tcp/10000-10099: %w", arg, err)}
	}
	return string(id.Protocol) + "/" + stream.PortsText(id.Port, last), nil
}
