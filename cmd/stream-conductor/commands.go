package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// view is a stream as the API shows it, as far as the CLI prints it.
type view struct {
	ID       string `json:"id"`
	Protocol string `json:"protocol"`
	Listen   int    `json:"listen"`
	// Range is a range's ports ("10000-10099"), "" for one port.
	Range    string   `json:"range,omitempty"`
	Bind     string   `json:"bind,omitempty"`
	Backends []string `json:"backends"`
	Routes   []struct {
		ServerName string `json:"server_name"`
	} `json:"routes"`
	Default     []string `json:"default"`
	Balance     string   `json:"balance,omitempty"`
	Description string   `json:"description,omitempty"`
	Revision    uint64   `json:"revision"`
	Status      struct {
		State string `json:"state"`
		Error string `json:"error,omitempty"`
	} `json:"status"`
	// ExpiresIn is the whole seconds left to an expiring stream (nil: it
	// does not expire).
	ExpiresIn *int64 `json:"expires_in_seconds,omitempty"`
}

func printStreams(out io.Writer, streams []view) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	expiring := slices.ContainsFunc(streams, func(s view) bool { return s.ExpiresIn != nil })
	if expiring {
		fmt.Fprintln(w, "ID\tLISTEN\tBACKENDS\tSTATE\tEXPIRES\tNOTE")
	} else {
		fmt.Fprintln(w, "ID\tLISTEN\tBACKENDS\tSTATE\tNOTE")
	}
	for _, s := range streams {
		listen := fmt.Sprint(s.Listen)
		if s.Range != "" {
			listen = s.Range
		}
		if s.Bind != "" {
			listen = s.Bind + ":" + listen
		}
		note := s.Description
		if s.Status.Error != "" {
			note = s.Status.Error
		}
		state := s.Status.State
		if expiring {
			state += "\t" + timeLeft(s.ExpiresIn)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.ID, listen, backendsColumn(s), state, note)
	}
	w.Flush()
}

