// Package etcdstate keeps the desired state (desired.State) in etcd, for a
// fleet of nodes that share it. Under a key prefix P:
//
//	P/streams            the state's marker: every write rewrites it, so its
//	                     modification revision is the state's revision
//	P/streams/<id>       one stream (id "tcp/9000"): its spec as JSON, as the
//	                     bbolt store keeps it; its revision is the key's
//	                     modification revision (a stream's ETag)
//	P/ranges/<id>        a range stream's last port ("10099" for tcp/10000),
//	                     written and deleted with the stream (ports.go)
//	P/audit/<seq>        one audit record as JSON, seq zero-padded to 20 digits
//	P/nodes/<name>       one node's stream.NodeInfo as JSON, under the
//	                     node's lease (see Register)
//
// Revisions are etcd's: they grow with every write to the cluster, so a
// state's revisions grow too, with gaps. Writes are transactions that
// compare what they read (optimistic concurrency); a port is allocated with
// a transaction that creates the stream's key only if it does not exist,
// so allocation is atomic across the fleet. An import is one transaction:
// etcd refuses transactions of more operations than its --max-txn-ops
// (default 128), so a fleet that imports N streams runs etcd with
// --max-txn-ops above N+1 (and --max-request-bytes above the import's
// size, default 1.5 MiB).
//
// Changes (Since, Updated) come from an etcd watch started at the revision
// the state was opened at (its local copy's, when it has one); older ones
// are ErrCompacted.
//
// A node keeps the state as its watch delivered it (its local copy), in
// memory and, with Options.CachePath, in a bbolt file (cache.go): while
// etcd does not answer, reads come from it and writes are refused, and a
// node restarted meanwhile opens from it. The copy changes only by what the
// watch delivers after guard.go vetted it: a state that went back in
// revision, came from another cluster or lost most streams in one change
// that did not come through this API is held until an operator confirms.
package etcdstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// The defaults of Options.
const (
	// DefaultTimeout bounds each request to etcd.
	DefaultTimeout = 5 * time.Second
	// DefaultAuditRetention is how many audit records are kept.
	DefaultAuditRetention = 10000
	// DefaultCheckInterval is how often etcd is probed.
	DefaultCheckInterval = 2 * time.Second
	// DefaultAllocateTimeout bounds a whole port allocation, however many
	// transactions it loses to concurrent allocators.
	DefaultAllocateTimeout = 15 * time.Second
)

// openFromCacheAfter is how long Open waits for etcd before it opens from
// the local copy.
const openFromCacheAfter = 2 * time.Second

// maxAttempts bounds the retries of a write whose transaction lost to a
// concurrent one: each retry means another write went through.
const maxAttempts = 1000

// Options tune Open.
type Options struct {
	// Timeout bounds each request to etcd (default DefaultTimeout).
	Timeout time.Duration
	// AllocateTimeout bounds a whole Allocate, every request of it
	// bounded by Timeout too (default DefaultAllocateTimeout, at least
	// Timeout).
	AllocateTimeout time.Duration
	// Now stamps created_at/updated_at (default time.Now).
	Now func() time.Time
	// AuditRetention is how many audit records are kept (default
	// DefaultAuditRetention).
	AuditRetention int
	// Log receives what the state handles itself: a failed list served
	// from the last one read, a watch that ended and starts again
	// (default: nothing is logged).
	Log *zerolog.Logger
	// CachePath, when set, is the bbolt file that keeps the local copy
	// across restarts; with it, Open succeeds while etcd is unreachable
	// once the file holds a copy.
	CachePath string
	// CheckInterval is how often etcd is probed: whether it answers, and
	// whether its revision or cluster id went wrong (default
	// DefaultCheckInterval).
	CheckInterval time.Duration
	// Node is this node's name (NODE_NAME): a change that deletes more
	// than half of "its" streams counts the streams that target it
	// (stream.Spec.Targets). Empty: every stream is its.
	Node string
}

