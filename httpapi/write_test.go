package httpapi

import (
	"errors"
	"fmt"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/nginxconf"
	"github.com/streamconductor/stream-conductor/policy"
	"github.com/streamconductor/stream-conductor/writes"
)

// Each refusal of the write path becomes one status, code, field and
// message; a policy that does not speak HTTP gets a 403 naming its rule.
func TestWritesErrorsBecomeStatuses(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
		field  string
		msg    string
	}{
		{&writes.PolicyError{Err: errors.New("10.1.2.3:22 is outside 127.0.0.0/8 (rule: BACKEND_ALLOW)")}, 403, CodeForbidden, "backends", "10.1.2.3:22 is outside 127.0.0.0/8 (rule: BACKEND_ALLOW)"},
		{&writes.PolicyError{Err: &policy.Violation{Rule: "loop", Message: "a loop"}}, 403, CodeForbidden, "backends", "a loop (rule: loop)"},
		{&writes.PortHeldError{Port: 9008, Err: errors.New("address in use")}, 409, CodePortInUse, "listen", "port 9008 is held by another process: address in use"},
		{&nginxconf.FieldError{Field: "allow", Message: "bad CIDR"}, 400, CodeInvalid, "allow", "bad CIDR"},
		{fmt.Errorf("put tcp/9000: %w", desired.ErrRevisionMismatch), 412, CodeRevision, "", "stream tcp/9000 has changed since that revision; GET it again"},
		{fmt.Errorf("put tcp/9000: %w", desired.ErrExists), 412, CodeRevision, "", "stream tcp/9000 already exists"},
		{fmt.Errorf("delete tcp/9000: %w", desired.ErrNotFound), 404, CodeNotFound, "", "no stream tcp/9000"},
		{desired.ErrNoFreePort, 409, CodeNoFreePort, "", "no free port in range"},
		{errors.New("disk on fire"), 500, CodeInternal, "", "internal error; see the daemon's log"},
	} {
		t.Run(tc.code+" "+tc.msg, func(t *testing.T) {
			e := asAPIError(writesError(tc.err, "tcp/9000"))
			if e.Status != tc.status || e.Code != tc.code || e.Field != tc.field || e.Message != tc.msg {
				t.Fatalf("%v: got %d %s %q %q", tc.err, e.Status, e.Code, e.Field, e.Message)
			}
		})
	}
}
