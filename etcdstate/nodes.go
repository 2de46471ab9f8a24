package etcdstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/stream"
)

// The node registry: P/nodes/<name> holds a node's stream.NodeInfo as
// JSON, under a lease the node keeps alive. A node that stops cleanly
// revokes its lease; one that dies disappears when its lease expires.

// DefaultNodeTTL is the lease of a node's key when NodeOptions give none.
const DefaultNodeTTL = 10 * time.Second

// DefaultPublishGap is the least time between two refreshes on Publish
// that do not advance the applied revision, when NodeOptions give none.
const DefaultPublishGap = 250 * time.Millisecond

// ErrNameTaken: another live node holds the name.
var ErrNameTaken = errors.New("node name taken")

// NodeOptions tune Register.
type NodeOptions struct {
	// TTL is the lease of the node's key (default DefaultNodeTTL, at
	// least 2s, whole seconds): how long a dead node stays listed.
	TTL time.Duration
	// Interval is how often the key's value is refreshed (default TTL/3).
	Interval time.Duration
	// PublishGap is the least time between two refreshes that Publish
	// asks for when the applied revision did not advance (default
	// DefaultPublishGap): a burst of status changes is written once.
	PublishGap time.Duration
	// Instance identifies this daemon's data directory (stream.NodeInfo.
	// Instance): a name held under the same instance is this node's own
	// key from before a restart, taken back at once.
	Instance string
	// Log receives what the registration handles itself: a failed
	// refresh, a lost lease claimed again.
	Log *zerolog.Logger
}

// Node is this node's registration, refreshed until Close.
type Node struct {
	cli     *clientv3.Client
	key     string
	ttl     int64
	every   time.Duration
	gap     time.Duration
	timeout time.Duration
	poke    chan struct{} // Publish's requests, folded into one
	info    func() stream.NodeInfo
	// instance is NodeOptions.Instance.
	instance string
	// epoch is the State's Epoch.
	epoch func() uint64
	log   zerolog.Logger

	mu    sync.Mutex
	lease clientv3.LeaseID
	keep  context.CancelFunc // ends the current lease's KeepAlive

	stop context.CancelFunc
	done chan struct{}
}

// Register puts P/nodes/<name> with info() under a lease kept alive by the
// client, and refreshes the value every Interval until Close. A name held
// by a node whose lease is still kept alive is refused (ErrNameTaken)
// after waiting one of its TTLs: a node that died holding it, such as
// this one before a crash, lets it go by then.
func (s *State) Register(ctx context.Context, name string, o NodeOptions, info func() stream.NodeInfo) (*Node, error) {
	if err := stream.CheckNodeName(name); err != nil {
		return nil, err
	}
	if o.TTL <= 0 {
		o.TTL = DefaultNodeTTL
	}
	ttl := max(int64((o.TTL+time.Second-1)/time.Second), 2)
	if o.Interval <= 0 {
		o.Interval = time.Duration(ttl) * time.Second / 3
	}
	if o.PublishGap <= 0 {
		o.PublishGap = DefaultPublishGap
	}
	lg := zerolog.Nop()
	if o.Log != nil {
		lg = *o.Log
	}
	n := &Node{cli: s.cli, key: s.prefix + "/nodes/" + name, ttl: ttl, every: o.Interval, gap: o.PublishGap, timeout: s.timeout, info: info, instance: o.Instance, epoch: s.Epoch,
		poke: make(chan struct{}, 1),
		log:  lg.With().Str("component", "etcdstate").Str("node", name).Logger(), done: make(chan struct{})}
	if err := n.claim(ctx); err != nil {
		return nil, err
	}
	lctx, stop := context.WithCancel(context.Background())
	n.stop = stop
	go n.run(lctx)
	return n, nil
}

// Nodes lists the registered nodes, by name.
func (s *State) Nodes(ctx context.Context) ([]stream.NodeInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+"/nodes/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, unavailable("list nodes", err)
	}
	nodes := make([]stream.NodeInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var ni stream.NodeInfo
		if err := json.Unmarshal(kv.Value, &ni); err != nil {
			return nil, fmt.Errorf("decode node %q: %w", kv.Key, err)
		}
		nodes = append(nodes, ni)
	}
	return nodes, nil
}

