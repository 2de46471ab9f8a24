// stream-conductor's dashboard: hash routes over the public API, kept
// live by GET /v1/events (read with fetch, since EventSource cannot send
// the Authorization header). The token lives in sessionStorage only: it
// is sent as a bearer header, never as a cookie.

const TOKEN_KEY = 'stream-conductor.token';
const WINDOW_MS = 5 * 60 * 1000; // the sparkline's window
const BUCKETS = 30; // of 10 s each
const STATE_ORDER = { failed: 0, pending: 1, active: 2 };

const app = {
  who: null, // GET /v1/whoami
  streams: new Map(), // id -> stream, as GET /v1/streams gives it
  listed: false,
  samples: new Map(), // id -> [{t, sessions, active, bytes}], the last WINDOW_MS
  lastEventId: '',
  recent: [], // reload and drift events, newest first
  page: null, // the page shown: {onEvent(type, ev)}
  events: null, // the AbortController of the event stream
  retryMs: 1000, // the first delay before reconnecting (the server's retry:)
};

// ---- DOM helpers: every text goes in as text, never as HTML.

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

const $ = (sel) => document.querySelector(sel);

// ---- formatting

function fmtBytes(n) {
  n = Number(n || 0);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
}

// fmtLeft says how long until iso: "in 1 h 59 min", "in 42 s".
function fmtLeft(iso) {
  const d = new Date(iso);
  const s = Math.max(0, Math.round((d.getTime() - Date.now()) / 1000));
  let left;
  if (s < 90) left = s + ' s';
  else if (s < 5400) left = Math.round(s / 60) + ' min';
  else if (s < 172800) { const m = Math.round(s / 60); left = Math.floor(m / 60) + ' h ' + (m % 60) + ' min'; }
  else left = Math.round(s / 86400) + ' days';
  return h('time', { datetime: iso, title: d.toISOString() }, 'in ' + left);
}

function fmtTime(iso) {
  if (!iso || iso.startsWith('0001-')) return h('span', { class: 'muted' }, '—');
  const d = new Date(iso);
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  let rel;
  if (s < 5) rel = 'just now';
  else if (s < 90) rel = s + ' s ago';
  else if (s < 5400) rel = Math.round(s / 60) + ' min ago';
  else if (s < 172800) rel = Math.round(s / 3600) + ' h ago';
  else rel = d.toISOString().slice(0, 10);
  return h('time', { datetime: iso, title: d.toISOString() }, rel);
}

const STATE_ICON = { active: '✓', pending: '◷', failed: '✗' };
function stateBadge(state) {
  const s = state || 'pending';
  return h('span', { class: 'badge s-' + s }, h('span', { 'aria-hidden': 'true' }, STATE_ICON[s] || '?'), s);
}

const HEALTH_ICON = { up: '▲', down: '▼', unknown: '?' };
function healthBadge(state) {
  const s = state || 'unknown';
  return h('span', { class: 'badge h-' + s }, h('span', { 'aria-hidden': 'true' }, HEALTH_ICON[s] || '?'), s);
}

function yesNo(ok, yes, no) {
  return h('span', { class: 'badge ' + (ok ? 'b-yes' : 'b-no') }, h('span', { 'aria-hidden': 'true' }, ok ? '✓' : '✗'), ok ? yes : no);
}

// ---- the API

