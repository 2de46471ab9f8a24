package main

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/writes"
)

// startExpiryWait bounds how long the start waits for the streams whose
// time ran out while the daemon was down to be deleted.
const startExpiryWait = 5 * time.Second

// startExpiry deletes the streams whose time ran out while the daemon was
// down, before the reconciler starts nginx or applies anything, then
// expires the others at their deadlines until the returned stop.
func startExpiry(wp *writes.Path, log zerolog.Logger) (stop func()) {
	if err := wp.ExpireAtStart(startExpiryWait); err != nil {
		log.Warn().Err(err).Msg("streams whose time ran out while the daemon was down are served until they can be deleted; trying again")
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
