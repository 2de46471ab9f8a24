package integration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"
)

// The dashboard's routes (issue 15): TestUI's subtests for a TCP port
// shared by TLS server names, created and edited in the browser, with a
// real TLS client through the real nginx telling which backend answered
// by the certificate it saw.

// uiRoutes are the subtests of a routed stream on port, in the writer's
// tab ui: create it through the form, add a route after a preview,
// refuse a bad server name at its row, remove a route.
func uiRoutes(t *testing.T, ui *uiPage, shots *screenshots, port int) {
	d := ui.d
	id := fmt.Sprintf("tcp/%d", port)
	a := startTLSBackend(t, "a.ui.example", false)
	b := startTLSBackend(t, "b.ui.example", false)
	c := startTLSBackend(t, "c.ui.example", false)
	def := startTLSBackend(t, "default.ui.example", false)

	t.Run("create a routed stream through the form", func(t *testing.T) {
		ui.t = t
		ui.goTo("#/new")
		ui.waitJS("the create form", `!!document.querySelector("#create-form") && document.querySelector("#routes-edit").hidden`)
		// UDP has no TLS ClientHello to route by: no routes offered.
		ui.do("choose udp", chromedp.Evaluate[chromedp.Void](`(() => { const p = document.querySelector("#f-protocol");
			p.value = "udp"; p.dispatchEvent(new Event("change", {bubbles: true})) })()`))
		ui.waitJS("no routes for udp", `document.querySelector('[data-field="routed"]').hidden && !document.querySelector('[data-field="backends"]').hidden`)
		ui.do("choose tcp", chromedp.Evaluate[chromedp.Void](`(() => { const p = document.querySelector("#f-protocol");
			p.value = "tcp"; p.dispatchEvent(new Event("change", {bubbles: true})) })()`))
		ui.fill("#f-listen", strconv.Itoa(port))
		ui.click("#f-routed")
		ui.waitJS("one route row in place of the backends", `!document.querySelector("#routes-edit").hidden &&
			document.querySelector('[data-field="backends"]').hidden && document.querySelectorAll(".route-row").length === 1`)
		ui.fill(routeInput(0, "server_name"), a.name)
		ui.fill(routeInput(0, "backends"), a.addr())
		ui.click("#add-route")
		ui.waitJS("a second route row", `document.querySelectorAll(".route-row").length === 2`)
		ui.fill(routeInput(1, "server_name"), b.name)
		ui.fill(routeInput(1, "backends"), b.addr())
		ui.fill("#f-default", def.addr())
		ui.fill("#f-description", "shared in the browser")
		ui.click(`#create-form button[type=submit]`)
		ui.waitJS(id+" active in the list", rowState(id, "active"))
		reachGo(t, port, a.name, a)
		reachGo(t, port, b.name, b)
		reachGo(t, port, "nobody.ui.example", def)
		m := uiStream(t, d, id)
		if _, ok := m["backends"]; ok || fmt.Sprint(m["default"]) != fmt.Sprint([]any{def.addr()}) || m["description"] != "shared in the browser" {
			t.Fatalf("the stream made by the form: %v; want routes, default %s, the description, no backends", m, def.addr())
		}
	})

	t.Run("add a route after a preview", func(t *testing.T) {
		ui.t = t
		ui.goTo("#/streams/" + id)
		ui.waitJS("the routes of the edit form", `!!document.querySelector("#edit-form #routes-edit") &&
			document.querySelectorAll(".route-row").length === 2 && document.querySelector("#apply").disabled`)
		// From the keyboard: Enter on "Add route" puts the focus in the
		// new row's server name.
		ui.do("focus Add route", chromedp.Evaluate[chromedp.Void](`document.querySelector("#add-route").focus()`))
		ui.do("press Enter", chromedp.KeyEvent("\r"))
		ui.waitJS("the focus in route 3's server name", `document.activeElement === document.getElementById("f-routes[2].server_name") &&
			document.activeElement.labels[0].textContent === "Server name of route 3"`)
		ui.do("type the name", chromedp.KeyEvent(c.name))
		ui.fill(routeInput(2, "backends"), c.addr())
		ui.click("#preview")
		ui.waitJS("the diff with the new name", fmt.Sprintf(`!document.querySelector("#apply").disabled &&
			(document.querySelector("pre.diff")?.textContent || "").includes("+    %s ")`, c.name))
		ui.do("show the diff", chromedp.Evaluate[chromedp.Void](`document.querySelector('.route-row[data-route="2"]').scrollIntoView({block: "start"})`))
		shots.take(ui, "routes")
		reachGo(t, port, c.name, def) // the preview changed nothing
		ui.click("#apply")
		ui.waitJS("the notice of the applied revision", `document.querySelector("#notice").textContent.includes("Applied revision")`)
		reachGo(t, port, c.name, c)
		reachGo(t, port, a.name, a)
		reachGo(t, port, b.name, b)
		ui.notReloaded()
	})

	t.Run("a bad server name is shown at its row", func(t *testing.T) {
		ui.t = t
		before := uiStream(t, d, id)
		ui.fill(routeInput(1, "server_name"), "bad_name!")
		ui.click("#preview")
		ui.waitJS("the API's error next to route 2's server name", `(() => {
			const err = document.getElementById("err-routes[1].server_name").textContent;
			const others = [0, 2].map((i) => document.getElementById("err-routes[" + i + "].server_name").textContent);
			return err.includes("bad_name!") && err.includes("not allowed") && others.every((t) => t === "") &&
				document.getElementById("f-routes[1].server_name").getAttribute("aria-invalid") === "true" &&
				document.querySelector("#banner").hidden && document.querySelector("#apply").disabled })()`)
		after := uiStream(t, d, id)
		if fmt.Sprint(after["revision"], after["routes"], after["default"]) != fmt.Sprint(before["revision"], before["routes"], before["default"]) {
			t.Fatalf("the refused name changed the stream: %v %v, was %v %v", after["revision"], after["routes"], before["revision"], before["routes"])
		}
		reachGo(t, port, b.name, b)
	})

	t.Run("remove a route: its name goes to the default", func(t *testing.T) {
		ui.t = t
		ui.click(`.route-row[data-route="1"] .remove-route`)
		ui.waitJS("two rows, renumbered, the focus in the next one", fmt.Sprintf(`document.querySelectorAll(".route-row").length === 2 &&
			document.getElementById("f-routes[1].server_name").value === %q &&
			document.activeElement === document.getElementById("f-routes[1].server_name") && !document.getElementById("err-routes[1].server_name").textContent`, c.name))
		ui.click("#preview")
		ui.waitJS("the diff without "+b.name, fmt.Sprintf(`!document.querySelector("#apply").disabled &&
			(document.querySelector("pre.diff")?.textContent || "").includes("-    %s ")`, b.name))
		ui.click("#apply")
		ui.waitJS("the notice of the applied revision", `document.querySelector("#notice").textContent.includes("Applied revision")`)
		reachGo(t, port, b.name, def)
		reachGo(t, port, a.name, a)
		reachGo(t, port, c.name, c)
		m := uiStream(t, d, id)
		rs, _ := m["routes"].([]any)
		if len(rs) != 2 || m["description"] != "shared in the browser" || fmt.Sprint(m["default"]) != fmt.Sprint([]any{def.addr()}) {
			t.Fatalf("after the removal: %v; want 2 routes, the default and the description kept", m)
		}
		ui.notReloaded()
	})
}

// routeInput is the selector of field (server_name, backends, balance)
// of the route in row i.
func routeInput(i int, field string) string {
	return fmt.Sprintf(`[id="f-routes[%d].%s"]`, i, field)
}

// reachGo requires that Go's TLS client, sending server name sni to
// port, reaches backend b: its certificate, greeting and echo.
func reachGo(t *testing.T, port int, sni string, b *tlsBackend) {
	t.Helper()
	o := tlsOpts{sni: sni}
	a, err := goTLS(port, o)
	if err != nil {
		t.Fatalf("port %d, sni %q: want backend %s: %v", port, sni, b.name, err)
	}
	checkAnswer(t, "go", port, o, a, b)
}

// uiStream is GET of stream id, which must answer 200.
func uiStream(t *testing.T, d *daemon, id string) map[string]any {
	t.Helper()
	code, raw := d.apiRaw("GET", "/v1/streams/"+id, "")
	var m map[string]any
	if err := json.Unmarshal(raw, &m); code != 200 || err != nil {
		t.Fatalf("GET %s: %d %s (%v)", id, code, raw, err)
	}
	return m
}
