package stream

import (
	"slices"
	"testing"
)

func TestRoutesInSameDesiredAndClone(t *testing.T) {
	a := Spec{Protocol: TCP, Listen: 443, Backends: []string{"d:1"}, Routes: []Route{
		{ServerName: "a.example", Backends: []string{"a:1"}},
		{ServerName: "*.b.example", Backends: []string{"b:1", "a:1"}, Balance: LeastConn},
	}}
	c := a.Clone()
	if !a.SameDesired(c) {
		t.Fatal("a clone differs")
	}
	c.Routes[1].Backends[0] = "x:1"
	if a.Routes[1].Backends[0] != "b:1" {
		t.Fatal("Clone shares a route's backends")
	}
	for name, change := range map[string]func(*Spec){
		"server name": func(s *Spec) { s.Routes[0].ServerName = "c.example" },
		"backends":    func(s *Spec) { s.Routes[0].Backends = []string{"a:2"} },
		"balance":     func(s *Spec) { s.Routes[1].Balance = HashClientIP },
		"order":       func(s *Spec) { s.Routes[0], s.Routes[1] = s.Routes[1], s.Routes[0] },
		"none":        func(s *Spec) { s.Routes = nil },
	} {
		c := a.Clone()
		change(&c)
		if a.SameDesired(c) {
			t.Errorf("a change of %s is ignored", name)
		}
	}
	if got := a.AllBackends(); !slices.Equal(got, []string{"d:1", "a:1", "b:1"}) {
		t.Errorf("AllBackends = %v", got)
	}
	if !a.Routed() || (Spec{Backends: []string{"a:1"}}).Routed() {
		t.Error("Routed is wrong")
	}
}

func TestCanonicalServerName(t *testing.T) {
	for in, want := range map[string]string{"A.Example.": "a.example", "*.X.example": "*.x.example", "xn--p1ai": "xn--p1ai"} {
		if got, err := CanonicalServerName(in); err != nil || got != want {
			t.Errorf("%q = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"*", "*.", "a.*.b", "-a.b", "a..b", "10.0.0.1", "::1", "ä.example", "$x", "a;b", "a{b", "a b", "a\nb"} {
		if got, err := CanonicalServerName(in); err == nil {
			t.Errorf("%q accepted as %q", in, got)
		}
	}
}
