package etcdstate

import (
	"github.com/streamconductor/stream-conductor/health"
	"github.com/streamconductor/stream-conductor/httpapi"
	"github.com/streamconductor/stream-conductor/metrics"
	"github.com/streamconductor/stream-conductor/reconcile"
)

// The daemon's consumers of the desired state take a State as they take
// the bbolt store.
var (
	_ reconcile.Store     = (*State)(nil)
	_ reconcile.Timelined = (*State)(nil) // revisions start again lower after a confirmation
	_ httpapi.Store       = (*State)(nil)
	_ metrics.Store       = (*State)(nil)
	_ health.Lister       = (*State)(nil)
)
