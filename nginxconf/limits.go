package nginxconf

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/streamconductor/stream-conductor/stream"
)

// Bounds of the limits (issue 16).
const (
	// MaxConnectionsLimit is the most nginx's limit_conn takes ("connection
	// limit must be less 65536").
	MaxConnectionsLimit = 65535
	// MaxDeny bounds a stream's deny list, as MaxAllow its allow list.
	MaxDeny = 256
	// maxRate is the highest rate: 10 GiB/s is more than one connection
	// through nginx carries; omit the field for no limit.
	maxRate = 10 << 30
)

// Shared-memory zones of the connection limits, declared at stream {}
// level by each stream's file, named after the stream, and so unique in
// one nginx (a node's pool runs several masters, each with zones of its
// own: a stream's zone is in the master that serves it). The sizes never
// change, so that a reload keeps the zone, and the count of the sessions
// open, instead of starting from zero. nginx refuses a zone smaller than
// 8 pages: 512k holds that for pages of up to 64 KiB (arm64 kernels).
// Pages a zone does not use are address space, not memory.
const (
	// streamZoneSize holds the one counter of a whole stream.
	streamZoneSize = "512k"
	// clientZoneSize holds a counter (64 bytes) for each client address
	// with a session open: about 16,000 at once in 1m. When it is full,
	// nginx refuses further clients as if over their limit (status 503).
	clientZoneSize = "1m"
)

// validateLimits checks s's limits and deny list and puts them in
// canonical form, in place.
func validateLimits(s *stream.Spec) error {
	if err := checkConnLimit("max_connections", s.MaxConnections); err != nil {
		return err
	}
	if err := checkConnLimit("max_connections_per_client", s.MaxConnectionsPerClient); err != nil {
		return err
	}
	var err error
	if s.UploadRate, err = canonicalRate("upload_rate", s.UploadRate); err != nil {
		return err
	}
	if s.DownloadRate, err = canonicalRate("download_rate", s.DownloadRate); err != nil {
		return err
	}
	return validateDeny(s)
}

func checkConnLimit(field string, n int) error {
	if n < 0 || n > MaxConnectionsLimit {
		return fieldErr(field, "must be 1-%d sessions (0 or absent: no limit), not %d", MaxConnectionsLimit, n)
	}
	return nil
}

// canonicalRate checks a rate in bytes per second in nginx's size syntax
// (digits, optionally followed by k or m: KiB and MiB) and returns it with
// the unit in lower case and without leading zeros.
func canonicalRate(field, v string) (string, error) {
	if v == "" {
		return "", nil
	}
	digits, unit, scale := v, "", int64(1)
	switch v[len(v)-1] {
	case 'k', 'K':
		digits, unit, scale = v[:len(v)-1], "k", 1<<10
	case 'm', 'M':
		digits, unit, scale = v[:len(v)-1], "m", 1<<20
	}
	if digits == "" || len(digits) > 12 || strings.Trim(digits, "0123456789") != "" {
		return "", fieldErr(field, "%q is not a rate in bytes per second like 512k or 1m (nginx knows the units k and m)", truncate(v))
	}
	n, _ := strconv.ParseInt(digits, 10, 64) // at most 12 digits: no overflow
	if n < 1 || n*scale > maxRate {
		return "", fieldErr(field, "must be between 1 byte and 10240m per second (omit it for no limit)")
	}
	return strconv.FormatInt(n, 10) + unit, nil
}

// validateDeny puts the deny list in canonical form (masked CIDRs) and
// refuses an entry twice, an entry also in allow, and an allow entry that
// a deny entry covers whole: deny comes first, so nothing of it would be
// allowed.
func validateDeny(s *stream.Spec) error {
	if len(s.Deny) == 0 {
		s.Deny = nil
		return nil
	}
	if len(s.Deny) > MaxDeny {
		return fieldErr("deny", "at most %d entries", MaxDeny)
	}
	for i, d := range s.Deny {
		p, err := canonicalCIDR(d)
		if err != nil {
			return fieldErr("deny", "%q is not a CIDR or IP address", truncate(d))
		}
		s.Deny[i] = p
	}
	if dup := firstDuplicate(s.Deny); dup != "" {
		return fieldErr("deny", "%q is listed twice", dup)
	}
	for _, d := range s.Deny {
		dp := netip.MustParsePrefix(d)
		for _, a := range s.Allow {
			ap := netip.MustParsePrefix(a)
			if dp.Bits() <= ap.Bits() && dp.Contains(ap.Addr()) {
				return fieldErr("deny", "%s covers all of allow %s, which would never be allowed (deny is checked first): remove one of them", d, a)
			}
		}
	}
	return nil
}

// zoneNames are the names of s's limit_conn zones: the whole stream's
// and its clients', unique per stream id.
func zoneNames(s stream.Spec) (all, client string) {
	base := upstreamName(s)
	return base + "_conns", base + "_clients"
}

// writeZones declares the limit_conn zones s's server uses; they belong
// at stream {} level, before the server. The whole stream's key is the
// stream's id, the same for every session on any of its ports.
func writeZones(b *bytes.Buffer, s stream.Spec) {
	all, client := zoneNames(s)
	if s.MaxConnections > 0 {
		fmt.Fprintf(b, "limit_conn_zone %s zone=%s:%s;\n", s.ID(), all, streamZoneSize)
	}
	if s.MaxConnectionsPerClient > 0 {
		fmt.Fprintf(b, "limit_conn_zone $binary_remote_addr zone=%s:%s;\n", client, clientZoneSize)
	}
}

// writeLimits writes s's limits and access rules into its server block:
// the connection limits, the rates, then deny before allow (nginx's
// access rules are first match: a denied address inside an allowed
// network is refused) and, with allow, deny all.
func writeLimits(b *bytes.Buffer, s stream.Spec) {
	all, client := zoneNames(s)
	if s.MaxConnections > 0 {
		fmt.Fprintf(b, "    limit_conn %s %d;\n", all, s.MaxConnections)
	}
	if s.MaxConnectionsPerClient > 0 {
		fmt.Fprintf(b, "    limit_conn %s %d;\n", client, s.MaxConnectionsPerClient)
	}
	if s.MaxConnections > 0 || s.MaxConnectionsPerClient > 0 {
		// Each refusal is counted from the session log (status 503); at
		// nginx's default level (error) a flood of them would also fill
		// the error log the reconciler reads after every reload.
		b.WriteString("    limit_conn_log_level info;\n")
	}
	if s.UploadRate != "" {
		fmt.Fprintf(b, "    proxy_upload_rate %s;\n", s.UploadRate)
	}
	if s.DownloadRate != "" {
		fmt.Fprintf(b, "    proxy_download_rate %s;\n", s.DownloadRate)
	}
	for _, d := range s.Deny {
		fmt.Fprintf(b, "    deny %s;\n", d)
	}
	for _, a := range s.Allow {
		fmt.Fprintf(b, "    allow %s;\n", a)
	}
	if len(s.Allow) > 0 {
		b.WriteString("    deny all;\n")
	}
}
