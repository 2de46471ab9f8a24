package reconcile

import (
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/internal/eventstest"
	"github.com/streamconductor/stream-conductor/stream"
)

// A stream that leaves the desired state after its deadline is
// stream.expired (whoever removed it: this node, another, etcd's lease),
// one removed before it stream.deleted.
func TestSpecDiffTellsExpiredFromDeleted(t *testing.T) {
	rec := &eventstest.Recorder{}
	var d specDiff
	lapsed, ahead := tcpSpec(9000, 1, "a:1"), tcpSpec(9001, 2, "b:1")
	past, future := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
	lapsed.ExpiresAt, ahead.ExpiresAt = &past, &future
	d.next(rec, []stream.Spec{lapsed, ahead}, 2, 0)
	d.next(rec, nil, 3, 0)
	got := map[int]string{}
	for _, ev := range rec.Take() {
		got[ev.Data.(events.StreamChange).ID.Port] = ev.Type
	}
	if got[9000] != events.StreamExpired || got[9001] != events.StreamDeleted || len(got) != 2 {
		t.Fatalf("events by port %v, want 9000 expired and 9001 deleted", got)
	}
}
