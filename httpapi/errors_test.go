package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/store"
)

// A write refused because the desired state takes no writes (bbolt's file
// was deleted or replaced: store.ErrDetached, a desired.ErrUnavailable) is
// a 503 store_unavailable whose message is the store's own words, which
// say how to recover; any other error stays a 500 that shows nothing.
func TestUnavailableStateIs503(t *testing.T) {
	detached := fmt.Errorf("put tcp/9000: %w", fmt.Errorf("%w: /data/state.db was deleted after it was opened; restart", store.ErrDetached))
	for _, tc := range []struct {
		err     error
		status  int
		code    string
		message string
	}{
		{detached, http.StatusServiceUnavailable, CodeStoreUnavailable, detached.Error()},
		{fmt.Errorf("etcd: %w", desired.ErrUnavailable), http.StatusServiceUnavailable, CodeStoreUnavailable, "etcd: desired state unavailable"},
		{errors.New("disk on fire"), http.StatusInternalServerError, CodeInternal, "internal error; see the daemon's log"},
	} {
		e := asAPIError(tc.err)
		if e.Status != tc.status || e.Code != tc.code || e.Message != tc.message {
			t.Errorf("%v: %d %s %q, want %d %s %q", tc.err, e.Status, e.Code, e.Message, tc.status, tc.code, tc.message)
		}
	}
}
