package integration

import (
	"bufio"
	"context"
	endian "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/stream"
)

// The fleet model test's bounds.
const (
	fleetModelWrites   = 400              // at most this many writes
	fleetModelDuration = 30 * time.Second // the writes and faults last at most this long
	fleetModelFaults   = 40               // at most this many faults
)

// TestFleetRandomisedModel: a writer sends random writes (PUT, DELETE,
// POST) to random nodes of a 3-node fleet on a 3-member etcd cluster,
// while random faults hit it at random moments: an etcd member killed
// (SIGKILL) and restarted (never two down at once: the cluster keeps its
// quorum but for an election), a node killed (SIGKILL) and restarted, a
// node restarted cleanly. A model holds the acknowledged writes (2xx); a
// write whose answer was lost (a kill cut it, or etcd timed out: 5xx) may
// or may not have landed, so the writer reads etcd once the cluster
// ordered everything before it and takes whichever of the two happened.
// At the end etcd must hold the model (lost = the acked writes it does
// not hold), and every node's files, listening ports and forwarded bytes
// must equal it. Set MODEL_SEED to replay the choices (not their timing).
func TestFleetRandomisedModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MODEL_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("MODEL_SEED=%d", seed)
	c := startCluster(t)
	f := startFleet(t, c, fleetOptions{ports: 6})
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	w := &fleetWriter{f: f, cli: cli, rng: rand.New(rand.NewPCG(seed, 1)), model: map[int]string{},
		echos: map[string]*echoServer{"A:": startEcho(t, "A:"), "B:": startEcho(t, "B:")}}

	ctx, stop := context.WithTimeout(context.Background(), fleetModelDuration)
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- w.run(ctx)
	}()
	defer func() { stop(); <-finished }() // the writer ends before the fleet does
	faults := injectFleetFaults(t, ctx, f, rand.New(rand.NewPCG(seed, 2)), finished, &w.busy)
	if err := <-done; err != nil {
		t.Fatalf("seed %d: %v\nlast writes:\n%s", seed, err, w.last(15))
	}

	healFleet(t, f)
	actual, err := w.read()
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	for _, port := range w.ports(actual) {
		if w.model[port] != actual[port] {
			lost++
			t.Errorf("port %d: etcd holds %q, the acked writes say %q", port, actual[port], w.model[port])
		}
	}
	t.Logf("fleet model: seed %d, %d ops (%d writes, %d faults), %d acked writes, %d refused, %d unanswered (%d of them landed), lost = %d",
		seed, w.writes+faults, w.writes, faults, w.acked, w.refused, w.uncertain, w.landed, lost)
	if lost > 0 {
		t.Fatalf("lost = %d\nlast writes:\n%s", lost, w.last(15))
	}
	for i := range f.nodes {
		if err := converge(f, i, w.model, w.echos); err != nil {
			t.Fatalf("edge-%d does not agree with the model %v within 30s: %v", i+1, w.model, err)
		}
	}
}

// converge polls until node i agrees with the model (at most 30s), and
// says how it does not if it never does.
func converge(f *fleet, i int, model map[int]string, echos map[string]*echoServer) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := nodeAgrees(f, i, model, echos)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // a poll's interval
	}
}

// fleetWriter sends the random writes and keeps the model. It runs on a
// goroutine of its own: it never fails the test itself, it returns why.
type fleetWriter struct {
	f     *fleet
	cli   *clientv3.Client
	rng   *rand.Rand
	echos map[string]*echoServer
	model map[int]string // port -> tag of its backend

	// busy is 1 + the index of the node a write is being sent to, 0
	// between writes: the faults kill it, to cut writes in flight.
	busy atomic.Int32

	writes, acked, refused, uncertain, landed int
	history                                   []string
}

// outcome is what a write's answer says of it.
type outcome int

const (
	acked     outcome = iota // 2xx: it landed
	refused                  // a definite no: 4xx, or the node was down
	uncertain                // no answer or 5xx: it may have landed
)

func (w *fleetWriter) run(ctx context.Context) error {
	for w.writes < fleetModelWrites && ctx.Err() == nil {
		if err := w.step(); err != nil {
			return err
		}
	}
	return nil
}

