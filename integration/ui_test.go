package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The dashboard at /ui/ in a real browser (headless Chromium, Debian's
// chromium package) against the real daemon and nginx, with real bytes:
// log in; create a stream through the form and see it active; see a stream
// another client creates turn up and turn active without reloading the
// page (GET /v1/events); send bytes and see the session count move; a bad
// backend shows the API's error next to the field; edit with a dry-run
// diff first; delete; the read-only token gets no write controls; a page
// of another origin cannot use the API. Every page is photographed into
// the test's temp dir (and $UI_SCREENSHOTS when set).
func TestUI(t *testing.T) {
	t.Parallel()
	browser := newUIBrowser(t)
	const (
		writeTok = "ui-test-write-token-0123456789abcdef"
		readTok  = "ui-test-read-token-0123456789abcdef"
	)
	d := newDaemonWithTokens(t, 15, writeTok, readTok)
	d.start()
	be := startEcho(t, "UI-A:")
	be2 := startEcho(t, "UI-B:")
	shots := newScreenshots(t)
	formPort, apiPort, routedPort := d.portMin, d.portMin+1, d.portMin+12
	formID, apiID := fmt.Sprintf("tcp/%d", formPort), fmt.Sprintf("tcp/%d", apiPort)

	// One tab for the writer's whole session: the token is in its
	// sessionStorage, and the page is loaded once.
	tab := browser.tab(t)
	ui := &uiPage{t: t, ctx: tab, d: d}

	t.Run("login", func(t *testing.T) {
		ui.t = t
		ui.navigate("/ui")
		ui.waitJS("the login form", `location.hash === "#/login" && !!document.querySelector("#f-token")`)
		shots.take(ui, "login")
		ui.fill("#f-token", "not-the-token-0123456789")
		ui.click(`#login-form button[type=submit]`)
		ui.waitJS("the field error of a wrong token", `document.querySelector("#err-token").textContent.includes("refused")`)
		ui.fill("#f-token", writeTok)
		ui.click(`#login-form button[type=submit]`)
		ui.waitJS("the streams page", `location.hash === "#/streams" && document.querySelector("#streams tbody").dataset.loaded === "true"`)
		if got := ui.text("#who"); got != "write access" {
			t.Fatalf("#who says %q, want write access", got)
		}
		ui.mark() // from here on, a reload of the page would show
	})

	t.Run("create through the form", func(t *testing.T) {
		ui.t = t
		ui.click("#nav-new")
		ui.waitJS("the create form", `!!document.querySelector("#create-form")`)
		ui.fill("#f-listen", strconv.Itoa(formPort))
		ui.fill("#f-backends", be.addr())
		ui.fill("#f-description", "made in the browser")
		ui.click(`#create-form button[type=submit]`)
		ui.waitJS(formID+" active in the list", rowState(formID, "active"))
		mustEcho(t, formPort, "UI-A:")
		ui.notReloaded()
	})

	t.Run("another client's stream turns active live", func(t *testing.T) {
		ui.t = t
		ui.goTo("#/streams")
		d.mustPut("tcp", apiPort, `{"backend":"`+be.addr()+`","description":"made by curl"}`)
		ui.waitJS(apiID+", created through the API, active in the open page", rowState(apiID, "active"))
		ui.notReloaded()
	})

	t.Run("bytes move the session count", func(t *testing.T) {
		ui.t = t
		ui.goTo("#/streams")
		for i := 0; i < 3; i++ {
			mustEcho(t, formPort, "UI-A:")
		}
		ui.waitJS("3 sessions on "+formID, fmt.Sprintf(`Number(document.querySelector('tr[data-id="%s"] td.sessions')?.textContent) >= 3`, formID))
		ui.waitJS("bars in the sparkline of "+formID, fmt.Sprintf(`document.querySelectorAll('tr[data-id="%s"] svg.spark rect').length > 0`, formID))
		ui.notReloaded()
	})

	t.Run("a bad backend is shown at its field", func(t *testing.T) {
		ui.t = t
		ui.goTo("#/new")
		ui.waitJS("the create form", `!!document.querySelector("#create-form")`)
		_, before := d.apiRaw("GET", "/v1/streams", "")
		ui.fill("#f-backends", "bad;host:1")
		ui.click(`#create-form button[type=submit]`)
		ui.waitJS("the error next to the backends", `document.querySelector("#err-backends").textContent.includes("not allowed") &&
			document.querySelector("#f-backends").getAttribute("aria-invalid") === "true" && document.querySelector("#banner").hidden`)
		shots.take(ui, "new")
		if _, after := d.apiRaw("GET", "/v1/streams", ""); string(after) != string(before) {
			t.Fatalf("the bad create changed the streams:\n%s\nto\n%s", before, after)
		}
	})

	t.Run("edit with a dry-run diff", func(t *testing.T) {
		ui.t = t
		ui.goTo("#/streams/" + formID)
		ui.waitJS("the edit form", `!!document.querySelector("#edit-form") && document.querySelector("#apply").disabled`)
		ui.fill("#f-backends", be2.addr())
		ui.click("#preview")
		ui.waitJS("the diff", fmt.Sprintf(`(() => { const t = document.querySelector("pre.diff")?.textContent || "";
			return t.includes("-    proxy_pass %s;") && t.includes("+    proxy_pass %s;") })()`, be.addr(), be2.addr()))
		ui.do("show the diff", chromedp.Evaluate[chromedp.Void](`document.querySelector("pre.diff").scrollIntoView({block: "end"})`))
		shots.take(ui, "stream")
		// Nothing changed yet: the preview only showed the diff.
		mustEcho(t, formPort, "UI-A:")
		ui.waitJS("Apply enabled", `!document.querySelector("#apply").disabled`)
		ui.click("#apply")
		ui.waitJS("the notice of the applied revision", `document.querySelector("#notice").textContent.includes("Applied revision")`)
		mustEcho(t, formPort, "UI-B:")
		ui.waitJS("the audit entry of the edit", `[...document.querySelectorAll("#stream-audit tbody tr")].some(r => r.textContent.includes("updated"))`)
		ui.notReloaded()
	})

	t.Run("delete", func(t *testing.T) {
		ui.t = t
		ui.goTo("#/streams/" + apiID)
		ui.waitJS("the delete button", `!!document.querySelector("#delete")`)
		ui.click("#delete")
		ui.click("#delete-confirm")
		ui.waitJS(apiID+" gone from the list", fmt.Sprintf(`location.hash === "#/streams" && !document.querySelector('tr[data-id="%s"]') && !!document.querySelector('tr[data-id="%s"]')`, apiID, formID))
		waitRefused(t, apiPort)
		if code, _ := d.api("GET", "/v1/streams/"+apiID, ""); code != 404 {
			t.Fatalf("GET %s after the delete: %d, want 404", apiID, code)
		}
		ui.notReloaded()
	})

	t.Run("the events resume after a restart of the daemon", func(t *testing.T) {
		ui.t = t
		ui.goTo("#/streams")
		held := d.portMin + 4
		heldID := fmt.Sprintf("tcp/%d", held)
		d.mustPut("tcp", held, `{"backend":"`+be.addr()+`","description":"its port taken while the daemon was down"}`)
		d.stop()
		d.stopNginx()
		squatter, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(held))
		if err != nil {
			t.Fatal(err)
		}
		defer squatter.Close()
		d.start()
		// The page reconnects by itself; the ids of the earlier run are
		// gone, so it is told to list again, and then follows the new run.
		later := d.portMin + 3
		d.mustPut("tcp", later, `{"backend":"`+be.addr()+`"}`)
		ui.waitJS(fmt.Sprintf("tcp/%d, created after the restart, active in the open page", later), rowState(fmt.Sprintf("tcp/%d", later), "active"))
		ui.waitJS("the page connected", `document.querySelector("#live").textContent === "live"`)
		// The stream whose port another process took is failed, first,
		// with nginx's words.
		ui.waitJS(heldID+" failed, first, with nginx's words", rowState(heldID, "failed")+fmt.Sprintf(` &&
			document.querySelector("#streams tbody tr").dataset.id === %q &&
			document.querySelector('tr[data-error-for="%s"]').textContent.includes("Address already in use")`, heldID, heldID))
		mustEcho(t, formPort, "UI-B:")
		ui.waitJS("the session after the restart on "+formID, fmt.Sprintf(`Number(document.querySelector('tr[data-id="%s"] td.sessions')?.textContent) >= 1`, formID))
		ui.goTo("#/status") // and back: the notice of the delete goes
		ui.goTo("#/streams")
		ui.waitJS("the list again", rowState(heldID, "failed")+` && document.querySelector("#notice").hidden`)
		shots.take(ui, "streams")
		ui.notReloaded()
	})

	t.Run("other pages", func(t *testing.T) {
		ui.t = t
		for _, p := range []struct{ hash, ready, name string }{
			{"#/nodes", `document.querySelectorAll("#nodes tbody tr").length === 1 && document.querySelector("#nodes tbody").textContent.includes("running")`, "nodes"},
			{"#/audit", `document.querySelectorAll("#audit tbody tr").length >= 3`, "audit"},
			{"#/status", `!!document.querySelector("#status-node") && document.querySelector("#status-node").textContent.includes("running")`, "status"},
		} {
			ui.goTo(p.hash)
			ui.waitJS("the "+p.name+" page", p.ready)
			shots.take(ui, p.name)
		}
	})

	t.Run("hostile text is shown as text", func(t *testing.T) {
		ui.t = t
		hostile := d.portMin + 5
		hostileID := fmt.Sprintf("tcp/%d", hostile)
		const text = `<img src=x onerror="document.title='pwned'"><b>bold</b>`
		body, _ := json.Marshal(map[string]any{"backend": be.addr(), "description": text})
		d.mustPut("tcp", hostile, string(body))
		ui.goTo("#/streams")
		literal, _ := json.Marshal(text)
		row := fmt.Sprintf(`document.querySelector('tr[data-id="%s"]')`, hostileID)
		ui.waitJS("the description as written, in the list", fmt.Sprintf(`!!%s && %s.textContent.includes(%s)`, row, row, literal))
		ui.goTo("#/streams/" + hostileID)
		ui.waitJS("the description as written, on its page", fmt.Sprintf(`document.querySelector("main").textContent.includes(%s)`, literal))
		ui.waitJS("no element made of it, no script run", `!document.querySelector("main img, main b") && document.title !== "pwned"`)
	})

	t.Run("a range of ports is shown and edited whole", func(t *testing.T) {
		ui.t = t
		first, last := d.portMin+7, d.portMin+11
		id, name := fmt.Sprintf("tcp/%d", first), fmt.Sprintf("tcp/%d-%d", first, last)
		if code, m := d.api("PUT", "/v1/streams/"+name, `{"backend":"`+be.addr()+`"}`); code != 201 {
			t.Fatalf("PUT %s: %d %v", name, code, m)
		}
		ui.goTo("#/streams")
		ui.waitJS(name+" in the list, active", fmt.Sprintf(`%s && document.querySelector('tr[data-id="%s"] a').textContent === %q`, rowState(id, "active"), id, name))
		ui.goTo("#/streams/" + id)
		// A range cannot route by server name: its form has no routes.
		ui.waitJS("the edit form of "+name+", without routes", `!!document.querySelector("#edit-form") && !document.querySelector("#routes-edit")`)
		ui.fill("#f-backends", be2.addr())
		ui.fill("#f-description", "edited in the browser, all five ports")
		ui.click("#preview")
		ui.waitJS("the dry-run diff keeps the range", fmt.Sprintf(`!document.querySelector("#apply").disabled && document.querySelector("#dry-run").textContent.includes("%d-%d")`, first, last))
		ui.click("#apply")
		var m map[string]any
		eventually(t, "the edit applied", 15*time.Second, func() bool {
			_, m = d.api("GET", "/v1/streams/"+id, "")
			st, _ := m["status"].(map[string]any)
			return m["description"] == "edited in the browser, all five ports" && st["state"] == "active" && st["revision"] == m["revision"]
		})
		ui.waitJS("the page names the range", fmt.Sprintf(`document.querySelector('h1')?.textContent.includes(%q)`, name))
		if m["listen_end"] != float64(last) || m["description"] != "edited in the browser, all five ports" {
			t.Fatalf("after the edit: listen_end %v, description %v; want the whole range kept", m["listen_end"], m["description"])
		}
		for _, p := range []int{first, last} {
			mustEcho(t, p, "UI-B:")
		}
	})

	t.Run("routes by TLS server name", func(t *testing.T) {
		uiRoutes(t, ui, shots, routedPort)
	})

	t.Run("an edit keeps the fields the form does not change", func(t *testing.T) {
		uiKeepsFields(t, ui, d.portMin+13, be.addr())
	})

	t.Run("bans are listed live and lifted", func(t *testing.T) {
		uiBans(t, ui, d.portMin+14)
	})

	t.Run("accessible basics: labels, words, keyboard", func(t *testing.T) {
		ui.t = t
		for _, p := range []struct{ hash, ready string }{
			{"#/streams", `document.querySelector("#streams tbody")?.dataset.loaded === "true"`},
			{"#/streams/" + formID, `!!document.querySelector("#edit-form")`},
			{fmt.Sprintf("#/streams/tcp/%d", routedPort), `document.querySelectorAll("#edit-form .route-row").length === 2`},
			{"#/new", `!!document.querySelector("#create-form")`},
			{"#/nodes", `document.querySelectorAll("#nodes tbody tr").length > 0`},
			{"#/audit", `document.querySelectorAll("#audit tbody tr").length > 0`},
			{"#/status", `!!document.querySelector("#status-node")`},
		} {
			ui.goTo(p.hash)
			ui.waitJS(p.hash+" drawn", p.ready)
			if bad := ui.eval(a11yProblems); bad != "" {
				t.Errorf("%s:\n%s", p.hash, bad)
			}
		}
		// Keyboard only: Tab to each field of the create form, type, Enter.
		kbPort := d.portMin + 6
		kbID := fmt.Sprintf("tcp/%d", kbPort)
		ui.goTo("#/new")
		ui.waitJS("the create form", `!!document.querySelector("#create-form")`)
		ui.do("focus the page", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
		ui.tabTo(`#f-listen`)
		ui.do("type the port", chromedp.KeyEvent(strconv.Itoa(kbPort)))
		ui.tabTo(`#f-backends`)
		ui.do("type the backend", chromedp.KeyEvent(be.addr()))
		ui.tabTo(`#create-form button[type=submit]`)
		ui.do("press Enter", chromedp.KeyEvent("\r"))
		ui.waitJS(kbID+", made with the keyboard alone, active", rowState(kbID, "active"))
		mustEcho(t, kbPort, "UI-A:")
	})

	t.Run("the read-only token sees no write controls", func(t *testing.T) {
		ro := &uiPage{t: t, ctx: browser.tab(t), d: d}
		ro.navigate("/ui/")
		ro.waitJS("the login form", `!!document.querySelector("#f-token")`)
		ro.fill("#f-token", readTok)
		ro.click(`#login-form button[type=submit]`)
		ro.waitJS(formID+" in the list", rowState(formID, "active"))
		ro.waitJS("read-only and no write control", `document.querySelector("#who").textContent === "read-only" &&
			document.querySelector("#nav-new").hidden && !document.querySelector("#new-stream")`)
		ro.goTo("#/streams/" + formID)
		ro.waitJS("the stream's audit entries", `document.querySelectorAll("#stream-audit tbody tr").length > 0`)
		ro.waitJS("no edit form, no delete", `!document.querySelector("#edit-form") && !document.querySelector("#delete") && !document.querySelector("form")`)
		ro.goTo("#/new")
		ro.waitJS("no create form", `!document.querySelector("#create-form") && document.querySelector("main").textContent.includes("may only read")`)
	})

	t.Run("no token configured: no login", func(t *testing.T) {
		open := startDaemon(t, 1)
		p := &uiPage{t: t, ctx: browser.tab(t), d: open}
		p.navigate("/ui/")
		p.waitJS("the streams page at once", `location.hash === "#/streams" && document.querySelector("#streams tbody").dataset.loaded === "true"`)
		p.waitJS("open access, no log out", `document.querySelector("#who").textContent.includes("no token") && document.querySelector("#logout").hidden &&
			!document.querySelector("#nav-new").hidden`)
	})

	t.Run("a page of another origin cannot use the API", func(t *testing.T) {
		foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<!doctype html><title>another site</title><p>another site</p>")
		}))
		defer foreign.Close()
		victim := d.portMin + 2
		// The writer's tab goes to the other site, as a user following a
		// link would, and the other site's script tries the API: it has
		// not the token (sessionStorage is per origin) and, even knowing
		// it, the browser lets it neither read an answer nor send the
		// header (no CORS), and a write without it is refused.
		ui.t = t
		ui.navigate(foreign.URL + "/")
		js := fmt.Sprintf(`(async () => {
			const api = %q, body = JSON.stringify({backend: %q});
			const out = {token: sessionStorage.getItem("stream-conductor.token")};
			try { const r = await fetch(api + "/v1/streams"); out.read = "status " + r.status; } catch (e) { out.read = "blocked"; }
			try { const r = await fetch(api + "/v1/streams/tcp/%d", {method: "PUT", headers: {"Content-Type": "application/json", Authorization: "Bearer " + %q}, body});
				out.withToken = "status " + r.status; } catch (e) { out.withToken = "blocked"; }
			try { const r = await fetch(api + "/v1/streams/tcp/%d", {method: "PUT", mode: "no-cors", body}); out.noCors = r.type; } catch (e) { out.noCors = "blocked"; }
			try { const r = await fetch(api + "/createstream/%d/%s", {mode: "no-cors"}); out.seed = r.type; } catch (e) { out.seed = "blocked"; }
			return JSON.stringify(out);
		})()`, d.url(""), be.addr(), victim, writeTok, victim, victim, be.addr())
		raw := ui.eval(js)
		var got map[string]any
		if err := json.Unmarshal([]byte(raw), &got); err != nil {
			t.Fatalf("the other page's result %q: %v", raw, err)
		}
		if got["token"] != nil || got["read"] != "blocked" || got["withToken"] != "blocked" {
			t.Fatalf("from another origin: %v; want no token, and reads and writes with the token blocked", got)
		}
		if code, _ := d.api("GET", fmt.Sprintf("/v1/streams/tcp/%d", victim), ""); code != 404 {
			t.Fatalf("a page of another origin created tcp/%d (%v): GET answers %d", victim, got, code)
		}
		waitRefused(t, victim)
	})
}