class APIError extends Error {
  constructor(status, e) {
    super(e.message || 'HTTP ' + status);
    this.status = status;
    this.code = e.code || '';
    this.field = e.field || '';
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

function authHeaders(extra) {
  const headers = Object.assign({ Accept: 'application/json' }, extra);
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  return headers;
}

async function api(method, path, body, extra) {
  const headers = authHeaders(extra);
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new APIError(0, { code: 'unreachable', message: 'the API does not answer: ' + err.message });
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const e = new APIError(res.status, (data && data.error) || { code: 'http_' + res.status, message: res.status + ' ' + res.statusText });
    if (res.status === 401) loggedOut('The token was refused: ' + e.message);
    throw e;
  }
  return data;
}

const streamPath = (id) => '/v1/streams/' + id;
// streamName is a stream as people read it: its id, or for a range of
// ports "tcp/10000-10099" (its id is its first port).
const streamName = (s) => (s.range ? s.protocol + '/' + s.range : s.id);

// ---- banner and notices

function showError(err) {
  const b = $('#banner');
  b.textContent = err ? (err.code ? err.code + ': ' : '') + err.message : '';
  b.hidden = !err;
}

// notify shows msg until the next page but one: it is set just before
// the page it is about changes.
function notify(msg, keep) {
  app.keepNotice = !!keep;
  const n = $('#notice');
  n.textContent = msg || '';
  n.hidden = !msg;
  clearTimeout(app.noticeTimer);
  if (msg) app.noticeTimer = setTimeout(() => { n.hidden = true; }, 10000);
}

// ---- the model, fed by lists and events

function setStreams(list) {
  app.streams = new Map(list.map((s) => [s.id, s]));
  for (const s of list) {
    if (!app.samples.has(s.id)) addSample(s.id, Date.now(), s.traffic || {});
  }
  for (const id of app.samples.keys()) if (!app.streams.has(id)) app.samples.delete(id);
  app.listed = true;
}

let relisting = null; // the list request in flight
let relistingToken = null; // the token it was sent with
async function relist() {
  // A list asked for with another token (the one before a login) is not
  // this one's answer: it may be a 401 that would leave the page empty.
  const tok = token();
  if (relisting && relistingToken === tok) return relisting;
  relistingToken = tok;
  const mine = (async () => {
    try {
      const ans = await api('GET', '/v1/streams');
      if (relistingToken !== tok) return; // a newer list is on its way
      setStreams(ans.streams || []);
      app.page?.onEvent?.('list');
    } catch (err) {
      if (err.status !== 401) showError(err);
    } finally {
      if (relisting === mine) relisting = null;
    }
  })();
  relisting = mine;
  return mine;
}

// refetch reads one stream again (a fleet's status is more than this
// node's event says).
async function refetch(id) {
  try {
    const s = await api('GET', streamPath(id));
    app.streams.set(id, s);
    app.page?.onEvent?.('stream', { id });
  } catch (err) {
    if (err.status === 404) {
      app.streams.delete(id);
      app.page?.onEvent?.('stream', { id });
    }
  }
}

function addSample(id, t, c) {
  const list = app.samples.get(id) || [];
  list.push({ t, sessions: c.sessions || 0, active: c.active || 0, bytes: (c.bytes_in || 0) + (c.bytes_out || 0) });
  // Keep one sample older than the window as the baseline of the first bar.
  while (list.length > 2 && list[1].t < Date.now() - WINDOW_MS) list.shift();
  app.samples.set(id, list);
}

function applyChange(type, ev) {
  const d = ev.data || {};
  const id = d.id;
  if (type === 'stream.deleted' || type === 'stream.expired') {
    app.streams.delete(id);
    app.samples.delete(id);
    return;
  }
  const old = app.streams.get(id);
  const s = Object.assign({}, old, apiShape(d.spec), { id, revision: d.revision });
  if (!old?.status || (old.status.revision || 0) < d.revision) s.status = { state: 'pending', revision: d.revision };
  app.streams.set(id, s);
  if (!app.samples.has(id)) addSample(id, Date.now(), {});
}

// apiShape is an event's spec, which has the shape GET answers, with
// the fields it lacks cleared from the copy it replaces (a stream that
// got routes has no backends any more, and the reverse).
function apiShape(spec) {
  return Object.assign({ routes: undefined, default: undefined, backends: undefined }, spec);
}

function applyStatus(d) {
  const s = app.streams.get(d.id);
  if (!s) { relist(); return; }
  if (s.status?.on_nodes) { refetch(d.id); return; }
  if (d.revision < (s.status?.revision || 0)) return;
  s.status = { state: d.state, revision: d.revision, since: new Date().toISOString() };
  if (d.error) s.status.error = d.error;
}

function applyHealth(d, time) {
  for (const id of d.streams || []) {
    const s = app.streams.get(id);
    if (!s) continue;
    s.health = (s.health || []).filter((b) => b.backend !== d.address);
    s.health.push({ backend: d.address, state: d.up ? 'up' : 'down', since: time, error: d.error || undefined });
    const all = allBackends(s);
    s.health.sort((a, b) => all.indexOf(a.backend) - all.indexOf(b.backend));
  }
}

function applyTraffic(d, time) {
  const t = Date.parse(time) || Date.now();
  for (const [id, c] of Object.entries(d.streams || {})) {
    const s = app.streams.get(id);
    if (!s) continue;
    // A session is counted when it ends: more sessions, one just ended.
    const ended = (c.sessions || 0) > (s.traffic?.sessions || 0);
    s.traffic = Object.assign({}, s.traffic, c, ended ? { last_session: time } : {});
    addSample(id, t, c);
  }
}

function onEvent(type, ev) {
  const d = ev.data || {};
  switch (type) {
    case 'stream.created': case 'stream.updated': case 'stream.deleted': case 'stream.expired':
      applyChange(type, ev); break;
    case 'stream.status': applyStatus(d); break;
    case 'backend.health': applyHealth(d, ev.time); break;
    case 'traffic': applyTraffic(d, ev.time); break;
    case 'reset': case 'bulk': relist(); break;
    case 'reload': case 'drift.detected': case 'drift.repaired':
      app.recent.unshift({ type, time: ev.time, data: d });
      app.recent.length = Math.min(app.recent.length, 50);
      break;
    default:
  }
  app.page?.onEvent?.(type, d);
}

// ---- GET /v1/events: fetch + a stream reader, SSE parsed here,
// reconnecting with Last-Event-ID and a jittered backoff.

function setLive(on, text) {
  const l = $('#live');
  l.className = 'live ' + (on ? 'on' : 'off');
  l.textContent = text;
}

async function runEvents() {
  let delay = app.retryMs;
  while (app.who) {
    const ctrl = new AbortController();
    app.events = ctrl;
    try {
      const extra = { Accept: 'text/event-stream' };
      if (app.lastEventId) extra['Last-Event-ID'] = app.lastEventId;
      const res = await fetch('/v1/events', { headers: authHeaders(extra), signal: ctrl.signal, cache: 'no-store', credentials: 'omit' });
      if (res.status === 401) { loggedOut('The token was refused.'); return; }
      if (!res.ok || !res.body) throw new Error('GET /v1/events answered ' + res.status);
      setLive(true, 'live');
      delay = app.retryMs;
      if (!app.lastEventId) relist(); // what happened before we listened
      await readSSE(res.body, (e) => dispatch(e));
      throw new Error('the event stream ended');
    } catch (err) {
      if (ctrl.signal.aborted) return;
      setLive(false, 'reconnecting…');
    }
    await new Promise((r) => setTimeout(r, delay + Math.random() * delay / 2));
    delay = Math.min(delay * 2, 30000);
  }
}

function stopEvents() {
  app.events?.abort();
  app.events = null;
}

async function readSSE(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let msg = { id: null, event: '', data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (msg.data.length) onMessage(msg);
        else if (msg.id !== null) app.lastEventId = msg.id;
        msg = { id: null, event: '', data: [] };
        continue;
      }
      if (line.startsWith(':')) continue; // a comment: connected, keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'id') msg.id = val;
      else if (field === 'event') msg.event = val;
      else if (field === 'data') msg.data.push(val);
      else if (field === 'retry' && /^\d+$/.test(val)) app.retryMs = Math.max(500, Number(val));
    }
  }
}

function dispatch(msg) {
  if (msg.id !== null) app.lastEventId = msg.id;
  let payload;
  try { payload = JSON.parse(msg.data.join('\n')); } catch { return; }
  const type = msg.event || payload.type || 'message';
  // Every event's data is the whole event; reset and dropped carry a reason.
  const ev = payload && typeof payload === 'object' && 'type' in payload && 'data' in payload
    ? payload : { type, time: new Date().toISOString(), data: payload };
  onEvent(type, ev);
}

// ---- the sparkline: bytes carried per 10 s over the last 5 minutes

function sparkline(id, width, height) {
  const list = app.samples.get(id) || [];
  const now = Date.now();
  const span = WINDOW_MS / BUCKETS;
  const bars = new Array(BUCKETS).fill(0);
  for (let i = 1; i < list.length; i++) {
    const age = now - list[i].t;
    if (age >= WINDOW_MS || age < 0) continue;
    let delta = list[i].bytes - list[i - 1].bytes;
    if (delta < 0) delta = list[i].bytes; // counts started again
    bars[BUCKETS - 1 - Math.floor(age / span)] += delta;
  }
  const max = Math.max(...bars);
  const total = bars.reduce((a, b) => a + b, 0);
  const label = fmtBytes(total) + ' in the last 5 minutes';
  const w = width / BUCKETS;
  const el = svg('svg', { class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label },
    svg('title', {}, label),
    svg('line', { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5 }));
  bars.forEach((b, i) => {
    if (!b) return;
    const bh = Math.max(1.5, (b / max) * (height - 2));
    el.append(svg('rect', { x: i * w + 0.5, y: height - bh, width: Math.max(1, w - 1), height: bh }));
  });
  return el;
}

// ---- routing

