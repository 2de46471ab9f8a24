package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/writes"
)

// sharedStore is a store that says its condition and takes confirmations,
// as the etcd state does.
type sharedStore struct {
	*store.Store
	cond      desired.Condition
	confirmed []string
}

func (s *sharedStore) Condition() desired.Condition { return s.cond }

func (s *sharedStore) Confirm(_ context.Context, by string) (desired.Confirmation, error) {
	s.confirmed = append(s.confirmed, by)
	s.cond = desired.Condition{}
	return desired.Confirmation{By: by, ClusterID: "abc", Revision: 7}, nil
}

func newSharedServer(t *testing.T, cond desired.Condition) (*Server, *sharedStore) {
	t.Helper()
	_, st, ap := newTestServer(t)
	sh := &sharedStore{Store: st, cond: cond}
	wp := writes.New(writes.Config{PortMin: 9000, PortMax: 9009, ApplyTimeout: 200 * time.Millisecond, Log: zerolog.Nop()}, sh, ap, nil)
	t.Cleanup(wp.Close)
	return New(Config{PortMin: 9000, PortMax: 9009, ApplyTimeout: 200 * time.Millisecond, Log: zerolog.Nop()}, sh, ap, wp), sh
}

// While the node serves its local copy, every GET says so in a header,
// /v1/status in stale and alarm objects; writes that the store refuses as
// held answer 503 state_held.
func TestStaleAndHeldAreShown(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	al := &desired.Alarm{Reason: "revision_backwards", Message: "etcd was restored", Since: since, NodeRevision: 9, StoreRevision: 4, Deletes: 2}
	srv, _ := newSharedServer(t, desired.Condition{Stale: &desired.Stale{Since: since, Reason: "held: etcd was restored"}, Alarm: al})
	for _, path := range []string{"/v1/streams", "/v1/status", "/readyz"} {
		rec, _ := do(t, srv, call{method: "GET", path: path})
		if h := rec.Header().Get(StaleHeader); h != "held: etcd was restored; since 2026-01-02T03:04:05Z" {
			t.Errorf("GET %s: %s %q", path, StaleHeader, h)
		}
	}
	_, m := do(t, srv, call{method: "GET", path: "/v1/status"})
	if a, _ := m["alarm"].(map[string]any); a["reason"] != "revision_backwards" || a["deletes"] != float64(2) || m["stale"] == nil {
		t.Fatalf("status: alarm %v, stale %v", m["alarm"], m["stale"])
	}
	if e := asAPIError(fmt.Errorf("put tcp/9000: %w: etcd was restored", desired.ErrHeld)); e.Status != http.StatusServiceUnavailable || e.Code != CodeStateHeld {
		t.Fatalf("a held write: %d %s", e.Status, e.Code)
	}
	current, _ := newSharedServer(t, desired.Condition{})
	if rec, m := do(t, current, call{method: "GET", path: "/v1/status"}); rec.Header().Get(StaleHeader) != "" || m["alarm"] != nil || m["stale"] != nil {
		t.Fatalf("a current node: header %q, alarm %v, stale %v", rec.Header().Get(StaleHeader), m["alarm"], m["stale"])
	}
}

// POST /v1/state/confirm: refused from another site's page like every
// write; accepted otherwise, it confirms once and shows the alarm it
// cleared. A node without a shared state has nothing to confirm.
func TestConfirmState(t *testing.T) {
	al := &desired.Alarm{Reason: "mass_deletion", Message: "3 streams deleted outside the API"}
	srv, sh := newSharedServer(t, desired.Condition{Alarm: al})
	rec, _ := do(t, srv, call{method: "POST", path: "/v1/state/confirm", header: map[string]string{"Sec-Fetch-Site": "cross-site"}})
	if rec.Code != http.StatusForbidden || len(sh.confirmed) != 0 {
		t.Fatalf("a cross-site confirm: %d, confirmed %v", rec.Code, sh.confirmed)
	}
	rec, m := do(t, srv, call{method: "POST", path: "/v1/state/confirm"})
	if rec.Code != http.StatusOK || len(sh.confirmed) != 1 || !strings.Contains(sh.confirmed[0], "192.0.2.1") {
		t.Fatalf("confirm: %d %v, confirmed %v", rec.Code, m, sh.confirmed)
	}
	if c, _ := m["confirmed"].(map[string]any); c["revision"] != float64(7) || m["alarm_cleared"].(map[string]any)["reason"] != "mass_deletion" {
		t.Fatalf("confirm answered %v", m)
	}
	own, _, _ := newTestServer(t)
	if rec, m := do(t, own, call{method: "POST", path: "/v1/state/confirm"}); rec.Code != http.StatusNotFound {
		t.Fatalf("confirm with bbolt: %d %v", rec.Code, m)
	}
}
