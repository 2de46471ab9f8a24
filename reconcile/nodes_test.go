package reconcile

import (
	"testing"

	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// A node applies only the streams that target it: a stream of another
// node is neither rendered nor counted here; one that stops naming this
// node has its file removed. NodeStatus counts this node's streams and
// lists those not active, which the node publishes to its fleet.
func TestOnlyThisNodesStreamsAreApplied(t *testing.T) {
	h := newHarness(t)
	h.rec.cfg.Node = "edge-1"
	h.nginx.rejectHost = "bad.invalid"
	putOn := func(port int, backend string, nodes ...string) {
		t.Helper()
		if _, _, err := h.store.Put(stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{backend}, Nodes: nodes}, store.Match{}); err != nil {
			t.Fatal(err)
		}
	}
	putOn(9000, "a:1")
	putOn(9001, "a:1", "edge-2")
	putOn(9002, "a:1", "edge-1", "edge-2")
	putOn(9003, "bad.invalid:1", "edge-1")
	h.mustPass("test", "test", "start")
	files := h.files()
	if len(files) != 2 || files["stream-tcp-9001.conf"] != "" || files["stream-tcp-9000.conf"] == "" || files["stream-tcp-9002.conf"] == "" {
		t.Fatalf("files %v: want tcp/9000 and tcp/9002 only", files)
	}
	ns := h.rec.NodeStatus()
	if ns.Streams != (stream.NodeStreams{Active: 2, Failed: 1}) || len(ns.NotActive) != 1 || ns.NotActive[0].ID.Port != 9003 ||
		ns.NotActive[0].State != stream.Failed || ns.NotActive[0].Error == "" {
		t.Fatalf("NodeStatus streams %+v, not active %+v", ns.Streams, ns.NotActive)
	}

	putOn(9002, "a:1", "edge-2")
	h.mustPass("test", "reload")
	if files := h.files(); len(files) != 1 || files["stream-tcp-9000.conf"] == "" {
		t.Fatalf("after tcp/9002 left edge-1: files %v", files)
	}
	if got := h.rec.NodeStatus().Streams; got != (stream.NodeStreams{Active: 1, Failed: 1}) {
		t.Fatalf("after tcp/9002 left edge-1: streams %+v", got)
	}
}
