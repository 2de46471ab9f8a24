// Package reconcile keeps nginx's stream configuration equal to the desired
// state in the store. One goroutine (Run) does every pass: it renders the
// full desired file set, changes only the files that differ, tests the
// result with `nginx -t`, leaves out exactly the streams nginx rejects,
// reloads, and verifies that nginx really listens before it calls a stream
// active. Backend host names are resolved here (Config.Resolver) and
// rendered as addresses, so nginx never resolves a name.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/resolve"
	"github.com/streamconductor/stream-conductor/stream"
)

// Store is the desired state as the reconciler reads it.
type Store interface {
	// List returns every spec and the store revision they reflect.
	List() ([]stream.Spec, uint64)
	// Changes delivers a value after writes.
	Changes() <-chan struct{}
}

// Timelined is a Store whose revisions may start again lower (etcd
// restored from an older backup, taken as it is on an operator's
// confirmation): Timeline changes whenever they do, once List answers
// from the new ones. Revisions of two timelines are not compared.
type Timelined interface {
	Timeline() uint64
}

// timelineOf is st's timeline (0 for a Store that is not Timelined).
func timelineOf(st Store) uint64 {
	if t, ok := st.(Timelined); ok {
		return t.Timeline()
	}
	return 0
}

// timeline is the store's timeline.
func (r *Reconciler) timeline() uint64 { return timelineOf(r.store) }

// Config tunes a Reconciler.
type Config struct {
	// Dir is STREAM_CONFIG_PATH, where the stream files live.
	Dir    string
	Render nginxconf.RenderOptions
	// StateFile records the fingerprint of the configuration nginx last
	// applied, so that a restart reloads nothing when nothing changed.
	StateFile string
	// ResyncInterval is the period of full passes that retry quarantined
	// streams and catch what no event reported (default 30s).
	ResyncInterval time.Duration
	// WatchInterval is how often a managed nginx's liveness is checked
	// (default 1s).
	WatchInterval time.Duration
	// VerifyTimeout bounds the wait for nginx to open or close ports after
	// a reload (default 3s).
	VerifyTimeout time.Duration
	// StuckAfter is how long a pass may run before NodeStatus reports the
	// reconciler stuck (default 30s).
	StuckAfter time.Duration
	// Ports looks at the host's sockets (default HostPorts).
	Ports Ports
	// DriftPolicy says what to do with files of ours changed by someone
	// else (default DriftRepair).
	DriftPolicy DriftPolicy
	// RepairRate limits drift repairs (default DefaultRepairRate).
	RepairRate RepairRate
	// OnPass and OnApply, when set, are told the duration and outcome of
	// every pass and of every nginx test, start and reload (metrics).
	OnPass  func(d time.Duration, err error)
	OnApply func(op string, d time.Duration, err error)
	// Resolver resolves backend host names, so that nginx is given
	// addresses only (default: a resolve.Resolver that Run refreshes).
	Resolver Resolver
	// Policy, when set, judges every address before it is rendered: a
	// name that now resolves where a backend rule forbids (DNS rebinding)
	// fails its stream instead.
	Policy Policy
	// OpenFiles, when set, is nginx's open-file limit: a new stream
	// beyond its MaxStreams is refused (BindConflict) or fails, rather
	// than failing nginx's reload.
	OpenFiles *stream.OpenFiles
	// Bans, when set, says which source addresses stream id refuses
	// (package bans), rendered as deny lines, and a version that changes
	// whenever they do: a pass re-renders exactly the streams whose bans
	// changed. OnBansApplied, when set, is told after a pass that nginx
	// runs id's file with the bans of version (only versions above 0).
	Bans          func(id stream.ID) (addrs []string, version uint64)
	OnBansApplied func(id stream.ID, version uint64)
	// Node is this node's name (NODE_NAME): the reconciler applies only
	// the streams that target it (stream.Spec.Targets).
	Node string
	// Events, when set, is told what the reconciler does (statuses,
	// reloads, drift); Shard is the index of its master in a Pool,
	// which the events carry.
	Events events.Publisher
	Shard  int
	Log    zerolog.Logger
}

// Resolver answers what addresses backend host names have.
type Resolver interface {
	// Answers returns what is known of each name; names it never looked
	// up are looked up now, bounded by its timeout.
	Answers(ctx context.Context, names []string) map[string]resolve.Answer
	// Generation changes whenever an answer's addresses change.
	Generation() uint64
	// Retain says which names the streams use.
	Retain(inUse map[string]bool)
}

