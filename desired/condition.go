package desired

import (
	"fmt"
	"time"
)

// ErrHeld: the node holds its copy of a shared desired state that went
// wrong (see Alarm) and takes no writes until an operator confirms. It
// wraps ErrUnavailable.
var ErrHeld = fmt.Errorf("desired state held until an operator confirms: %w", ErrUnavailable)

// Condition is how current a node's copy of a shared desired state is:
// both fields nil while it follows the shared state.
type Condition struct {
	// Stale, when set, says the node serves reads from its local copy
	// because the shared store does not answer.
	Stale *Stale `json:"stale,omitempty"`
	// Alarm, when set, says the node holds its copy (see ErrHeld).
	Alarm *Alarm `json:"alarm,omitempty"`
}

// Stale is why and since when reads come from the local copy.
type Stale struct {
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`
}

// Alarm is a shared state the node refused to apply: what happened, since
// when, and how to go on.
type Alarm struct {
	// Reason is revision_backwards, cluster_changed or mass_deletion.
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
	// NodeRevision is the revision the node's copy is complete through;
	// StoreRevision the shared store's when the alarm was raised.
	NodeRevision  uint64 `json:"node_revision"`
	StoreRevision uint64 `json:"store_revision"`
	// NodeClusterID is the cluster the node's copy came from;
	// StoreClusterID the one answering now (hex).
	NodeClusterID  string `json:"node_cluster_id"`
	StoreClusterID string `json:"store_cluster_id"`
	// Deletes is how many of the node's streams applying the store's
	// state would delete.
	Deletes int `json:"deletes"`
}

// Confirmation is an operator's word that the shared state is to be
// applied as it is.
type Confirmation struct {
	By        string    `json:"by"`
	At        time.Time `json:"at"`
	ClusterID string    `json:"cluster_id"`
	Revision  uint64    `json:"revision"`
}
