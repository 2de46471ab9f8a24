package reconcile

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// shardPorts answers Listening from every shard's fake master.
type shardPorts struct{ fakes []*fakeNginx }

func (p *shardPorts) BindConflict(stream.Spec, string) error { return nil }

func (p *shardPorts) Listening(proto stream.Protocol) (map[int]bool, error) {
	up := map[int]bool{}
	for _, f := range p.fakes {
		f.mu.Lock()
		maps.Copy(up, f.live[proto])
		f.mu.Unlock()
	}
	return up, nil
}

func hasPort(specs []stream.Spec, port int) bool {
	for _, s := range specs {
		if s.Listen == port {
			return true
		}
	}
	return false
}

// A stream of a shard at or above Shards (NGINX_SHARDS lowered) moves to
// another shard only once its old shard has applied a list without it:
// before that, its old master still holds the port and the new one could
// not bind it. The shards' passes are run by hand, in the order that
// shows it: the new shard passes first.
func TestPoolMovesAStreamOnlyOnceItsOldShardLetGo(t *testing.T) {
	tmp := t.TempDir()
	st, err := store.Open(filepath.Join(tmp, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sp, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9001, Backends: []string{"a:1"}}, store.Match{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "stream.d")
	old := ShardDir(dir, 1)
	if err := os.MkdirAll(old, 0o755); err != nil {
		t.Fatal(err)
	}
	name := nginxconf.FileName("stream-", sp.ID())
	body := "server {\n    listen 0.0.0.0:9001;\n    proxy_pass 192.0.2.1:1;\n}\n"
	if err := os.WriteFile(filepath.Join(old, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// Shard 1's master runs from the earlier start, serving the stream.
	fakes := []*fakeNginx{newFakeNginx(dir), newFakeNginx(old)}
	fakes[1].running = true
	fakes[1].live[stream.TCP][9001] = true
	p := NewPool(PoolConfig{
		Config: Config{
			Dir:           dir,
			Render:        nginxconf.RenderOptions{Prefix: "stream-"},
			VerifyTimeout: 50 * time.Millisecond,
			Ports:         &shardPorts{fakes: fakes},
			Resolver:      newFakeResolver(),
			Log:           zerolog.Nop(),
		},
		Shards: 1,
		Found:  []int{1},
		Driver: func(k int) (Nginx, string, error) {
			return fakes[k], filepath.Join(tmp, "applied-"+strconv.Itoa(k)), nil
		},
	}, st)
	ctx := context.Background()
	if _, err := p.adopt(); err != nil { // its shards are run by hand here
		t.Fatal(err)
	}
	p.distribute(ctx)
	s0, s1 := p.shards[0], p.shards[1]
	if !s1.draining || hasPort(s0.view.specs, 9001) || hasPort(s1.view.specs, 9001) {
		t.Fatalf("at the first listing: shard 1 draining %v, shard 0 lists %v, shard 1 lists %v", s1.draining, s0.view.specs, s1.view.specs)
	}

	if err := s0.rec.runPass(ctx); err != nil {
		t.Fatal(err)
	}
	p.afterPass(ctx)
	if hasPort(s0.view.specs, 9001) {
		t.Fatal("tcp/9001 handed to shard 0 while shard 1's master, which has not passed, still serves it")
	}

	if err := s1.rec.runPass(ctx); err != nil {
		t.Fatal(err)
	}
	if fakes[1].live[stream.TCP][9001] {
		t.Fatal("shard 1 still serves tcp/9001 after applying a list without it")
	}
	p.afterPass(ctx)
	if !hasPort(s0.view.specs, 9001) {
		t.Fatalf("tcp/9001 not handed to shard 0 once shard 1 let go of it: %v", s0.view.specs)
	}
	if err := s0.rec.runPass(ctx); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(sp.ID(), sp.Revision); st.State != stream.Active {
		t.Fatalf("tcp/9001 after its move: %+v", st)
	}
}

// listStore is a store whose list the test sets, revision included.
type listStore struct {
	specs []stream.Spec
	rev   uint64
}

func (s *listStore) List() ([]stream.Spec, uint64) { return s.specs, s.rev }

func (s *listStore) Changes() <-chan struct{} { return nil }

// A shard of a pool sees its list change without the store's revision
// changing (a stream moved to it): the stream it gained gets a status.
func TestStatusOfAStreamGainedAtTheSameRevision(t *testing.T) {
	dir := t.TempDir()
	f := newFakeNginx(dir)
	a := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"a:1"}, Revision: 3}
	b := stream.Spec{Protocol: stream.TCP, Listen: 9001, Backends: []string{"a:1"}, Revision: 5}
	ls := &listStore{specs: []stream.Spec{a}, rev: 7}
	r := New(Config{
		Dir:           dir,
		Render:        nginxconf.RenderOptions{Prefix: "stream-"},
		StateFile:     filepath.Join(dir, "applied"),
		VerifyTimeout: 50 * time.Millisecond,
		Ports:         &fakePorts{nginx: f, busy: map[int]bool{}},
		Resolver:      newFakeResolver(),
		Log:           zerolog.Nop(),
	}, ls, f)
	ctx := context.Background()
	if err := r.runPass(ctx); err != nil {
		t.Fatal(err)
	}
	ls.specs = []stream.Spec{a, b}
	if err := r.runPass(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(b.ID(), b.Revision); st.State != stream.Active {
		t.Fatalf("tcp/9001, applied, is %s", st.State)
	}
	if owned, n := r.owns(b.ID()); !owned || n != 2 {
		t.Fatalf("owns tcp/9001: %v of %d", owned, n)
	}
}
