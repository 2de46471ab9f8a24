package reconcile

import "github.com/streamconductor/stream-conductor/stream"

// A shard's size is the ports its master listens on, not its streams: a
// 1,000-port range costs its master 1,000 listening sockets, open files
// in every nginx process, worker_connections slots and reload work, like
// 1,000 single streams. So placement weighs each stream by its ports
// (stream.Spec.PortCount: 1 for one port) wherever it compares a shard
// with the target size or with the open-file limit. Every helper here is
// called with p.mu held.

// placeOn records that stream id, of w ports, is on shard k.
func (p *Pool) placeOn(id stream.ID, k, w int) {
	p.place[id] = k
	p.weight[id] = w
	p.counts[k] += w
	p.ports += w
}

// unplace forgets where stream id is.
func (p *Pool) unplace(id stream.ID) {
	p.unmarkGone(id)
	k, ok := p.place[id]
	if !ok {
		return
	}
	w := p.weight[id]
	p.counts[k] -= w
	p.ports -= w
	delete(p.place, id)
	delete(p.weight, id)
}

// reweigh sets the ports of placed stream id to w: a stream adopted from
// its file counts one port until it is listed, and a range may grow or
// shrink.
func (p *Pool) reweigh(id stream.ID, w int) {
	k, ok := p.place[id]
	if !ok || p.weight[id] == w {
		return
	}
	d := w - p.weight[id]
	p.weight[id] = w
	p.counts[k] += d
	p.ports += d
}

// markGone records that placed stream id was deleted at revision rev.
func (p *Pool) markGone(id stream.ID, rev uint64) {
	if _, g := p.gone[id]; g {
		return
	}
	p.gone[id] = rev
	p.gonePorts += p.weight[id]
}

// unmarkGone forgets that stream id was deleted: it is listed again, or
// its shard applied the deletion.
func (p *Pool) unmarkGone(id stream.ID) {
	if _, g := p.gone[id]; !g {
		return
	}
	delete(p.gone, id)
	p.gonePorts -= p.weight[id]
}

// target is the ports a shard is filled with before the next idle one is
// preferred to it: an even share of the ports placed (streams deleted
// but not yet removed by their shard do not count), and at least
// minTarget.
func (p *Pool) target() int {
	return max(minTarget, (p.ports-p.gonePorts+p.cfg.Shards)/p.cfg.Shards)
}

// hasRoom reports whether shard k's master may listen on w more ports
// within the open-file limit it inherits.
func (p *Pool) hasRoom(k, w int) bool {
	of := p.cfg.OpenFiles
	return of == nil || p.counts[k]+w <= of.MaxStreams
}
