// Package etcdstate keeps the desired state (desired.State) in etcd, for a
// fleet of nodes that share it. Under a key prefix P:
//
//	P/streams            the state's marker: every write rewrites it, so its
//	                     modification revision is the state's revision
//	P/streams/<id>       one stream (id "tcp/9000"): its spec as JSON, as the
//	                     bbolt store keeps it; its revision is the key's
//	                     modification revision (a stream's ETag)
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
// the state was opened at; older ones are ErrCompacted.
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
)

// maxAttempts bounds the retries of a write whose transaction lost to a
// concurrent one: each retry means another write went through.
const maxAttempts = 1000

// Options tune Open.
type Options struct {
	// Timeout bounds each request to etcd (default DefaultTimeout).
	Timeout time.Duration
	// Now stamps created_at/updated_at (default time.Now).
	Now func() time.Time
	// AuditRetention is how many audit records are kept (default
	// DefaultAuditRetention).
	AuditRetention int
	// Log receives what the state handles itself: a failed list served
	// from the last one read, a watch that ended and starts again
	// (default: nothing is logged).
	Log *zerolog.Logger
}

// State is the desired state in etcd under one key prefix. It is safe for
// concurrent use, and several States (one per node) may share a prefix.
type State struct {
	cli            *clientv3.Client
	prefix         string
	marker         string // P/streams
	timeout        time.Duration
	now            func() time.Time
	auditRetention int
	log            zerolog.Logger

	// written is the highest revision of this State's own writes: Since
	// waits until the watch delivered it.
	written atomic.Uint64

	changed   chan struct{} // Changes: one consumer, sends coalesce
	stop      context.CancelFunc
	watchDone chan struct{}

	mu       sync.RWMutex
	hist     history
	local    map[stream.ID]stream.Spec // every stream, as the watch delivered it
	updated  chan struct{}             // closed when the watch delivers changes
	lastList []stream.Spec             // the last list read, served when etcd fails
	lastRev  uint64
}

var _ desired.State = (*State)(nil)

// Open returns the state under prefix (a key prefix such as
// "/stream-conductor"; a trailing slash is dropped) and starts watching it
// from the current revision. It does not close cli.
func Open(cli *clientv3.Client, prefix string, o Options) (*State, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AuditRetention <= 0 {
		o.AuditRetention = DefaultAuditRetention
	}
	lg := zerolog.Nop()
	if o.Log != nil {
		lg = *o.Log
	}
	prefix = trimPrefix(prefix)
	s := &State{cli: cli, prefix: prefix, marker: prefix + "/streams", timeout: o.Timeout, now: o.Now,
		auditRetention: o.AuditRetention, updated: make(chan struct{}), changed: make(chan struct{}, 1), watchDone: make(chan struct{}),
		log: lg.With().Str("component", "etcdstate").Str("prefix", prefix).Logger()}
	ctx, cancel := s.ctx()
	defer cancel()
	at, err := s.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", prefix, err)
	}
	wctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.watch(wctx, at+1)
	return s, nil
}

// load reads every stream into the local copy and starts the history at
// the state's revision (nothing older is kept); it returns the etcd
// revision read at, from which the watch goes on.
func (s *State) load(ctx context.Context) (int64, error) {
	list, rev, at, err := s.list(ctx)
	if err != nil {
		return 0, err
	}
	local := make(map[stream.ID]stream.Spec, len(list))
	for _, sp := range list {
		local[sp.ID()] = sp
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hist = history{History: desired.History{Base: rev}, through: uint64(at)}
	s.local = local
	return at, nil
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

// Close stops the watch. The client stays open.
func (s *State) Close() error {
	s.stop()
	<-s.watchDone
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

// Get returns the stream with id, read from etcd.
func (s *State) Get(id stream.ID) (stream.Spec, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	cur, _, err := s.get(ctx, id)
	switch {
	case err != nil:
		return stream.Spec{}, fmt.Errorf("get %s: %w", id, err)
	case cur == nil:
		return stream.Spec{}, fmt.Errorf("get %s: %w", id, desired.ErrNotFound)
	}
	return *cur, nil
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

// List returns every stream and the state's revision, read from etcd in
// one request (one revision). When etcd cannot be read it logs why and
// returns the last list it read.
func (s *State) List() ([]stream.Spec, uint64) {
	ctx, cancel := s.ctx()
	defer cancel()
	list, rev, _, err := s.list(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.log.Warn().Err(err).Uint64("revision", s.lastRev).
			Msg("listing the desired state failed; serving the last list read")
		return s.lastList, s.lastRev
	}
	if rev >= s.lastRev {
		s.lastList, s.lastRev = list, rev
	}
	return list, rev
}

// list reads every stream (sorted by protocol, then port), the state's
// revision (the marker's) and the etcd revision of the read.
func (s *State) list(ctx context.Context, opts ...clientv3.OpOption) ([]stream.Spec, uint64, int64, error) {
	resp, err := s.cli.Get(ctx, s.marker, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		return nil, 0, 0, unavailable("list", err)
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
			return nil, 0, 0, err
		}
		list = append(list, sp)
	}
	sortSpecs(list)
	return list, rev, resp.Header.Revision, nil
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
// has a leader and a quorum), else the reason wrapping ErrUnavailable.
func (s *State) Check() error {
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
