package reconcile

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/streamconductor/stream-conductor/nginx"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/stream"
)

// fakeNginx records what the reconciler asks of nginx and answers like
// nginx would for the files in dir: `nginx -t` names the first file that
// has rejectHost in it, a reload fails to bind the listen addresses in
// bindFails (as nginx prints them: "0.0.0.0:9001"), and the
// ports of the loaded files "listen" except those in deaf.
type fakeNginx struct {
	mu         sync.Mutex
	dir        string
	prefix     string
	running    bool
	actions    []string
	rejectHost string
	// unnamedHost, when in a file, fails every test with a refusal that
	// names no file, like nginx's "could not build map_hash".
	unnamedHost string
	foreign     string // a foreign file's error, failing every test
	bindFails   map[string]bool
	deaf        map[int]bool
	// duringTest runs inside Test, before it looks at the files: a
	// stand-in for someone editing our files while a pass applies them.
	duringTest func()
	live       map[stream.Protocol]map[int]bool
	// held, when set, is what HeldPorts answers (the ports the master
	// holds); nil: not known.
	held map[stream.ID]bool
	// gate, when set, is received from before every reload: a stand-in
	// for a master that is slow to reload.
	gate chan struct{}
}

func newFakeNginx(dir string) *fakeNginx {
	return &fakeNginx{dir: dir, prefix: "stream-", bindFails: map[string]bool{}, deaf: map[int]bool{},
		live: map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}}
}

func (f *fakeNginx) record(a string) {
	f.actions = append(f.actions, a)
}

// takeActions returns and clears the recorded actions.
func (f *fakeNginx) takeActions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.actions
	f.actions = nil
	return a
}

func (f *fakeNginx) Running() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

func (f *fakeNginx) files() []string {
	names, _ := filepath.Glob(filepath.Join(f.dir, "*.conf"))
	slices.Sort(names)
	return names
}

func (f *fakeNginx) Test(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("test")
	if f.duringTest != nil {
		f.duringTest()
	}
	if f.foreign != "" {
		return &nginx.Error{Op: "test", Diags: []nginxconf.Diagnostic{{Level: "emerg", Message: f.foreign, File: filepath.Join(f.dir, "foreign.conf"), Line: 1}}}
	}
	for _, name := range f.files() {
		b, _ := os.ReadFile(name)
		if f.rejectHost != "" && strings.Contains(string(b), f.rejectHost) {
			return &nginx.Error{Op: "test", Diags: []nginxconf.Diagnostic{{Level: "emerg",
				Message: fmt.Sprintf("host not found in upstream %q", f.rejectHost), File: name, Line: 3}}}
		}
		if f.unnamedHost != "" && strings.Contains(string(b), f.unnamedHost) {
			return &nginx.Error{Op: "test", Diags: []nginxconf.Diagnostic{{Level: "emerg",
				Message: "could not build map_hash, you should increase map_hash_bucket_size: 64"}}}
		}
	}
	return nil
}

func (f *fakeNginx) load(op string) error {
	live := map[stream.Protocol]map[int]bool{stream.TCP: {}, stream.UDP: {}}
	for _, name := range f.files() {
		id, ok := nginxconf.ParseFileName(f.prefix, filepath.Base(name))
		if !ok {
			continue
		}
		b, _ := os.ReadFile(name)
		if m := listenRE.FindSubmatch(b); m != nil && f.bindFails[string(m[1])] {
			return &nginx.Error{Op: op, Diags: []nginxconf.Diagnostic{
				{Level: "emerg", PID: 1, Message: fmt.Sprintf("bind() to %s failed (98: Address already in use)", m[1])},
				{Level: "emerg", PID: 1, Message: "still could not bind()"},
			}}
		}
		for port := id.Port; port <= nginxconf.FileLastPort(b, id.Port); port++ {
			if !f.deaf[port] {
				live[id.Protocol][port] = true
			}
		}
	}
	f.live = live
	f.running = true
	return nil
}

// listenRE finds the address of a rendered listen directive.
var listenRE = regexp.MustCompile(`(?m)^    listen (\S+?)( udp)?;$`)

func (f *fakeNginx) Prepare(ctx context.Context, streams int) error { return nil }

// Supervises is true: the fake is started by the first pass.
func (f *fakeNginx) Supervises() bool { return true }

func (f *fakeNginx) HeldPorts() map[stream.ID]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

func (f *fakeNginx) PID() int { return 0 }

func (f *fakeNginx) Quit(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("quit")
	f.running = false
	return nil
}

func (f *fakeNginx) MainDrifted() bool { return false }

func (f *fakeNginx) TakeMainRepaired() bool { return false }

func (f *fakeNginx) Signalled() bool { return false }

func (f *fakeNginx) Recover(ctx context.Context) error { return nil }

func (f *fakeNginx) Start(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start")
	return f.load("start")
}

func (f *fakeNginx) Reload(ctx context.Context, retire bool) error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("reload")
	return f.load("reload")
}

func (f *fakeNginx) MainConfig() []byte { return []byte("main") }

// Confirms is false, so that tests exercise the socket-table check.
func (f *fakeNginx) Confirms() bool { return false }

// fakePorts answers from the fake nginx's listeners and a set of ports
// that other processes hold.
type fakePorts struct {
	nginx *fakeNginx
	mu    sync.Mutex
	busy  map[int]bool
	// others are TCP ports other processes listen on, at addresses
	// that do not conflict with the streams'.
	others map[int]bool
}

func (p *fakePorts) BindConflict(s stream.Spec, defaultBind string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.busy[s.Listen] {
		return fmt.Errorf("bind() to 0.0.0.0:%d failed (98: Address already in use)", s.Listen)
	}
	return nil
}

func (p *fakePorts) Listening(proto stream.Protocol) (map[int]bool, error) {
	p.nginx.mu.Lock()
	defer p.nginx.mu.Unlock()
	up := maps.Clone(p.nginx.live[proto])
	if proto == stream.TCP {
		p.mu.Lock()
		maps.Copy(up, p.others)
		p.mu.Unlock()
	}
	return up, nil
}