// Policy judges a backend and the addresses its name resolved to.
type Policy interface {
	CheckResolved(b stream.Backend, addrs []netip.Addr) error
}

// Reconciler drives nginx toward the store. Create it with New and start
// it with Run; the other methods are safe from any goroutine.
type Reconciler struct {
	cfg   Config
	store Store
	nginx Nginx
	log   zerolog.Logger

	trigger  chan struct{}
	resolver Resolver
	// ownResolver: the default resolver, which Run refreshes.
	ownResolver *resolve.Resolver

	// Owned by the Run goroutine.
	quarantine    map[stream.ID]quarantined
	applied       string            // fingerprint of what nginx runs
	appliedFiles  map[string][]byte // the stream files nginx last loaded
	lastWritten   map[string][]byte // what the last pass left on disk
	held          map[string]held   // drifted files left alone
	renderCache   map[stream.ID]rendered
	hashes        map[*byte]hashed // content hashes of rendered bodies
	quarantineGen uint64           // counts changes to quarantine
	finished      [2]uint64        // store revision and quarantineGen of the last finish
	repairs       *limiter
	backoff       time.Duration
	passID        uint64
	lastReload    time.Time              // when nginx last took a configuration
	foreignBroken bool                   // the last failure was in a file not ours
	forceReload   bool                   // what nginx serves differs from what it was given
	unremovable   map[string]bool        // files of no stream that cannot be removed
	lastLook      time.Time              // the watch tick's last look at the socket table
	unrenderable  map[stream.ID]string   // streams that cannot be rendered, and why
	bootFiles     map[string][]byte      // our files on disk, until the first apply
	retainedRev   uint64                 // store revision whose names the resolver was told
	repairing     map[string][]stream.ID // drift published, by kind, until a pass repairs it

	// inPool: a shard of a Pool, which watches its directory and tells
	// the resolver which names are in use.
	inPool bool
	// reloadedAt is lastReload for other goroutines (UnixNano), and
	// passing is set while a pass runs: a Pool places new streams on
	// shards that are neither.
	reloadedAt atomic.Int64
	passing    atomic.Bool
	// turns, shared by a Pool's shards, bounds how many pass at once
	// (takeTurn); waiting is set while this one waits for a turn.
	turns   chan struct{}
	waiting atomic.Bool
	// written, shared by a Pool's shards, counts the files they wrote
	// since memory was last given back (freeAfterBigWrites).
	written *atomic.Uint64

	// Set by the watcher, taken by passes.
	dirtyMu  sync.Mutex
	dirty    dirty
	watching atomic.Bool // the watcher runs: passes may trust dirty

	// What passes left in the directory, for the watcher to tell their
	// own events from others' (ownwrites.go).
	ownMu sync.Mutex
	own   map[string]*ownWrite

	mu            sync.Mutex
	status        map[stream.ID]stream.Status
	appliedRev    uint64        // every write up to this revision is applied
	appliedTL     uint64        // the store's timeline appliedRev is of
	statusVersion uint64        // bumped with every change to status
	passDone      chan struct{} // closed and replaced after every pass
	ownedIDs      map[stream.ID]bool
	ownedCount    int // the ports of ownedIDs' streams (a range counts each)
	node          stream.NodeStatus
	passStarted   time.Time // when the running pass started; zero between passes
}

// New returns a Reconciler for st and nginx.
func New(cfg Config, st Store, ngx Nginx) *Reconciler {
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 30 * time.Second
	}
	if cfg.WatchInterval <= 0 {
		cfg.WatchInterval = time.Second
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = 3 * time.Second
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = 30 * time.Second
	}
	if cfg.Ports == nil {
		cfg.Ports = HostPorts{}
	}
	if cfg.DriftPolicy == "" {
		cfg.DriftPolicy = DriftRepair
	}
	if cfg.RepairRate.Burst <= 0 || cfg.RepairRate.Per <= 0 {
		cfg.RepairRate = DefaultRepairRate
	}
	r := &Reconciler{
		cfg:         cfg,
		store:       st,
		nginx:       ngx,
		log:         cfg.Log.With().Str("component", "reconcile").Logger(),
		trigger:     make(chan struct{}, 1),
		quarantine:  make(map[stream.ID]quarantined),
		status:      make(map[stream.ID]stream.Status),
		passDone:    make(chan struct{}),
		ownedIDs:    make(map[stream.ID]bool),
		held:        make(map[string]held),
		renderCache: make(map[stream.ID]rendered),
		hashes:      make(map[*byte]hashed),
		unremovable: make(map[string]bool),
		repairs:     newLimiter(cfg.RepairRate, time.Now),
	}
	r.resolver = cfg.Resolver
	if r.resolver == nil {
		r.ownResolver = resolve.New(resolve.Config{OnChange: r.Trigger, Log: cfg.Log})
		r.resolver = r.ownResolver
	}
	r.node.OpenFiles = cfg.OpenFiles
	if b, err := os.ReadFile(cfg.StateFile); err == nil {
		r.applied = strings.TrimSpace(string(b))
	}
	return r
}

