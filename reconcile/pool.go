package reconcile

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/resolve"
	"github.com/streamconductor/stream-conductor/stream"
)

// A Pool drives several nginx masters (shards), each with its own
// directory of stream files, its own Reconciler and its own driver, so
// that a change reloads one small master instead of one that holds every
// stream: nginx's reload cost grows faster than its streams, and a master
// takes one configuration per ~100 ms (ReloadSpacing). A stream is placed
// on a shard when it first appears and stays there while it exists; the
// shards pass, reload and cool down independently, so a shard that is
// reloading or cooling delays only its own streams. See
// docs/nginx-pool-design.md.
//
// Shard 0 uses Config.Dir and Config.StateFile, exactly as a lone
// Reconciler does, so that one shard (NGINX_SHARDS=1) is the daemon as it
// was, and an upgrade adopts the master it ran. Shard k > 0 uses
// Dir/shard-k. Where a stream is placed is recorded only in the data
// plane: after a restart, a stream belongs to the shard whose directory
// holds its file.
type Pool struct {
	cfg      PoolConfig
	store    Store
	log      zerolog.Logger
	resolver Resolver
	own      *resolve.Resolver // the default resolver, which Run refreshes
	preview  *Reconciler       // renders dry runs; never runs

	trigger  chan struct{}
	turns    chan struct{}    // how many shards pass at once (Reconciler.takeTurn)
	written  atomic.Uint64    // files the shards wrote (Reconciler.freeAfterBigWrites)
	passedCh chan struct{}    // a shard passed
	added    chan *Reconciler // shards for the watcher

	progMu      sync.Mutex
	progress    chan struct{} // closed and replaced after a listing or a shard's pass
	retainedRev uint64        // owned by Run: the revision whose names the resolver was told
	diff        specDiff      // owned by Run: the desired state's changes, for events

	mu        sync.Mutex
	shards    []*shard // by index; nil: not started
	place     map[stream.ID]int
	weight    map[stream.ID]int    // the ports of each placed stream, as last listed
	counts    []int                // ports placed on each shard (a range counts each)
	ports     int                  // the ports placed on every shard
	gone      map[stream.ID]uint64 // deleted at this revision, still placed until applied
	gonePorts int                  // the ports of gone
	withheld  map[stream.ID]move   // placed, not yet handed to their shard
	listedRev uint64               // the revision the shards' lists are of
	listedTL  uint64
	listed    bool   // the shards have been handed a list
	retired   uint64 // status versions of shards that were stopped
	version   uint64 // bumped when placement changes
}

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Config is the template of every shard's Reconciler; Dir and
	// StateFile are shard 0's.
	Config
	// Shards is the most masters the pool runs (NGINX_SHARDS, ≥ 1). New
	// streams go to shards below it; a shard at or above it left by an
	// earlier run with more is emptied and stopped.
	Shards int
	// Driver returns shard k's nginx and the file that records what it
	// applied.
	Driver func(k int) (ngx Nginx, stateFile string, err error)
	// Found lists shards that left something on disk (a directory, a
	// running master) before this start; they are adopted, or emptied
	// and stopped when k ≥ Shards.
	Found []int
	// IdleStop is how long a shard other than 0 may have no streams
	// before its master is stopped (default: ResyncInterval).
	IdleStop time.Duration
	// OnList, when set, is handed the whole desired state each time the
	// pool lists a new revision of it (the traffic log's index of port
	// ranges), from the pool's goroutine: it must not block.
	OnList func(specs []stream.Spec)
}

// move is a stream waiting for shard from to have applied a list without
// it (revision until), before its new shard may bind its port.
type move struct {
	from  int
	until uint64
}

// shard is one master of the pool and its reconciler.
type shard struct {
	k          int
	rec        *Reconciler
	view       *shardView
	changedAt  uint64 // the revision at which its list last changed
	listed     bool   // it was handed a list: until then it has applied none of ours
	draining   bool   // k ≥ Shards: emptied, then stopped
	retiring   bool   // being stopped: nothing new is placed on it
	emptySince time.Time
	cancel     context.CancelFunc
	done       chan struct{}
}