// step sends one random write to a random node and updates the model.
func (w *fleetWriter) step() error {
	w.writes++
	i := w.rng.IntN(len(w.f.nodes))
	d := w.f.nodes[i]
	w.busy.Store(int32(i + 1))
	defer w.busy.Store(0)
	tag := []string{"A:", "B:"}[w.rng.IntN(2)]
	body := fmt.Sprintf(`{"backend":%q}`, w.echos[tag].addr())
	switch k := w.rng.IntN(10); {
	case k < 5:
		port := d.portMin + w.rng.IntN(d.portMax-d.portMin+1)
		code, _, err := send(d, "PUT", fmt.Sprintf("/v1/streams/tcp/%d", port), body)
		return w.settle(fmt.Sprintf("edge-%d PUT %d -> %s", i+1, port, tag), classify(code, err), port, tag)
	case k < 8:
		port := d.portMin + w.rng.IntN(d.portMax-d.portMin+1)
		if ports := w.ports(nil); len(ports) > 0 && w.rng.IntN(4) > 0 {
			port = ports[w.rng.IntN(len(ports))]
		}
		code, _, err := send(d, "DELETE", fmt.Sprintf("/v1/streams/tcp/%d", port), "")
		return w.settle(fmt.Sprintf("edge-%d DELETE %d", i+1, port), classify(code, err), port, "")
	default:
		code, m, err := send(d, "POST", "/v1/streams", body)
		port, _ := m["listen"].(float64)
		return w.settle(fmt.Sprintf("edge-%d POST -> %v %s", i+1, port, tag), classify(code, err), int(port), tag)
	}
}

// settle records a write of port (0: a POST whose answer did not say)
// to tag ("": a delete) as its outcome says.
func (w *fleetWriter) settle(what string, o outcome, port int, tag string) error {
	w.history = append(w.history, fmt.Sprintf("%s: %v", what, o))
	switch o {
	case acked:
		w.acked++
		if tag == "" {
			delete(w.model, port)
		} else {
			w.model[port] = tag
		}
		return nil
	case refused:
		w.refused++
		return nil
	}
	w.uncertain++
	actual, err := w.read()
	if err != nil {
		return fmt.Errorf("%s: resolve its outcome: %w", what, err)
	}
	if port == 0 && tag != "" { // a POST: it may have taken any free port
		for _, p := range w.ports(actual) {
			if _, had := w.model[p]; !had && actual[p] != "" {
				port = p
			}
		}
		if port == 0 {
			return nil
		}
	}
	switch actual[port] {
	case tag:
		w.landed++
		w.history[len(w.history)-1] += " (landed)"
	case w.model[port]:
		w.history[len(w.history)-1] += " (did not land)"
	default:
		return fmt.Errorf("%s: etcd holds %q for port %d, neither the write nor the model's %q", what, actual[port], port, w.model[port])
	}
	if tag == "" || actual[port] == "" {
		delete(w.model, port)
	} else {
		w.model[port] = actual[port]
	}
	return nil
}

func (o outcome) String() string {
	return [...]string{"acked", "refused", "no answer"}[o]
}

// classify is what a write's status (or error) says of its outcome.
func classify(code int, err error) outcome {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused // the node is down: the request was never sent
	case err != nil || code >= 500:
		return uncertain
	case code >= 400:
		return refused
	}
	return acked
}