// timeLeft is what ls shows in EXPIRES: the time left to the stream
// ("1h59m", "45s", "3d4h"), "-" when it does not expire.
func timeLeft(seconds *int64) string {
	if seconds == nil {
		return "-"
	}
	d := time.Duration(*seconds) * time.Second
	switch {
	case d <= 0:
		return "now"
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// backendsColumn is what ls shows in BACKENDS: the backends, or for a
// routed stream how many routes it has and its default.
func backendsColumn(s view) string {
	if len(s.Routes) == 0 {
		return strings.Join(s.Backends, ",")
	}
	col := fmt.Sprintf("%d routes", len(s.Routes))
	if len(s.Routes) == 1 {
		col = "1 route"
	}
	if len(s.Default) > 0 {
		col += ", default " + strings.Join(s.Default, ",")
	}
	return col
}

func runLs(c *client, o *opts, _ []string, out io.Writer) error {
	var raw json.RawMessage
	if err := c.do("GET", "/v1/streams", nil, nil, &raw); err != nil {
		return err
	}
	var list struct {
		Streams []view `json:"streams"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return err
	}
	if o.output != "table" {
		var generic any
		json.Unmarshal(raw, &generic)
		return emit(out, o.output, generic.(map[string]any)["streams"])
	}
	printStreams(out, list.Streams)
	return nil
}

func runGet(c *client, o *opts, args []string, out io.Writer) error {
	id, err := streamID(args[0])
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.do("GET", "/v1/streams/"+id, nil, nil, &raw); err != nil {
		return err
	}
	var generic any
	json.Unmarshal(raw, &generic)
	if o.output != "table" {
		return emit(out, o.output, generic)
	}
	return yaml.NewEncoder(out).Encode(generic) // a readable vertical form
}

// forwardingBody returns the fields of a create's body that say where
// the stream forwards: "backends" from the BACKEND argument, or with
// -route flags "routes" and the "default" (the BACKEND argument, "-" for
// none, or -default).
func forwardingBody(o *opts, args []string) (map[string]any, error) {
	usage := func(format string, a ...any) error { return &cliError{exitUsage, fmt.Errorf(format, a...)} }
	if len(o.routes) == 0 {
		if o.defaultBackend != "" {
			return nil, usage("-default needs -route")
		}
		if len(args) < 2 || args[1] == "-" {
			return nil, usage("give the BACKEND (host:port[,host:port...]), or -route NAME=BACKEND")
		}
		return map[string]any{"backends": strings.Split(args[1], ",")}, nil
	}
	body := map[string]any{}
	var routes []map[string]any
	for _, r := range o.routes {
		name, backends, ok := strings.Cut(r, "=")
		if !ok || name == "" || backends == "" {
			return nil, usage("-route %q: want NAME=BACKEND[,BACKEND...]", r)
		}
		routes = append(routes, map[string]any{"server_name": name, "backends": strings.Split(backends, ",")})
	}
	body["routes"] = routes
	def := o.defaultBackend
	if len(args) == 2 && args[1] != "-" {
		if def != "" {
			return nil, usage("give the default once: as the BACKEND argument or as -default")
		}
		def = args[1]
	}
	if def != "" {
		body["default"] = strings.Split(def, ",")
	}
	return body, nil
}

func runCreate(c *client, o *opts, args []string, out io.Writer) error {
	body, err := forwardingBody(o, args)
	if err != nil {
		return err
	}
	for k, v := range map[string]string{"bind": o.bind, "balance": o.balance, "description": o.description,
		"connect_timeout": o.connectTimeout, "idle_timeout": o.idleTimeout, "ttl": o.ttl, "expires_at": o.expiresAt} {
		if v != "" {
			body[k] = v
		}
	}
	if o.allow != "" {
		body["allow"] = strings.Split(o.allow, ",")
	}
	if o.proxyProtocol {
		body["proxy_protocol"] = true
	}
	limitsBody(o, body)
	if o.samePort {
		body["port_mode"] = "same"
	}
	if o.ban != "" {
		b, err := banPolicy(o.ban)
		if err != nil {
			return err
		}
		body["ban"] = b
	}
	method, path, header := "POST", "/v1/streams", map[string]string{}
	if args[0] != "auto" && o.ports != 0 {
		return &cliError{exitUsage, fmt.Errorf("-ports allocates a range: use it with create auto (or name the range: tcp/10000-10099)")}
	}
	if args[0] == "auto" {
		if o.udp {
			body["protocol"] = "udp"
		}
		if o.ports != 0 {
			body["ports"] = o.ports
		}
	} else {
		id, err := streamID(args[0])
		if err != nil {
			return err
		}
		method, path = "PUT", "/v1/streams/"+id
		if !o.replace {
			header["If-None-Match"] = "*"
		}
	}
	if o.dryRun {
		path += "?dry_run=true"
	}
	b, _ := json.Marshal(body)
	var raw json.RawMessage
	if err := c.do(method, path, b, header, &raw); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == 412 {
			id := strings.TrimSuffix(strings.TrimPrefix(path, "/v1/streams/"), "?dry_run=true")
			_, port, _ := strings.Cut(id, "/")
			what := "port " + port + " is"
			if strings.Contains(port, "-") {
				what = "ports " + port + " are"
			}
			return &cliError{exitFailed, fmt.Errorf("%s taken by stream %s (use -replace, or rm it first)", what, id)}
		}
		return err
	}
	if o.dryRun {
		var d struct {
			Change, File, Diff string
		}
		json.Unmarshal(raw, &d)
		if d.Change == "none" {
			fmt.Fprintf(out, "dry run: nginx file %s would not change\n%s", d.File, d.Diff)
		} else {
			fmt.Fprintf(out, "dry run: would %s %s\n%s", d.Change, d.File, d.Diff)
		}
		return nil
	}
	var v view
	json.Unmarshal(raw, &v)
	return printStream(out, o, raw, v)
}

// printStream prints the stream v of the daemon's answer raw: as a table
// row, or raw itself in o's -o format.
func printStream(out io.Writer, o *opts, raw json.RawMessage, v view) error {
	if o.output != "table" {
		var generic any
		json.Unmarshal(raw, &generic)
		return emit(out, o.output, generic)
	}
	printStreams(out, []view{v})
	return nil
}

// limitsBody adds the limits and deny list of o to a create's body: only
// those given, so that the daemon's defaults (no limit) apply to the rest.
func limitsBody(o *opts, body map[string]any) {
	for k, v := range map[string]int{"max_connections": o.maxConns, "max_connections_per_client": o.maxConnsPerClient} {
		if v != 0 {
			body[k] = v
		}
	}
	for k, v := range map[string]string{"upload_rate": o.uploadRate, "download_rate": o.downloadRate} {
		if v != "" {
			body[k] = v
		}
	}
	if o.deny != "" {
		body["deny"] = strings.Split(o.deny, ",")
	}
}

// runRenew gives a stream a new deadline: -ttl, -expires-at, or neither
// (the stream's own ttl again).
func runRenew(c *client, o *opts, args []string, out io.Writer) error {
	id, err := streamID(args[0])
	if err != nil {
		return err
	}
	if o.ttl != "" && o.expiresAt != "" {
		return &cliError{exitUsage, errors.New("give -ttl or -expires-at, not both")}
	}
	var b []byte
	switch {
	case o.ttl != "":
		b, _ = json.Marshal(map[string]string{"ttl": o.ttl})
	case o.expiresAt != "":
		b, _ = json.Marshal(map[string]string{"expires_at": o.expiresAt})
	}
	path := "/v1/streams/" + id + "/renew"
	if o.dryRun {
		path += "?dry_run=true"
	}
	var raw json.RawMessage
	if err := c.do("POST", path, b, nil, &raw); err != nil {
		return err
	}
	var v view
	if o.dryRun {
		var d struct {
			Stream view `json:"stream"`
		}
		json.Unmarshal(raw, &d)
		v = d.Stream
		fmt.Fprint(out, "dry run: would renew\n")
	} else {
		json.Unmarshal(raw, &v)
	}
	return printStream(out, o, raw, v)
}

func runRm(c *client, _ *opts, args []string, out io.Writer) error {
	id, err := streamID(args[0])
	if err != nil {
		return err
	}
	if err := c.do("DELETE", "/v1/streams/"+id, nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(out, "removed %s\n", id)
	return nil
}

func runStatus(c *client, o *opts, _ []string, out io.Writer) error {
	var st map[string]any
	if err := c.do("GET", "/v1/status", nil, nil, &st); err != nil {
		return err
	}
	if o.output != "table" {
		return emit(out, o.output, st)
	}
	rec, _ := st["reconciler"].(map[string]any)
	streams, _ := st["streams"].(map[string]any)
	by, _ := streams["by_state"].(map[string]any)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "version\t%v\n", st["version"])
	fmt.Fprintf(w, "nginx\t%v, running: %v\n", st["nginx_mode"], rec["nginx_running"])
	fmt.Fprintf(w, "streams\t%v: %v active, %v pending, %v failed\n", streams["total"], by["active"], by["pending"], by["failed"])
	fmt.Fprintf(w, "revision\tstore %v, applied %v\n", st["store_revision"], rec["applied_revision"])
	if e, _ := rec["last_error"].(string); e != "" {
		fmt.Fprintf(w, "last error\t%s\n", e)
	}
	if s, _ := st["stale"].(map[string]any); s != nil {
		fmt.Fprintf(w, "stale since\t%v: %v\n", s["since"], s["reason"])
	}
	if a, _ := st["alarm"].(map[string]any); a != nil {
		fmt.Fprintf(w, "HELD since\t%v: %v\n", a["since"], a["message"])
	}
	if d, _ := rec["drifted"].([]any); len(d) > 0 {
		fmt.Fprintf(w, "drifted\t%v\n", d)
	}
	if f, _ := streams["failed"].([]any); len(f) > 0 {
		for _, x := range f {
			m := x.(map[string]any)
			fmt.Fprintf(w, "failed\t%v: %v\n", m["id"], m["error"])
		}
	}
	return w.Flush()
}

// readStreams reads a YAML or JSON list of streams (or {"streams": [...]})
// into the import document.
func readStreams(path string) ([]byte, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil { // YAML is a superset of JSON
		return nil, &cliError{exitUsage, fmt.Errorf("%s: %w", path, err)}
	}
	if list, ok := doc.([]any); ok {
		doc = map[string]any{"streams": list}
	}
	return json.Marshal(doc)
}

// runApply makes the node match a file: it shows what would change first
// (an import dry run), then applies it unless -dry-run.
func runApply(c *client, o *opts, _ []string, out io.Writer) error {
	if o.file == "" {
		return &cliError{exitUsage, fmt.Errorf("apply needs -f FILE")}
	}
	body, err := readStreams(o.file)
	if err != nil {
		return err
	}
	q := "?dry_run=true"
	if o.prune {
		q += "&prune=true"
	}
	var plan importResult
	if err := c.do("POST", "/v1/import"+q, body, nil, &plan); err != nil {
		return err
	}
	printPlan(out, plan)
	if o.dryRun || len(plan.Changes.Create)+len(plan.Changes.Update)+len(plan.Changes.Delete) == 0 {
		return nil
	}
	return doImport(c, body, strings.Replace(q, "dry_run=true", "dry_run=false", 1), out)
}

type importResult struct {
	DryRun  bool `json:"dry_run"`
	Changes struct {
		Create, Update, Delete, Unchanged []string
	} `json:"changes"`
	Failed []struct{ ID, Error string } `json:"failed"`
}

func printPlan(out io.Writer, p importResult) {
	verb := "imported"
	if p.DryRun {
		verb = "would change (dry run, nothing changed)"
	}
	fmt.Fprintf(out, "%s: %d to create, %d to update, %d to delete, %d unchanged\n", verb,
		len(p.Changes.Create), len(p.Changes.Update), len(p.Changes.Delete), len(p.Changes.Unchanged))
	for _, l := range []struct {
		sign string
		ids  []string
	}{{"+", p.Changes.Create}, {"~", p.Changes.Update}, {"-", p.Changes.Delete}} {
		for _, id := range l.ids {
			fmt.Fprintf(out, "  %s %s\n", l.sign, id)
		}
	}
}

func doImport(c *client, body []byte, q string, out io.Writer) error {
	var res importResult
	if err := c.do("POST", "/v1/import"+q, body, nil, &res); err != nil {
		return err
	}
	if !res.DryRun {
		fmt.Fprintln(out, "applied")
	}
	return reportFailed(out, res)
}

// reportFailed lists the streams an import stored but nginx rejected.
func reportFailed(out io.Writer, res importResult) error {
	for _, f := range res.Failed {
		fmt.Fprintf(out, "  ! %s failed: %s\n", f.ID, f.Error)
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("%d streams were stored but nginx rejected them", len(res.Failed))
	}
	return nil
}

func runExport(c *client, o *opts, _ []string, out io.Writer) error {
	var raw json.RawMessage
	if err := c.do("GET", "/v1/export", nil, nil, &raw); err != nil {
		return err
	}
	if o.output == "yaml" {
		var generic any
		json.Unmarshal(raw, &generic)
		return emit(out, "yaml", generic)
	}
	_, err := out.Write(raw)
	return err
}

func runImport(c *client, o *opts, args []string, out io.Writer) error {
	body, err := readStreams(args[0])
	if err != nil {
		return err
	}
	q := "?dry_run=" + fmt.Sprint(o.dryRun)
	if o.prune {
		q += "&prune=true"
	}
	var res importResult
	if err := c.do("POST", "/v1/import"+q, body, nil, &res); err != nil {
		return err
	}
	printPlan(out, res)
	return reportFailed(out, res)
}

func runHealthz(c *client, _ *opts, _ []string, out io.Writer) error {
	if err := c.do("GET", "/healthz", nil, nil, nil); err != nil {
		return err
	}
	fmt.Fprintln(out, "ok")
	return nil
}
