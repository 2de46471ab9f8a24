package reconcile

import (
	"context"
	"os"
	"time"
)

// stopIdle stops the masters that are no longer needed: a shard at or
// above Shards once it has let go of its streams, and any other shard but
// 0 that has had no stream for IdleStop, so that a node that was busy
// once does not keep idle masters.
func (p *Pool) stopIdle(ctx context.Context) {
	var stop []*shard
	p.mu.Lock()
	now := time.Now()
	for k, s := range p.shards {
		if s == nil || k == 0 || s.retiring {
			continue
		}
		empty := p.counts[k] == 0 && len(s.view.specs) == 0 && p.shardApplied(s, p.listedRev)
		if !empty {
			s.emptySince = time.Time{}
			continue
		}
		if s.emptySince.IsZero() {
			s.emptySince = now
		}
		if s.draining || now.Sub(s.emptySince) >= p.cfg.IdleStop {
			s.retiring = true
			stop = append(stop, s)
		}
	}
	p.mu.Unlock()
	for _, s := range stop {
		p.stopShard(ctx, s)
	}
}

// stopShard ends shard s's reconciler, stops its master and removes its
// directories.
func (p *Pool) stopShard(ctx context.Context, s *shard) {
	s.cancel()
	<-s.done
	if names, err := ourNames(s.rec.cfg.Dir, p.cfg.Render.Prefix); err == nil && len(names) > 0 {
		// Its last pass could not remove them (immutable files): keep it.
		p.log.Warn().Int("shard", s.k).Int("files", len(names)).Msg("a shard to be stopped still has stream files; keeping it")
		p.mu.Lock()
		s.retiring = false
		p.mu.Unlock()
		s.start(ctx)
		return
	}
	if err := s.rec.nginx.Quit(ctx); err != nil {
		p.log.Error().Err(err).Int("shard", s.k).Msg("stop an nginx shard")
	}
	os.Remove(s.rec.cfg.Dir)
	p.mu.Lock()
	p.shards[s.k] = nil
	p.retired += s.rec.StatusVersion()
	p.version++
	p.mu.Unlock()
	p.log.Info().Int("shard", s.k).Bool("draining", s.draining).Msg("nginx shard stopped: no streams left on it")
}
