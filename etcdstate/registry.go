package etcdstate

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/stream"
)

// Registry is the node registry as this node sees it, in memory: every
// live node's last published stream.NodeInfo (its applied revision, the
// streams not active on it), and the nodes seen leaving. A watch of
// P/nodes/ keeps it current; a key that expires with its node's lease
// takes the node out.
type Registry struct {
	cli     *clientv3.Client
	prefix  string // P/nodes/
	timeout time.Duration
	log     zerolog.Logger

	mu      sync.Mutex
	live    map[string]stream.NodeInfo // never changed once handed out
	gone    map[string]time.Time       // idem
	changed chan struct{}              // closed and replaced at every change
	gen     uint64                     // counts changes
	listed  bool                       // the first list, the baseline of events, is done
	events  events.Publisher

	stop context.CancelFunc
	done chan struct{}
}

// maxGone bounds how many departed nodes the registry remembers.
const maxGone = 64

// WatchNodes lists the registry, then watches it until Close. A first
// list that fails is logged and retried by the watch. When pub is not
// nil, it is told of every node that registers or whose registration
// ends after the first list (events.NodeJoined, events.NodeLeft).
func (s *State) WatchNodes(log zerolog.Logger, pub events.Publisher) *Registry {
	g := &Registry{cli: s.cli, prefix: s.prefix + "/nodes/", timeout: s.timeout, events: pub,
		log:  log.With().Str("component", "etcdstate").Str("watch", "nodes").Logger(),
		live: map[string]stream.NodeInfo{}, gone: map[string]time.Time{}, changed: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	rev, err := g.list(ctx)
	if err != nil {
		g.log.Warn().Err(err).Msg("node registry not listed; retrying in the background")
	}
	go g.run(ctx, rev)
	return g
}

// Nodes returns the live nodes and the nodes seen leaving (when), and a
// channel closed at the next change. The maps must not be changed.
func (g *Registry) Nodes() (live map[string]stream.NodeInfo, gone map[string]time.Time, changed <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.live, g.gone, g.changed
}

// Generation counts the changes seen.
func (g *Registry) Generation() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen
}

// Close stops the watch.
func (g *Registry) Close() {
	g.stop()
	<-g.done
}

// run watches from after revision rev (0: list first), listing again
// after every failure of the watch, until ctx ends.
func (g *Registry) run(ctx context.Context, rev int64) {
	defer close(g.done)
	for ctx.Err() == nil {
		if rev == 0 {
			var err error
			if rev, err = g.list(ctx); err != nil {
				g.log.Warn().Err(err).Msg("node registry not listed; retrying")
				sleep(ctx, time.Second)
				continue
			}
		}
		err := g.watch(ctx, rev+1)
		if ctx.Err() != nil {
			return
		}
		g.log.Warn().Err(err).Msg("node registry watch ended; listing again")
		rev = 0
		sleep(ctx, 200*time.Millisecond)
	}
}

// list reads every node and returns the revision it read at.
func (g *Registry) list(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	resp, err := g.cli.Get(lctx, g.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, unavailable("list nodes", err)
	}
	live := make(map[string]stream.NodeInfo, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if name, ni, ok := g.decode(kv.Key, kv.Value); ok {
			live[name] = ni
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	gone := maps.Clone(g.gone)
	for name := range g.live {
		if _, ok := live[name]; !ok {
			gone[name] = time.Now().UTC()
		}
	}
	g.publish(live, gone)
	return resp.Header.Revision, nil
}

// watch applies the registry's changes from revision from until the
// watch fails or ctx ends.
func (g *Registry) watch(ctx context.Context, from int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range g.cli.Watch(wctx, g.prefix, clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch nodes: %w", err)
		}
		g.apply(resp.Events)
	}
	return fmt.Errorf("watch nodes: %w", context.Cause(wctx))
}

// apply records one watch response's events.
func (g *Registry) apply(events []*clientv3.Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	live, gone := maps.Clone(g.live), maps.Clone(g.gone)
	for _, ev := range events {
		name := strings.TrimPrefix(string(ev.Kv.Key), g.prefix)
		if ev.Type == clientv3.EventTypeDelete {
			if _, ok := live[name]; ok {
				delete(live, name)
				gone[name] = time.Now().UTC()
				g.log.Info().Str("peer", name).Msg("node left the fleet")
			}
			continue
		}
		if name, ni, ok := g.decode(ev.Kv.Key, ev.Kv.Value); ok {
			if _, ok := live[name]; !ok {
				g.log.Info().Str("peer", name).Str("api", ni.API).Msg("node joined the fleet")
			}
			live[name] = ni
		}
	}
	g.publish(live, gone)
}

// decode reads a node's key; ok is false (and it is logged) for a key or
// value that is not a node's.
func (g *Registry) decode(key, value []byte) (string, stream.NodeInfo, bool) {
	var ni stream.NodeInfo
	name := strings.TrimPrefix(string(key), g.prefix)
	if strings.Contains(name, "/") {
		return "", ni, false
	}
	if err := json.Unmarshal(value, &ni); err != nil {
		g.log.Warn().Err(err).Str("key", string(key)).Msg("node registry entry not decoded; ignored")
		return "", ni, false
	}
	return name, ni, true
}

// publish makes live and gone the registry's (live names leave gone, the
// oldest departures beyond maxGone are forgotten) and wakes the waiters.
// g.mu is held.
func (g *Registry) publish(live map[string]stream.NodeInfo, gone map[string]time.Time) {
	for name := range live {
		delete(gone, name)
	}
	for len(gone) > maxGone {
		var oldest string
		for name, at := range gone {
			if oldest == "" || at.Before(gone[oldest]) {
				oldest = name
			}
		}
		delete(gone, oldest)
	}
	if g.listed {
		g.publishChanges(live)
	}
	g.listed = true
	g.live, g.gone = live, gone
	g.gen++
	close(g.changed)
	g.changed = make(chan struct{})
}

// publishChanges publishes the nodes that joined or left from the live
// nodes known to live. g.mu is held (Publish never blocks).
func (g *Registry) publishChanges(live map[string]stream.NodeInfo) {
	if g.events == nil {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(live)) {
		if _, ok := g.live[name]; !ok {
			g.events.Publish(events.NodeJoined, events.NodeChange{Name: name, APIURL: live[name].API})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(g.live)) {
		if _, ok := live[name]; !ok {
			g.events.Publish(events.NodeLeft, events.NodeChange{Name: name, APIURL: g.live[name].API})
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
