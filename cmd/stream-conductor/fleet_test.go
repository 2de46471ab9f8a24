package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"
)

// NODE_API_URL: as given when it is a URL; otherwise the API's bind
// address and port, with this host's address for an API bound to every
// address (where 0.0.0.0 tells the other nodes nothing).
func TestNodeAPIURL(t *testing.T) {
	c, err := parseConfig(nil, env(map[string]string{"NODE_API_URL": "https://edge-1.example.net:8443/"}), io.Discard)
	if err != nil || c.NodeAPIURL != "https://edge-1.example.net:8443" {
		t.Fatalf("NODE_API_URL given: %q, %v", c.NodeAPIURL, err)
	}
	c, err = parseConfig(nil, env(map[string]string{"BIND_ADDRESS": "127.0.0.1", "BIND_PORT": "8081"}), io.Discard)
	if err != nil || c.NodeAPIURL != "http://127.0.0.1:8081" {
		t.Fatalf("bound to 127.0.0.1: %q, %v", c.NodeAPIURL, err)
	}
	for _, all := range []string{"0.0.0.0", "::"} {
		got, err := nodeAPIURL("", all, 8080)
		host := strings.TrimSuffix(strings.TrimPrefix(got, "http://"), ":8080")
		if a, perr := netip.ParseAddr(strings.Trim(host, "[]")); err != nil || host == "" || (perr == nil && a.IsUnspecified()) {
			t.Errorf("bound to %s: %q, %v; want this host's address", all, got, err)
		}
	}
	for _, bad := range []string{"edge-1:8080", "ftp://edge-1", "http://", "http://edge-1/api", "http://u:p@edge-1"} {
		if _, err := parseConfig(nil, env(map[string]string{"NODE_API_URL": bad}), io.Discard); err == nil || !strings.Contains(err.Error(), "NODE_API_URL must be") {
			t.Errorf("NODE_API_URL=%s: %v", bad, err)
		}
	}
}