// BindConflict returns why nginx could not bind s's listen address
// (another process holds it, or nginx may open no more sockets: an error
// wrapping stream.ErrStreamLimit), or nil when it is free. Ports that our nginx
// already serves are free.
func (r *Reconciler) BindConflict(s stream.Spec) error {
	r.mu.Lock()
	owned, n := r.ownedIDs[s.ID()], r.ownedCount
	r.mu.Unlock()
	if owned {
		return nil
	}
	if err := r.overLimit(n, s.PortCount()); err != nil {
		return err
	}
	return r.cfg.Ports.BindConflict(s, r.cfg.Render.DefaultBind)
}

// Leftover returns nil once nothing of the deleted stream id is left in
// nginx's configuration, and otherwise why: its file could not be removed
// (made immutable, say), so nginx still serves its port. Passes keep
// trying to remove it.
func (r *Reconciler) Leftover(id stream.ID) error {
	name := nginxconf.FileName(r.cfg.Render.Prefix, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if slices.Contains(r.node.Unremovable, name) {
		return fmt.Errorf("stream %s is deleted, but its file %s could not be removed, so nginx still serves its port; every pass tries again (see the log)", id, name)
	}
	return nil
}

// ReloadSpacing is how often nginx can take a new configuration: after
// starting new workers its master sleeps 100 ms before it looks at signals
// again.
const ReloadSpacing = 100 * time.Millisecond

// ErrNotApplied is returned by a pass that could not bring nginx to the
// desired state; the pass is retried.
var ErrNotApplied = errors.New("configuration not applied")

func (r *Reconciler) runPass(ctx context.Context) error {
	r.passID++
	log := r.log.With().Uint64("pass", r.passID).Logger()
	start := time.Now()
	r.mu.Lock()
	r.passStarted = start
	r.mu.Unlock()
	written := r.node.Counters.FilesWritten
	tl := r.timeline() // before the pass lists: a pass of the old timeline is not taken for one of the new
	rev, err := r.pass(ctx, log)
	r.freeAfterBigWrites(r.node.Counters.FilesWritten - written)
	running := r.nginx.Running() // reads /proc: not under r.mu, which writes wait for
	pid := 0
	if running {
		pid = r.nginx.PID()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passStarted = time.Time{}
	r.node.Unremovable = sortStrings(slices.Collect(maps.Keys(r.unremovable)))
	r.node.Counters.Passes++
	r.node.LastPass = time.Now()
	r.node.NginxRunning = running
	r.node.NginxPID = pid
	r.node.Drifted = r.heldNames()
	close(r.passDone)
	r.passDone = make(chan struct{})
	if r.cfg.OnPass != nil {
		r.cfg.OnPass(time.Since(start), err)
	}
	if err != nil {
		r.node.Counters.FailedPasses++
		r.node.LastError = err.Error()
		log.Error().Err(err).Dur("took", time.Since(start)).Msg("pass failed")
		return err
	}
	r.node.LastError = ""
	r.appliedRev, r.appliedTL = rev, tl
	log.Debug().Uint64("revision", rev).Dur("took", time.Since(start)).Msg("pass done")
	return nil
}

// freeAfterBigWrites gives memory back to the system after a pass that
// wrote 1,000 files or more: a big pass (start-up, an import) leaves much
// garbage behind, better returned now than carried as resident memory.
// In a Pool, whose shards write a share each (~600 files per shard for
// an import of 10,000 into 16), the shards count what they write and the
// pool gives memory back once they are all done (Pool.afterPass).
func (r *Reconciler) freeAfterBigWrites(n uint64) {
	if r.written != nil {
		r.written.Add(n)
		return
	}
	if n > 1000 {
		debug.FreeOSMemory()
	}
}