// rowState is a predicate: the list shows stream id in state.
func rowState(id, state string) string {
	return fmt.Sprintf(`(document.querySelector('tr[data-id="%s"] td.state')?.textContent || "").includes(%q)`, id, state)
}

// uiBrowser is one headless Chromium for every subtest (a tab each),
// started on first use and stopped when the test ends.
type uiBrowser struct {
	t       *testing.T
	bin     string
	once    sync.Once
	ctx     context.Context
	started error
}

// uiTimeout bounds every step in the browser.
const uiTimeout = 15 * time.Second

// newUIBrowser finds Debian's chromium: without it the test is skipped,
// except under CI=true, where it fails (scripts/install-deps.sh test
// installs it).
func newUIBrowser(t *testing.T) *uiBrowser {
	t.Helper()
	var bin string
	for _, name := range []string{os.Getenv("CHROMIUM_BIN"), "chromium", "chromium-browser", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); name != "" && err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is needed for the dashboard's tests and CI=true; run scripts/install-deps.sh test")
		}
		t.Skip("chromium is not installed (apt-get install chromium)")
	}
	return &uiBrowser{t: t, bin: bin}
}

// tab opens a new tab; it closes when t ends.
func (b *uiBrowser) tab(t *testing.T) context.Context {
	t.Helper()
	b.once.Do(b.start)
	if b.started != nil {
		t.Fatalf("start chromium: %v", b.started)
	}
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	open, done := context.WithTimeout(context.Background(), uiTimeout)
	defer done()
	errc := make(chan error, 1)
	// The tab lives as long as ctx; its viewport is the screenshots' size.
	go func() { errc <- chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("open a tab: %v", err)
		}
	case <-open.Done():
		t.Fatal("open a tab: not within", uiTimeout)
	}
	return ctx
}

