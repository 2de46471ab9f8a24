package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "./data" || c.StreamConfigPath != "data/stream.d" || c.NginxMode != "managed" ||
		c.PortMin != 9000 || c.PortMax != 9009 || c.BindAddress != "127.0.0.1" || c.BindPort != 8080 ||
		c.ApplyTimeout != 10*time.Second || c.StreamPrefix != "stream-" || c.StreamBindAddress != "" ||
		c.StuckAfter != 30*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestConfigFlagBeatsEnvBeatsDefault(t *testing.T) {
	e := env(map[string]string{"PORT_RANGE": "10000-10010", "DATA_DIR": "/var/lib/sc", "BIND_PORT": "7000", "NGINX_MODE": "external"})
	c, err := parseConfig([]string{"-port-range", "11000-11000"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.PortMin != 11000 || c.PortMax != 11000 {
		t.Errorf("flag did not win: %d-%d", c.PortMin, c.PortMax)
	}
	if c.DataDir != "/var/lib/sc" || c.BindPort != 7000 {
		t.Errorf("env not used: %+v", c)
	}
	if c.StreamConfigPath != "/etc/nginx/streams.d" {
		t.Errorf("external mode config path %q", c.StreamConfigPath)
	}
}

func TestConfigErrorsSayWhatToFix(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PORT_RANGE": "9010-9000"}, "PORT_RANGE"},
		{map[string]string{"PORT_RANGE": "9000"}, "PORT_RANGE"},
		{map[string]string{"PORT_RANGE": "0-10"}, "PORT_RANGE"},
		{map[string]string{"BIND_PORT": "http"}, "BIND_PORT"},
		{map[string]string{"BIND_ADDRESS": "example.com"}, "BIND_ADDRESS"},
		{map[string]string{"NGINX_MODE": "docker"}, "NGINX_MODE"},
		{map[string]string{"STREAM_PREFIX": "../x"}, "STREAM_PREFIX"},
		{map[string]string{"APPLY_TIMEOUT": "soon"}, "APPLY_TIMEOUT"},
		{map[string]string{"STUCK_AFTER": "soon"}, "STUCK_AFTER"},
		{map[string]string{"STREAM_BIND_ADDRESS": "eth0"}, "STREAM_BIND_ADDRESS"},
		{map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{map[string]string{"DRIFT_REPAIR_RATE": "6"}, "DRIFT_REPAIR_RATE"},
		{map[string]string{"DRIFT_REPAIR_RATE": "0/1m"}, "DRIFT_REPAIR_RATE"},
		{map[string]string{"DRIFT_POLICY": "ignore"}, "DRIFT_POLICY"},
		{map[string]string{"NGINX_WORKER_SHUTDOWN_TIMEOUT": "500ms"}, "NGINX_WORKER_SHUTDOWN_TIMEOUT"},
		{map[string]string{"API_TOKEN": "x"}, "API_TOKEN is too short (1 characters): a token must be at least 16 characters"},
		{map[string]string{"API_TOKEN": "0123456789abcdef", "API_READ_TOKEN": "short-read"}, "API_READ_TOKEN is too short (10 characters)"},
		{map[string]string{"AUDIT_MAX_BYTES": "1KiB"}, "AUDIT_MAX_BYTES"},
		{map[string]string{"AUDIT_MAX_BYTES": "lots"}, "AUDIT_MAX_BYTES"},
		{map[string]string{"ALLOW_EMPTY_STATE": "maybe"}, "ALLOW_EMPTY_STATE"},
	} {
		_, err := parseConfig(nil, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.env, err, tc.want)
		}
	}
}

func TestConfigSizesAndTokens(t *testing.T) {
	c, err := parseConfig([]string{"-allow-empty-state=true"}, env(map[string]string{"AUDIT_MAX_BYTES": "2 GiB", "API_TOKEN": "0123456789abcdef"}), io.Discard)
	if err != nil || c.AuditMaxBytes != 2<<30 || !c.AllowEmptyState || c.APIToken != "0123456789abcdef" {
		t.Fatalf("%+v, %v", c, err)
	}
	if c, _ := parseConfig(nil, env(nil), io.Discard); c.AuditMaxBytes != 16<<20 || c.AllowEmptyState {
		t.Fatalf("defaults: %d bytes, allow empty %v", c.AuditMaxBytes, c.AllowEmptyState)
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	var out strings.Builder
	parseConfig([]string{"-h"}, env(nil), &out)
	for _, s := range settings {
		if !strings.Contains(out.String(), "["+s.env+"]") || !strings.Contains(out.String(), "-"+s.flag) {
			t.Errorf("-h does not document %s / -%s", s.env, s.flag)
		}
	}
}

// The instance id is made once per data directory and read back after.
func TestInstanceIDIsKeptInTheDataDir(t *testing.T) {
	dir := t.TempDir()
	first, err := instanceID(dir)
	if err != nil || len(first) != 32 {
		t.Fatalf("first: %q, %v", first, err)
	}
	again, err := instanceID(dir)
	if err != nil || again != first {
		t.Fatalf("again: %q, %v; want %q", again, err, first)
	}
	if other, _ := instanceID(t.TempDir()); other == first {
		t.Fatal("two data directories got the same id")
	}
}