// State is the desired state in etcd under one key prefix. It is safe for
// concurrent use, and several States (one per node) may share a prefix.
type State struct {
	cli             *clientv3.Client
	prefix          string
	marker          string // P/streams
	timeout         time.Duration
	allocateTimeout time.Duration
	now             func() time.Time
	auditRetention  int
	log             zerolog.Logger
	node            string // Options.Node

	// written is the highest revision of this State's own writes: Since
	// waits until the watch delivered it.
	written atomic.Uint64
	// allocTxns counts the transactions Allocate sent (tests).
	allocTxns atomic.Int64
	// allocating counts the Allocate calls under way.
	allocating atomic.Int64
	// fullReads counts the reads of every stream (tests).
	fullReads atomic.Int64

	changed    chan struct{} // Changes: one consumer, sends coalesce
	stop       context.CancelFunc
	watchDone  chan struct{}
	checkDone  chan struct{}
	checkEvery time.Duration
	confirmKey string        // P/confirm
	cache      *cache        // nil: no file
	applyMu    sync.Mutex    // serialises changes of the local copy and its file
	gen        atomic.Uint64 // bumped when the copy is replaced: older deliveries are dropped
	timeline   atomic.Uint64 // bumped when a confirmation replaced the copy (Timeline)
	epoch      atomic.Uint64 // the newest confirmation's revision this node's state is of (Epoch)

	mu           sync.RWMutex
	hist         history
	local        map[stream.ID]stream.Spec // every stream, as the watch delivered it
	stateRev     uint64                    // the marker's revision in the local copy
	cluster      uint64                    // the etcd cluster id the copy came from (0: not known yet)
	updated      chan struct{}             // closed when the watch delivers changes
	down         *desired.Stale            // set while etcd does not answer
	alarm        *desired.Alarm            // set while the copy is held
	recheck      bool                      // etcd's history must be compared with the copy before the watch delivers (history.go)
	resume       int64                     // set by accept: the revision the watch goes on from
	cancelFollow context.CancelFunc        // ends the current watch
}

var _ desired.State = (*State)(nil)

// Open returns the state under prefix (a key prefix such as
// "/stream-conductor"; a trailing slash is dropped) and starts watching it
// from the current revision or, with a CachePath that holds a copy, from
// the copy's revision (see begin). With such a copy, an
// unreachable etcd is no error: the state opens from the copy, stale,
// and keeps connecting. It does not close cli.
func Open(cli *clientv3.Client, prefix string, o Options) (*State, error) {
	o = o.withDefaults()
	lg := zerolog.Nop()
	if o.Log != nil {
		lg = *o.Log
	}
	prefix = trimPrefix(prefix)
	s := &State{cli: cli, prefix: prefix, marker: prefix + "/streams", confirmKey: prefix + "/confirm", timeout: o.Timeout, now: o.Now,
		allocateTimeout: o.AllocateTimeout,
		auditRetention:  o.AuditRetention, updated: make(chan struct{}), changed: make(chan struct{}, 1), watchDone: make(chan struct{}),
		checkDone: make(chan struct{}), checkEvery: o.CheckInterval, node: o.Node,
		log: lg.With().Str("component", "etcdstate").Str("prefix", prefix).Logger()}
	cached, err := s.openCache(o.CachePath)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", prefix, err)
	}
	wait := s.timeout
	if cached {
		wait = min(wait, openFromCacheAfter) // a node with a copy starts soon
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	at, err := s.begin(ctx, cached)
	if err != nil && !cached {
		s.closeCache()
		return nil, fmt.Errorf("open %s: %w", prefix, err)
	}
	if err != nil {
		s.markDown(err)
		s.mu.RLock()
		at = int64(s.hist.through)
		s.log.Warn().Err(err).Int64("revision", at).Int("streams", len(s.local)).Str("cache", o.CachePath).
			Msg("etcd is unreachable: opened from the local copy; reads are stale and writes refused until it answers")
		s.mu.RUnlock()
	}
	select {
	case <-s.changed: // the first load is no change
	default:
	}
	wctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.watch(wctx, at+1)
	go s.check(wctx)
	return s, nil
}

// withDefaults is o with the defaults of what it leaves unset.
func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.AllocateTimeout <= 0 {
		o.AllocateTimeout = DefaultAllocateTimeout
	}
	o.AllocateTimeout = max(o.AllocateTimeout, o.Timeout)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AuditRetention <= 0 {
		o.AuditRetention = DefaultAuditRetention
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	return o
}

