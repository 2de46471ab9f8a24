package desired

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/streamconductor/stream-conductor/stream"
)

// ErrPortConflict: a write's ports overlap another stream's (one port
// inside another's range, or two ranges that share ports).
var ErrPortConflict = errors.New("ports taken by another stream")

// PortConflictError is an ErrPortConflict that names the ports and the
// stream that has them.
type PortConflictError struct {
	// Stream is the stream written; Ports are its ports that Other,
	// another stream of the same protocol, listens on.
	Stream, Ports, Other string
}

func (e *PortConflictError) Error() string {
	what := "ports " + e.Ports + " are"
	if !slices.Contains([]byte(e.Ports), '-') {
		what = "port " + e.Ports + " is"
	}
	return fmt.Sprintf("%s: %s taken by stream %s", e.Stream, what, e.Other)
}

func (e *PortConflictError) Unwrap() error { return ErrPortConflict }

// Overlap returns the *PortConflictError of writing sp while o is
// stored, or nil: o is another stream of sp's protocol whose ports meet
// sp's.
func Overlap(sp, o stream.Spec) error {
	if o.Protocol != sp.Protocol || o.Listen == sp.Listen {
		return nil
	}
	lo, hi := max(sp.Listen, o.Listen), min(sp.LastPort(), o.LastPort())
	if lo > hi {
		return nil
	}
	return &PortConflictError{Stream: sp.Ref(), Ports: stream.PortsText(lo, hi), Other: o.Ref()}
}

// FirstOverlap returns the *PortConflictError of writing sp beside
// specs (the stored streams), or nil.
func FirstOverlap(specs []stream.Spec, sp stream.Spec) error {
	for _, o := range specs {
		if err := Overlap(sp, o); err != nil {
			return err
		}
	}
	return nil
}

// CheckOverlaps returns the first overlap among specs (streams with
// distinct ids), or nil.
func CheckOverlaps(specs []stream.Spec) error {
	sorted := slices.Clone(specs)
	slices.SortFunc(sorted, func(a, b stream.Spec) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Listen, b.Listen))
	})
	// Sorted by first port, a stream overlaps an earlier one if and only
	// if it overlaps the earlier one of its protocol that reaches furthest.
	furthest := 0
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Protocol != sorted[furthest].Protocol {
			furthest = i
			continue
		}
		if err := Overlap(sorted[i], sorted[furthest]); err != nil {
			return err
		}
		if sorted[i].LastPort() > sorted[furthest].LastPort() {
			furthest = i
		}
	}
	return nil
}

// ImportOverlap returns the first overlap among the streams an import
// leaves: cur with the import's creates and updates (byID) applied and
// its deletes removed.
func ImportOverlap(cur map[stream.ID]stream.Spec, res ImportResult, byID map[stream.ID]stream.Spec) error {
	final := make(map[stream.ID]stream.Spec, len(cur)+len(res.Create))
	for id, sp := range cur {
		final[id] = sp
	}
	for _, id := range slices.Concat(res.Create, res.Update) {
		final[id] = byID[id]
	}
	for _, id := range res.Delete {
		delete(final, id)
	}
	specs := make([]stream.Spec, 0, len(final))
	for _, sp := range final {
		specs = append(specs, sp)
	}
	return CheckOverlaps(specs)
}
