package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/internal/eventstest"
	"github.com/streamconductor/stream-conductor/stream"
)

func tcpSpec(port int, rev uint64, backend string) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{backend}, Revision: rev}
}

// The pool's listings tell what changed in the desired state: nothing
// for the first (the baseline), an event per stream after, nothing when
// the revision did not move, one Bulk past MaxEach.
func TestSpecDiffPublishesChangesAfterTheBaseline(t *testing.T) {
	rec := &eventstest.Recorder{}
	var d specDiff
	d.next(rec, []stream.Spec{tcpSpec(9000, 1, "a:1"), tcpSpec(9001, 2, "b:1")}, 2, 0)
	if evs := rec.Take(); len(evs) != 0 {
		t.Fatalf("the first listing (the baseline) published %v", evs)
	}
	d.next(rec, []stream.Spec{tcpSpec(9000, 3, "a:2"), tcpSpec(9002, 4, "c:1")}, 4, 0)
	evs := rec.Take()
	byType := map[string]events.StreamChange{}
	for _, ev := range evs {
		byType[ev.Type] = ev.Data.(events.StreamChange)
	}
	if len(evs) != 3 || len(byType) != 3 {
		t.Fatalf("events %v, want one created, one updated, one deleted", evs)
	}
	if c := byType[events.StreamCreated]; c.ID.Port != 9002 || c.Revision != 4 || c.Spec.Forwarding()[0] != "c:1" || c.Previous != nil {
		t.Errorf("created: %+v", c)
	}
	if c := byType[events.StreamUpdated]; c.ID.Port != 9000 || c.Revision != 3 || c.Spec.Forwarding()[0] != "a:2" || c.Previous == nil || c.Previous.Forwarding()[0] != "a:1" {
		t.Errorf("updated: %+v", c)
	}
	if c := byType[events.StreamDeleted]; c.ID.Port != 9001 || c.Revision != 4 || c.Spec.Forwarding()[0] != "b:1" {
		t.Errorf("deleted: %+v", c)
	}
	d.next(rec, []stream.Spec{tcpSpec(9000, 3, "a:2"), tcpSpec(9002, 4, "c:1")}, 4, 0)
	if evs := rec.Take(); len(evs) != 0 {
		t.Fatalf("a listing at the same revision published %v", evs)
	}

	var many []stream.Spec
	for i := range events.MaxEach + 1 {
		many = append(many, tcpSpec(10000+i, uint64(5+i), "d:1"))
	}
	many = append(many, tcpSpec(9000, 100, "a:3")) // updated; 9002 deleted
	d.next(rec, many, 100, 0)
	evs = rec.Take()
	if len(evs) != 1 || evs[0].Type != events.Bulk {
		t.Fatalf("%d changes at once published %d events (%v), want one bulk", events.MaxEach+3, len(evs), evs[0].Type)
	}
	b := evs[0].Data.(events.BulkChange)
	if b.What != "streams" || b.Revision != 100 || b.Counts["created"] != events.MaxEach+1 || b.Counts["updated"] != 1 || b.Counts["deleted"] != 1 || b.Shard != nil {
		t.Fatalf("bulk %+v", b)
	}

}

// A new timeline (a restore) starts its revisions again: a stream whose
// revision matches by chance but whose spec differs is updated; one whose
// spec is the same is not, whatever its revision.
func TestSpecDiffAcrossATimeline(t *testing.T) {
	rec := &eventstest.Recorder{}
	var d specDiff
	d.next(rec, []stream.Spec{tcpSpec(9000, 7, "a:1"), tcpSpec(9001, 8, "b:1"), tcpSpec(9002, 9, "c:1")}, 9, 0)
	d.next(rec, []stream.Spec{tcpSpec(9000, 7, "a:2"), tcpSpec(9001, 2, "b:1")}, 7, 1)
	var got []string
	for _, ev := range rec.Take() {
		got = append(got, fmt.Sprintf("%s %d", ev.Type, ev.Data.(events.StreamChange).ID.Port))
	}
	slices.Sort(got)
	if want := []string{"stream.deleted 9002", "stream.updated 9000"}; !slices.Equal(got, want) {
		t.Fatalf("after a restore: %v, want %v", got, want)
	}
}

