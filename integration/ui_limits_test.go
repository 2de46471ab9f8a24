package integration

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// uiKeepsFields: the edit form of a stream with limits and a deny list
// shows them, and an edit of another field sends them back unchanged, as
// well as the ban policy and the deadline, which the form does not show: a
// PUT replaces the whole stream, so a field the form did not carry would
// be dropped (and with it the stream's protection or its expiry).
func uiKeepsFields(t *testing.T, ui *uiPage, port int, backend string) {
	ui.t = t
	id := fmt.Sprintf("tcp/%d", port)
	body := fmt.Sprintf(`{"backend":%q,"max_connections":7,"max_connections_per_client":2,"upload_rate":"512k","download_rate":"1m","deny":["127.0.0.9"],"ban":{"after":5,"within":"1m","for":"10m"},"ttl":"2h"}`, backend)
	code, before := ui.d.api("PUT", "/v1/streams/"+id, body)
	if code != 201 {
		t.Fatalf("PUT %s: %d %v", id, code, before)
	}
	ui.goTo("#/streams/" + id)
	ui.waitJS("the limits, the ban policy and the time left in the details, the limits in the form", `document.querySelector("main").textContent.includes("Max connections per client") &&
		document.querySelector("main").textContent.includes("5 sessions fail within 1m0s, for 10m0s") && /^in [12] h/.test(document.querySelector("#expires")?.textContent || "") &&
		document.querySelector("#f-max_connections")?.value === "7" && document.querySelector("#f-deny")?.value === "127.0.0.9/32"`)
	ui.fill("#f-description", "edited beside its limits")
	ui.fill("#f-download_rate", "2m")
	ui.click("#preview")
	ui.waitJS("the dry-run diff of the new rate", `!document.querySelector("#apply").disabled && document.querySelector("#dry-run").textContent.includes("proxy_download_rate 2m")`)
	ui.click("#apply")
	var m map[string]any
	eventually(t, "the edit applied", 15*time.Second, func() bool {
		_, m = ui.d.api("GET", "/v1/streams/"+id, "")
		st, _ := m["status"].(map[string]any)
		return m["description"] == "edited beside its limits" && st["state"] == "active" && st["revision"] == m["revision"]
	})
	deny, _ := m["deny"].([]any)
	if m["max_connections"] != float64(7) || m["max_connections_per_client"] != float64(2) || m["upload_rate"] != "512k" ||
		m["download_rate"] != "2m" || !slices.Equal(deny, []any{"127.0.0.9/32"}) {
		t.Fatalf("after an edit in the browser: %v; want the limits and the deny list kept, the download rate changed", m)
	}
	if fmt.Sprint(m["ban"]) != fmt.Sprint(before["ban"]) || m["expires_at"] != before["expires_at"] || m["ttl"] != before["ttl"] {
		t.Fatalf("after an edit in the browser: ban %v, expires_at %v, ttl %v; want %v, %v, %v kept", m["ban"], m["expires_at"], m["ttl"], before["ban"], before["expires_at"], before["ttl"])
	}
}

// uiBans: a stream's page lists its bans as they are made (the ban.added
// event), and a write token lifts one with its Lift button: the answer
// comes once nginx lets the address in again.
func uiBans(t *testing.T, ui *uiPage, port int) {
	ui.t = t
	bport := reservePorts(t, 1)
	startCountingBackend(t, bport)
	id := fmt.Sprintf("tcp/%d", port)
	body := fmt.Sprintf(`{"backend":"127.0.0.1:%d",%s,"ban":{"after":3,"within":"1m","for":"1h"}}`, bport, limited)
	if code, m := ui.d.api("PUT", "/v1/streams/"+id, body); code != 201 {
		t.Fatalf("PUT %s: %d %v", id, code, m)
	}
	ui.goTo("#/streams/" + id)
	ui.waitJS("the stream's bans, none yet", `document.querySelector("#stream-bans")?.textContent.includes("No source is banned.")`)
	failSessions(t, attacker, port, 3)
	row := fmt.Sprintf(`document.querySelector('#stream-bans tr[data-address="%s"]')`, attacker)
	ui.waitJS("the ban listed without reloading the page", fmt.Sprintf(`!!%s && %s.textContent.includes("in ")`, row, row))
	ui.click(fmt.Sprintf(`#stream-bans button[aria-label="Lift the ban of %s"]`, attacker))
	ui.waitJS("the lift applied", fmt.Sprintf(`document.querySelector("#notice").textContent.includes("Lifted the ban of %s") && !%s`, attacker, row))
	if got := bansOf(t, ui.d, id); len(got) != 0 {
		t.Fatalf("after the lift in the browser, bans %v", got)
	}
	if _, err := echoFrom(attacker, port); err != nil {
		t.Fatalf("%s after the lift: %v", attacker, err)
	}
	ui.notReloaded()
}
