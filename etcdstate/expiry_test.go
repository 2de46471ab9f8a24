package etcdstate

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// expiring is a spec whose deadline is in from now.
func expiring(port int, in time.Duration) stream.Spec {
	at := time.Now().Add(in).UTC().Truncate(time.Millisecond)
	return stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{"10.0.0.1:1"}, ExpiresAt: &at}
}

// leaseOf is the lease key is under (0: none, or no key).
func leaseOf(t *testing.T, key string) clientv3.LeaseID {
	t.Helper()
	resp := rawGet(t, key)
	if len(resp.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// leaseAlive says whether lease l still exists in etcd.
func leaseAlive(t *testing.T, l clientv3.LeaseID) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := sharedClient.TimeToLive(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	return resp.TTL > 0
}

func TestLeaseTTLOutlivesTheDeadline(t *testing.T) {
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		left time.Duration
		want int64
	}{{2 * time.Second, 3}, {1500 * time.Millisecond, 3}, {0, 1}, {-time.Minute, 1}, {time.Hour, 3601}} {
		if got := leaseTTL(now.Add(c.left), now); got != c.want {
			t.Errorf("leaseTTL(%v left) = %d, want %d", c.left, got, c.want)
		}
	}
}

// A stream with a deadline and its range index entry are put under one
// lease of their own; a renew is a new lease and the old one is revoked,
// as is the lease of a deleted stream; a stream without a deadline has
// none.
func TestExpiryLeasePerWrite(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	st := openState(t, sharedClient, prefix, Options{})
	sp := expiring(9000, time.Hour)
	sp.ListenEnd = 9003
	if _, _, err := st.Put(sp, desired.Match{}); err != nil {
		t.Fatal(err)
	}
	first := leaseOf(t, prefix+"/streams/tcp/9000")
	if first == 0 || leaseOf(t, prefix+"/ranges/tcp/9000") != first {
		t.Fatalf("stream lease %x, range index lease %x: want one lease for both", first, leaseOf(t, prefix+"/ranges/tcp/9000"))
	}
	renewed := sp
	at := sp.ExpiresAt.Add(time.Hour)
	renewed.ExpiresAt = &at
	if _, _, err := st.Put(renewed, desired.Match{}); err != nil {
		t.Fatal(err)
	}
	second := leaseOf(t, prefix+"/streams/tcp/9000")
	if second == 0 || second == first || leaseOf(t, prefix+"/ranges/tcp/9000") != second {
		t.Fatalf("after a renew: lease %x (was %x), want a new one for both keys", second, first)
	}
	if leaseAlive(t, first) {
		t.Fatalf("the replaced lease %x is still alive", first)
	}
	forever := renewed
	forever.ExpiresAt = nil
	if _, _, err := st.Put(forever, desired.Match{}); err != nil {
		t.Fatal(err)
	}
	if l := leaseOf(t, prefix+"/streams/tcp/9000"); l != 0 || leaseAlive(t, second) {
		t.Fatalf("a stream without a deadline is under lease %x (old %x alive: %v)", l, second, leaseAlive(t, second))
	}
	third := expiring(9100, time.Hour)
	if _, _, err := st.Put(third, desired.Match{}); err != nil {
		t.Fatal(err)
	}
	l := leaseOf(t, prefix+"/streams/tcp/9100")
	if _, _, err := st.Delete(third.ID(), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	if leaseAlive(t, l) {
		t.Fatalf("the lease %x of a deleted stream is still alive", l)
	}
	alloc, err := st.Allocate(expiring(0, time.Hour), 9200, 9210, nil)
	if err != nil || leaseOf(t, prefix+"/streams/"+alloc.ID().String()) == 0 {
		t.Fatalf("an allocated stream with a deadline: %v, lease %x", err, leaseOf(t, prefix+"/streams/"+alloc.ID().String()))
	}
	if _, err := st.Import([]stream.Spec{expiring(9300, time.Hour)}, false); err != nil || leaseOf(t, prefix+"/streams/tcp/9300") == 0 {
		t.Fatalf("an imported stream with a deadline: %v, lease %x", err, leaseOf(t, prefix+"/streams/tcp/9300"))
	}
}

// With no write path running (every node down), etcd's lease deletes an
// expired stream and its index entry; the nodes watching take it as the
// state's change (a new revision, not a mass deletion to hold), and one
// of them records the audit entry "expired", once.
func TestExpiryLeaseDeletesWithNoNodeRunning(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	a := openState(t, sharedClient, prefix, Options{Node: "a", CachePath: filepath.Join(t.TempDir(), "a.db")})
	b := openState(t, newClient(t), prefix, Options{Node: "b"})
	sp := expiring(9000, 1500*time.Millisecond)
	sp.ListenEnd = 9001
	stored, _, err := a.Put(sp, desired.Match{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*State{a, b} {
		if _, err := st.Get(sp.ID()); err != nil {
			t.Fatal(err)
		}
	}
	_, before := b.List()
	deadline := time.Now().Add(15 * time.Second)
	for len(rawGet(t, prefix+"/streams/tcp/9000").Kvs) > 0 || len(rawGet(t, prefix+"/ranges/tcp/9000").Kvs) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("etcd did not delete the expired stream and its index entry")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if late := time.Since(*stored.ExpiresAt); late < 0 {
		t.Fatalf("etcd deleted the stream %v before its deadline", -late)
	}
	for name, st := range map[string]*State{"a": a, "b": b} {
		for {
			list, rev := st.List()
			if len(list) == 0 {
				if rev <= before {
					t.Fatalf("node %s: the state lost its stream without a new revision (%d, was %d)", name, rev, before)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s still lists %v", name, list)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if c := st.Condition(); c.Alarm != nil {
			t.Fatalf("node %s holds its copy: %s", name, c.Alarm.Message)
		}
	}
	var found []desired.AuditRecord
	for time.Now().Before(deadline) {
		recs, err := a.Audit(0, 10)
		if err != nil {
			t.Fatal(err)
		}
		found = found[:0]
		for _, r := range recs {
			if r.Operation == desired.OpExpired && r.Stream == "tcp/9000" {
				found = append(found, r)
			}
		}
		if len(found) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(found) != 1 || !strings.Contains(found[0].Result, "lease") || found[0].Before == nil {
		t.Fatalf("audit records of the expiry: %+v, want one, by etcd's lease, with the stream before", found)
	}
	// The other node's claim lost: still one record once both have seen it.
	if recs, _ := b.Audit(0, 10); len(recs) != 1 {
		t.Fatalf("%d audit records, want 1", len(recs))
	}
}

// A restored stream with a deadline is put under a lease of its own, as a
// write would put it.
func TestExpiryRestoredUnderALease(t *testing.T) {
	needEtcd(t)
	st := openState(t, sharedClient, newPrefix(), Options{})
	if _, _, err := st.Put(expiring(9000, time.Hour), desired.Match{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Put(stream.Spec{Protocol: stream.TCP, Listen: 9001, Backends: []string{"10.0.0.1:1"}}, desired.Match{}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := st.Backup(&buf, func(desired.BackupInfo) {}); err != nil {
		t.Fatal(err)
	}
	prefix := newPrefix()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Restore(ctx, sharedClient, prefix, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if l := leaseOf(t, prefix+"/streams/tcp/9000"); l == 0 || !leaseAlive(t, l) {
		t.Fatalf("the restored stream with a deadline is under lease %x", l)
	}
	if l := leaseOf(t, prefix+"/streams/tcp/9001"); l != 0 {
		t.Fatalf("the restored stream without a deadline is under lease %x", l)
	}
}

// A write whose answer was lost (a timeout) may have been applied: its
// lease must not be revoked, which would delete the stream it wrote. One
// etcd refused outright (too many operations) was not.
func TestLeaseKeptWhenTheWriteMayHaveApplied(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{unavailable("write", context.DeadlineExceeded), true},
		{fmt.Errorf("a transaction of 9 operations: %w", rpctypes.ErrTooManyOps), false},
	} {
		if got := mayHaveApplied(tc.err); got != tc.want {
			t.Errorf("mayHaveApplied(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