// claimPoll is how often a taken name is looked at again.
const claimPoll = 250 * time.Millisecond

// claim grants a lease and creates the key under it if no key is there,
// waiting (one TTL of the holder's lease, and a second) for a dead
// holder's key to expire.
func (n *Node) claim(ctx context.Context) error {
	lease, err := n.grant(ctx)
	if err != nil {
		return err
	}
	var deadline time.Time
	for {
		created, holder, err := n.create(ctx, lease)
		if created {
			n.adopt(lease)
			return nil
		}
		if err == nil && holder != nil && n.ours(holder) {
			n.log.Info().Msg("node name held by this node before a restart: taking it back")
			n.revoke(holder.lease)
			continue
		}
		if err == nil && holder != nil {
			err = n.taken(ctx, holder, &deadline)
		}
		if err != nil {
			n.revoke(lease)
			return err
		}
		select {
		case <-ctx.Done():
			n.revoke(lease)
			return fmt.Errorf("register %s: %w", n.key, ctx.Err())
		case <-time.After(claimPoll):
		}
	}
}

// grant is a new lease of the node's TTL.
func (n *Node) grant(ctx context.Context) (clientv3.LeaseID, error) {
	gctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	g, err := n.cli.Grant(gctx, n.ttl)
	if err != nil {
		return 0, unavailable("register node", err)
	}
	return g.ID, nil
}

// create puts the key under lease if it does not exist; otherwise it
// returns the key as it is (nil if it went meanwhile).
func (n *Node) create(ctx context.Context, lease clientv3.LeaseID) (bool, *holderKey, error) {
	val, err := value(n.stamped())
	if err != nil {
		return false, nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	resp, err := n.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(n.key), "=", 0)).
		Then(clientv3.OpPut(n.key, val, clientv3.WithLease(lease))).Else(clientv3.OpGet(n.key)).Commit()
	if err != nil {
		return false, nil, unavailable("register node", err)
	}
	if resp.Succeeded {
		return true, nil, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return false, nil, nil
	}
	h := &holderKey{lease: clientv3.LeaseID(kvs[0].Lease)}
	if err := json.Unmarshal(kvs[0].Value, &h.info); err != nil {
		h.info.Name = "(undecodable)" // for the message only
	}
	return false, h, nil
}

// ours reports whether h is this node's own key from before a restart:
// the same instance, under another lease.
func (n *Node) ours(h *holderKey) bool {
	return n.instance != "" && h.info.Instance == n.instance && h.lease != 0
}

// holderKey is the key another node holds.
type holderKey struct {
	lease clientv3.LeaseID
	info  stream.NodeInfo
}

// taken decides what a held name means: nil to look again, ErrNameTaken
// once the holder outlived its lease's TTL (it keeps it alive), or at once
// for a key under no lease (it never expires).
func (n *Node) taken(ctx context.Context, h *holderKey, deadline *time.Time) error {
	if h.lease == 0 {
		return fmt.Errorf("%w: %s is held by no lease; delete it (etcdctl del %s) if no node of that name runs", ErrNameTaken, n.key, n.key)
	}
	if deadline.IsZero() {
		wait := time.Duration(n.ttl) * time.Second
		tctx, cancel := context.WithTimeout(ctx, n.timeout)
		if ttl, err := n.cli.TimeToLive(tctx, h.lease); err == nil && ttl.GrantedTTL > 0 {
			wait = time.Duration(ttl.GrantedTTL) * time.Second
		}
		cancel()
		*deadline = time.Now().Add(wait + time.Second)
		n.log.Info().Str("holder_api", h.info.API).Dur("wait", wait).Msg("node name held; waiting for its lease to expire in case its holder is dead")
	}
	if time.Now().After(*deadline) {
		return fmt.Errorf("%w: node %q is registered by another live stream-conductor (API %s, last seen %s); two daemons with one NODE_NAME would fight: stop it or give this one another NODE_NAME",
			ErrNameTaken, h.info.Name, h.info.API, h.info.LastSeen.Format(time.RFC3339))
	}
	return nil
}