const routes = [
  [/^#\/streams$/, pageStreams],
  [/^#\/streams\/(tcp|udp)\/(\d+)$/, pageStream],
  [/^#\/new$/, pageNew],
  [/^#\/nodes$/, pageNodes],
  [/^#\/audit$/, pageAudit],
  [/^#\/status$/, pageStatus],
  [/^#\/login$/, pageLogin],
];

function canWrite() { return app.who?.access === 'write'; }

function route() {
  if (!location.hash) history.replaceState(null, '', '#/streams');
  const hash = location.hash;
  if (!app.who && hash !== '#/login') { location.hash = '#/login'; return; }
  showError(null);
  if (!app.keepNotice) notify(null);
  app.keepNotice = false;
  const main = $('#main');
  main.replaceChildren();
  app.page = null;
  for (const a of document.querySelectorAll('.top nav a')) {
    if (hash.startsWith('#/' + a.dataset.page)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const found = routes.find(([re]) => re.test(hash));
  if (!found) { location.hash = '#/streams'; return; }
  const [re, page] = found;
  app.page = page(main, ...hash.match(re).slice(1)) || null;
  // Keyboard and screen reader users start at the new page, unless the
  // page put the focus on its first field.
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

function title(text, ...extra) {
  document.title = text + ' · stream-conductor';
  return h('h1', {}, text, ...extra);
}

// ---- pages

function pageStreams(main) {
  const counts = h('span', { class: 'counts' });
  const body = h('tbody');
  const table = h('table', { id: 'streams' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col' }, 'Stream'), h('th', { scope: 'col' }, 'Backends'),
      h('th', { scope: 'col', class: 'num' }, 'Sessions'), h('th', { scope: 'col', class: 'num' }, 'Active'),
      h('th', { scope: 'col', class: 'num' }, 'In'), h('th', { scope: 'col', class: 'num' }, 'Out'),
      h('th', { scope: 'col' }, 'Last 5 min'), h('th', { scope: 'col' }, 'Description'))),
    body);
  main.append(title('Streams', counts),
    h('div', { class: 'toolbar' }, canWrite() ? h('a', { href: '#/new', id: 'new-stream' }, '+ New stream') : null),
    table);
  const draw = () => {
    const list = [...app.streams.values()].sort((a, b) =>
      (STATE_ORDER[a.status?.state] ?? 1) - (STATE_ORDER[b.status?.state] ?? 1) ||
      a.protocol.localeCompare(b.protocol) || a.listen - b.listen);
    const by = { active: 0, pending: 0, failed: 0 };
    for (const s of list) by[s.status?.state || 'pending']++;
    counts.replaceChildren(...['failed', 'pending', 'active'].filter((k) => by[k]).map((k) =>
      h('span', { class: 'badge s-' + k }, h('span', { 'aria-hidden': 'true' }, STATE_ICON[k]), by[k] + ' ' + k)));
    body.dataset.loaded = String(app.listed);
    if (!list.length) {
      body.replaceChildren(h('tr', {}, h('td', { colspan: 9, class: 'empty' }, app.listed ? 'No streams yet.' : 'Loading…')));
      return;
    }
    body.replaceChildren(...list.flatMap(streamRow));
  };
  draw();
  if (!app.listed) relist();
  const tick = setInterval(draw, 10000); // the sparklines slide; no request
  return { onEvent: draw, leave: () => clearInterval(tick) };
}

// allBackends lists every backend of s: its backends, or a routed
// stream's default and then every route's, each once.
function allBackends(s) {
  const all = [...(s.backends || s.default || [])];
  for (const r of s.routes || []) for (const b of r.backends) if (!all.includes(b)) all.push(b);
  return all;
}

// routedCell is a routed stream's cell of the list: its routes counted,
// each name with where it goes, and the default.
function routedCell(s) {
  const n = s.routes.length;
  return [h('div', { class: 'routes' }, n === 1 ? '1 route' : n + ' routes'),
    s.routes.map((r) => h('div', { class: 'route muted' }, h('span', { class: 'mono' }, r.server_name), ' → ', r.backends.join(', '))),
    h('div', { class: 'route muted' }, 'default → ', s.default?.length ? s.default.join(', ') : 'closed')];
}

function streamRow(s) {
  const st = s.status?.state || 'pending';
  const t = s.traffic || {};
  const health = new Map((s.health || []).map((b) => [b.backend, b]));
  const row = h('tr', { 'data-id': s.id, class: st },
    h('td', { class: 'state' }, stateBadge(st)),
    h('td', {}, h('a', { href: '#/streams/' + s.id, class: 'mono' }, streamName(s)), s.bind ? h('div', { class: 'muted mono' }, s.bind) : null),
    h('td', { class: 'backends' }, s.routes?.length ? routedCell(s) : (s.backends || []).map((b) =>
      h('div', { class: 'backend' }, h('span', { class: 'mono' }, b), healthBadge(health.get(b)?.state)))),
    h('td', { class: 'num sessions' }, String(t.sessions || 0)),
    h('td', { class: 'num active' }, String(t.active || 0)),
    h('td', { class: 'num' }, fmtBytes(t.bytes_in)),
    h('td', { class: 'num' }, fmtBytes(t.bytes_out)),
    h('td', {}, sparkline(s.id, 120, 22)),
    h('td', {}, s.description || ''));
  if (st !== 'failed' || !s.status?.error) return [row];
  return [row, h('tr', { class: 'failed errline', 'data-error-for': s.id },
    h('td', {}), h('td', { colspan: 8 }, 'nginx: ', s.status.error))];
}

function pageStream(main, proto, port) {
  const id = proto + '/' + port;
  const head = title(id);
  const summary = h('div', { class: 'grid' });
  const auditBody = h('tbody');
  const bansBody = h('tbody');
  main.append(head, summary);
  const draw = () => {
    const s = app.streams.get(id);
    if (!s) {
      summary.replaceChildren(h('p', { class: 'muted' }, app.listed ? 'No stream ' + id + '.' : 'Loading…'));
      return;
    }
    head.replaceChildren(streamName(s), stateBadge(s.status?.state));
    summary.replaceChildren(detailsCard(s), trafficCard(s));
  };
  draw();
  let form = null;
  const ready = (async () => {
    if (!app.streams.has(id)) await refetch(id);
    draw();
    const s = app.streams.get(id);
    if (!s) return;
    if (canWrite()) {
      form = editForm(s);
      main.append(h('h2', {}, 'Edit'), form, deleteBox(s));
    }
    if (s.ban) {
      main.append(h('h2', {}, 'Bans'), h('table', { id: 'stream-bans' },
        h('thead', {}, h('tr', {}, ['Address', 'Ends', 'Failures', ...(canWrite() ? ['Lift'] : [])].map((c) => h('th', { scope: 'col' }, c)))),
        bansBody));
      loadBans(bansBody, id);
    }
    main.append(h('h2', {}, 'Audit entries'), h('table', { id: 'stream-audit' }, auditHead(), auditBody));
    loadAudit(auditBody, id);
  })();
  ready.catch(showError);
  const tick = setInterval(draw, 10000);
  return {
    leave: () => clearInterval(tick),
    onEvent: (type, d) => {
      draw();
      if ((type === 'stream.updated' || type === 'stream.created') && d.id === id) loadAudit(auditBody, id);
      if ((type === 'ban.added' || type === 'ban.lifted') && d.stream === id || type === 'bulk' && d.what === 'bans') {
        if (bansBody.isConnected) loadBans(bansBody, id);
      }
    },
  };
}

function detailsCard(s) {
  const st = s.status || {};
  const health = new Map((s.health || []).map((b) => [b.backend, b]));
  const backendList = (list, brief) => list.map((b) => {
    const hb = health.get(b);
    return h('div', { class: 'backend' }, h('span', { class: 'mono' }, b), healthBadge(hb?.state),
      hb?.error && !brief ? h('span', { class: 'muted' }, hb.error) : null);
  });
  const rows = [
    ['State', [stateBadge(st.state), ' ', st.since ? fmtTime(st.since) : '']],
    ['Revision', String(s.revision)],
  ];
  if (s.range) {
    const n = s.listen_end - s.listen + 1;
    rows.push(['Ports', s.range + ' (' + n + ' ports; ' + (s.port_mode === 'same' ? 'each to the same port of the backend' : 'every port to the backends') + ')']);
  }
  if (s.routes?.length) {
    // Read-only: TLS server names (SNI) and where each goes.
    rows.push(['Routes (SNI)', h('table', { class: 'routes' },
      h('thead', {}, h('tr', {}, ['Server name', 'Backends', 'Balance'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, s.routes.map((r) => h('tr', {}, h('td', { class: 'mono' }, r.server_name),
        h('td', {}, backendList(r.backends, true)), h('td', {}, r.balance || '')))))]);
    rows.push(['Default', s.default?.length ? backendList(s.default) : 'none: connections that match no route are closed']);
  } else {
    rows.push(['Backends', backendList(s.backends || [])]);
  }
  if (st.error) rows.push(['nginx says', h('span', { class: 'mono' }, st.error)]);
  if (st.summary) rows.push(['Fleet', st.summary]);
  for (const [k, label] of [['bind', 'Bind'], ['balance', 'Balance'], ['max_fails', 'Max fails'], ['fail_timeout', 'Fail timeout'],
    ['connect_timeout', 'Connect timeout'], ['idle_timeout', 'Idle timeout'], ['description', 'Description']]) {
    if (s[k] !== undefined && s[k] !== '') rows.push([label, String(s[k])]);
  }
  if (s.proxy_protocol) rows.push(['PROXY protocol', 'sent']);
  if (s.allow?.length) rows.push(['Allow', s.allow.join(', ')]);
  if (s.deny?.length) rows.push(['Deny', s.deny.join(', ')]);
  for (const [k, label] of [['max_connections', 'Max connections'], ['max_connections_per_client', 'Max connections per client'],
    ['upload_rate', 'Upload rate (per connection)'], ['download_rate', 'Download rate (per connection)']]) {
    if (s[k]) rows.push([label, String(s[k])]);
  }
  if (s.nodes?.length) rows.push(['Nodes', s.nodes.join(', ')]);
  if (s.ban) rows.push(['Ban', `a source whose ${s.ban.after} sessions fail within ${s.ban.within}, for ${s.ban.for}`]);
  if (s.expires_at) rows.push(['Expires', h('span', { id: 'expires' }, fmtLeft(s.expires_at), s.ttl ? ` (renewed by ${s.ttl})` : '')]);
  rows.push(['Created', fmtTime(s.created_at)], ['Updated', fmtTime(s.updated_at)]);
  return h('section', { class: 'card', 'aria-label': 'Details' }, h('h2', {}, 'Details'), kv(rows));
}

function trafficCard(s) {
  const t = s.traffic || {};
  const rows = [
    ['Sessions', h('span', { id: 'traffic-sessions' }, String(t.sessions || 0))],
    ['Active now', String(t.active || 0)],
    ['Bytes in', fmtBytes(t.bytes_in)],
    ['Bytes out', fmtBytes(t.bytes_out)],
    ['Connect failures', String(t.connect_failures || 0)],
    ['Last session', fmtTime(t.last_session)],
  ];
  return h('section', { class: 'card', 'aria-label': 'Traffic' }, h('h2', {}, 'Traffic'),
    sparkline(s.id, 300, 48), kv(rows));
}

function kv(rows) {
  return h('dl', { class: 'kv' }, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

// ---- forms

const FIELDS = [
  // name, label, kind, hint, advanced
  ['backends', 'Backends', 'lines', 'host:port, one per line', false],
  ['description', 'Description', 'text', 'free text, never written into nginx’s files', false],
  ['balance', 'Balance', 'select:round_robin,least_conn,hash_client_ip', 'with several backends', true],
  ['bind', 'Bind address', 'text', 'an IP literal; empty: the default', true],
  ['connect_timeout', 'Connect timeout', 'text', 'such as 5s', true],
  ['idle_timeout', 'Idle timeout', 'text', 'such as 10m', true],
  ['max_fails', 'Max fails', 'number', 'passive health: failures before a backend is skipped', true],
  ['fail_timeout', 'Fail timeout', 'text', 'such as 10s', true],
  ['allow', 'Allow', 'lines', 'source CIDRs, one per line; empty: everyone', true],
  ['deny', 'Deny', 'lines', 'source CIDRs refused, also inside Allow, one per line', true],
  ['max_connections', 'Max connections', 'number', 'sessions open at once on the whole stream; empty: no limit', true],
  ['max_connections_per_client', 'Max connections per client', 'number', 'sessions open at once per client address', true],
  ['upload_rate', 'Upload rate', 'text', 'bytes per second read from each client connection, such as 512k or 1m', true],
  ['download_rate', 'Download rate', 'text', 'bytes per second read from the backend, per connection, such as 1m', true],
  ['proxy_protocol', 'PROXY protocol', 'check', 'send a PROXY header to the backend (TCP)', true],
  ['nodes', 'Nodes', 'lines', 'fleet: the nodes that serve it; empty: every node', true],
];

function field(name, label, control, hint) {
  const errId = 'err-' + name;
  const hintId = 'hint-' + name;
  control.id = 'f-' + name;
  control.name = name;
  control.setAttribute('aria-describedby', (hint ? hintId + ' ' : '') + errId);
  return h('div', { class: 'field', 'data-field': name },
    h('label', { for: control.id }, label), control,
    hint ? h('div', { class: 'hint', id: hintId }, hint) : null,
    h('div', { class: 'ferr', id: errId }));
}

function control(kind, value) {
  if (kind === 'lines') return h('textarea', { rows: 2, spellcheck: 'false' }, (value || []).join('\n'));
  if (kind === 'check') {
    const c = h('input', { type: 'checkbox' });
    c.checked = !!value;
    return c;
  }
  if (kind.startsWith('select:')) {
    const sel = h('select', {}, h('option', { value: '' }, '(default)'),
      kind.slice(7).split(',').map((o) => h('option', { value: o }, o)));
    sel.value = value || '';
    return sel;
  }
  const inp = h('input', { type: kind, autocomplete: 'off', spellcheck: 'false' });
  inp.value = value ?? '';
  return inp;
}

function specFields(s) {
  const basic = [];
  const more = [];
  for (const [name, label, kind, hint, advanced] of FIELDS) {
    const f = field(name, label, control(kind, s?.[name]), hint);
    if (kind === 'check') {
      const c = f.querySelector('input');
      f.querySelector('label').after(h('div', { class: 'check' }, c));
    }
    (advanced ? more : basic).push(f);
  }
  const open = s && FIELDS.some(([n, , , , adv]) => adv && s[n] !== undefined && s[n] !== '' && s[n] !== false && !(Array.isArray(s[n]) && !s[n].length));
  return [basic, h('details', { class: 'more', open }, h('summary', {}, 'More settings'), more)];
}

function readSpec(form) {
  const out = {};
  for (const [name, , kind] of FIELDS) {
    const el = form.elements[name];
    if (kind === 'check') { if (el.checked) out[name] = true; continue; }
    const v = el.value.trim();
    if (kind === 'lines') { const l = splitList(v); if (l.length || name === 'backends') out[name] = l; continue; }
    if (v === '') continue;
    out[name] = kind === 'number' ? Number(v) : v;
  }
  return out;
}

function clearErrors(form) {
  for (const e of form.querySelectorAll('.ferr')) e.textContent = '';
  for (const e of form.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
  showError(null);
}

// showFieldError puts the API's error next to the field it names, or in
// the banner when it names none the form shows. An error of a group of
// inputs (such as "routes") goes to the group, and the focus to its first
// input.
function showFieldError(form, err) {
  const slotOf = (name) => name && form.querySelector('#err-' + CSS.escape(name));
  let name = err.field;
  if (!slotOf(name)) name = { backend: 'backends', default: 'backends' }[name] || name;
  const slot = slotOf(name);
  if (!slot || slot.closest('[hidden]')) { showError(err); return; }
  slot.textContent = err.message;
  const input = form.elements[name];
  input?.setAttribute('aria-invalid', 'true');
  const focus = input || slot.closest('fieldset')?.querySelector('input, select, textarea');
  focus?.closest('details')?.setAttribute('open', '');
  focus?.focus();
}

function pageNew(main) {
  main.append(title('New stream'));
  if (!canWrite()) {
    main.append(h('p', {}, 'This token may only read: it cannot create streams.'));
    return null;
  }
  const proto = field('protocol', 'Protocol', h('select', {}, h('option', { value: 'tcp' }, 'tcp'), h('option', { value: 'udp' }, 'udp')));
  const listen = field('listen', 'Listen port', h('input', { type: 'number', min: 1, max: 65535, autocomplete: 'off' }), 'empty: the first free port of PORT_RANGE');
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create stream');
  const routed = h('input', { type: 'checkbox' });
  const routedField = field('routed', 'Route by TLS server name', routed,
    'share the port among TLS server names (SNI), each to backends of its own (tcp only)');
  routedField.querySelector('label').after(h('div', { class: 'check' }, routed));
  const form = h('form', { class: 'spec', id: 'create-form', novalidate: true }, proto, listen, routedField, specFields(null),
    h('div', { class: 'actions' }, submit, h('a', { href: '#/streams' }, 'Cancel')));
  const routes = routesEditor(null);
  showRoutes(form, routes, false);
  routed.addEventListener('change', () => showRoutes(form, routes, routed.checked));
  // Routes read a TLS ClientHello: UDP has none.
  form.elements.protocol.addEventListener('change', () => {
    const udp = form.elements.protocol.value === 'udp';
    routedField.hidden = udp;
    if (udp) routed.checked = false;
    showRoutes(form, routes, routed.checked);
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    const spec = withRoutes(readSpec(form), routes);
    spec.protocol = form.elements.protocol.value;
    const port = form.elements.listen.value.trim();
    submit.disabled = true;
    try {
      const s = port
        ? await api('PUT', '/v1/streams/' + spec.protocol + '/' + port, spec, { 'If-None-Match': '*' })
        : await api('POST', '/v1/streams', spec);
      app.streams.set(s.id, s);
      notify('Created ' + s.id + '.', true);
      location.hash = '#/streams';
    } catch (err) {
      if (err.code === 'revision_mismatch') err.field = 'listen', err.message = 'a stream already listens on this port';
      showFieldError(form, err);
    } finally {
      submit.disabled = false;
    }
  });
  main.append(form);
  form.elements.backends.focus();
  return null;
}

function editForm(s) {
  const preview = h('button', { type: 'submit', id: 'preview' }, 'Preview changes');
  const apply = h('button', { type: 'button', class: 'primary', id: 'apply', disabled: true }, 'Apply');
  const out = h('div', { id: 'dry-run', 'aria-live': 'polite' });
  const form = h('form', { class: 'spec', id: 'edit-form', novalidate: true }, specFields(s),
    h('div', { class: 'actions' }, preview, apply), out);
  // A routed stream is edited as its routes and default, in place of
  // its backends.
  const routes = s.routes?.length ? routesEditor(s) : null;
  if (routes) showRoutes(form, routes, true);
  let planned = null; // the spec the shown diff is of
  let revision = s.revision;
  // The form edits forwarding and options: where the stream listens (a
  // whole range of ports, and how it maps them) and when it expires are
  // kept as they are.
  const where = { protocol: s.protocol, listen: s.listen };
  if (s.listen_end) Object.assign(where, { listen_end: s.listen_end, port_mode: s.port_mode });
  const body = () => withRoutes(Object.assign(kept(s), readSpec(form), where), routes);
  form.addEventListener('input', () => { planned = null; apply.disabled = true; });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    notify(null);
    const spec = body();
    try {
      const plan = await api('PUT', streamPath(s.id) + '?dry_run=true', spec, { 'If-Match': `"${revision}"` });
      out.replaceChildren(diffView(plan));
      planned = spec;
      apply.disabled = plan.change === 'none';
    } catch (err) {
      out.replaceChildren();
      showFieldError(form, err);
    }
  });
  apply.addEventListener('click', async () => {
    if (!planned) return;
    clearErrors(form);
    apply.disabled = true;
    try {
      const ans = await api('PUT', streamPath(s.id), planned, { 'If-Match': `"${revision}"` });
      revision = ans.revision;
      app.streams.set(ans.id, ans);
      planned = null;
      out.replaceChildren();
      notify('Applied revision ' + ans.revision + ' of ' + ans.id + '.');
      app.page?.onEvent?.('stream.updated', { id: ans.id });
    } catch (err) {
      if (err.code === 'revision_mismatch') err.message = 'someone changed the stream since this page showed it: open it again';
      showFieldError(form, err);
    }
  });
  return form;
}

// ---- routes: a shared TCP port routed by TLS server name (SNI)

const NO_ROUTE = { server_name: '', backends: '', balance: '' };

// routesEditor edits a routed stream's routes, one row each (server
// name, backends, balance) with buttons to add and remove a row, and
// its default. Its inputs are named as the API names their fields
// ("routes[1].server_name", "default"), so that the API's field errors
// land next to them. read() gives the API's routed shape.
function routesEditor(s) {
  const rows = h('div', { class: 'route-rows' });
  const add = h('button', { type: 'button', id: 'add-route' }, 'Add route');
  const def = field('default', 'Default', control('lines', s?.default),
    'host:port, separated by commas or new lines: where connections that match no route, or send no name, go; empty: they are closed');
  const el = h('fieldset', { class: 'routes-edit', id: 'routes-edit', 'aria-describedby': 'hint-routes err-routes' },
    h('legend', {}, 'Routes by TLS server name (SNI)'),
    h('p', { class: 'hint', id: 'hint-routes' }, 'TLS is not terminated: each backend keeps its own certificate. ',
      'A server name such as db.example.com, or *.example.com for its sub-domains (not the bare name).'),
    h('div', { class: 'ferr', id: 'err-routes' }),
    rows, h('div', { class: 'actions' }, add), def);
  // values are the rows as typed, backends as text.
  const values = () => [...rows.children].map((row) => ({
    server_name: row.querySelector('input').value,
    backends: row.querySelector('textarea').value,
    balance: row.querySelector('select').value,
  }));
  const changed = () => el.dispatchEvent(new Event('input', { bubbles: true }));
  const draw = (vals) => rows.replaceChildren(...vals.map((v, i) => routeRow(v, i, vals.length, remove)));
  function remove(i) {
    const vals = values();
    vals.splice(i, 1);
    draw(vals);
    rows.children[Math.min(i, vals.length - 1)].querySelector('input').focus();
    changed();
  }
  add.addEventListener('click', () => {
    draw([...values(), NO_ROUTE]);
    rows.lastElementChild.querySelector('input').focus();
    changed();
  });
  const given = (s?.routes || []).map((r) => ({ server_name: r.server_name, backends: r.backends.join('\n'), balance: r.balance || '' }));
  draw(given.length ? given : [NO_ROUTE]);
  return {
    el,
    read: () => {
      const out = {
        routes: values().map((v) => Object.assign({ server_name: v.server_name.trim(), backends: splitList(v.backends) },
          v.balance ? { balance: v.balance } : {})),
      };
      const d = splitList(def.querySelector('textarea').value);
      if (d.length) out.default = d;
      return out;
    },
  };
}

// routeRow is row i of n: route i+1 as people count, its inputs named
// routes[i].<field> as the API names them.
function routeRow(v, i, n, remove) {
  const no = i + 1;
  const cell = (key, label, ctl) => {
    const name = `routes[${i}].${key}`;
    ctl.id = 'f-' + name;
    ctl.name = name;
    ctl.setAttribute('aria-describedby', 'err-' + name);
    return h('div', { class: 'rcell', 'data-field': name },
      h('label', { for: ctl.id }, label, h('span', { class: 'vh' }, ' of route ' + no)), ctl,
      h('div', { class: 'ferr', id: 'err-' + name }));
  };
  const name = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false' });
  name.value = v.server_name;
  const backends = h('textarea', { rows: 2, spellcheck: 'false' }, v.backends);
  const balance = control('select:round_robin,least_conn,hash_client_ip', v.balance);
  const rm = h('button', { type: 'button', class: 'remove-route', 'aria-label': 'Remove route ' + no, disabled: n === 1 }, 'Remove');
  rm.addEventListener('click', () => remove(i));
  return h('fieldset', { class: 'route-row', 'data-route': String(i) }, h('legend', {}, 'Route ' + no),
    cell('server_name', 'Server name', name), cell('backends', 'Backends', backends), cell('balance', 'Balance', balance),
    h('div', { class: 'rcell rm' }, rm));
}

// showRoutes shows the routes editor in place of the backends field of
// form (on), or the backends field again.
function showRoutes(form, routes, on) {
  const backends = form.querySelector('[data-field="backends"]');
  if (!routes.el.isConnected) backends.after(routes.el);
  backends.hidden = on;
  routes.el.hidden = !on;
}

// withRoutes gives spec the routed shape the API takes when routes is
// shown: its routes and default, and no backends.
// SERVER_SET are the fields of a stream the daemon sets, which a PUT does
// not take.
const SERVER_SET = new Set(['id', 'status', 'traffic', 'health', 'revision', 'created_at', 'updated_at', 'range', 'expires_in_seconds']);

// kept returns the fields of stream s that the edit form does not show, as
// s has them: a PUT replaces the whole stream, so a field the form leaves
// out (a ban policy, an expiry, one the API gains later) must be sent back
// unchanged rather than dropped.
function kept(s) {
  const shown = new Set(FIELDS.map(([name]) => name).concat(['routes', 'default', 'protocol', 'listen', 'listen_end', 'port_mode']));
  const out = {};
  for (const [k, v] of Object.entries(s)) {
    if (!SERVER_SET.has(k) && !shown.has(k)) out[k] = v;
  }
  return out;
}

function withRoutes(spec, routes) {
  if (!routes || routes.el.hidden) return spec;
  delete spec.backends;
  return Object.assign(spec, routes.read());
}

const splitList = (text) => text.split(/[\s,]+/).filter(Boolean);

function diffView(plan) {
  const lines = (plan.diff || '').split('\n').filter((l, i, a) => l !== '' || i < a.length - 1);
  const what = { create: 'would create', update: 'would change', none: 'would not change' }[plan.change] || plan.change;
  return h('div', {},
    h('p', {}, 'nginx file ', h('code', {}, plan.file), ' ', what, ' (lines marked + are added, − removed):'),
    h('pre', { class: 'diff' }, lines.map((l) => {
      const c = l[0] === '+' ? 'add' : l[0] === '-' ? 'del' : '';
      return h('span', { class: c }, l + '\n');
    })));
}

function deleteBox(s) {
  const box = h('div', { class: 'actions' });
  const ask = h('button', { type: 'button', class: 'danger', id: 'delete' }, 'Delete stream…');
  ask.addEventListener('click', () => {
    const yes = h('button', { type: 'button', class: 'danger confirm', id: 'delete-confirm' }, 'Delete ' + s.id);
    const no = h('button', { type: 'button' }, 'Cancel');
    const confirmBox = h('div', { class: 'confirm-box', role: 'group', 'aria-label': 'Confirm deletion' },
      h('p', {}, 'Delete ' + s.id + '? Its port closes and open sessions end.'), h('div', { class: 'actions' }, yes, no));
    no.addEventListener('click', () => { confirmBox.remove(); ask.hidden = false; ask.focus(); });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await api('DELETE', streamPath(s.id));
        app.streams.delete(s.id);
        app.samples.delete(s.id);
        notify('Deleted ' + s.id + '.', true);
        location.hash = '#/streams';
      } catch (err) {
        yes.disabled = false;
        showError(err);
      }
    });
    ask.hidden = true;
    box.append(confirmBox);
    no.focus();
  });
  box.append(ask);
  return box;
}

// ---- audit

function auditHead() {
  return h('thead', {}, h('tr', {}, ['#', 'Time', 'Token', 'Request', 'Stream', 'Change', 'Status', 'Result'].map((c) => h('th', { scope: 'col' }, c))));
}

function auditRow(e) {
  const change = e.before && e.after ? 'updated' : e.after ? 'created' : e.before ? 'deleted' : '—';
  const ok = e.status < 400;
  return h('tr', {},
    h('td', { class: 'num' }, String(e.seq)), h('td', {}, fmtTime(e.time)), h('td', { class: 'mono' }, e.token),
    h('td', { class: 'mono' }, e.method + ' ' + e.path),
    h('td', {}, e.stream ? h('a', { href: '#/streams/' + e.stream, class: 'mono' }, e.stream) : ''),
    h('td', {}, change), h('td', { class: 'num' }, String(e.status)),
    h('td', {}, yesNo(ok, e.result, e.result)));
}

// loadBans lists the bans of stream id in tbody (GET /v1/bans), each with
// a Lift button for a write token.
async function loadBans(tbody, id) {
  try {
    const ans = await api('GET', '/v1/bans?stream=' + encodeURIComponent(id));
    const rows = (ans.bans || []).map((b) => h('tr', { 'data-address': b.address },
      h('td', { class: 'mono' }, b.address), h('td', {}, fmtLeft(b.until)), h('td', {}, String(b.failures)),
      canWrite() ? h('td', {}, liftButton(tbody, id, b.address)) : null));
    tbody.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'No source is banned.'))]));
  } catch (err) {
    if (err.status !== 401) showError(err);
  }
}

// liftButton lifts the ban of addr from stream id; the answer comes once
// nginx lets the address in again.
function liftButton(tbody, id, addr) {
  const b = h('button', { type: 'button', 'aria-label': 'Lift the ban of ' + addr }, 'Lift');
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      await api('DELETE', '/v1/bans/' + id + '/' + encodeURIComponent(addr));
      notify('Lifted the ban of ' + addr + ' from ' + id + '.');
    } catch (err) {
      showError(err);
    }
    loadBans(tbody, id);
  });
  return b;
}

async function loadAudit(tbody, id) {
  try {
    const ans = await api('GET', '/v1/audit?limit=200');
    const entries = (ans.entries || []).filter((e) => e.stream === id).slice(0, 20);
    tbody.replaceChildren(...(entries.length ? entries.map(auditRow) : [h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No entries.'))]));
  } catch (err) {
    if (err.status !== 401) showError(err);
  }
}

function pageAudit(main) {
  const body = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Older entries');
  let next = '';
  let paged = false;
  const load = async (path, add) => {
    try {
      const ans = await api('GET', path);
      const rows = (ans.entries || []).map(auditRow);
      if (add) body.append(...rows);
      else body.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No entries.'))]));
      next = ans.next || '';
      more.hidden = !next;
    } catch (err) {
      if (err.status !== 401) showError(err);
    }
  };
  more.addEventListener('click', () => { paged = true; load(next, true); });
  main.append(title('Audit log'), h('table', { id: 'audit' }, auditHead(), body), h('div', { class: 'actions' }, more));
  load('/v1/audit?limit=50', false);
  return {
    onEvent: (type) => {
      if (!paged && type.startsWith('stream.') && type !== 'stream.status') load('/v1/audit?limit=50', false);
    },
  };
}

// ---- nodes and status

function pageNodes(main) {
  const body = h('tbody');
  main.append(title('Nodes'), h('table', { id: 'nodes' },
    h('thead', {}, h('tr', {}, ['Node', 'API', 'Version', 'nginx', '#Applied revision', '#Active', '#Failed', 'Not active', 'Last seen']
      .map((c) => h('th', { scope: 'col', class: c[0] === '#' ? 'num' : null }, c.replace('#', ''))))), body));
  const load = async () => {
    try {
      const ans = await api('GET', '/v1/nodes');
      body.replaceChildren(...(ans.nodes || []).map((n) => h('tr', {},
        h('td', {}, h('strong', {}, n.name)), h('td', { class: 'mono' }, n.api), h('td', {}, n.version),
        h('td', {}, yesNo(n.nginx_running, 'running', 'not running')), h('td', { class: 'num' }, String(n.applied_revision)),
        h('td', { class: 'num' }, String(n.streams?.active ?? 0)), h('td', { class: 'num' }, String(n.streams?.failed ?? 0)),
        h('td', {}, (n.not_active || []).map((s) => h('div', {}, h('a', { href: '#/streams/' + s.id, class: 'mono' }, s.id), ' ', stateBadge(s.state), s.error ? ' ' + s.error : ''))),
        h('td', {}, fmtTime(n.last_seen)))));
    } catch (err) {
      if (err.status !== 401) showError(err);
    }
  };
  load();
  return {
    onEvent: (type) => {
      if (type.startsWith('node.') || type === 'reload' || type === 'stream.status') load();
    },
  };
}

function pageStatus(main) {
  const grid = h('div', { class: 'grid' });
  const recent = h('tbody');
  main.append(title('Status'), grid, h('h2', {}, 'Recent reloads and drift (since the dashboard was opened)'),
    h('table', { id: 'recent' }, h('thead', {}, h('tr', {}, ['Time', 'Event', 'Shard', 'Outcome', 'Detail'].map((c) => h('th', { scope: 'col' }, c)))), recent));
  const drawRecent = () => {
    recent.replaceChildren(...(app.recent.length ? app.recent.map((e) => h('tr', {},
      h('td', {}, fmtTime(e.time)), h('td', {}, e.type + (e.data.op ? ' (' + e.data.op + ')' : e.data.kind ? ' (' + e.data.kind + ')' : '')),
      h('td', { class: 'num' }, String(e.data.shard ?? '')),
      h('td', {}, e.type === 'reload' ? yesNo(e.data.outcome === 'ok', 'ok', 'failed') : e.type === 'drift.repaired' ? yesNo(true, 'repaired', '') : h('span', { class: 'badge s-pending' }, 'detected')),
      h('td', {}, recentDetail(e))))
      : [h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'None yet.'))]));
  };
  const load = async () => {
    try {
      const st = await api('GET', '/v1/status');
      const r = st.reconciler || {};
      const c = r.counters || {};
      const by = st.streams?.by_state || {};
      const node = kv([
        ['nginx', yesNo(r.nginx_running, 'running', 'not running')],
        ['Version', st.version], ['nginx mode', st.nginx_mode],
        ['Port range', st.port_range ? st.port_range.min + '–' + st.port_range.max : ''],
        ['Store revision', String(st.store_revision)], ['Applied revision', String(r.applied_revision)],
        ['Last pass', fmtTime(r.last_pass)],
        ['Last error', r.last_error ? h('span', { class: 'mono' }, r.last_error) : 'none'],
        ['Drifted files', r.drifted?.length ? r.drifted.join(', ') : 'none'],
        ['Not listening', r.not_listening?.length ? r.not_listening.join(', ') : 'none'],
      ].concat(r.stuck ? [['Stuck', r.stuck]] : []));
      const streams = kv([['Total', String(st.streams?.total ?? 0)],
        ...['active', 'pending', 'failed'].map((k) => [h('span', { class: 'badge s-' + k }, h('span', { 'aria-hidden': 'true' }, STATE_ICON[k]), k), String(by[k] ?? 0)]),
        ...(st.streams?.failed || []).map((f) => [h('a', { href: '#/streams/' + f.id, class: 'mono' }, f.id), h('span', { class: 'mono' }, f.error)])]);
      const counters = kv([['Reloads', c.nginx_reloads], ['Starts', c.nginx_starts], ['Passes', c.passes], ['Failed passes', c.failed_passes],
        ['Drift detected', c.drift_detected], ['Drift repairs', c.drift_repairs], ['Listen drift', c.listen_drift],
        ['Files written', c.files_written], ['Files removed', c.files_removed], ['Quarantined', c.quarantined]].map(([k, v]) => [k, String(v ?? 0)]));
      const cards = [
        h('section', { class: 'card', id: 'status-node' }, h('h2', {}, 'Node'), node),
        h('section', { class: 'card' }, h('h2', {}, 'Streams'), streams),
        h('section', { class: 'card', id: 'status-counters' }, h('h2', {}, 'Reconciler'), counters),
      ];
      if (r.shards?.length) {
        cards.push(h('section', { class: 'card' }, h('h2', {}, 'nginx masters'), kv(r.shards.map((s) =>
          ['Shard ' + s.shard, [yesNo(s.running, 'running', 'not running'), ' ', s.streams + ' streams, ' + s.reloads + ' reloads', s.last_error ? ' — ' + s.last_error : '']]))));
      }
      if (st.events) cards.push(h('section', { class: 'card' }, h('h2', {}, 'Events'), kv([['Subscribers', String(st.events.subscribers ?? 0)], ['Published', String(st.events.published ?? 0)],
        ['Dropped subscribers', String(st.events.dropped_subscribers ?? 0)], ['Last id', String(st.events.last_id ?? 0)]])));
      grid.replaceChildren(...cards);
    } catch (err) {
      if (err.status !== 401) showError(err);
    }
  };
  load();
  drawRecent();
  return {
    onEvent: (type) => {
      if (type === 'reload' || type.startsWith('drift.') || type === 'stream.status' || type === 'bulk') { load(); drawRecent(); }
    },
  };
}

function recentDetail(e) {
  const d = e.data;
  if (d.error) return d.error;
  if (e.type === 'reload') return d.streams + (d.streams === 1 ? ' stream, ' : ' streams, ') + Math.round(d.duration_ms || 0) + ' ms';
  return [d.detail, (d.streams || []).join(', ')].filter(Boolean).join(': ');
}

// ---- login

function pageLogin(main) {
  if (app.who && (!app.who.auth || token())) { location.hash = '#/streams'; return null; }
  const input = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  const form = h('form', { class: 'spec login', id: 'login-form' },
    field('token', 'API token', input, 'The API’s write or read-only token. It stays in this tab (sessionStorage) and is sent only to this API.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Log in')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    const t = input.value.trim();
    if (!t) { showFieldError(form, { field: 'token', message: 'enter the token' }); return; }
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await start();
      location.hash = '#/streams';
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      showFieldError(form, { field: 'token', code: err.code, message: err.status === 401 ? 'the API refused this token' : err.message });
    }
  });
  main.append(title('Log in'), form);
  input.focus();
  return null;
}

