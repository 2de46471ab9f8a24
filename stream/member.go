package stream

import "time"

// NodeInfo is what a node of a fleet says of itself in the node registry
// (GET /v1/nodes): its name and API address, its version, the desired
// state's revision it applied, whether its nginx runs, how many streams
// are active or failed on it, and when it last said so.
type NodeInfo struct {
	Name            string      `json:"name"`
	API             string      `json:"api"`
	Version         string      `json:"version"`
	AppliedRevision uint64      `json:"applied_revision"`
	NginxRunning    bool        `json:"nginx_running"`
	Streams         NodeStreams `json:"streams"`
	LastSeen        time.Time   `json:"last_seen"`
}

// NodeStreams counts a node's streams by state.
type NodeStreams struct {
	Active int `json:"active"`
	Failed int `json:"failed"`
}