// ShardDir returns the directory of shard k's stream files under dir,
// the stream configuration directory.
func ShardDir(dir string, k int) string {
	if k == 0 {
		return dir
	}
	return filepath.Join(dir, "shard-"+strconv.Itoa(k))
}

// ShardIndex parses a directory name "shard-k" (k ≥ 1).
func ShardIndex(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "shard-")
	if !ok {
		return 0, false
	}
	k, err := strconv.Atoi(rest)
	if err != nil || k < 1 || strconv.Itoa(k) != rest {
		return 0, false
	}
	return k, true
}

// NewPool returns a pool over st. Nothing runs until Run.
func NewPool(cfg PoolConfig, st Store) *Pool {
	cfg.Shards = max(1, cfg.Shards)
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 30 * time.Second
	}
	if cfg.IdleStop <= 0 {
		cfg.IdleStop = cfg.ResyncInterval
	}
	p := &Pool{
		cfg:      cfg,
		store:    st,
		log:      cfg.Log.With().Str("component", "pool").Logger(),
		trigger:  make(chan struct{}, 1),
		passedCh: make(chan struct{}, 1),
		turns:    make(chan struct{}, max(2, runtime.NumCPU())),
		added:    make(chan *Reconciler, 64),
		place:    map[stream.ID]int{},
		weight:   map[stream.ID]int{},
		gone:     map[stream.ID]uint64{},
		withheld: map[stream.ID]move{},
		progress: make(chan struct{}),
	}
	p.resolver = cfg.Resolver
	if p.resolver == nil {
		p.own = resolve.New(resolve.Config{OnChange: p.Trigger, Log: cfg.Log})
		p.resolver = p.own
	}
	p.cfg.Resolver = p.resolver
	p.preview = New(p.cfg.Config, st, nil)
	n := cfg.Shards
	for _, k := range cfg.Found {
		n = max(n, k+1)
	}
	p.shards = make([]*shard, n)
	p.counts = make([]int, n)
	return p
}

// Trigger asks every shard for a pass, and the pool to list the store.
func (p *Pool) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.shards {
		if s != nil {
			s.rec.Trigger()
		}
	}
}

// Run places streams and runs the shards until ctx ends, then waits for
// every shard's pass to end.
func (p *Pool) Run(ctx context.Context) {
	if p.own != nil {
		go p.own.Run(ctx)
	}
	adopted, err := p.adopt()
	if err != nil {
		p.log.Error().Err(err).Msg("start the nginx pool")
	}
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		p.mu.Lock()
		first := []*Reconciler{p.shards[0].rec}
		p.mu.Unlock()
		runWatch(ctx, p.log, first, p.added)
	}()
	tick := time.NewTicker(min(time.Second, p.cfg.IdleStop))
	defer tick.Stop()
	p.distribute(ctx)
	// Only now, with their lists: a shard passing before would take the
	// empty list it starts with for the store's, and remove its streams.
	for _, s := range adopted {
		s.start(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			p.stopAll()
			<-watchDone
			return
		case <-p.store.Changes():
			p.distribute(ctx)
		case <-p.trigger:
			p.distribute(ctx)
		case <-p.passedCh:
			p.afterPass(ctx)
		case <-tick.C:
			p.stopIdle(ctx)
			p.freeIfQuiet()
		}
	}
}

