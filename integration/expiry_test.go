package integration

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Expiring streams: a stream given a ttl forwards until its deadline and
// stops within a second of it, deleted by the daemon with an audit entry
// "expired" and a stream.expired event; a renew keeps it; a deadline that
// passed while the daemon was stopped is applied when it starts.

// deadlineOf is the expires_at of a stream as the API shows it.
func deadlineOf(t *testing.T, m map[string]any) time.Time {
	t.Helper()
	v, _ := m["expires_at"].(string)
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("expires_at %q: %v (stream %v)", v, err, m)
	}
	return at
}

// accepts says whether a connection to 127.0.0.1:port is accepted.
func accepts(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// expiredEntry returns the audit entry of stream id's expiry, if any.
func expiredEntry(d *daemon, id string) map[string]any {
	d.t.Helper()
	_, m := d.api("GET", "/v1/audit?limit=100", "")
	entries, _ := m["entries"].([]any)
	for _, e := range entries {
		e := e.(map[string]any)
		if e["stream"] == id && e["route"] == "expired" {
			return e
		}
	}
	return nil
}

func TestExpiryStopsForwardingWithinASecond(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	ev := watchEvents(t, d, "types=stream.expired,stream.deleted")
	echoSrv := startEcho(t, "E:")
	port := d.portMin
	id := fmt.Sprintf("tcp/%d", port)

	m := d.mustPut("tcp", port, `{"backend":"`+echoSrv.addr()+`","ttl":"2s"}`)
	at := deadlineOf(t, m)
	if m["ttl"] != "2s" || m["expires_in_seconds"] == nil {
		t.Fatalf("PUT answered %v: want ttl 2s and expires_in_seconds", m)
	}
	if left := time.Until(at); left <= 0 || left > 2*time.Second {
		t.Fatalf("expires_at %s is %v away, want within the 2s ttl", at, left)
	}
	mustEcho(t, port, "E:")

	// Forwards until the deadline; refused within a second after it.
	var refusedAt time.Time
	eventually(t, "the port refused after the deadline", time.Until(at)+3*time.Second, func() bool {
		if accepts(port) {
			return false
		}
		refusedAt = time.Now()
		return true
	})
	t.Logf("port refused %v after expires_at", refusedAt.Sub(at))
	if late := refusedAt.Sub(at); late > time.Second {
		t.Fatalf("port %d refused %v after expires_at, want within 1s", port, late)
	}
	if refusedAt.Before(at.Add(-200 * time.Millisecond)) {
		t.Fatalf("port %d refused at %s, before its deadline %s", port, refusedAt, at)
	}
	if code, _ := d.api("GET", "/v1/streams/"+id, ""); code != 404 {
		t.Fatalf("GET the expired stream: %d, want 404", code)
	}
	if accepts(port) {
		t.Fatalf("port %d accepts again", port)
	}

	// The audit log and the events say it expired.
	var entry map[string]any
	eventually(t, "the audit entry of the expiry", 5*time.Second, func() bool {
		entry = expiredEntry(d, id)
		return entry != nil
	})
	if r, _ := entry["result"].(string); !strings.HasPrefix(r, "expired") || entry["before"] == nil || entry["after"] != nil || entry["token"] != "" {
		t.Fatalf("audit entry %v: want result expired, before the stream, after null, no token", entry)
	}
	got := ev.wait(0, "stream.expired", "stream.expired", 5*time.Second, isStream(id))
	if spec, _ := got.Data["spec"].(map[string]any); spec == nil || spec["expires_at"] == nil {
		t.Fatalf("stream.expired %v: want the spec with its expires_at", got.Data)
	}
	if n := ev.count(0, "stream.deleted", isStream(id)); n != 0 {
		t.Fatalf("%d stream.deleted events for an expiry, want stream.expired alone:\n%s", n, ev.summary())
	}
}

func TestExpiryRenewKeepsItForwarding(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	echoSrv := startEcho(t, "R:")
	port := d.portMin
	id := fmt.Sprintf("tcp/%d", port)
	first := deadlineOf(t, d.mustPut("tcp", port, `{"backend":"`+echoSrv.addr()+`","ttl":"2s"}`))

	code, m := d.api("POST", "/v1/streams/"+id+"/renew", `{"ttl":"6s"}`)
	if code != 200 {
		t.Fatalf("renew: %d %v", code, m)
	}
	renewed := deadlineOf(t, m)
	if !renewed.After(first.Add(3*time.Second)) || m["ttl"] != "6s" {
		t.Fatalf("renewed to %s (ttl %v), want about 6s from now, past %s", renewed, m["ttl"], first)
	}
	// Real bytes keep going through past the first deadline.
	for time.Now().Before(first.Add(1500 * time.Millisecond)) {
		mustEcho(t, port, "R:")
		time.Sleep(50 * time.Millisecond) // pacing the traffic, not synchronising
	}
	if code, _ := d.api("GET", "/v1/streams/"+id, ""); code != 200 {
		t.Fatalf("GET after the first deadline: %d, want the renewed stream", code)
	}

	// A renew without a body gives the stream's ttl again, from now.
	rev := m["revision"].(float64)
	code, m = d.api("POST", "/v1/streams/"+id+"/renew", "")
	if code != 200 || !deadlineOf(t, m).After(renewed) {
		t.Fatalf("renew without a body: %d %v, want a deadline after %s", code, m, renewed)
	}
	// If-Match is honoured: the old revision no longer holds.
	req, _ := newRequest("POST", d.url("/v1/streams/"+id+"/renew"), `{"ttl":"1h"}`)
	req.Header.Set("If-Match", fmt.Sprintf(`"%d"`, int(rev)))
	resp, err := d.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 412 {
		t.Fatalf("renew with a stale If-Match: %d, want 412", resp.StatusCode)
	}
	if code, _ := d.api("POST", fmt.Sprintf("/v1/streams/tcp/%d/renew", d.portMax), `{"ttl":"1h"}`); code != 404 {
		t.Fatalf("renew of a missing stream: %d, want 404", code)
	}
	mustEcho(t, port, "R:")
}

func TestExpiryWhileStoppedIsAppliedAtStart(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	echoSrv := startEcho(t, "S:")
	port, keep := d.portMin, d.portMax
	id := fmt.Sprintf("tcp/%d", port)
	at := deadlineOf(t, d.mustPut("tcp", port, `{"backend":"`+echoSrv.addr()+`","ttl":"2s"}`))
	d.mustPut("tcp", keep, `{"backend":"`+echoSrv.addr()+`","ttl":"1h"}`)
	mustEcho(t, port, "S:")

	d.stop() // nginx keeps forwarding while the daemon is down
	eventually(t, "the deadline to pass while the daemon is stopped", time.Until(at)+5*time.Second, func() bool {
		return time.Now().After(at.Add(500 * time.Millisecond))
	})
	if !accepts(port) {
		t.Fatalf("port %d was closed before the daemon started again: the test proves nothing", port)
	}
	d.start() // waits until ready: its first pass is done
	if accepts(port) {
		t.Fatalf("port %d accepts after the start, though its stream expired while the daemon was down", port)
	}
	if code, _ := d.api("GET", "/v1/streams/"+id, ""); code != 404 {
		t.Fatalf("GET the expired stream after the start: %d, want 404", code)
	}
	if e := expiredEntry(d, id); e == nil {
		t.Fatal("no audit entry of the expiry")
	}
	mustEcho(t, keep, "S:") // the stream with time left stays
}

// A fleet on etcd: a stream with a deadline expires even when every node
// is stopped then: etcd's lease deletes its key. A node started again
// (with its local copy) applies the deletion, closes the port its nginx
// kept open and records the audit entry; a node started afresh sees no
// stream.
func TestExpiryFleetLeaseWithEveryNodeStopped(t *testing.T) {
	t.Parallel()
	c := sharedCluster(t)
	f := startFleet(t, c, fleetOptions{nodes: 2, ports: 1})
	be := startEcho(t, "F:")
	port := f.portMin()
	id := fmt.Sprintf("tcp/%d", port)
	code, m := f.nodes[0].api("PUT", "/v1/streams/"+id, `{"backend":"`+be.addr()+`","ttl":"6s"}`)
	if code != 201 {
		t.Fatalf("PUT: %d %v", code, m)
	}
	at := deadlineOf(t, m)
	f.waitForwards(port, "F:", 5*time.Second)
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := f.prefix + "/streams/" + id
	get := func() []*mvccpb.KeyValue {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Kvs
	}
	if kvs := get(); len(kvs) != 1 || kvs[0].Lease == 0 {
		t.Fatalf("the stream's key in etcd: %v, want it under a lease", kvs)
	}

	for _, d := range f.nodes {
		d.stop() // nginx keeps running
	}
	if !time.Now().Before(at) {
		t.Fatal("the nodes stopped after the deadline: a node may have expired the stream, the test proves nothing")
	}
	eventually(t, "etcd deleting the expired stream's key", time.Until(at)+10*time.Second, func() bool { return len(get()) == 0 })
	if time.Now().Before(at) {
		t.Fatalf("the key was deleted before the deadline %s", at)
	}
	if !f.forwards(0, port, "F:") {
		t.Fatal("edge-1's nginx stopped forwarding while its daemon was down: the restart below proves nothing")
	}

	f.nodes[0].start()
	if !f.refuses(0, port) {
		t.Fatalf("edge-1 forwards port %d after its start, though etcd deleted the stream", port)
	}
	if code, _ := f.nodes[0].api("GET", "/v1/streams/"+id, ""); code != 404 {
		t.Fatalf("GET on edge-1 after the start: %d, want 404", code)
	}
	var entry map[string]any
	eventually(t, "the audit entry of the expiry by etcd's lease", 10*time.Second, func() bool {
		entry = expiredEntry(f.nodes[0], id)
		return entry != nil
	})
	if r, _ := entry["result"].(string); !strings.Contains(r, "lease") {
		t.Fatalf("audit entry %v: want the expiry by etcd's lease", entry)
	}

	fresh := newDaemon(t, 0, "STATE_STORE=etcd", "ETCD_ENDPOINTS="+strings.Join(c.Endpoints(), ","), "ETCD_PREFIX="+f.prefix,
		"NODE_NAME=edge-9", "NODE_TTL="+fleetNodeTTL, "STREAM_BIND_ADDRESS=127.0.0.19", fmt.Sprintf("PORT_RANGE=%d-%d", port, port))
	fresh.start()
	if _, m := fresh.api("GET", "/v1/streams", ""); len(m["streams"].([]any)) != 0 {
		t.Fatalf("a node started afresh lists %v", m["streams"])
	}
}
