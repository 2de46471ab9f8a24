package main

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStateStoreConfig(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	host, _ := os.Hostname()
	if err != nil || c.State.Store != "bbolt" || c.State.Prefix != "/stream-conductor" || c.State.NodeName != host {
		t.Fatalf("defaults: %+v, %v; want bbolt, /stream-conductor, node %q", c.State, err, host)
	}
	c, err = parseConfig([]string{"-node-name", "edge-1"}, env(map[string]string{"STATE_STORE": "etcd",
		"ETCD_ENDPOINTS": "https://10.0.0.1:2379, https://10.0.0.2:2379", "ETCD_PREFIX": "/sc"}), io.Discard)
	if err != nil || c.State.Store != "etcd" || c.State.Prefix != "/sc" || c.State.NodeName != "edge-1" ||
		!slices.Equal(c.State.Endpoints, []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379"}) {
		t.Fatalf("etcd: %+v, %v", c.State, err)
	}
	for _, bad := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"STATE_STORE": "consul"}, "STATE_STORE must be bbolt or etcd"},
		{map[string]string{"STATE_STORE": "etcd"}, "needs ETCD_ENDPOINTS"},
		{map[string]string{"STATE_STORE": "etcd", "ETCD_ENDPOINTS": "10.0.0.1:2379"}, "ETCD_ENDPOINTS must be http:// or https://"},
		{map[string]string{"STATE_STORE": "etcd", "ETCD_ENDPOINTS": "http://a:2379", "ETCD_PREFIX": "sc"}, "ETCD_PREFIX must be a key prefix"},
		{map[string]string{"STATE_STORE": "etcd", "ETCD_ENDPOINTS": "http://a:2379", "ETCD_PREFIX": "/"}, "ETCD_PREFIX must be a key prefix"},
		{map[string]string{"STATE_STORE": "etcd", "ETCD_ENDPOINTS": "http://a:2379", "ETCD_CERT": "c.pem"}, "ETCD_CERT and ETCD_KEY together"},
		{map[string]string{"STATE_STORE": "etcd", "ETCD_ENDPOINTS": "http://a:2379", "ETCD_USERNAME": "sc"}, "ETCD_USERNAME and ETCD_PASSWORD_FILE together"},
	} {
		if _, err := parseConfig(nil, env(bad.env), io.Discard); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want %q", bad.env, err, bad.want)
		}
	}
}

func TestNodeTTLConfig(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil || c.State.NodeTTL != 10*time.Second {
		t.Fatalf("default NODE_TTL: %v, %v; want 10s", c.State.NodeTTL, err)
	}
	c, err = parseConfig(nil, env(map[string]string{"NODE_TTL": "3s"}), io.Discard)
	if err != nil || c.State.NodeTTL != 3*time.Second {
		t.Fatalf("NODE_TTL=3s: %v, %v", c.State.NodeTTL, err)
	}
	for _, bad := range []string{"1s", "10m", "soon"} {
		if _, err := parseConfig(nil, env(map[string]string{"NODE_TTL": bad}), io.Discard); err == nil || !strings.Contains(err.Error(), "NODE_TTL must be") {
			t.Errorf("NODE_TTL=%s: %v", bad, err)
		}
	}
}
