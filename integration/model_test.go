package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/internal/procfs"
)

// TestRandomisedModel drives one daemon through a seeded, bounded sequence
// of random API writes interleaved with random faults, and after every
// step checks, once things settle, that the store (through the API), the
// files, the ports nginx listens on and the bytes it forwards all agree
// with a model of the acknowledged writes. Set MODEL_SEED to replay a run.
func TestRandomisedModel(t *testing.T) {
	t.Parallel()
	const steps = 300
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MODEL_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("MODEL_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	// The faults come faster than any real drift; repairs are not limited.
	d := startDaemon(t, 6, "DRIFT_REPAIR_RATE=100000/1s")
	echos := map[string]*echoServer{"A:": startEcho(t, "A:"), "B:": startEcho(t, "B:")}
	tags := []string{"A:", "B:"}
	dir := filepath.Join(d.dataDir, "stream.d")
	model := map[int]string{} // port -> tag of its backend
	fileOf := func(port int) string { return filepath.Join(dir, fmt.Sprintf("stream-tcp-%d.conf", port)) }
	randomStream := func() (int, bool) {
		if len(model) == 0 {
			return 0, false
		}
		ports := make([]int, 0, len(model))
		for p := range model {
			ports = append(ports, p)
		}
		slices.Sort(ports)
		return ports[rng.IntN(len(ports))], true
	}
	freePort := func() (int, bool) {
		var free []int
		for p := d.portMin; p <= d.portMax; p++ {
			if _, ok := model[p]; !ok {
				free = append(free, p)
			}
		}
		if len(free) == 0 {
			return 0, false
		}
		return free[rng.IntN(len(free))], true
	}

	ops, faults, acked := 0, 0, 0
	var history []string // what the steps did, for the failure message
	for step := 0; step < steps; step++ {
		var what string
		if rng.IntN(4) == 0 {
			faults++
			what = injectFault(t, d, rng, dir, fileOf, randomStream, freePort, echos)
		} else {
			ops++
			switch k := rng.IntN(10); {
			case k < 6: // create or replace
				port := d.portMin + rng.IntN(d.portMax-d.portMin+1)
				tag := tags[rng.IntN(2)]
				code, m := d.api("PUT", fmt.Sprintf("/v1/streams/tcp/%d", port), `{"backend":"`+echos[tag].addr()+`"}`)
				if code != 200 && code != 201 {
					t.Fatalf("seed %d step %d: PUT %d: %d %v", seed, step, port, code, m)
				}
				model[port] = tag
				acked++
				what = fmt.Sprintf("PUT %d -> %s", port, tag)
			case k < 8: // delete
				port, ok := randomStream()
				if !ok {
					continue
				}
				if code, m := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", port), ""); code != 204 {
					t.Fatalf("seed %d step %d: DELETE %d: %d %v", seed, step, port, code, m)
				}
				delete(model, port)
				acked++
				what = fmt.Sprintf("DELETE %d", port)
			default: // allocate
				tag := tags[rng.IntN(2)]
				code, m := d.api("POST", "/v1/streams", `{"backend":"`+echos[tag].addr()+`"}`)
				if _, free := freePort(); !free {
					if code != 409 {
						t.Fatalf("seed %d step %d: POST on a full range: %d", seed, step, code)
					}
					continue
				}
				if code != 201 {
					t.Fatalf("seed %d step %d: POST: %d %v", seed, step, code, m)
				}
				model[int(m["listen"].(float64))] = tag
				acked++
				what = fmt.Sprintf("POST -> %v", m["listen"])
			}
		}
		history = append(history, fmt.Sprintf("%d: %s", step, what))
		if err := settle(t, d, model, echos); err != nil {
			t.Fatalf("seed %d step %d (%s): %v\nlast steps:\n%s", seed, step, what, err, strings.Join(history[max(0, len(history)-10):], "\n"))
		}
	}
	t.Logf("model test: seed %d, %d steps, %d operations, %d faults injected, %d acked writes, lost = 0", seed, steps, ops, faults, acked)
}

