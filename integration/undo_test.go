package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The write path undoes a write nginx refuses whether or not anyone still
// waits for the answer: with ?wait=false, when the client disconnects
// mid-wait, and for each refused stream of an import. Each undo leaves an
// audit entry that says so.

// unresolvable is a backend nginx refuses after the write: its name does
// not resolve.
const unresolvable = "no-such-host.invalid:80"

// undoEntries returns the audit entries of undos of stream id.
func (d *daemon) undoEntries(id string) []map[string]any {
	d.t.Helper()
	_, m := d.api("GET", "/v1/audit?limit=1000", "")
	var out []map[string]any
	for _, e := range m["entries"].([]any) {
		e := e.(map[string]any)
		if e["route"] == "undo" && e["stream"] == id {
			out = append(out, e)
		}
	}
	return out
}

// waitUndone waits until stream id has exactly one undo entry, and returns it.
func (d *daemon) waitUndone(id string) map[string]any {
	d.t.Helper()
	eventually(d.t, "an audit entry for the undo of "+id, 20*time.Second, func() bool { return len(d.undoEntries(id)) > 0 })
	entries := d.undoEntries(id)
	if len(entries) != 1 {
		d.t.Fatalf("%d undo entries for %s: %v", len(entries), id, entries)
	}
	e := entries[0]
	if !strings.HasPrefix(fmt.Sprint(e["result"]), "undone: nginx refused it") || !strings.Contains(fmt.Sprint(e["result"]), "no-such-host.invalid") {
		d.t.Fatalf("undo entry result %q", e["result"])
	}
	before, _ := e["before"].(map[string]any)
	if before == nil || before["backends"].([]any)[0] != unresolvable {
		d.t.Fatalf("undo entry before %v: want the refused spec", e["before"])
	}
	return e
}

// waitGone waits until GET /v1/streams/<id> answers 404.
func (d *daemon) waitGone(id string) {
	d.t.Helper()
	eventually(d.t, id+" gone from the desired state", 20*time.Second, func() bool {
		code, _ := d.api("GET", "/v1/streams/"+id, "")
		return code == 404
	})
}

// With ?wait=false nobody waits for nginx's verdict: a refused create is
// removed and a refused update restored all the same.
func TestUndoWithoutWait(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 3)
	be := startEcho(t, "A:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+be.addr()+`"}`)

	created := fmt.Sprintf("tcp/%d", d.portMin+1)
	if code, m := d.api("PUT", "/v1/streams/"+created+"?wait=false", `{"backend":"`+unresolvable+`"}`); code != 202 {
		t.Fatalf("PUT ?wait=false: %d %v", code, m)
	}
	d.waitGone(created)
	if e := d.waitUndone(created); e["after"] != nil {
		t.Fatalf("undo of a create: after %v, want null", e["after"])
	}

	updated := fmt.Sprintf("tcp/%d", d.portMin)
	if code, m := d.api("PUT", "/v1/streams/"+updated+"?wait=false", `{"backend":"`+unresolvable+`"}`); code != 202 {
		t.Fatalf("PUT ?wait=false: %d %v", code, m)
	}
	e := d.waitUndone(updated)
	if after, _ := e["after"].(map[string]any); after == nil || after["backends"].([]any)[0] != be.addr() {
		t.Fatalf("undo of an update: after %v, want the previous spec", e["after"])
	}
	_, m := d.api("GET", "/v1/streams/"+updated, "")
	if m["backends"].([]any)[0] != be.addr() {
		t.Fatalf("the refused update was not undone: %v", m)
	}
	mustEcho(t, d.portMin, "A:")
	if err := d.nginxTest(); err != nil {
		t.Fatalf("nginx -t after the undos: %v", err)
	}
}

// A client that disconnects while its write is being applied gets no
// answer, and the refused write is undone all the same.
func TestUndoWhenTheClientDisconnects(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	id := fmt.Sprintf("tcp/%d", d.portMin)
	body := `{"backend":"` + unresolvable + `"}`
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.apiPort))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "PUT /v1/streams/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		id, d.apiPort, len(body), body)
	c.Close() // gone before nginx's verdict

	// The write was taken (its request has an audit entry), then undone.
	eventually(t, "the request's audit entry", 20*time.Second, func() bool {
		_, m := d.api("GET", "/v1/audit?limit=1000", "")
		for _, e := range m["entries"].([]any) {
			if e := e.(map[string]any); e["method"] == "PUT" && e["stream"] == id {
				return true
			}
		}
		return false
	})
	d.waitGone(id)
	if e := d.waitUndone(id); e["after"] != nil {
		t.Fatalf("undo of a create: after %v, want null", e["after"])
	}
	waitRefused(t, d.portMin)
}

// Each refused stream of an import is undone (a new one removed, an
// updated one restored); the others stay as imported. The answer lists
// the refused ones, as before; with ?wait=false they are undone as well.
func TestUndoOfAnImport(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 4)
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	d.mustPut("tcp", d.portMin, `{"backend":"`+a.addr()+`"}`)
	doc := fmt.Sprintf(`{"streams":[
		{"protocol":"tcp","listen":%d,"backends":["%s"]},
		{"protocol":"tcp","listen":%d,"backends":["%s"]},
		{"protocol":"tcp","listen":%d,"backends":["%s"]}]}`,
		d.portMin, unresolvable, d.portMin+1, b.addr(), d.portMin+2, unresolvable)
	code, m := d.api("POST", "/v1/import", doc)
	if code != 200 {
		t.Fatalf("import: %d %v", code, m)
	}
	failed, _ := m["failed"].([]any)
	if len(failed) != 2 || failed[0].(map[string]any)["id"] != fmt.Sprintf("tcp/%d", d.portMin) || failed[1].(map[string]any)["id"] != fmt.Sprintf("tcp/%d", d.portMin+2) {
		t.Fatalf("import answer lists failed %v, want tcp/%d and tcp/%d", m["failed"], d.portMin, d.portMin+2)
	}
	if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin+2), ""); code != 404 {
		t.Fatalf("the refused new stream of the import is still stored: GET %d", code)
	}
	_, m = d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", d.portMin), "")
	if m["backends"].([]any)[0] != a.addr() {
		t.Fatalf("the refused update of the import was not undone: %v", m)
	}
	d.waitUndone(fmt.Sprintf("tcp/%d", d.portMin))
	d.waitUndone(fmt.Sprintf("tcp/%d", d.portMin+2))
	mustEcho(t, d.portMin, "A:")
	mustEcho(t, d.portMin+1, "B:")

	late := fmt.Sprintf(`{"streams":[{"protocol":"tcp","listen":%d,"backends":["%s"]}]}`, d.portMin+3, unresolvable)
	if code, m := d.api("POST", "/v1/import?wait=false", late); code != 202 {
		t.Fatalf("import ?wait=false: %d %v", code, m)
	}
	d.waitGone(fmt.Sprintf("tcp/%d", d.portMin+3))
	d.waitUndone(fmt.Sprintf("tcp/%d", d.portMin+3))
	mustEcho(t, d.portMin+1, "B:")
}
