package main

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/writes"
)

// startExpiry deletes the streams whose time ran out while the daemon was
// down, before the reconciler starts nginx or applies anything, then
// expires the others at their deadlines until the returned stop.
func startExpiry(wp *writes.Path, log zerolog.Logger) (stop func()) {
	if _, err := wp.ExpireDue(); err != nil {
		log.Warn().Err(err).Msg("a stream whose time ran out while the daemon was down could not be deleted yet; trying again")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		wp.RunExpiry(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