// send sends a request and decodes a JSON answer; it never fails the test.
func send(d *daemon, method, path, body string) (int, map[string]any, error) {
	req, err := newRequest(method, d.url(path), body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("%s %s: %d, its body: %w", method, path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, m, nil
}

// read returns the streams etcd holds (port -> tag), once every write
// proposed before it is committed or lost: it first writes a key of its
// own (etcd orders it after them), retrying while the cluster elects.
func (w *fleetWriter) read() (map[int]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		actual, err := w.readOnce(ctx)
		if err == nil {
			return actual, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read etcd: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *fleetWriter) readOnce(ctx context.Context) (map[int]string, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := w.cli.Put(rctx, w.f.prefix+"-barrier", strconv.Itoa(w.writes)); err != nil {
		return nil, err
	}
	resp, err := w.cli.Get(rctx, w.f.prefix+"/streams/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	actual := map[int]string{}
	for _, kv := range resp.Kvs {
		var sp stream.Spec
		if err := json.Unmarshal(kv.Value, &sp); err != nil || len(sp.Backends) != 1 {
			return nil, fmt.Errorf("stream %s in etcd: %q (%v)", kv.Key, kv.Value, err)
		}
		actual[sp.Listen] = w.tagOf(sp.Backends[0])
	}
	return actual, nil
}

// tagOf is the tag of the echo server at addr.
func (w *fleetWriter) tagOf(addr string) string {
	for tag, e := range w.echos {
		if e.addr() == addr {
			return tag
		}
	}
	return "?" + addr
}

// ports are the ports of the model and of also, sorted.
func (w *fleetWriter) ports(also map[int]string) []int {
	var out []int
	for p := range w.model {
		out = append(out, p)
	}
	for p := range also {
		if _, ok := w.model[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// last are the last n writes, one a line.
func (w *fleetWriter) last(n int) string {
	return strings.Join(w.history[max(0, len(w.history)-n):], "\n")
}

// injectFleetFaults hits the fleet with random faults at random moments
// until ctx ends, the writer is done or the faults' bound is reached, and
// returns how many it injected. At most one etcd member and one node are
// down at a time; the node killed is most often the one busy says a write
// is in flight to.
func injectFleetFaults(t *testing.T, ctx context.Context, f *fleet, rng *rand.Rand, writerDone <-chan struct{}, busy *atomic.Int32) int {
	t.Helper()
	downMember, downNode := -1, -1
	n := 0
	for ; n < fleetModelFaults; n++ {
		select {
		case <-ctx.Done():
			return n
		case <-writerDone:
			return n
		case <-time.After(time.Duration(200+rng.IntN(1300)) * time.Millisecond):
		}
		switch k := rng.IntN(3); {
		case k == 0 && downMember >= 0:
			if err := f.cluster.Restart(downMember); err != nil {
				t.Fatal(err)
			}
			t.Logf("fault %d: etcd member %d restarted", n, downMember)
			downMember = -1
		case k == 0:
			downMember = rng.IntN(len(f.cluster.Members()))
			f.cluster.Kill(downMember)
			t.Logf("fault %d: etcd member %d kill -9", n, downMember)
		case k == 1 && downNode >= 0:
			f.nodes[downNode].start()
			t.Logf("fault %d: edge-%d restarted", n, downNode+1)
			downNode = -1
		case k == 1:
			// Most often the node a write is in flight to.
			downNode = rng.IntN(len(f.nodes))
			if b := int(busy.Load()); b > 0 && rng.IntN(4) > 0 {
				downNode = b - 1
			}
			f.nodes[downNode].kill9()
			t.Logf("fault %d: edge-%d kill -9", n, downNode+1)
		default:
			i := rng.IntN(len(f.nodes))
			if i == downNode {
				i = (i + 1) % len(f.nodes)
			}
			f.nodes[i].stop()
			f.nodes[i].start()
			t.Logf("fault %d: edge-%d restarted cleanly", n, i+1)
		}
	}
	return n
}

// healFleet restarts the etcd member and the node that are down, and
// waits until the cluster is healthy.
func healFleet(t *testing.T, f *fleet) {
	t.Helper()
	for i, m := range f.cluster.Members() {
		if !m.Running() {
			if err := f.cluster.Restart(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.cluster.WaitHealthy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, d := range f.nodes {
		if d.cmd == nil {
			d.start()
		}
	}
}

// nodeAgrees says how node i differs from the model, nil if it does not:
// its API's list, its stream files (one per stream, naming its backend),
// the ports listening on its address, and the bytes each forwards.
func nodeAgrees(f *fleet, i int, model map[int]string, echos map[string]*echoServer) error {
	d := f.nodes[i]
	code, m, err := send(d, "GET", "/v1/streams", "")
	if err != nil || code != 200 {
		return fmt.Errorf("GET /v1/streams: %d %v", code, err)
	}
	api := map[int]bool{}
	list, _ := m["streams"].([]any)
	for _, s := range list {
		api[int(s.(map[string]any)["listen"].(float64))] = true
	}
	if !samePorts(api, model) {
		return fmt.Errorf("the API lists %v", api)
	}
	entries, err := os.ReadDir(filepath.Join(d.dataDir, "stream.d"))
	if err != nil {
		return err
	}
	if len(entries) != len(model) {
		return fmt.Errorf("%d stream files", len(entries))
	}
	for port, tag := range model {
		b, err := os.ReadFile(filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", port)))
		if err != nil || !strings.Contains(string(b), "proxy_pass "+echos[tag].addr()+";") {
			return fmt.Errorf("the file of %d does not name %s's backend (%v)", port, tag, err)
		}
	}
	listening, err := listeningOn(f.ips[i], d.portMin, d.portMax)
	if err != nil {
		return err
	}
	if !samePorts(listening, model) {
		return fmt.Errorf("listening on %v", listening)
	}
	for port, tag := range model {
		if !f.forwards(i, port, tag) {
			return fmt.Errorf("port %d does not forward to %s", port, tag)
		}
	}
	return nil
}

// samePorts says whether ports are exactly the model's.
func samePorts(ports map[int]bool, model map[int]string) bool {
	if len(ports) != len(model) {
		return false
	}
	for p := range model {
		if !ports[p] {
			return false
		}
	}
	return true
}

// listeningOn returns the ports in [lo, hi] with a TCP socket listening
// on the IPv4 address ip, from the kernel's table (/proc/net/tcp).
func listeningOn(ip string, lo, hi int) (map[int]bool, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, err
	}
	a := addr.As4()
	// The table shows the address as the host's uint32, in hex.
	want := fmt.Sprintf("%08X", endian.NativeEndian.Uint32(a[:]))
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ports := map[int]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" { // 0A: LISTEN
			continue
		}
		host, port, ok := strings.Cut(fields[1], ":")
		if !ok || host != want {
			continue
		}
		if p, err := strconv.ParseUint(port, 16, 16); err == nil && int(p) >= lo && int(p) <= hi {
			ports[int(p)] = true
		}
	}
	return ports, sc.Err()
}
