package events

import (
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// The types of events, as GET /v1/events names them (its "event:" field
// and its ?types= filter).
const (
	// StreamCreated, StreamUpdated and StreamDeleted: the desired state
	// changed, whoever changed it (this node's API, another node of the
	// fleet, an import). Data: StreamChange.
	StreamCreated = "stream.created"
	StreamUpdated = "stream.updated"
	StreamDeleted = "stream.deleted"
	// StreamStatus: a stream's state changed on this node (pending,
	// active, failed), with nginx's words when it failed. Data:
	// StatusChange.
	StreamStatus = "stream.status"
	// StreamExpired: a stream was deleted because its time ran out
	// (its expires_at had passed when the node saw it go, whichever node
	// or etcd lease removed it); published instead of StreamDeleted.
	// Data: StreamChange.
	StreamExpired = "stream.expired"
	// Bulk: more changed at once than are worth an event each (an import,
	// a restore); a client that keeps a copy lists again. Data: BulkChange.
	Bulk = "bulk"
	// Reload: nginx was started, reloaded or restarted. Data: Reloaded.
	Reload = "reload"
	// DriftDetected and DriftRepaired: what nginx serves or what its files
	// hold departed from the desired state, and was put back. Data: Drift.
	DriftDetected = "drift.detected"
	DriftRepaired = "drift.repaired"
	// BackendHealth: a backend's probe went from up to down or back.
	// Data: HealthChange.
	BackendHealth = "backend.health"
	// NodeJoined and NodeLeft: a node of the fleet registered, or its
	// registration ended. Data: NodeChange.
	NodeJoined = "node.joined"
	NodeLeft   = "node.left"
	// Traffic: the sessions and bytes of the streams whose counts moved
	// since the last one, at most one every TrafficEvery. Data: TrafficSample.
	Traffic = "traffic"
	// BanAdded and BanLifted: a source address was banned from a stream
	// on this node, or its ban ended (Reason: expired, api,
	// stream_deleted, stream_changed). Data: BanChange; more than
	// MaxEach of one kind at once make one Bulk ("bans").
	BanAdded  = "ban.added"
	BanLifted = "ban.lifted"
	// Reset is sent by GET /v1/events only: the events a reconnecting
	// client asked for are no longer kept, so it must list again. Data:
	// ResetInfo.
	Reset = "reset"
)

// Types lists every type a client may ask for with ?types=.
var Types = []string{
	StreamCreated, StreamUpdated, StreamDeleted, StreamExpired, StreamStatus, Bulk,
	Reload, DriftDetected, DriftRepaired, BackendHealth, NodeJoined, NodeLeft, Traffic,
	BanAdded, BanLifted,
}

// MaxEach is the most events of one kind that one change publishes one
// by one; past it, a single Bulk event tells clients to list again.
const MaxEach = 64

// TrafficEvery is how often Traffic events are published at most.
const TrafficEvery = 2 * time.Second

// StreamChange is the data of StreamCreated, StreamUpdated, StreamDeleted
// and StreamExpired.
type StreamChange struct {
	ID stream.ID `json:"id"`
	// Revision is the store revision of the change.
	Revision uint64 `json:"revision"`
	// Spec is the stream as it is now (created, updated) or as it was
	// last (deleted, expired), as the API shows it.
	Spec stream.Shown `json:"spec"`
	// Previous is the stream before an update.
	Previous *stream.Shown `json:"previous,omitempty"`
}

// StatusChange is the data of StreamStatus.
type StatusChange struct {
	ID       stream.ID    `json:"id"`
	Node     string       `json:"node,omitempty"`
	Shard    int          `json:"shard"`
	State    stream.State `json:"state"`
	Previous stream.State `json:"previous,omitempty"`
	Revision uint64       `json:"revision"`
	// Error is nginx's message when State is failed.
	Error string `json:"error,omitempty"`
}

// BulkChange is the data of Bulk.
type BulkChange struct {
	// What changed: "streams" (the desired state) or "statuses".
	What     string `json:"what"`
	Revision uint64 `json:"revision,omitempty"`
	Shard    *int   `json:"shard,omitempty"`
	// Counts by kind: created, updated, deleted; or by state.
	Counts map[string]int `json:"counts"`
}

// Reloaded is the data of Reload.
type Reloaded struct {
	Node  string `json:"node,omitempty"`
	Shard int    `json:"shard"`
	// Op is "start", "reload" or "restart".
	Op         string  `json:"op"`
	DurationMS float64 `json:"duration_ms"`
	// Outcome is "ok" or "failed" (Error says why).
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	Streams int    `json:"streams"`
}

// Drift is the data of DriftDetected and DriftRepaired.
type Drift struct {
	Node  string `json:"node,omitempty"`
	Shard int    `json:"shard"`
	// Kind is "files" (a stream file changed, added or removed by someone
	// else), "listen" (a port nginx should hold and does not, or the
	// reverse) or "master" (nginx's master died or was replaced).
	Kind string `json:"kind"`
	// Streams names the streams concerned, when known.
	Streams []stream.ID `json:"streams,omitempty"`
	Detail  string      `json:"detail,omitempty"`
}

// HealthChange is the data of BackendHealth.
type HealthChange struct {
	Address  string `json:"address"`
	Up       bool   `json:"up"`
	Previous *bool  `json:"previous,omitempty"`
	Error    string `json:"error,omitempty"`
	// Streams are the streams that use the backend.
	Streams []stream.ID `json:"streams,omitempty"`
}

// NodeChange is the data of NodeJoined and NodeLeft.
type NodeChange struct {
	Name   string `json:"name"`
	APIURL string `json:"api_url,omitempty"`
}

// TrafficSample is the data of Traffic: the counts of each stream whose
// counts moved (whole counts since the stream was created, not deltas).
type TrafficSample struct {
	Streams map[string]StreamTraffic `json:"streams"`
}

// StreamTraffic is one stream's counts in a Traffic event.
type StreamTraffic struct {
	Sessions uint64 `json:"sessions"`
	Active   int    `json:"active"`
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
}

// BanChange is the data of BanAdded and BanLifted.
type BanChange struct {
	Stream   stream.ID `json:"stream"`
	Address  string    `json:"address"`
	Node     string    `json:"node,omitempty"`
	Since    time.Time `json:"since"`
	Until    time.Time `json:"until"`
	Failures int       `json:"failures"`
	// Reason is why the ban was made (BanAdded) or why it ended
	// (BanLifted: expired, api, stream_deleted, stream_changed).
	Reason string `json:"reason"`
}

// ResetInfo is the data of Reset.
type ResetInfo struct {
	Reason string `json:"reason"`
}

// Publisher publishes events; *Bus is one. A nil Publisher in a config
// means no events.
type Publisher interface {
	Publish(typ string, data any) Event
}