// A pass publishes the statuses it changed: pending → active, pending →
// failed with the reason; nothing when a pass changes none.
func TestStatusTransitionsArePublished(t *testing.T) {
	h := newHarness(t)
	rec := &eventstest.Recorder{}
	h.rec.cfg.Events, h.rec.cfg.Node, h.rec.cfg.Shard = rec, "n1", 3
	h.ports.busy[9001] = true
	a := h.put(9000, "a:1")
	h.put(9001, "b:1")
	h.mustPass("test", "start")
	got := map[int]events.StatusChange{}
	for _, c := range eventstest.Data[events.StatusChange](rec.Take(events.StreamStatus)) {
		got[c.ID.Port] = c
	}
	if c := got[9000]; len(got) != 2 || c.State != stream.Active || c.Previous != stream.Pending || c.Revision != a.Revision || c.Node != "n1" || c.Shard != 3 {
		t.Fatalf("statuses %+v; tcp/9000 want pending → active at revision %d on n1, shard 3", got, a.Revision)
	}
	if c := got[9001]; c.State != stream.Failed || c.Previous != stream.Pending || !strings.Contains(c.Error, "Address already in use") {
		t.Fatalf("tcp/9001: %+v, want pending → failed with nginx's words", c)
	}
	h.mustPass()
	if evs := rec.Take(events.StreamStatus); len(evs) != 0 {
		t.Fatalf("a pass that changed nothing published %v", evs)
	}
	// The port is free again: the resync retries it, failed → active.
	h.ports.busy[9001] = false
	clear(h.rec.quarantine)
	h.rec.quarantineGen++
	h.mustPass("test", "reload")
	evs := rec.Take(events.StreamStatus)
	if len(evs) != 1 {
		t.Fatalf("statuses %v, want tcp/9001's only", evs)
	}
	if c := evs[0].Data.(events.StatusChange); c.ID.Port != 9001 || c.State != stream.Active || c.Previous != stream.Failed || c.Error != "" {
		t.Fatalf("tcp/9001: %+v, want failed → active", c)
	}
}

// More statuses changed in one pass than MaxEach: one Bulk of the shard,
// counted by state.
func TestStatusBulkPastMaxEach(t *testing.T) {
	h := newHarness(t)
	rec := &eventstest.Recorder{}
	h.rec.cfg.Events, h.rec.cfg.Shard = rec, 2
	for i := range events.MaxEach + 1 {
		h.put(20000+i, "a:1")
	}
	h.mustPass("test", "start")
	evs := rec.Take(events.Bulk)
	if len(evs) != 1 || len(rec.Take(events.StreamStatus)) != 0 {
		t.Fatalf("%d bulk events, want one and no status event", len(evs))
	}
	if b := evs[0].Data.(events.BulkChange); b.What != "statuses" || b.Shard == nil || *b.Shard != 2 || b.Counts["active"] != events.MaxEach+1 {
		t.Fatalf("bulk %+v", b)
	}
}

// Every start and reload of a master is published with its shard, its
// outcome and nginx's error; tests are not.
func TestReloadEventPerShardWithOutcome(t *testing.T) {
	h := newPoolHarness(t, 2)
	rec := &eventstest.Recorder{}
	h.pool.cfg.Events = rec
	for k := range 2 { // both masters fail to bind 9001
		f := newFakeNginx(ShardDir(h.dir, k))
		f.bindFails["0.0.0.0:9001"] = true
		h.fakes[k] = f
	}
	h.run()
	h.put(9000)
	sp := h.write(9001)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.pool.WaitApplied(ctx, sp.Revision, []stream.Spec{sp}); err != nil {
		t.Fatal(err)
	}
	h.put(9002)
	applies := map[int]int{} // starts and reloads by shard, as published
	failed := 0
	for _, r := range eventstest.Data[events.Reloaded](rec.Take(events.Reload)) {
		applies[r.Shard]++
		switch {
		case r.Op != "start" && r.Op != "reload":
			t.Fatalf("op %q", r.Op)
		case r.Outcome == "failed":
			failed++
			if !strings.Contains(r.Error, "bind() to 0.0.0.0:9001") {
				t.Fatalf("failed apply without nginx's words: %+v", r)
			}
		case r.Outcome != "ok" || r.Error != "":
			t.Fatalf("apply %+v", r)
		}
	}
	for k := range 2 {
		n := 0
		for _, a := range h.fake(k).takeActions() {
			if a == "start" || a == "reload" {
				n++
			}
		}
		if applies[k] != n {
			t.Fatalf("shard %d: %d applies published, its master did %d", k, applies[k], n)
		}
	}
	if failed != 1 {
		t.Fatalf("%d failed applies published, want 1 (9001's)", failed)
	}
}

