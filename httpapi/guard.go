package httpapi

import "github.com/streamconductor/stream-conductor/policy"

// BackendPolicy decides where streams may point; the rules live in package
// policy, so that the reconciler applies them to resolved addresses too,
// and the write path applies them to every write.
type BackendPolicy = policy.Backends
