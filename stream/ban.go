package stream

// BanPolicy bans a source address from a stream for For once After of its
// sessions failed through its own doing within Within (as nginx's session
// log tells; see bans.Counts). Durations are Go durations in
// canonical form ("1m0s" once validated).
type BanPolicy struct {
	After  int    `json:"after"`
	Within string `json:"within"`
	For    string `json:"for"`
}

// equalBan reports whether a and b ask for the same policy (nil: none).
func equalBan(a, b *BanPolicy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// cloneBan returns a copy of b (nil for nil).
func cloneBan(b *BanPolicy) *BanPolicy {
	if b == nil {
		return nil
	}
	c := *b
	return &c
}

// Bans reports whether s bans anyone: it has a ban policy and no allow
// list (a stream with one trusts the addresses it allows, and nginx
// refuses the others already).
func (s Spec) Bans() bool { return s.Ban != nil && len(s.Allow) == 0 }
