package stream

import (
	"encoding/json"
	"testing"
)

func limitedSpec() Spec {
	return Spec{Protocol: TCP, Listen: 9000, Backends: []string{"a:1"}, MaxConnections: 10, MaxConnectionsPerClient: 2,
		UploadRate: "512k", DownloadRate: "1m", Deny: []string{"10.0.0.0/8"}}
}

// Each limit and the deny list are part of what a stream asks for: a
// change of any one is a change (the reconciler renders it again).
func TestLimits16SameDesiredSeesEveryLimit(t *testing.T) {
	a := limitedSpec()
	for name, change := range map[string]func(*Spec){
		"max_connections":            func(s *Spec) { s.MaxConnections = 11 },
		"max_connections_per_client": func(s *Spec) { s.MaxConnectionsPerClient = 3 },
		"upload_rate":                func(s *Spec) { s.UploadRate = "1m" },
		"download_rate":              func(s *Spec) { s.DownloadRate = "" },
		"deny":                       func(s *Spec) { s.Deny = append(s.Deny, "10.0.0.1/32") },
	} {
		b := a.Clone()
		change(&b)
		if a.SameDesired(b) {
			t.Errorf("a change of %s is not seen", name)
		}
	}
	if b := a.Clone(); !a.SameDesired(b) {
		t.Error("a clone differs")
	}
}

func TestLimits16CloneCopiesDeny(t *testing.T) {
	a := limitedSpec()
	b := a.Clone()
	b.Deny[0] = "192.0.2.0/24"
	if a.Deny[0] != "10.0.0.0/8" {
		t.Fatal("Clone shares the deny list")
	}
}

// The API shows the limits under their names and a GET's answer carries
// them back.
func TestLimits16ShownJSON(t *testing.T) {
	b, err := json.Marshal(limitedSpec().Shown())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	for k, want := range map[string]any{"max_connections": 10.0, "max_connections_per_client": 2.0,
		"upload_rate": "512k", "download_rate": "1m"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v in %s", k, m[k], want, b)
		}
	}
	if d, _ := m["deny"].([]any); len(d) != 1 || d[0] != "10.0.0.0/8" {
		t.Errorf("deny = %v in %s", m["deny"], b)
	}
	var back Shown
	if err := json.Unmarshal(b, &back); err != nil || !back.Spec.sameLimits(limitedSpec()) {
		t.Errorf("round trip: %+v, %v", back.Spec, err)
	}
	plain, _ := json.Marshal(Spec{Protocol: TCP, Listen: 1, Backends: []string{"a:1"}}.Shown())
	var pm map[string]any
	json.Unmarshal(plain, &pm)
	for _, k := range []string{"max_connections", "max_connections_per_client", "upload_rate", "download_rate", "deny"} {
		if _, ok := pm[k]; ok {
			t.Errorf("a stream without limits shows %s: %s", k, plain)
		}
	}
}
