package packaging

import (
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// fleetService is a service of the fleet compose file, as far as the test
// reads it.
type fleetService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	EnvFile     any               `yaml:"env_file"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck map[string]any `yaml:"healthcheck"`
	Restart     string         `yaml:"restart"`
	Ulimits     ulimits        `yaml:"ulimits"`
}

// flagValue is the value of --name=value in an etcd command line.
func flagValue(cmd []string, name string) string {
	for _, a := range cmd {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// The fleet compose file: three etcd members of one cluster, each naming
// the three peers the others advertise, on a pinned image; two nodes built
// from this repo with STATE_STORE=etcd, ETCD_ENDPOINTS naming exactly the
// three members' client URLs, their own NODE_NAME, data volume and host
// ports, started once etcd is healthy.
func TestFleetCompose(t *testing.T) {
	var c struct {
		Services map[string]fleetService `yaml:"services"`
		Volumes  map[string]any          `yaml:"volumes"`
	}
	dec := yaml.NewDecoder(strings.NewReader(read(t, "../docker-compose.fleet.yml")))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.fleet.yml: %v", err)
	}
	members := []string{"etcd-1", "etcd-2", "etcd-3"}
	nodes := []string{"edge-1", "edge-2"}
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"backend", "edge-1", "edge-2", "etcd-1", "etcd-2", "etcd-3"}; !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}

	var peers, clients []string
	for _, m := range members {
		peers = append(peers, m+"=http://"+m+":2380")
		clients = append(clients, "http://"+m+":2379")
	}
	for i, m := range members {
		s := c.Services[m]
		if !strings.HasPrefix(s.Image, "quay.io/coreos/etcd:v3.") {
			t.Errorf("%s: image %q, want a pinned quay.io/coreos/etcd:v3.x.y", m, s.Image)
		}
		checks := map[string]string{
			"name": m, "initial-cluster": strings.Join(peers, ","), "initial-cluster-state": "new",
			"advertise-client-urls": clients[i], "initial-advertise-peer-urls": "http://" + m + ":2380",
			"listen-client-urls": "http://0.0.0.0:2379", "listen-peer-urls": "http://0.0.0.0:2380",
			"initial-cluster-token": "stream-conductor-fleet", "data-dir": "/etcd-data",
		}
		for flag, want := range checks {
			if got := flagValue(s.Command, flag); got != want {
				t.Errorf("%s: --%s=%q, want %q", m, flag, got, want)
			}
		}
		if flagValue(s.Command, "max-txn-ops") == "" {
			t.Errorf("%s: no --max-txn-ops: etcd's default of 128 refuses imports of more than 127 streams", m)
		}
		if len(s.Volumes) != 1 || s.Volumes[0] != m+"-data:/etcd-data" {
			t.Errorf("%s: volumes %v", m, s.Volumes)
		}
		if _, ok := c.Volumes[m+"-data"]; !ok {
			t.Errorf("%s: volume %s-data not declared", m, m)
		}
		if s.Healthcheck == nil || len(s.Ports) != 0 {
			t.Errorf("%s: want a health check and no published port (plain HTTP on the compose network only)", m)
		}
	}

	hostPorts := map[string]string{}
	for _, n := range nodes {
		s := c.Services[n]
		e := s.Environment
		if s.Build == nil || s.EnvFile == nil {
			t.Errorf("%s: want build from this repo and the token from the env file", n)
		}
		if e["STATE_STORE"] != "etcd" || e["NODE_NAME"] != n || e["ETCD_PREFIX"] != "/stream-conductor" || e["BIND_ADDRESS"] != "0.0.0.0" {
			t.Errorf("%s: environment %v", n, e)
		}
		eps := strings.Split(e["ETCD_ENDPOINTS"], ",")
		slices.Sort(eps)
		if !slices.Equal(eps, clients) {
			t.Errorf("%s: ETCD_ENDPOINTS %q, want the three members %v", n, e["ETCD_ENDPOINTS"], clients)
		}
		if e["PORT_RANGE"] != dockerEnv(read(t, "../Dockerfile"), "PORT_RANGE") {
			t.Errorf("%s: PORT_RANGE %q is not the image's", n, e["PORT_RANGE"])
		}
		for _, m := range members {
			if s.DependsOn[m].Condition != "service_healthy" {
				t.Errorf("%s: does not wait for %s to be healthy", n, m)
			}
		}
		checkNoFile(t, n, s.Ulimits)
		if len(s.Volumes) != 1 || s.Volumes[0] != n+"-data:/var/lib/stream-conductor" {
			t.Errorf("%s: volumes %v, want its own data volume", n, s.Volumes)
		}
		for _, p := range s.Ports {
			host, ctr, _ := strings.Cut(p, ":")
			if other, dup := hostPorts[host]; dup {
				t.Errorf("%s and %s both publish host port %s", other, n, host)
			}
			hostPorts[host] = n
			if ctr != e["BIND_PORT"] && ctr != e["PORT_RANGE"] {
				t.Errorf("%s: publishes %s, neither BIND_PORT nor PORT_RANGE", n, p)
			}
		}
		if len(s.Ports) != 2 {
			t.Errorf("%s: ports %v, want the API and the stream range", n, s.Ports)
		}
	}
}