// startedWithEvents returns a harness with the drift policy given and one
// stream, tcp/9000, applied by a first pass (a start), and the recorder
// of its events, which still holds that pass's.
func startedWithEvents(t *testing.T, policy DriftPolicy) (*harness, *eventstest.Recorder) {
	t.Helper()
	h := newHarness(t)
	rec := &eventstest.Recorder{}
	h.rec.cfg.Events, h.rec.cfg.DriftPolicy = rec, policy
	h.put(9000, "a:1")
	h.mustPass("test", "start")
	return h, rec
}

// A file of ours changed by someone else is published as drift when the
// pass finds it, and as repaired once the pass applied the store's file.
func TestDriftDetectedThenRepaired(t *testing.T) {
	h, rec := startedWithEvents(t, DriftRepair)
	rec.Take()
	h.write("stream-tcp-9000.conf", "# edited by hand\n")
	h.mustPass("test", "reload")
	evs := rec.Take()
	var kinds []string
	for _, ev := range evs {
		if d, ok := ev.Data.(events.Drift); ok {
			kinds = append(kinds, ev.Type)
			if d.Kind != "files" || len(d.Streams) != 1 || d.Streams[0].Port != 9000 {
				t.Fatalf("%s %+v, want files of tcp/9000", ev.Type, d)
			}
		}
	}
	if strings.Join(kinds, ",") != events.DriftDetected+","+events.DriftRepaired {
		t.Fatalf("drift events %v, want detected then repaired", kinds)
	}
	h.mustPass()
	if evs := rec.Take(events.DriftRepaired); len(evs) != 0 {
		t.Fatalf("a later pass published %v again", evs)
	}
}

// Drift left alone (DriftAlert) is published, never as repaired.
func TestDriftLeftAloneIsNotRepaired(t *testing.T) {
	h, rec := startedWithEvents(t, DriftAlert)
	h.write("stream-tcp-9000.conf", "# edited by hand\n")
	if _, err := h.pass(); err != nil {
		t.Fatal(err)
	}
	if evs := rec.Take(events.DriftDetected); len(evs) != 1 || !strings.Contains(evs[0].Data.(events.Drift).Detail, "alert") {
		t.Fatalf("detected %v, want one, left alone", evs)
	}
	if evs := rec.Take(events.DriftRepaired); len(evs) != 0 {
		t.Fatalf("drift left alone published as repaired: %v", evs)
	}
}

// A master that died is drift of kind master, and its start a restart.
func TestDeadMasterIsDriftAndItsStartARestart(t *testing.T) {
	h, rec := startedWithEvents(t, DriftRepair)
	rec.Take()
	h.nginx.mu.Lock()
	h.nginx.running = false
	h.nginx.mu.Unlock()
	h.mustPass("test", "start")
	var got []string
	for _, ev := range rec.Take() {
		switch d := ev.Data.(type) {
		case events.Drift:
			got = append(got, ev.Type+":"+d.Kind)
		case events.Reloaded:
			got = append(got, ev.Type+":"+d.Op+":"+d.Outcome)
		}
	}
	want := "drift.detected:master,reload:restart:ok,drift.repaired:master"
	if strings.Join(got, ",") != want {
		t.Fatalf("events %v, want %s", got, want)
	}
}

// The data of each event is what GET /v1/events sends: check one's JSON.
func TestStatusChangeJSON(t *testing.T) {
	b, err := json.Marshal(events.StatusChange{ID: stream.MustParseID("tcp/9000"), Shard: 0, State: stream.Active, Previous: stream.Pending, Revision: 7})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"tcp/9000","shard":0,"state":"active","previous":"pending","revision":7}`; string(b) != want {
		t.Fatalf("%s, want %s", b, want)
	}
}

// BenchmarkSpecDiff10000 is the pool's listing after one write among
// 10,000 streams.
func BenchmarkSpecDiff10000(b *testing.B) {
	specs := make([]stream.Spec, 10000)
	for i := range specs {
		specs[i] = tcpSpec(10000+i, uint64(i+1), "10.0.0.1:80")
	}
	var d specDiff
	rec := &eventstest.Recorder{}
	d.next(rec, specs, 10000, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		rev := uint64(10001 + i)
		specs[i%len(specs)].Revision = rev
		d.next(rec, specs, rev, 0)
	}
}
