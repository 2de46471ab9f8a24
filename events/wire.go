package events

import (
	"encoding/json"
	"strconv"
)

// SSE is e as a server-sent event: its id, its type as the event name,
// and the whole event as JSON on one data line. Publish encodes it once
// for every subscriber.
func (e Event) SSE() []byte {
	if e.wire != nil {
		return e.wire
	}
	return encodeSSE(e)
}

func encodeSSE(e Event) []byte {
	body, err := json.Marshal(e)
	if err != nil { // only Data could fail, and Publish checked it
		body = []byte(`{}`)
	}
	b := make([]byte, 0, len(body)+len(e.Type)+48)
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, e.ID, 10)
	b = append(b, "\nevent: "...)
	b = append(b, e.Type...)
	b = append(b, "\ndata: "...)
	b = append(b, body...)
	return append(b, "\n\n"...)
}
