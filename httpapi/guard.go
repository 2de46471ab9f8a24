package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/streamconductor/stream-conductor/policy"
)

// BackendPolicy decides where streams may point; the rules live in package
// policy, so that the reconciler applies them to resolved addresses too.
type BackendPolicy = policy.Backends

// checkBackends applies the backend policy to canonical backends: a 403
// naming the rule that refuses one of them, or nil.
func (s *Server) checkBackends(ctx context.Context, backends []string) error {
	err := s.cfg.Backends.Check(ctx, backends)
	if err == nil {
		return nil
	}
	var v *policy.Violation
	if errors.As(err, &v) {
		return &Error{Status: http.StatusForbidden, Code: CodeForbidden, Field: "backends", Message: v.Error()}
	}
	return errInvalid("backends", "%v", err)
}