// adopt finds where the streams are (the shards' directories), and
// creates shard 0 and every shard that left something behind; it returns
// them, for Run to start once it has handed them their lists.
func (p *Pool) adopt() (shards []*shard, first error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.shards {
		if k != 0 && !slices.Contains(p.cfg.Found, k) {
			continue
		}
		s, err := p.newShard(k)
		if err != nil {
			first = cmp.Or(first, err)
			continue
		}
		shards = append(shards, s)
		names, err := ourNames(ShardDir(p.cfg.Dir, k), p.cfg.Render.Prefix)
		if err != nil {
			continue
		}
		for _, id := range names {
			if prev, dup := p.place[id]; dup {
				// A crash during a move left it in two shards: the first
				// keeps it, the other lets go of it first.
				p.log.Warn().Stringer("stream", id).Int("shard", prev).Int("also_in", k).Msg("stream found in two shards; keeping the first")
				continue
			}
			// One port until the first listing says how many it has.
			p.placeOn(id, k, 1)
		}
	}
	// Streams of shards at or above Shards move to the others once their
	// shard has let go of them.
	for id, k := range p.place {
		if k < p.cfg.Shards {
			continue
		}
		p.unplace(id)
		p.withheld[id] = move{from: k}
	}
	return shards, first
}

// ourNames returns the ids of our stream files in dir.
func ourNames(dir, prefix string) ([]stream.ID, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []stream.ID
	for _, e := range entries {
		if id, ok := nginxconf.ParseFileName(prefix, e.Name()); ok && !e.IsDir() {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// startShard creates shard k's reconciler and runs it. Called with p.mu held.
func (p *Pool) startShard(ctx context.Context, k int) error {
	s, err := p.newShard(k)
	if err != nil {
		return err
	}
	s.start(ctx)
	return nil
}

// newShard creates shard k's reconciler, which start runs. Called with
// p.mu held.
func (p *Pool) newShard(k int) (*shard, error) {
	ngx, stateFile, err := p.cfg.Driver(k)
	if err != nil {
		return nil, fmt.Errorf("nginx shard %d: %w", k, err)
	}
	cfg := p.cfg.Config
	cfg.Dir = ShardDir(p.cfg.Dir, k)
	cfg.StateFile = stateFile
	cfg.Log = p.cfg.Log.With().Int("shard", k).Logger()
	cfg.Shard = k
	s := &shard{k: k, draining: k >= p.cfg.Shards}
	s.view = &shardView{pool: p, changes: make(chan struct{}, 1)}
	onPass := cfg.OnPass
	cfg.OnPass = func(d time.Duration, err error) {
		if onPass != nil {
			onPass(d, err)
		}
		p.passed(s)
	}
	s.rec = New(cfg, s.view, ngx)
	s.rec.inPool = true
	s.rec.turns = p.turns
	s.rec.written = &p.written
	// Until the first listing, a new shard's list is empty at the
	// listed revision; an adopted one gets its list before it passes.
	s.view.rev = p.listedRev
	s.view.tl.Store(p.listedTL)
	s.changedAt = p.listedRev
	p.shards[k] = s
	if k > 0 {
		p.added <- s.rec
	}
	return s, nil
}

// start runs the shard's reconciler until ctx ends or cancel is called;
// done is closed once it returned.
func (s *shard) start(ctx context.Context) {
	var runCtx context.Context
	runCtx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		s.rec.Run(runCtx)
	}()
}

// stopAll waits for every shard's Run to return.
func (p *Pool) stopAll() {
	p.mu.Lock()
	shards := slices.Clone(p.shards)
	p.mu.Unlock()
	for _, s := range shards {
		if s != nil {
			s.cancel()
			<-s.done
		}
	}
}

// shardView is the store as one shard sees it: the streams placed on it.
type shardView struct {
	pool    *Pool
	specs   []stream.Spec // under pool.mu
	rev     uint64        // under pool.mu
	tl      atomic.Uint64 // read by the shard's reconciler under its own lock
	changes chan struct{}
}

func (v *shardView) List() ([]stream.Spec, uint64) {
	v.pool.mu.Lock()
	defer v.pool.mu.Unlock()
	return v.specs, v.rev
}

func (v *shardView) Changes() <-chan struct{} { return v.changes }

// Timeline is the timeline of the pool's last listing. It takes no
// lock: the shard's reconciler asks it under its own, which the pool
// takes under its.
func (v *shardView) Timeline() uint64 { return v.tl.Load() }

func (v *shardView) signal() {
	select {
	case v.changes <- struct{}{}:
	default:
	}
}
