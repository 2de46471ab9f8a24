package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// banPolicy reads -ban AFTER/WITHIN/FOR ("10/1m/1h") into the API's
// "ban" object; the daemon checks the values.
func banPolicy(v string) (map[string]any, error) {
	parts := strings.Split(v, "/")
	after, err := strconv.Atoi(parts[0])
	if len(parts) != 3 || err != nil {
		return nil, &cliError{exitUsage, fmt.Errorf("-ban %q: want AFTER/WITHIN/FOR, such as 10/1m/1h", v)}
	}
	return map[string]any{"after": after, "within": parts[1], "for": parts[2]}, nil
}

// banRow is a ban as GET /v1/bans shows it, as far as the table needs.
type banRow struct {
	Stream           string `json:"stream"`
	Address          string `json:"address"`
	ExpiresInSeconds int64  `json:"expires_in_seconds"`
	Failures         int    `json:"failures"`
}

func runBans(c *client, o *opts, _ []string, out io.Writer) error {
	path := "/v1/bans"
	if o.stream != "" {
		id, err := streamID(o.stream)
		if err != nil {
			return err
		}
		path += "?stream=" + url.QueryEscape(id)
	}
	var raw json.RawMessage
	if err := c.do("GET", path, nil, nil, &raw); err != nil {
		return err
	}
	if o.output != "table" {
		var generic map[string]any
		json.Unmarshal(raw, &generic)
		return emit(out, o.output, generic["bans"])
	}
	var list struct {
		Bans []banRow `json:"bans"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STREAM\tADDRESS\tEXPIRES IN\tFAILURES")
	for _, b := range list.Bans {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", b.Stream, b.Address, time.Duration(b.ExpiresInSeconds)*time.Second, b.Failures)
	}
	return w.Flush()
}

func runUnban(c *client, o *opts, args []string, out io.Writer) error {
	id, err := streamID(args[0])
	if err != nil {
		return err
	}
	if o.all == (len(args) == 2) {
		return &cliError{exitUsage, fmt.Errorf("give the ADDRESS to unban, or -all (not both)")}
	}
	path := "/v1/bans/" + id
	if !o.all {
		path += "/" + url.PathEscape(args[1])
	}
	var res struct {
		Lifted []string `json:"lifted"`
	}
	if err := c.do("DELETE", path, nil, nil, &res); err != nil {
		return err
	}
	if len(res.Lifted) == 0 {
		fmt.Fprintf(out, "no bans on %s\n", id)
		return nil
	}
	fmt.Fprintf(out, "unbanned %s from %s\n", strings.Join(res.Lifted, ", "), id)
	return nil
}
