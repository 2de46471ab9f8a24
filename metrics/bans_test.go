package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBanMetrics(t *testing.T) {
	m := New(fakeSource{}, fakeStore{}, nil, nil, "")
	m.WatchBans(func() (int, uint64) { return 4, 17 })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{"stream_conductor_bans 4", "stream_conductor_bans_total 17"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(string(body), "stream_conductor_bans"))
		}
	}
}
