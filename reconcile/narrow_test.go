package reconcile

import (
	"strings"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// A refusal that names no file is narrowed down to the stream whose
// change caused it: that one fails with nginx's words, the others of the
// same pass apply, and the node is not held up: the next change applies.
func TestRefusalNamingNoFileIsNarrowedToItsStream(t *testing.T) {
	h := newHarness(t)
	h.nginx.unnamedHost = "long.invalid"
	h.put(9000, "good:1")
	h.mustPass("test", "start")
	for port, backend := range map[int]string{9001: "good:1", 9002: "good:2", 9003: "long.invalid:3", 9004: "good:4", 9005: "good:5"} {
		h.put(port, backend)
	}
	if _, err := h.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	for id, want := range map[string]stream.State{"tcp/9000": stream.Active, "tcp/9001": stream.Active, "tcp/9002": stream.Active,
		"tcp/9003": stream.Failed, "tcp/9004": stream.Active, "tcp/9005": stream.Active} {
		if st := h.state_(id); st.State != want {
			t.Errorf("%s is %s (%s), want %s", id, st.State, st.Error, want)
		}
	}
	if st := h.state_("tcp/9003"); !strings.Contains(st.Error, "could not build map_hash") {
		t.Errorf("error %q does not carry nginx's words", st.Error)
	}
	if _, ok := h.files()["stream-tcp-9003.conf"]; ok {
		t.Error("the stream at fault kept a file")
	}
	// Not held up: a later change applies with one test and one reload.
	h.put(9006, "good:6")
	h.mustPass("test", "reload")
	if st := h.state_("tcp/9006"); st.State != stream.Active {
		t.Errorf("a later stream is %s (%s)", st.State, st.Error)
	}
}

// Two streams at fault in one pass are both found, and each keeps its
// last good file when its update is what nginx refused.
func TestRefusalNamingNoFileFindsEveryStreamAtFault(t *testing.T) {
	h := newHarness(t)
	h.nginx.unnamedHost = "long.invalid"
	for port := 9000; port < 9008; port++ {
		h.put(port, "good:1")
	}
	h.mustPass("test", "start")
	before := h.files()["stream-tcp-9002.conf"]
	h.put(9002, "long.invalid:2")
	h.put(9006, "long.invalid:6")
	h.put(9007, "good:7")
	if _, err := h.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	for _, id := range []string{"tcp/9002", "tcp/9006"} {
		if st := h.state_(id); st.State != stream.Failed {
			t.Errorf("%s is %s, want failed", id, st.State)
		}
	}
	if st := h.state_("tcp/9007"); st.State != stream.Active {
		t.Errorf("tcp/9007 is %s (%s)", st.State, st.Error)
	}
	if got := h.files()["stream-tcp-9002.conf"]; got != before {
		t.Errorf("a refused update did not keep the last good file:\n%s", got)
	}
}

// When the refusal stays with every changed stream left out, it is not
// theirs: none is blamed, and the pass fails as before.
func TestRefusalNamingNoFileThatIsNobodysBlamesNoStream(t *testing.T) {
	h := newHarness(t)
	h.put(9000, "good:1")
	h.mustPass("test", "start")
	h.nginx.unnamedHost = "good:" // every file: the refusal does not go away
	h.put(9001, "good:2")
	h.put(9002, "good:3")
	if _, err := h.pass(); err == nil {
		t.Fatal("the pass succeeded")
	}
	for _, id := range []string{"tcp/9001", "tcp/9002"} {
		if st := h.state_(id); st.State == stream.Failed {
			t.Errorf("%s was blamed: %s", id, st.Error)
		}
	}
}
