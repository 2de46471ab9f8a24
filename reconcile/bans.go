package reconcile

import (
	"bytes"

	"github.com/streamconductor/stream-conductor/stream"
)

// banned returns the addresses stream id refuses and their version
// (Config.Bans; none without it).
func (r *Reconciler) banned(id stream.ID) ([]string, uint64) {
	if r.cfg.Bans == nil {
		return nil, 0
	}
	return r.cfg.Bans(id)
}

// bansVersion is the version of stream id's bans.
func (r *Reconciler) bansVersion(id stream.ID) uint64 {
	_, v := r.banned(id)
	return v
}

// bansApplied tells Config.OnBansApplied which bans nginx now runs: those
// of each stream whose applied file is the one rendered with them (not a
// quarantined stream's older file).
func (r *Reconciler) bansApplied(applied map[string]file) {
	if r.cfg.OnBansApplied == nil {
		return
	}
	for _, f := range applied {
		c, ok := r.renderCache[f.spec.ID()]
		if ok && c.bans > 0 && bytes.Equal(c.body, f.body) {
			r.cfg.OnBansApplied(f.spec.ID(), c.bans)
		}
	}
}
