package main

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/bans"
	"github.com/streamconductor/stream-conductor/events"
	"github.com/streamconductor/stream-conductor/httpapi"
	"github.com/streamconductor/stream-conductor/stream"
	"github.com/streamconductor/stream-conductor/traffic"
)

// parseBanExempt reads BAN_EXEMPT: comma-separated CIDRs or addresses
// that are never banned.
func parseBanExempt(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("BAN_EXEMPT: %q is not a CIDR or IP address", f)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// newBans returns this node's ban manager, fed by the session log of tc,
// or nil without one (external mode: ban policies are refused there).
// trigger asks the reconciler for a pass; bans it makes are audited in
// st.
func newBans(cfg config, st stateStore, tc *traffic.Collector, bus events.Publisher, trigger func(), log zerolog.Logger) *bans.Manager {
	if tc == nil {
		return nil
	}
	m := bans.New(bans.Config{
		File: filepath.Join(cfg.DataDir, "bans.json"), Exempt: cfg.BanExempt, Node: cfg.State.NodeName,
		Trigger: trigger, Audit: st.AppendAudit, Events: bus, Log: log,
	})
	tc.OnSession = m.Observe
	return m
}

// startBans runs m (if any) until the returned stop, which closes the
// session log (tc) first and waits for the bans' last flush.
func startBans(m *bans.Manager, tc *traffic.Collector) (stop func()) {
	if m == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	return func() {
		// The session log feeds the bans: it stops first, so that no ban
		// is made after their last flush.
		if tc != nil {
			tc.Close()
		}
		cancel()
		<-done
	}
}

// banHooks are the reconciler's view of m (none when nil).
func banHooks(m *bans.Manager) (banned func(stream.ID) ([]string, uint64), applied func(stream.ID, uint64)) {
	if m == nil {
		return nil, nil
	}
	return m.Banned, m.Applied
}

// listHook is what the pool tells of each listing: the traffic log's
// index of port ranges and the bans' policies.
func listHook(tc *traffic.Collector, m *bans.Manager) func([]stream.Spec) {
	if tc == nil {
		return nil
	}
	return func(specs []stream.Spec) {
		tc.SetStreams(specs)
		if m != nil {
			m.SetStreams(specs)
		}
	}
}

// banSource is m as the API's optional source (nil when there is none).
func banSource(m *bans.Manager) httpapi.BanSource {
	if m == nil {
		return nil
	}
	return m
}