func (b *uiBrowser) start() {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(b.bin), chromedp.Headless, chromedp.DisableGPU, chromedp.WindowSize(1280, 800))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox refuses root
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	b.t.Cleanup(func() { cancel(); cancelAlloc() })
	errc := make(chan error, 1)
	go func() { errc <- chromedp.Do(ctx) }() // starts the browser
	select {
	case b.started = <-errc:
	case <-time.After(30 * time.Second):
		b.started = fmt.Errorf("chromium did not start within 30s")
	}
	b.ctx = ctx
}

// uiPage drives one tab; every step is bounded by uiTimeout.
type uiPage struct {
	t   *testing.T
	ctx context.Context
	d   *daemon
}

func (p *uiPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, uiTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v\npage: %s", what, err, p.dump())
	}
}

// navigate loads path of the daemon (or a whole URL).
func (p *uiPage) navigate(path string) {
	p.t.Helper()
	u := path
	if strings.HasPrefix(path, "/") {
		u = p.d.url(path)
	}
	p.do("navigate to "+u, chromedp.Navigate(u))
}

// goTo follows a link of the page to hash: no reload.
func (p *uiPage) goTo(hash string) {
	p.t.Helper()
	p.do("go to "+hash, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`location.hash = %q`, hash)))
}

func (p *uiPage) fill(sel, value string) {
	p.t.Helper()
	p.do("fill "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.SetValue(chromedp.CSS(sel), value))
}

