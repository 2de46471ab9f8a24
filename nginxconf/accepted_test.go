package nginxconf

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// corpusSpecs reads the seed corpus of FuzzValidateRender back into specs.
func corpusSpecs(t *testing.T) []stream.Spec {
	t.Helper()
	files, _ := filepath.Glob("testdata/fuzz/FuzzValidateRender/*")
	var specs []stream.Spec
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		var vals []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "string("):
				v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "string("), ")"))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				vals = append(vals, v)
			case strings.HasPrefix(line, "int("):
				vals = append(vals, strings.TrimSuffix(strings.TrimPrefix(line, "int("), ")"))
			}
		}
		f.Close()
		if len(vals) != 10 {
			t.Fatalf("%s: %d values", name, len(vals))
		}
		port, _ := strconv.Atoi(vals[1])
		s := fuzzSpec(vals[0], port, vals[2], vals[3], vals[4], vals[5], vals[6], vals[7], vals[8], vals[9])
		specs = append(specs, s)
	}
	return specs
}

// randomSpecs makes n specs from parts that are mostly valid, some not.
func randomSpecs(n int, seed uint64) []stream.Spec {
	rng := rand.New(rand.NewPCG(seed, 7))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	var specs []stream.Spec
	for range n {
		s := stream.Spec{
			Protocol:       stream.Protocol(pick("tcp", "udp", "TCP", "")),
			Bind:           pick("", "", "127.0.0.1", "::1", "[::1]", "0.0.0.0", "127.0.0.1;"),
			Balance:        pick("", "round_robin", "least_conn", "hash_client_ip", "random"),
			ConnectTimeout: pick("", "1s", "1500ms", "1h", "90m", "0s"),
			IdleTimeout:    pick("", "30s", "10m", "168h", "1h30m"),
			ProxyProtocol:  rng.IntN(3) == 0,
		}
		for range 1 + rng.IntN(3) {
			s.Backends = append(s.Backends, pick("127.0.0.1", "localhost", "LOCALHOST", "[::1]", "127.0.0.2", "a;b")+":"+strconv.Itoa(1+rng.IntN(65535)))
		}
		for range rng.IntN(3) {
			s.Allow = append(s.Allow, pick("10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "10.1.2.3/8", "all"))
		}
		if rng.IntN(3) == 0 {
			addRoutes(rng, &s)
		}
		if rng.IntN(3) == 0 {
			addRange(rng, &s)
		}
		if rng.IntN(2) == 0 {
			addLimits(rng, &s)
		}
		if rng.IntN(2) == 0 {
			mf := rng.IntN(20)
			s.MaxFails = &mf
			s.FailTimeout = pick("", "10s", "1m")
		}
		specs = append(specs, s)
	}
	return specs
}

// addLimits gives s connection limits, rates and a deny list, mostly
// valid (a deny entry inside an allowed network among them), rarely not.
func addLimits(rng *rand.Rand, s *stream.Spec) {
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	conns := []int{0, 1, 2, 100, 65535, 0, 1, 50, 1000}
	s.MaxConnections, s.MaxConnectionsPerClient = conns[rng.IntN(len(conns))], conns[rng.IntN(len(conns))]
	rates := []string{"", "1", "512k", "512K", "1m", "1M", "0064k", "10240m", "", "64k"}
	s.UploadRate, s.DownloadRate = pick(rates...), pick(rates...)
	deny := []string{"10.9.8.7", "192.0.2.0/24", "2001:db8:1::/48", "::ffff:10.1.1.1", "198.51.100.1"}
	rng.Shuffle(len(deny), func(i, j int) { deny[i], deny[j] = deny[j], deny[i] })
	s.Deny = deny[:rng.IntN(3)]
	if rng.IntN(40) == 0 { // a few the validator must refuse
		s.MaxConnections, s.UploadRate = 65536, pick("0", "1g", "1.5m")
	}
}

// addRange makes s a range: its ListenEnd is the range's width (ports
// beyond the first) until the test places it, mostly 1-30 ports, some
// too many; half the time each port forwards to the same port on the
// first backend's host, given with or without its port.
func addRange(rng *rand.Rand, s *stream.Spec) {
	s.ListenEnd = 1 + rng.IntN(30)
	if rng.IntN(10) == 0 {
		s.ListenEnd = stream.MaxRangePorts + rng.IntN(10) - 5
	}
	if rng.IntN(10) > 0 {
		s.Routes = nil // routes with a range are refused
	}
	s.PortMode = []string{"", "fixed", "same", "same", "same", "bogus"}[rng.IntN(6)]
	if s.PortMode == stream.PortModeSame && rng.IntN(4) > 0 && len(s.Backends) > 0 {
		host, _, _ := strings.Cut(s.Backends[0], ":")
		if strings.HasPrefix(s.Backends[0], "[") {
			host = "[::1]"
		}
		s.Backends = []string{host}
		s.Balance, s.MaxFails, s.FailTimeout = "", nil, ""
	}
}

// addRoutes gives s 1-20 routes to server names that are mostly valid
// (some long enough to need map_hash_bucket_size 512, some spelled like
// map parameters), some not; half the time s keeps no default.
func addRoutes(rng *rand.Rand, s *stream.Spec) {
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	label := func() string { return strings.Repeat(pick("a", "b", "x1", "q-9"), 1+rng.IntN(15)) }
	for i := range 1 + rng.IntN(20) {
		name := pick("", "*.", "*.", "WWW.") + label() + "." + strconv.Itoa(i) + pick("example", "test", "Example.")
		switch rng.IntN(12) {
		case 0:
			name = pick("default", "include", "hostnames", "volatile", "*", "*.", "a.*.b", "127.0.0.1", "a;b", "$x", "a b", "bücher.example")
		case 1:
			name = strings.Repeat(strings.Repeat("n", 63)+".", 3) + fmt.Sprintf("%02dx", i) + strings.Repeat("e", 58) // 253
		}
		r := stream.Route{ServerName: name, Balance: pick("", "least_conn", "hash_client_ip", "round_robin")}
		for range 1 + rng.IntN(3) {
			r.Backends = append(r.Backends, pick("127.0.0.1", "localhost", "[::1]", "127.0.0.3")+":"+strconv.Itoa(1+rng.IntN(65535)))
		}
		s.Routes = append(s.Routes, r)
	}
	if rng.IntN(2) == 0 {
		s.Backends, s.Balance = nil, ""
	}
}

// Every spec the validator accepts, from the fuzz corpus and from a seeded
// generator, is accepted by the real nginx -t: together in one
// configuration, each on its own port.
func TestAcceptedSpecsPassNginxTest(t *testing.T) {
	bin := nginxBinary(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	candidates := append(corpusSpecs(t), randomSpecs(1300, seed)...)
	dir := t.TempDir()
	accepted, routed, ranges, limited := 0, 0, 0, 0
	next := 20000
	for i, c := range candidates {
		banned := withBans(i, &c)
		c.Listen = next
		if c.ListenEnd > 0 {
			c.ListenEnd += c.Listen
		}
		s, err := Validate(c, Rules{MapHashBucketSize: ManagedMapHashBucketSize})
		if err != nil {
			continue
		}
		// Only what is accepted takes ports: refused ranges of 1,000
		// ports took so many that later candidates fell beyond 65535.
		next = max(c.Listen, c.ListenEnd) + 1
		// Names render as the addresses they resolved to: give each an
		// IPv4 and an IPv6 one.
		addrs := Addrs{}
		for _, n := range Names(s) {
			addrs[n] = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
		}
		name, body, err := Render(s, addrs, RenderOptions{Prefix: "stream-", Banned: banned})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
		accepted++
		if s.Routed() {
			routed++
		}
		if s.IsRange() {
			ranges++
		}
		if s.MaxConnections > 0 || s.MaxConnectionsPerClient > 0 || len(s.Deny) > 0 {
			limited++
		}
	}
	if accepted < 150 {
		t.Fatalf("only %d of %d candidates accepted: the generator is off", accepted, len(candidates))
	}
	if routed < 20 {
		t.Fatalf("only %d routed specs accepted: the generator is off", routed)
	}
	if ranges < 20 {
		t.Fatalf("only %d ranges accepted: the generator is off", ranges)
	}
	if limited < 20 {
		t.Fatalf("only %d specs with limits or deny accepted: the generator is off", limited)
	}
	if out, err := nginxTest(t, bin, dir); err != nil {
		t.Fatalf("nginx -t rejects specs the validator accepted (seed %d): %v\n%s", seed, err, out)
	}
	t.Logf("nginx -t accepted all %d validated specs (%d routed, %d ranges, %d limited) of %d candidates", accepted, routed, ranges, limited, len(candidates))
}
