package traffic

// The $status nginx logs for a session it refused before proxying: only
// the stream limit_conn module answers 503 (a connection limit reached,
// or its zone full), only the stream access module 403 (a deny rule, or
// "deny all" after the allow rules).
const (
	StatusLimit  = "503"
	StatusDenied = "403"
)

// Refused counts a stream's sessions nginx refused, by cause.
type Refused struct {
	// Limit: over max_connections or max_connections_per_client.
	Limit uint64 `json:"limit"`
	// Deny: a source in deny, or outside allow.
	Deny uint64 `json:"deny"`
}
