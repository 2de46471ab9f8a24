package stream

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestParseID(t *testing.T) {
	for id, ok := range map[string]bool{
		"tcp/9000": true, "udp/53": true, "tcp/65535": true,
		"TCP/9000": false, "tcp/09000": false, "tcp/0": false, "tcp/65536": false,
		"tcp/+1": false, "sctp/1": false, "tcp": false, "tcp/9000/x": false, "": false,
	} {
		got, err := ParseID(id)
		if (err == nil) != ok {
			t.Errorf("ParseID(%q) err = %v", id, err)
			continue
		}
		if ok && got.String() != id {
			t.Errorf("ParseID(%q) does not round-trip: %s", id, got)
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

// An ID is a JSON map key and value in its text form, so the API's
// answers and the store's keys read "tcp/9000" as before.
func TestIDJSON(t *testing.T) {
	id := ID{Protocol: UDP, Port: 53}
	b, err := json.Marshal(map[ID]ID{id: id})
	if err != nil || string(b) != `{"udp/53":"udp/53"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var back map[ID]ID
	if err := json.Unmarshal(b, &back); err != nil || back[id] != id {
		t.Fatalf("Unmarshal = %v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"tcp/0":"tcp/1"}`), &back); err == nil {
		t.Error("a bad id key decoded")
	}
}

func TestParseBackend(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM:2000": "example.com:2000", "10.0.0.1:1": "10.0.0.1:1",
		"[2001:DB8::1]:53": "[2001:db8::1]:53",
		"a:0":              "", "a:65536": "", "a:01": "", "::1:53": "", "[::ffff:1.2.3.4]:1": "",
		"127.1:80": "", "0x7f.0x1:80": "", "a b:1": "", "-a:1": "", "": "",
	} {
		b, err := ParseBackend(in)
		if (err == nil) != (want != "") || err == nil && b.String() != want {
			t.Errorf("ParseBackend(%q) = %v, %v; want %q", in, b, err, want)
		}
	}
	if b, _ := ParseBackend("10.0.0.1:1"); !b.IsIP() {
		t.Error("an IP literal is not IsIP")
	}
	if b, _ := ParseBackend("db:1"); b.IsIP() {
		t.Error("a name is IsIP")
	}
}

// ListenAddr is the address as nginx prints it, whatever spelling the
// bind addresses had.
func TestListenAddr(t *testing.T) {
	for _, tc := range []struct{ bind, def, want string }{
		{"", "", "0.0.0.0:9000"},
		{"", "127.0.0.2", "127.0.0.2:9000"},
		{"127.0.0.1", "127.0.0.2", "127.0.0.1:9000"},
		{"::1", "", "[::1]:9000"},
		{"", "[::1]", "[::1]:9000"},
	} {
		got := Spec{Protocol: TCP, Listen: 9000, Bind: tc.bind}.ListenAddr(tc.def)
		if got.String() != tc.want {
			t.Errorf("ListenAddr(bind %q, default %q) = %s, want %s", tc.bind, tc.def, got, tc.want)
		}
		if p, err := ParseListenAddr(tc.want); err != nil || p != got {
			t.Errorf("ParseListenAddr(%q) = %v, %v", tc.want, p, err)
		}
	}
}

// A routed stream is shown (GET, events) with routes and default and no
// backends; another with its backends, even none.
func TestShownJSON(t *testing.T) {
	routed := Spec{Protocol: TCP, Listen: 443, Backends: []string{"10.0.0.9:443"},
		Routes: []Route{{ServerName: "db.example.com", Backends: []string{"10.0.0.5:5432"}}}}
	b, _ := json.Marshal(routed.Shown())
	if !strings.Contains(string(b), `"default":["10.0.0.9:443"]`) || strings.Contains(string(b), `"backends":["10.0.0.9`) {
		t.Errorf("routed stream shown as %s", b)
	}
	var back Shown
	if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back.Forwarding(), routed.Backends) {
		t.Errorf("forwarding after a round trip: %v (%v)", back.Forwarding(), err)
	}
	b, _ = json.Marshal(Spec{Protocol: TCP, Listen: 9000}.Shown())
	if !strings.Contains(string(b), `"backends":[]`) || strings.Contains(string(b), `"default"`) {
		t.Errorf("plain stream shown as %s", b)
	}
}

func TestBanIsDesiredAndCloned(t *testing.T) {
	a := Spec{Protocol: TCP, Listen: 9000, Backends: []string{"a:1"}, Ban: &BanPolicy{After: 3, Within: "1m0s", For: "1h0m0s"}}
	b := a.Clone()
	b.Ban.After = 4
	if a.Ban.After != 3 {
		t.Fatal("Clone shares ban")
	}
	if a.SameDesired(b) {
		t.Error("ban.after ignored")
	}
	c := a.Clone()
	c.Ban = nil
	if a.SameDesired(c) || !a.SameDesired(a.Clone()) {
		t.Error("ban presence ignored, or a clone differs")
	}
	out, _ := json.Marshal(a.Shown())
	if !strings.Contains(string(out), `"ban":{"after":3,"within":"1m0s","for":"1h0m0s"}`) {
		t.Errorf("shown = %s", out)
	}
}