// openCache opens the file at path (none when path is empty) and starts
// the local copy from what it holds; it says whether it held a copy.
func (s *State) openCache(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	c, err := openCache(path)
	if err != nil {
		return false, err
	}
	snap, ok, err := c.load()
	if err != nil {
		c.close()
		return false, fmt.Errorf("%w; move the file aside to start from etcd alone", err)
	}
	s.cache = c
	if ok {
		s.local, s.stateRev, s.cluster = snap.specs, snap.stateRev, snap.cluster
		s.hist = history{History: desired.History{Base: snap.stateRev}, through: snap.through}
		s.alarm = snap.alarm
	}
	if s.alarm != nil {
		a := s.alarm
		s.log.Error().Str("reason", a.Reason).Time("since", a.Since).Uint64("node_revision", a.NodeRevision).
			Uint64("etcd_revision", a.StoreRevision).Int("deletes", a.Deletes).
			Msg("the local copy was held when this node stopped and stays held until an operator confirms: " + a.Message)
	}
	return ok, nil
}

func (s *State) closeCache() {
	if s.cache != nil {
		s.cache.close()
	}
}

// begin is where the watch starts: with a local copy, from the revision
// it is complete through (every change since is delivered, and vetted, as
// if the node had been watching), once etcd answered a read that the
// guard accepts and its history up to that revision is the copy's
// (vetHistory; past a compaction, from a read of every stream); without,
// from a read of every stream (load).
func (s *State) begin(ctx context.Context, cached bool) (int64, error) {
	if !cached {
		return s.load(ctx)
	}
	seen := s.through()
	resp, err := s.cli.Get(ctx, s.confirmKey)
	if err != nil {
		return 0, unavailable("open", err)
	}
	if s.vet(ctx, header{rev: resp.Header.Revision, cluster: resp.Header.ClusterId, seen: seen}) {
		return int64(seen), nil
	}
	if len(resp.Kvs) > 0 {
		s.sawConfirmation(resp.Kvs[0].ModRevision)
	}
	if err := s.vetHistory(ctx, resp.Header.Revision, resp.Header.ClusterId); err != nil {
		return 0, fmt.Errorf("open: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resume != 0 { // read again past a compaction
		at := s.resume - 1
		s.resume = 0
		return at, nil
	}
	return int64(seen), nil
}

// load reads every stream into the local copy and starts the history at
// the state's revision (nothing older is kept); it returns the etcd
// revision read at, from which the watch goes on. A read that the guard
// refuses (its revision below the copy's, another cluster) leaves the
// copy as it is, held; so does one that lacks more than half of the
// copy's streams, since whether they were deleted through this API
// cannot be told without the revisions in between.
func (s *State) load(ctx context.Context) (int64, error) {
	list, rev, hdr, err := s.list(ctx)
	if err != nil {
		return 0, err
	}
	if s.vet(ctx, hdr) {
		return hdr.rev, nil
	}
	if a := s.relistDeletes(list, hdr); a != nil {
		s.raise(a)
		return hdr.rev, nil
	}
	if s.deletesPending(list) {
		// etcd's lease deletes without rewriting the marker (expiry.go):
		// the read's revision, not the marker's, is the new state's.
		rev = max(rev, uint64(hdr.rev))
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.gen.Add(1) // deliveries of a watch from an older revision are dropped
	s.installLocked(list, rev, hdr)
	return hdr.rev, nil
}

// installLocked replaces the local copy (and its file) with list, read at
// hdr, the state at revision rev. The caller holds applyMu.
func (s *State) installLocked(list []stream.Spec, rev uint64, hdr header) {
	local := make(map[stream.ID]stream.Spec, len(list))
	for _, sp := range list {
		local[sp.ID()] = sp
	}
	if s.cache != nil {
		if err := s.cache.replace(snapshot{specs: local, through: uint64(hdr.rev), stateRev: rev, cluster: hdr.cluster}); err != nil {
			s.log.Error().Err(err).Msg("the local copy's file could not be written; a restart while etcd is unreachable would start from an older copy")
		}
	}
	s.mu.Lock()
	s.hist = history{History: desired.History{Base: rev}, through: uint64(hdr.rev)}
	s.local, s.stateRev, s.cluster = local, rev, hdr.cluster
	close(s.updated)
	s.updated = make(chan struct{})
	s.mu.Unlock()
	s.notify()
}

// Local returns the stream with id as the watch last delivered it, without
// asking etcd: for lookups that must not wait on the network (the traffic
// log's), never for a write's precondition.
func (s *State) Local(id stream.ID) (stream.Spec, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sp, ok := s.local[id]
	return sp.Clone(), ok
}

// Close stops the watch and the checks, and closes the local copy's
// file. The client stays open.
func (s *State) Close() error {
	s.stop()
	<-s.watchDone
	<-s.checkDone
	s.closeCache()
	return nil
}

// ctx is the context of one request to etcd.
func (s *State) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// unavailable wraps an error of the etcd client in ErrUnavailable.
func unavailable(op string, err error) error {
	return fmt.Errorf("%s: etcd: %w: %w", op, desired.ErrUnavailable, err)
}

func (s *State) key(id stream.ID) string { return s.marker + "/" + id.String() }

// idOf is the stream id of a key under the marker, or false for the
// marker itself.
func (s *State) idOf(key []byte) (stream.ID, bool) {
	rest, ok := strings.CutPrefix(string(key), s.marker+"/")
	if !ok {
		return stream.ID{}, false
	}
	id, err := stream.ParseID(rest)
	return id, err == nil
}

// decode is the spec a key holds, at the key's modification revision.
func decode(key, value []byte, modRev int64) (stream.Spec, error) {
	var sp stream.Spec
	if err := json.Unmarshal(value, &sp); err != nil {
		return sp, fmt.Errorf("decode stream %q: %w", key, err)
	}
	sp.Revision = uint64(modRev)
	return sp, nil
}

// Get returns the stream with id, read from etcd; from the local copy
// while etcd does not answer or the copy is held (see Condition).
func (s *State) Get(id stream.ID) (stream.Spec, error) {
	if s.frozen() {
		return s.localGet(id)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	cur, _, err := s.get(ctx, id)
	switch {
	case errors.Is(err, desired.ErrUnavailable):
		s.log.Warn().Err(err).Str("stream", id.String()).Msg("reading a stream from etcd failed; serving the local copy")
		return s.localGet(id)
	case err != nil:
		return stream.Spec{}, fmt.Errorf("get %s: %w", id, err)
	case cur == nil:
		return stream.Spec{}, fmt.Errorf("get %s: %w", id, desired.ErrNotFound)
	}
	return *cur, nil
}

// localGet is the stream with id in the local copy.
func (s *State) localGet(id stream.ID) (stream.Spec, error) {
	sp, ok := s.Local(id)
	if !ok {
		return stream.Spec{}, fmt.Errorf("get %s: %w", id, desired.ErrNotFound)
	}
	return sp, nil
}

// get reads the stream with id (nil: none) and its key's modification
// revision (0: none).
func (s *State) get(ctx context.Context, id stream.ID) (*stream.Spec, int64, error) {
	resp, err := s.cli.Get(ctx, s.key(id))
	if err != nil {
		return nil, 0, unavailable("read", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	kv := resp.Kvs[0]
	sp, err := decode(kv.Key, kv.Value, kv.ModRevision)
	if err != nil {
		return nil, 0, err
	}
	return &sp, kv.ModRevision, nil
}

// List returns every stream and the state's revision, as of a read of
// etcd made now: it reads the state's marker alone (one small request)
// and, once the watch delivered the marker's revision, answers from the
// local copy, without reading and decoding every stream again. If the
// watch does not deliver it within listCatchUp, it reads every stream
// from etcd in one request (one revision) instead. It returns the local
// copy as it is while etcd does not answer, while the copy is held, and
// while the watch has not yet delivered (and vetted) a deletion that
// etcd's answer shows: a node forwards no deletion the guard has not
// seen.
func (s *State) List() ([]stream.Spec, uint64) {
	if s.frozen() {
		return s.localList()
	}
	ctx, cancel := s.ctx()
	defer cancel()
	rev, hdr, err := s.markerRev(ctx)
	if err != nil {
		s.log.Warn().Err(err).Msg("reading the desired state's revision failed; serving the local copy")
		return s.localList()
	}
	if s.vet(ctx, hdr) || s.delivered(rev, listCatchUp) {
		return s.localList()
	}
	s.log.Warn().Uint64("revision", rev).Dur("within", listCatchUp).Msg("the etcd watch has not delivered the state's revision; reading every stream")
	list, rev, hdr, err := s.list(ctx)
	if err != nil {
		s.log.Warn().Err(err).Msg("listing the desired state failed; serving the local copy")
		return s.localList()
	}
	if s.vet(ctx, hdr) || s.deletesPending(list) {
		return s.localList()
	}
	return list, rev
}

// listCatchUp is how long List waits for the watch to deliver the
// state's revision before it reads every stream from etcd.
const listCatchUp = time.Second

// markerRev reads the state's revision (the marker's; 0 before any write)
// and the header of the read.
func (s *State) markerRev(ctx context.Context) (uint64, header, error) {
	seen := s.through()
	resp, err := s.cli.Get(ctx, s.marker)
	if err != nil {
		return 0, header{}, unavailable("read the state's revision", err)
	}
	var rev uint64
	if len(resp.Kvs) == 1 {
		rev = uint64(resp.Kvs[0].ModRevision)
	}
	return rev, header{rev: resp.Header.Revision, cluster: resp.Header.ClusterId, seen: seen}, nil
}

// delivered waits (at most within) until the local copy holds the state
// at revision rev or later, or is held (then it is the answer too), and
// says whether it did.
func (s *State) delivered(rev uint64, within time.Duration) bool {
	var deadline <-chan time.Time
	for {
		s.mu.RLock()
		done, updated := s.stateRev >= rev || s.alarm != nil || s.down != nil, s.updated
		s.mu.RUnlock()
		if done {
			return true
		}
		if deadline == nil {
			t := time.NewTimer(within)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-updated:
		case <-deadline:
			return false
		}
	}
}

// localList is the local copy, sorted, and its state's revision.
func (s *State) localList() ([]stream.Spec, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	list := make([]stream.Spec, 0, len(s.local))
	for _, sp := range s.local {
		list = append(list, sp.Clone())
	}
	sortSpecs(list)
	return list, s.stateRev
}

// deletesPending says whether the local copy holds a stream list lacks:
// a deletion the watch has not delivered yet.
func (s *State) deletesPending(list []stream.Spec) bool {
	in := make(map[stream.ID]bool, len(list))
	for _, sp := range list {
		in[sp.ID()] = true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for id := range s.local {
		if !in[id] {
			return true
		}
	}
	return false
}

// header is what a read says of etcd: its revision and cluster id, with
// the revision the local copy was complete through when it was sent (the
// watch may deliver past the read's revision meanwhile).
type header struct {
	rev     int64
	cluster uint64
	seen    uint64
}

// through is the revision the local copy is complete through.
func (s *State) through() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hist.through
}

// list reads every stream (sorted by protocol, then port), the state's
// revision (the marker's) and the header of the read.
func (s *State) list(ctx context.Context, opts ...clientv3.OpOption) ([]stream.Spec, uint64, header, error) {
	seen := s.through()
	s.fullReads.Add(1)
	resp, err := s.cli.Get(ctx, s.marker, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		return nil, 0, header{}, unavailable("list", err)
	}
	var rev uint64
	list := make([]stream.Spec, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if _, ok := s.idOf(kv.Key); !ok {
			if string(kv.Key) == s.marker {
				rev = uint64(kv.ModRevision)
			}
			continue
		}
		sp, err := decode(kv.Key, kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, header{}, err
		}
		list = append(list, sp)
	}
	sortSpecs(list)
	return list, rev, header{rev: resp.Header.Revision, cluster: resp.Header.ClusterId, seen: seen}, nil
}

func sortSpecs(l []stream.Spec) {
	slices.SortFunc(l, func(a, b stream.Spec) int {
		if c := strings.Compare(string(a.Protocol), string(b.Protocol)); c != 0 {
			return c
		}
		return a.Listen - b.Listen
	})
}

// Check returns nil while etcd answers a linearizable read (its cluster
// has a leader and a quorum) and the local copy is not held, else the
// reason wrapping ErrUnavailable (ErrHeld when held).
func (s *State) Check() error {
	if err := s.writable("check"); err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	if _, err := s.cli.Get(ctx, s.marker, clientv3.WithCountOnly()); err != nil {
		return unavailable("check", err)
	}
	return nil
}

// wrote records the revision of a write of this State.
func (s *State) wrote(rev int64) {
	for {
		cur := s.written.Load()
		if uint64(rev) <= cur || s.written.CompareAndSwap(cur, uint64(rev)) {
			return
		}
	}
}

var errContention = errors.New("gave up after too many concurrent writes")

// trimPrefix is prefix without its trailing slash.
func trimPrefix(prefix string) string { return strings.TrimSuffix(prefix, "/") }
