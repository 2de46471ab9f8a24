// Package packaging holds the packaging files (systemd unit, default
// environment) and the tests that keep the Dockerfile and the compose file
// consistent, since no Docker engine runs where the tests do.
package packaging

import (
	"os"
	"regexp"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// env returns the value the Dockerfile's ENV gives name.
func dockerEnv(df, name string) string {
	m := regexp.MustCompile(`\b` + name + `=(\S+)`).FindStringSubmatch(df)
	if m == nil {
		return ""
	}
	return m[1]
}

func TestDockerfile(t *testing.T) {
	df := read(t, "../Dockerfile")
	for _, want := range []string{
		"FROM golang:1.26", "FROM debian:bookworm-slim", "libnginx-mod-stream",
		"VOLUME /var/lib/stream-conductor", "HEALTHCHECK", `ENTRYPOINT ["/usr/bin/stream-conductor"]`, "STOPSIGNAL SIGTERM",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	portRange, apiPort := dockerEnv(df, "PORT_RANGE"), dockerEnv(df, "BIND_PORT")
	if !strings.Contains(df, "EXPOSE "+apiPort+" "+portRange) {
		t.Errorf("EXPOSE does not match BIND_PORT %s and PORT_RANGE %s", apiPort, portRange)
	}
	if strings.Contains(df, "CMD [\"nginx\"") || strings.Contains(df, "sh -c") {
		t.Error("the daemon must be the entrypoint, with no shell juggling two processes")
	}
}

func TestComposeMatchesTheImage(t *testing.T) {
	var c struct {
		Services map[string]struct {
			Build       any               `yaml:"build"`
			EnvFile     any               `yaml:"env_file"`
			Environment map[string]string `yaml:"environment"`
			Ports       []string          `yaml:"ports"`
			Volumes     []string          `yaml:"volumes"`
			Ulimits     ulimits           `yaml:"ulimits"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal([]byte(read(t, "../docker-compose.yml")), &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	sc, ok := c.Services["stream-conductor"]
	if !ok || c.Services["backend"].Build == nil {
		t.Fatal("want services stream-conductor and backend, both built from this repo")
	}
	df := read(t, "../Dockerfile")
	portRange := sc.Environment["PORT_RANGE"]
	if portRange != dockerEnv(df, "PORT_RANGE") {
		t.Errorf("compose PORT_RANGE %q, image %q", portRange, dockerEnv(df, "PORT_RANGE"))
	}
	api := sc.Environment["BIND_PORT"]
	want := map[string]bool{api + ":" + api: false, portRange + ":" + portRange: false}
	for _, p := range sc.Ports {
		if _, ok := want[p]; ok {
			want[p] = true
		}
	}
	for p, seen := range want {
		if !seen {
			t.Errorf("compose does not publish %s", p)
		}
	}
	if sc.EnvFile == nil || sc.Environment["BIND_ADDRESS"] != "0.0.0.0" {
		t.Error("the API must listen beyond loopback with a token from the env file")
	}
	if len(sc.Volumes) == 0 || !strings.HasSuffix(sc.Volumes[0], ":/var/lib/stream-conductor") {
		t.Errorf("the data volume: %v", sc.Volumes)
	}
	checkNoFile(t, "stream-conductor", sc.Ulimits)
	if !strings.Contains(read(t, "../.env.example"), "API_TOKEN=") {
		t.Error(".env.example must show API_TOKEN")
	}
}

func TestSystemdUnit(t *testing.T) {
	u := read(t, "stream-conductor.service")
	for _, want := range []string{
		"Type=notify", "Restart=always", "User=stream-conductor", "StateDirectory=stream-conductor",
		"KillMode=process", "ProtectSystem=strict", "ProtectHome=true", "NoNewPrivileges=true", "PrivateTmp=true",
		"ReadWritePaths=/var/lib/stream-conductor", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "EnvironmentFile=-/etc/default/stream-conductor",
		"LimitNOFILE=65536", // nginx's master holds one descriptor per stream
	} {
		if !strings.Contains(u, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
}

// ulimits is a compose service's ulimits, as far as the tests read them.
type ulimits struct {
	NoFile struct {
		Soft int `yaml:"soft"`
		Hard int `yaml:"hard"`
	} `yaml:"nofile"`
}

// checkNoFile: a service that runs the daemon gets an open-file limit of
// at least 65,536, which nginx inherits (one descriptor per stream).
func checkNoFile(t *testing.T, service string, u ulimits) {
	t.Helper()
	if u.NoFile.Soft < 65536 || u.NoFile.Hard < u.NoFile.Soft {
		t.Errorf("%s: ulimits nofile %+v, want soft and hard of at least 65536", service, u.NoFile)
	}
}
