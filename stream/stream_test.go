package stream

import "testing"

func TestParseID(t *testing.T) {
	for id, ok := range map[string]bool{
		"tcp/9000": true, "udp/53": true, "tcp/65535": true,
		"TCP/9000": false, "tcp/09000": false, "tcp/0": false, "tcp/65536": false,
		"tcp/+1": false, "sctp/1": false, "tcp": false, "tcp/9000/x": false, "": false,
	} {
		p, port, err := ParseID(id)
		if (err == nil) != ok {
			t.Errorf("ParseID(%q) err = %v", id, err)
			continue
		}
		if ok && MakeID(p, port) != id {
			t.Errorf("ParseID(%q) does not round-trip: %s", id, MakeID(p, port))
		}
	}
}

func TestSameDesiredIgnoresStoreFields(t *testing.T) {
	one := 1
	a := Spec{Protocol: TCP, Listen: 9000, Backends: []string{"a:1"}, MaxFails: &one, Revision: 1}
	b := a.Clone()
	b.Revision = 7
	if !a.SameDesired(b) {
		t.Error("revision made specs differ")
	}
	two := 2
	b.MaxFails = &two
	if a.SameDesired(b) {
		t.Error("max_fails ignored")
	}
	c := a.Clone()
	c.Backends[0] = "b:1"
	if a.Backends[0] != "a:1" || a.SameDesired(c) {
		t.Error("Clone shares backends, or backends ignored")
	}
}