// adopt makes lease the node's and keeps it alive with the client's
// KeepAlive until the next adopt or Close.
func (n *Node) adopt(lease clientv3.LeaseID) {
	kctx, cancel := context.WithCancel(context.Background())
	n.mu.Lock()
	if n.keep != nil {
		n.keep()
	}
	n.lease, n.keep = lease, cancel
	n.mu.Unlock()
	ch, err := n.cli.KeepAlive(kctx, lease)
	if err != nil {
		n.log.Warn().Err(err).Msg("node lease keep-alive not started; the refreshes will claim the name again")
		return
	}
	go func() {
		for range ch { // drained until the lease ends or kctx does
		}
	}()
}

// stamped is info() with this node's instance and epoch. The epoch is
// read first: an applied revision read after it is of that epoch or a
// later one (after a confirmation the reconciler reports 0 until a pass
// on the new state), never of an earlier one under the later epoch.
func (n *Node) stamped() stream.NodeInfo {
	epoch := n.epoch()
	ni := n.info()
	ni.Instance, ni.Epoch = n.instance, epoch
	return ni
}

// value is ni as JSON, stamped now.
func value(ni stream.NodeInfo) (string, error) {
	ni.LastSeen = time.Now().UTC()
	b, err := json.Marshal(ni)
	if err != nil {
		return "", fmt.Errorf("encode node: %w", err)
	}
	return string(b), nil
}

// Publish asks for the key to be refreshed with what info() says now
// (after a reconcile pass). It never blocks. When the applied revision
// advanced since the last refresh, the refresh is sent at once, since
// writes wait for it; other changes (a status alone) are refreshed at
// most once per publish gap. Requests that arrive while a refresh is
// under way are folded into one, sent after it.
func (n *Node) Publish() {
	select {
	case n.poke <- struct{}{}:
	default:
	}
}

// run refreshes the key every interval, and on Publish as Publish says,
// until ctx ends.
func (n *Node) run(ctx context.Context) {
	defer close(n.done)
	tick := time.NewTicker(n.every)
	defer tick.Stop()
	var last time.Time
	var published uint64 // the applied revision of the last refresh
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.poke:
			if n.info().AppliedRevision <= published && !n.pause(ctx, n.gap-time.Since(last)) {
				return
			}
		}
		last = time.Now()
		ni := n.stamped()
		if err := n.refresh(ctx, ni); err != nil {
			if ctx.Err() == nil {
				n.log.Warn().Err(err).Msg("node registration not refreshed; trying again")
			}
			continue
		}
		published = ni.AppliedRevision
	}
}

// pause waits d (nothing if d <= 0); false if ctx ended first.
func (n *Node) pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// refresh rewrites the key with ni if it is still under our lease; if
// the lease was lost (etcd unreachable for longer than the TTL), it claims
// the name again.
func (n *Node) refresh(ctx context.Context, ni stream.NodeInfo) error {
	ni.Instance = n.instance
	val, err := value(ni)
	if err != nil {
		return err
	}
	n.mu.Lock()
	lease := n.lease
	n.mu.Unlock()
	tctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	resp, err := n.cli.Txn(tctx).If(clientv3.Compare(clientv3.LeaseValue(n.key), "=", lease)).
		Then(clientv3.OpPut(n.key, val, clientv3.WithLease(lease))).Commit()
	if err == nil && resp.Succeeded {
		return nil
	}
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return unavailable("refresh node", err)
	}
	n.log.Warn().Msg("node lease lost; registering again")
	return n.claim(ctx)
}

// revoke ends lease, which deletes the keys under it.
func (n *Node) revoke(lease clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), n.timeout)
	defer cancel()
	if _, err := n.cli.Revoke(ctx, lease); err != nil {
		n.log.Warn().Err(err).Msg("node lease not revoked; the key expires with it")
	}
}

// Close stops the refreshes and revokes the lease: the node leaves the
// registry at once.
func (n *Node) Close() {
	n.stop()
	<-n.done
	n.mu.Lock()
	lease, keep := n.lease, n.keep
	n.mu.Unlock()
	keep()
	n.revoke(lease)
}