func (p *uiPage) click(sel string) {
	p.t.Helper()
	p.do("click "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

func (p *uiPage) text(sel string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, uiTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func (p *uiPage) eval(js string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, uiTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("evaluate: %v", err)
	}
	return s
}

// tabTo presses Tab until the element sel has the focus (at most 60
// times).
func (p *uiPage) tabTo(sel string) {
	p.t.Helper()
	js := fmt.Sprintf(`document.activeElement === document.querySelector(%q)`, sel)
	for range 60 {
		if p.eval(`String(`+js+`)`) == "true" {
			return
		}
		p.do("press Tab", chromedp.KeyEvent("\t"))
	}
	p.t.Fatalf("60 Tabs never reached %s", sel)
}

// a11yProblems lists, one per line, the controls of the page without a
// label, the buttons and links without a name, and the state badges
// without a word ("" when none).
const a11yProblems = `(() => {
	const bad = [];
	for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
		if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby")) {
			bad.push("no label: " + el.outerHTML.slice(0, 80));
		}
	}
	for (const el of document.querySelectorAll("button, a[href]")) {
		if (!el.textContent.trim() && !el.getAttribute("aria-label")) bad.push("no name: " + el.outerHTML.slice(0, 80));
	}
	for (const el of document.querySelectorAll(".badge")) {
		if (!/[a-z]{2}/i.test(el.textContent)) bad.push("a badge without a word: " + el.outerHTML.slice(0, 80));
	}
	return bad.join("\n");
})()`

// waitJS waits until the predicate js holds in the page. A predicate
// that throws counts as false: chromedp's poller stops for good at the
// first exception of a timed poll (the promise is never settled), and
// a page between two states (the hash changed, the hashchange handler
// not run yet) lacks the elements a predicate names.
func (p *uiPage) waitJS(what, js string) {
	p.t.Helper()
	safe := fmt.Sprintf("(() => { try { return (%s); } catch (e) { return false; } })()", js)
	p.do(what, chromedp.Poll[chromedp.Void](safe, chromedp.WithPollingTimeout(uiTimeout), chromedp.WithPollingInterval(50*time.Millisecond)))
}

// mark sets a flag on the page's window, which a reload would clear.
func (p *uiPage) mark() {
	p.t.Helper()
	p.do("mark the page", chromedp.Evaluate[chromedp.Void](`window.__notReloaded = true`))
}

func (p *uiPage) notReloaded() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, uiTimeout)
	defer cancel()
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__notReloaded === true`))
	if err != nil || !ok {
		p.t.Fatalf("the page was reloaded (%v)", err)
	}
}

// dump is the page's address and text, for a failure's message.
func (p *uiPage) dump() string {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

// screenshots writes PNGs of the viewport (1280x800) to the test's temp
// dir and, when UI_SCREENSHOTS names a directory, there too (the pictures
// of the README, docs/screenshots/).
type screenshots struct {
	t    *testing.T
	dirs []string
}

func newScreenshots(t *testing.T) *screenshots {
	s := &screenshots{t: t, dirs: []string{t.TempDir()}}
	if d := os.Getenv("UI_SCREENSHOTS"); d != "" {
		s.dirs = append(s.dirs, d)
	}
	return s
}

func (s *screenshots) take(p *uiPage, name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, uiTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	for _, dir := range s.dirs {
		if err := os.WriteFile(filepath.Join(dir, "ui-"+name+".png"), png, 0o644); err != nil {
			p.t.Fatalf("screenshot %s: %v", name, err)
		}
	}
}