// injectFault applies one random fault and returns what it did.
func injectFault(t *testing.T, d *daemon, rng *rand.Rand, dir string, fileOf func(int) string,
	randomStream, freePort func() (int, bool), echos map[string]*echoServer) string {
	t.Helper()
	switch rng.IntN(8) {
	case 0: // hand edit, and nginx reloaded by someone
		port, ok := randomStream()
		if !ok {
			return "none"
		}
		b, _ := os.ReadFile(fileOf(port))
		edited := strings.ReplaceAll(strings.ReplaceAll(string(b), echos["A:"].addr(), "X"), echos["B:"].addr(), echos["A:"].addr())
		edited = strings.ReplaceAll(edited, "X", echos["B:"].addr())
		os.WriteFile(fileOf(port), []byte(edited), 0o644)
		d.signalNginx(syscall.SIGHUP)
		return fmt.Sprintf("fault: edit %d", port)
	case 1:
		port, ok := randomStream()
		if !ok {
			return "none"
		}
		os.Remove(fileOf(port))
		return fmt.Sprintf("fault: delete file %d", port)
	case 2:
		port, ok := freePort()
		if !ok {
			return "none"
		}
		os.WriteFile(fileOf(port), []byte("# not from the store\n"), 0o644)
		return fmt.Sprintf("fault: add file %d", port)
	case 3:
		from, ok1 := randomStream()
		to, ok2 := freePort()
		if !ok1 || !ok2 {
			return "none"
		}
		os.Rename(fileOf(from), fileOf(to))
		return fmt.Sprintf("fault: rename %d to %d", from, to)
	case 4:
		os.RemoveAll(dir)
		os.Mkdir(dir, 0o755)
		return "fault: directory removed and recreated"
	case 5:
		d.signalNginx(syscall.SIGKILL)
		return "fault: nginx master kill -9"
	case 6:
		d.kill9()
		d.start()
		return "fault: daemon kill -9 and restart"
	default:
		d.stop()
		d.start()
		return "fault: daemon restart"
	}
}

// settle waits until the node agrees with the model, and says how it
// does not if it never does.
func settle(t *testing.T, d *daemon, model map[int]string, echos map[string]*echoServer) error {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if last = agrees(t, d, model, echos); last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

func agrees(t *testing.T, d *daemon, model map[int]string, echos map[string]*echoServer) error {
	// The store, through the API: exactly the model, every stream active.
	_, m := d.api("GET", "/v1/streams", "")
	api := map[int]string{}
	for _, s := range m["streams"].([]any) {
		s := s.(map[string]any)
		port := int(s["listen"].(float64))
		backend := s["backends"].([]any)[0].(string)
		for tag, e := range echos {
			if e.addr() == backend {
				api[port] = tag
			}
		}
		if st := s["status"].(map[string]any)["state"]; st != "active" {
			return fmt.Errorf("stream %d is %v", port, st)
		}
	}
	if len(api) != len(model) {
		return fmt.Errorf("the API lists %v, the model says %v", api, model)
	}
	for port, tag := range model {
		if api[port] != tag {
			return fmt.Errorf("the API lists %v, the model says %v", api, model)
		}
	}
	// The files: one per stream, each naming its backend.
	entries, err := os.ReadDir(filepath.Join(d.dataDir, "stream.d"))
	if err != nil {
		return err
	}
	if len(entries) != len(model) {
		return fmt.Errorf("%d files for %d streams", len(entries), len(model))
	}
	for port, tag := range model {
		b, err := os.ReadFile(filepath.Join(d.dataDir, "stream.d", fmt.Sprintf("stream-tcp-%d.conf", port)))
		if err != nil || !strings.Contains(string(b), "proxy_pass "+echos[tag].addr()+";") {
			return fmt.Errorf("file of %d: %v", port, err)
		}
	}
	// What nginx listens on, from the kernel.
	listening := tcpListening(d.portMin, d.portMax)
	if len(listening) != len(model) {
		return fmt.Errorf("listening on %v, the model says %v", listening, model)
	}
	for port := range model {
		if !listening[port] {
			return fmt.Errorf("listening on %v, the model says %v", listening, model)
		}
	}
	// And the bytes go where the model says.
	for port, tag := range model {
		msg := "model\n"
		if got, err := echo(t, port, msg); err != nil || got != tag+msg {
			return fmt.Errorf("port %d forwards %q (%v), want %q", port, got, err, tag+msg)
		}
	}
	if code, _ := d.api("GET", "/readyz", ""); code != 200 {
		return fmt.Errorf("not ready")
	}
	return nil
}

// tcpListening returns the ports in [lo, hi] with a listening socket.
func tcpListening(lo, hi int) map[int]bool {
	ports := map[int]bool{}
	procfs.Host.Accepting(false, func(s procfs.Socket) {
		if s.Port >= lo && s.Port <= hi {
			ports[s.Port] = true
		}
	})
	return ports
}
