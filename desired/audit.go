package desired

import (
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// The operations of the records the daemon writes of itself, when no
// client asked.
const (
	// OpUndo: the write path took back a write that nginx refused.
	OpUndo = "undo"
	// OpExpired: a stream's time ran out and it was deleted.
	OpExpired = "expired"
	// OpBan: the daemon banned source addresses from a stream (package
	// bans); Result names them, and the node.
	OpBan = "ban"
)

// ExpiredResult begins the Result of an OpExpired record.
const ExpiredResult = "expired"

// ExpiredRecord is the audit record of sp's expiry, noticed at now; how
// says what deleted it (this node's timer, etcd's lease).
func ExpiredRecord(sp stream.Spec, now time.Time, how string) AuditRecord {
	before := sp.Clone()
	at := "?"
	if sp.ExpiresAt != nil {
		at = sp.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return AuditRecord{Time: now.UTC(), Operation: OpExpired, Stream: sp.ID().String(), Before: &before,
		Result: ExpiredResult + ": its time ran out at " + at + " (" + how + ")"}
}

// AuditRecord is one entry of the audit log (its JSON is the form the
// implementations store; the API shows its own): a request that asked for a
// change (granted or refused), or a change the daemon made of itself (an
// undo, an expiry). It names no transport: the front end that took a
// request (the HTTP API) writes Request and Outcome in its own terms, and
// the state keeps them as they are.
type AuditRecord struct {
	// Seq orders the log: AppendAudit gives each record one greater than
	// every record before it.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// RequestID ties the record to the request's log line and answer;
	// an undo carries the id of the write it took back.
	RequestID string `json:"request_id"`
	// Source is where the request came from (a network address); empty
	// when the daemon acted of itself.
	Source string `json:"source,omitempty"`
	// Actor is who asked: the id of the credential it showed, never the
	// credential; empty when the daemon acted of itself.
	Actor string `json:"actor,omitempty"`
	// Operation is what was asked: the front end's name of it (the API's
	// route), or OpUndo, OpExpired.
	Operation string `json:"operation,omitempty"`
	// Request is the request as the front end that took it writes it
	// (the API: "PUT /v1/streams/tcp/9000"); empty when the daemon acted
	// of itself.
	Request string `json:"request,omitempty"`
	// Stream is the id of the stream changed, or what a change of many
	// did (an import).
	Stream string `json:"stream,omitempty"`
	// Before and After are the stream before and after (nil: absent).
	Before *stream.Spec `json:"before"`
	After  *stream.Spec `json:"after"`
	// Outcome is the front end's code for its answer (the API: the HTTP
	// status); 0 when nobody was answered.
	Outcome int `json:"outcome,omitempty"`
	// Result is "ok", the code of the error that refused the request, or
	// what the daemon did and why.
	Result string `json:"result"`
	// Compacted, when set, says what the implementation left out of
	// Before and After to keep the record within its size bound.
	Compacted string `json:"compacted,omitempty"`
}

// BackupInfo describes a backup before its first byte.
type BackupInfo struct {
	// Size is the number of bytes the backup writes.
	Size int64
	// Revision is the revision of the state it holds.
	Revision uint64
}
