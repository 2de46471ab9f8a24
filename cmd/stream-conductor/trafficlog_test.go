package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
)

// fakeList is a stream list that a test changes.
type fakeList struct {
	mu    sync.Mutex
	specs []stream.Spec
}

func (f *fakeList) List() ([]stream.Spec, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stream.Spec(nil), f.specs...), uint64(len(f.specs))
}

func (f *fakeList) Get(id stream.ID) (stream.Spec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, sp := range f.specs {
		if sp.ID() == id {
			return sp, nil
		}
	}
	return stream.Spec{}, desired.ErrNotFound
}

func (f *fakeList) add(sp stream.Spec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs = append(f.specs, sp)
}

// The feed hands the collector the stream list at start and after every
// change it is told of: sessions on any port of a range, even of one
// created after the start, count for the range.
func TestTrafficFeedIndexesRanges(t *testing.T) {
	list := &fakeList{specs: []stream.Spec{{Protocol: stream.UDP, Listen: 10000, ListenEnd: 10009}}}
	tc, err := traffic.Listen(filepath.Join(t.TempDir(), "traffic.sock"), -1, createdAt(list))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	go tc.Run()
	conn, err := net.Dial("unixgram", strings.TrimPrefix(tc.Addr(), "unix:"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	feed := newTrafficFeed(tc, list.List)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go feed.run(ctx)

	counted := func(id string, port int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			fmt.Fprintf(conn, "x: %d UDP 127.0.0.1 10.0.0.5:%d 3 2 0.000 200", port, port)
			if s := tc.Get(stream.MustParseID(id)); s != nil && s.Ports[port].Sessions > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no session on port %d counted for %s within 5s", port, id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	counted("udp/10000", 10005)
	list.add(stream.Spec{Protocol: stream.UDP, Listen: 20000, ListenEnd: 20099})
	feed.changed()
	counted("udp/20000", 20050)
}
