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
)

// Client subcommands talk to a running daemon's API.
var subcommands = map[string]func(c *client, args []string, stdout io.Writer) error{
	"export": runExport,
	"import": runImport,
}

type client struct {
	url  string
	http *http.Client
}

// runClient runs subcommand name and returns the process exit code: 0 on
// success, 1 when the daemon refused or could not be reached, 2 on bad
// usage.
func runClient(name string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stream-conductor "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := getenv("STREAM_CONDUCTOR_URL")
	if def == "" {
		port := getenv("BIND_PORT")
		if port == "" {
			port = "8080"
		}
		def = "http://127.0.0.1:" + port
	}
	url := fs.String("url", def, "the daemon's API [STREAM_CONDUCTOR_URL]")
	dryRun := fs.Bool("dry-run", false, "import: only show what would change")
	prune := fs.Bool("prune", false, "import: also delete the streams the file does not name")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage:\n  stream-conductor export [-url URL] > streams.json\n  stream-conductor import [-url URL] [-dry-run] [-prune] FILE|-\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	c := &client{url: strings.TrimSuffix(*url, "/"), http: &http.Client{Timeout: 5 * time.Minute}}
	rest := fs.Args()
	if name == "import" {
		if len(rest) != 1 {
			fs.Usage()
			return 2
		}
		q := []string{}
		if *dryRun {
			q = append(q, "dry_run=true")
		}
		if *prune {
			q = append(q, "prune=true")
		}
		rest = append(rest, strings.Join(q, "&"))
	} else if len(rest) != 0 {
		fs.Usage()
		return 2
	}
	if err := subcommands[name](c, rest, stdout); err != nil {
		fmt.Fprintln(stderr, "stream-conductor "+name+":", err)
		return 1
	}
	return 0
}

// do sends a request and decodes a JSON answer into out; an API error
// comes back as its message.
func (c *client) do(method, path string, body io.Reader, out any) error {
	req, err := http.NewRequest(method, c.url+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("the daemon is not answering at %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message, Field string } `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			if e.Error.Field != "" {
				return fmt.Errorf("%s: %s (%s)", e.Error.Field, e.Error.Message, resp.Status)
			}
			return fmt.Errorf("%s (%s)", e.Error.Message, resp.Status)
		}
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	if out == nil {
		return nil
	}
	if b, ok := out.(*json.RawMessage); ok {
		*b = raw
		return nil
	}
	return json.Unmarshal(raw, out)
}

func runExport(c *client, _ []string, stdout io.Writer) error {
	var doc json.RawMessage
	if err := c.do("GET", "/v1/export", nil, &doc); err != nil {
		return err
	}
	_, err := stdout.Write(doc)
	return err
}

func runImport(c *client, args []string, stdout io.Writer) error {
	var in io.Reader = os.Stdin
	if args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	body, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	path := "/v1/import"
	if args[1] != "" {
		path += "?" + args[1]
	}
	var res struct {
		DryRun  bool `json:"dry_run"`
		Changes struct {
			Create, Update, Delete, Unchanged []string
		} `json:"changes"`
		Failed []struct{ ID, Error string } `json:"failed"`
	}
	if err := c.do("POST", path, bytes.NewReader(body), &res); err != nil {
		return err
	}
	verb := "imported"
	if res.DryRun {
		verb = "would import (dry run, nothing changed)"
	}
	fmt.Fprintf(stdout, "%s: %d to create, %d to update, %d to delete, %d unchanged\n", verb,
		len(res.Changes.Create), len(res.Changes.Update), len(res.Changes.Delete), len(res.Changes.Unchanged))
	for _, l := range []struct {
		sign string
		ids  []string
	}{{"+", res.Changes.Create}, {"~", res.Changes.Update}, {"-", res.Changes.Delete}} {
		for _, id := range l.ids {
			fmt.Fprintf(stdout, "  %s %s\n", l.sign, id)
		}
	}
	for _, f := range res.Failed {
		fmt.Fprintf(stdout, "  ! %s failed: %s\n", f.ID, f.Error)
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("%d streams were stored but nginx rejected them", len(res.Failed))
	}
	return nil
}
