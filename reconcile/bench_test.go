package reconcile

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// BenchmarkInSyncPass10000 measures a pass over 10,000 streams when nothing
// changed (the fake nginx records no action): what every resync and every
// write's pass costs on a big node.
func BenchmarkInSyncPass10000(b *testing.B) {
	tmp := b.TempDir()
	st, err := store.Open(filepath.Join(tmp, "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	specs := make([]stream.Spec, 10000)
	for i := range specs {
		specs[i] = stream.Spec{Protocol: stream.TCP, Listen: 10000 + i, Backends: []string{"10.0.0.1:2000"}}
	}
	if _, err := st.Import(specs, false); err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(tmp, "stream.d")
	os.Mkdir(dir, 0o755)
	ngx := newFakeNginx(dir)
	rec := New(Config{Dir: dir, Render: nginxconf.RenderOptions{Prefix: "stream-"}, StateFile: filepath.Join(tmp, "applied"),
		Ports: &fakePorts{nginx: ngx, busy: map[int]bool{}}, Log: zerolog.Nop()}, st, ngx)
	if err := rec.runPass(context.Background()); err != nil {
		b.Fatal(err)
	}
	ngx.takeActions()
	// As with the watcher running and nothing touched on disk.
	rec.watching.Store(true)
	b.ResetTimer()
	for range b.N {
		if err := rec.runPass(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if a := ngx.takeActions(); len(a) != 0 {
		b.Fatalf("an in-sync pass did %v", a)
	}
	if c := rec.NodeStatus().Counters; c.FilesWritten != 10000 {
		b.Fatalf("in-sync passes wrote files: %d written in all", c.FilesWritten)
	}
}

// BenchmarkListeningLook10000 measures one look at what nginx listens on
// (the watch tick's, every WatchInterval) with 10,000 streams: a read of
// the kernel's socket table with 10,000 listening sockets in it.
func BenchmarkListeningLook10000(b *testing.B) {
	const n = 10000
	files := make(map[string][]byte, n)
	for range n {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			b.Skipf("cannot open %d listeners: %v", n, err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		files[nginxconf.FileName("stream-", stream.ID{Protocol: stream.TCP, Port: port})] = nil
	}
	rec := New(Config{Dir: b.TempDir(), Render: nginxconf.RenderOptions{Prefix: "stream-"}, Log: zerolog.Nop()}, nil, newFakeNginx(b.TempDir()))
	b.ResetTimer()
	for range b.N {
		missing, err := rec.notListening(files)
		if err != nil || len(missing) != 0 {
			b.Fatalf("%d not listening, %v", len(missing), err)
		}
	}
}