function loggedOut(why) {
  stopEvents();
  const had = !!app.who;
  app.who = null;
  sessionStorage.removeItem(TOKEN_KEY);
  app.streams.clear();
  app.samples.clear();
  app.listed = false;
  app.lastEventId = '';
  drawWho();
  if (had && why) notify(why, true);
  if (location.hash !== '#/login') location.hash = '#/login';
}

function drawWho() {
  const who = app.who;
  $('#nav-new').hidden = !canWrite();
  $('#logout').hidden = !(who && who.auth);
  $('#who').textContent = !who ? '' : who.access === 'write' ? (who.auth ? 'write access' : 'open (no token set)') : 'read-only';
  if (!who) setLive(false, 'not connected');
}

// start asks the API who we are and, when it answers, lists the streams
// and follows the events.
async function start() {
  const who = await api('GET', '/v1/whoami');
  app.who = who;
  drawWho();
  stopEvents();
  await relist();
  runEvents();
}

async function boot() {
  $('#logout').addEventListener('click', () => loggedOut('Logged out.'));
  window.addEventListener('hashchange', () => { leave(); route(); });
  try {
    await start();
  } catch (err) {
    if (err.status !== 401) showError(err);
  }
  route();
}

function leave() {
  app.page?.leave?.();
}

boot();
