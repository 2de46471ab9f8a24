package stream

import "time"

// NodeInfo is what a node of a fleet says of itself in the node registry
// (GET /v1/nodes): its name and API address, its version, the desired
// state's revision it applied, whether its nginx runs, how many streams
// are active or failed on it, the status of each of its streams that is
// not active at that revision, and when it last said so.
type NodeInfo struct {
	Name            string      `json:"name"`
	API             string      `json:"api"`
	Version         string      `json:"version"`
	AppliedRevision uint64      `json:"applied_revision"`
	NginxRunning    bool        `json:"nginx_running"`
	Streams         NodeStreams `json:"streams"`
	// NotActive lists the node's streams that are not active at
	// AppliedRevision; those of its streams not listed are active if
	// their revision is at most AppliedRevision, pending otherwise.
	NotActive []StreamStatus `json:"not_active,omitempty"`
	LastSeen  time.Time      `json:"last_seen"`
	// Instance identifies the daemon's data directory (a random id kept
	// there): a node restarted on the same data dir takes its name back at
	// once, while another daemon with the same name waits or is refused.
	Instance string `json:"instance,omitempty"`
	// Epoch is the etcd revision of the newest operator confirmation
	// (POST /v1/state/confirm) whose state AppliedRevision is of; 0 for
	// none. Revisions of two epochs are not compared: a confirmation may
	// have accepted a state whose revisions start lower.
	Epoch uint64 `json:"epoch,omitempty"`
}

// StreamStatus is one stream's status on a node, as the node publishes it.
type StreamStatus struct {
	ID ID `json:"id"`
	Status
}

// Gone is the state, on a node, of a stream the node cannot serve
// because it is not live in the fleet: it left (stopped, or its lease
// expired) or was never seen.
const Gone State = "gone"

// OnNode is a stream's state on one node of a fleet, as the API shows it.
type OnNode struct {
	Node  string `json:"node"`
	State State  `json:"state"`
	// AppliedRevision is the revision of the desired state the node
	// applied (0 when it is gone).
	AppliedRevision uint64 `json:"applied_revision"`
	// Error is nginx's message on that node when failed, or why the
	// node is gone.
	Error string `json:"error,omitempty"`
}

// NodeStreams counts a node's streams by state.
type NodeStreams struct {
	Active int `json:"active"`
	Failed int `json:"failed"`
}
