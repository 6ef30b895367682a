// Shoal's web UI: plain JavaScript over the manager's /v1 API (no build step, no dependencies).
// Data is read with ?stale=true from this manager's replica, so the UI keeps working while the
// cluster has no quorum (when operators need it most); a banner says so.
'use strict';

const S = {
  cluster: null, health: [], nodes: [], services: [], tasks: [],
  events: [], // newest last, at most MAX_EVENTS
  lastIndex: -1, loaded: false,
  view: null, renderedKey: null,
};
const MAX_EVENTS = 500;
const POLL_MS = 2000;
let logAbort = null;

// ---------- helpers ----------
const $ = (sel) => document.querySelector(sel);
function esc(v) {
  return String(v == null ? '' : v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
const short = (id) => (id || '').slice(0, 12);
function ago(ts) {
  if (!ts) return '';
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 60) return Math.floor(s) + 's ago';
  if (s < 3600) return Math.floor(s / 60) + 'm ago';
  if (s < 86400) return Math.floor(s / 3600) + 'h ago';
  return Math.floor(s / 86400) + 'd ago';
}
function bytes(n) {
  if (!n) return '0';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (n >= 10 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + u[i];
}
const cpus = (nano) => (nano / 1e9).toFixed(nano % 1e9 ? 2 : 0);
function pill(text, kind) { return `<span class="pill ${kind || ''}">${esc(text)}</span>`; }
function statePill(state) {
  const kind = { running: 'ok', complete: 'ok', ready: 'ok', active: 'ok', failed: 'bad', rejected: 'bad', down: 'bad',
    orphaned: 'bad', pending: 'warn', drain: 'warn', pause: 'warn', starting: 'warn', preparing: 'warn',
    unknown: 'warn', disconnected: 'bad' }[state];
  return pill(state, kind);
}
function meter(used, total) {
  // A <meter> element: inline styles are refused by the page's Content-Security-Policy.
  const pct = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  return `<meter min="0" max="100" value="${pct}" title="${pct}%"></meter>`;
}

async function api(path, opts = {}) {
  const o = { ...opts, headers: { ...(opts.headers || {}) } };
  if (o.method && o.method !== 'GET') {
    o.headers['X-Shoal-UI'] = '1';
    o.headers['Content-Type'] = 'application/json';
  }
  const r = await fetch(path, o);
  if (!r.ok) throw new Error(await errorOf(r));
  if (r.status === 204) return null;
  return r.json();
}
// A failed answer's message: the API's `error.message`, else the HTTP status.
async function errorOf(r) {
  let msg = `${r.status} ${r.statusText}`;
  try { const j = await r.json(); if (j.error && j.error.message) msg = j.error.message; } catch (_) { /* not JSON */ }
  return msg;
}

// Two banners. #problem is the standing state of the connection (no quorum, API unreachable),
// rewritten by every refresh. #banner is the result of the operator's last action: it stays until
// dismissed or for FLASH_MS / FLASH_ERROR_MS, whatever refreshes happen meanwhile.
const FLASH_MS = 10000;
const FLASH_ERROR_MS = 30000;
function showProblem(text) {
  const b = $('#problem');
  b.hidden = !text;
  b.textContent = text || '';
}
let flashTimer = null;
function flash(text, isError) {
  const b = $('#banner');
  $('#banner-text').textContent = text;
  b.className = 'banner' + (isError ? '' : ' info');
  b.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(dismissFlash, isError ? FLASH_ERROR_MS : FLASH_MS);
}
function dismissFlash() {
  clearTimeout(flashTimer);
  flashTimer = null;
  $('#banner').hidden = true;
}
let problem = '';

// ---------- data ----------
const nodeName = (id) => { const n = S.nodes.find((x) => x.id === id); return n ? n.description.hostname : short(id); };
const serviceOf = (id) => S.services.find((s) => s.id === id);
function replicasWanted(svc) {
  const m = svc.spec.mode;
  if (m.replicated) return m.replicated.replicas;
  if (m.replicated_job) return m.replicated_job.total_completions;
  // A scheduled job wants as many tasks as it has runs going.
  if (m.scheduled) return ((svc.job && svc.job.runs) || []).filter((r) => r.state === 'running').length;
  return S.nodes.filter((n) => n.status.state === 'ready' && n.spec.availability === 'active').length;
}
function modeName(svc) {
  const m = svc.spec.mode;
  return typeof m === 'string' ? m : Object.keys(m)[0];
}
const holdsResources = (t) => t.node_id && ['assigned', 'accepted', 'preparing', 'starting', 'running'].includes(t.status.state);

async function refresh() {
  try {
    // The state index says whether anything changed: the lists are fetched only then.
    const cluster = await api('/v1/cluster?stale=true');
    if (!S.loaded || cluster.index !== S.lastIndex) {
      const [nodes, services, tasks] = await Promise.all([
        api('/v1/nodes?stale=true'), api('/v1/services?stale=true'), api('/v1/tasks?stale=true'),
      ]);
      S.nodes = nodes; S.services = services; S.tasks = tasks;
    }
    S.cluster = cluster; S.loaded = true;
    const c = $('#conn');
    c.textContent = `index ${cluster.index} · ${cluster.raft.state} · term ${cluster.raft.term}`;
    c.className = 'conn';
    problem = cluster.raft.leader == null ? 'This manager sees no leader: the cluster has no quorum. What is shown may be stale; changes will fail until a quorum returns.' : '';
    showProblem(problem);
    if (cluster.index !== S.lastIndex || S.view === 'overview') {
      S.lastIndex = cluster.index;
      render(false);
    }
  } catch (e) {
    $('#conn').textContent = 'disconnected';
    $('#conn').className = 'conn bad';
    problem = `Cannot reach the manager's API: ${e.message}`;
    showProblem(problem);
  }
  if (S.view === 'overview') refreshHealth();
  if (S.view === 'jobs') {
    if (!J.loaded || !S.cluster || J.index !== S.cluster.index) loadJobs();
    else renderJobs();
  }
}

async function refreshHealth() {
  try {
    S.health = await api('/v1/cluster/health');
    const el = $('#managers');
    if (el) el.innerHTML = managersTable();
  } catch (_) { /* shown by refresh */ }
}

// Reads a newline-delimited JSON stream, handing each chunk's records to `onRecords` (lines
// that do not parse are skipped), until the stream ends.
async function readNdjson(response, onRecords, parse = JSON.parse) {
  const reader = response.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    const lines = buf.split('\n');
    buf = lines.pop();
    const records = [];
    for (const line of lines) {
      if (!line.trim()) continue;
      try { records.push(parse(line)); } catch (_) { /* skip a bad line */ }
    }
    if (records.length) onRecords(records);
  }
}

// The live event feed: the last ten minutes, then every change as it happens.
async function followEvents() {
  const since = (Date.now() - 10 * 60 * 1000) * 1e6;
  for (;;) {
    try {
      const r = await fetch(`/v1/events?since=${since}`);
      if (!r.ok) throw new Error(r.statusText);
      await readNdjson(r, (records) => {
        records.forEach(addEvent);
        scheduleRefresh();
        renderEvents();
      });
    } catch (_) { /* reconnect below */ }
    await new Promise((res) => setTimeout(res, 2000));
  }
}
function addEvent(ev) {
  if (S.events.length && S.events[S.events.length - 1].index >= ev.index && S.events.some((e) => e.index === ev.index && e.type === ev.type && e.object.id === ev.object.id)) return;
  S.events.push(ev);
  if (S.events.length > MAX_EVENTS) S.events.splice(0, S.events.length - MAX_EVENTS);
}
let refreshTimer = null;
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 250);
}

// ---------- views ----------
function route() {
  const h = location.hash.replace(/^#\/?/, '') || 'overview';
  const [view, id] = h.split('/');
  return { view, id: id ? decodeURIComponent(id) : null };
}

function render(routeChanged) {
  const { view, id } = route();
  S.view = view;
  document.querySelectorAll('nav a').forEach((a) => a.classList.toggle('active', a.dataset.nav === view));
  if (routeChanged) stopLogs();
  if (routeChanged && view !== 'kv') kvLeave();
  if (!S.loaded) return;
  const main = $('#main');
  if (view === 'nodes') main.innerHTML = nodesView();
  else if (view === 'services' && id) renderService(id, routeChanged);
  else if (view === 'services') main.innerHTML = servicesView();
  else if (view === 'jobs') jobsView(routeChanged);
  else if (view === 'events') { if (routeChanged || !$('#events')) main.innerHTML = eventsView(); renderEvents(); }
  else if (view === 'kv') kvView();
  else overviewView(routeChanged);
}

function overviewView(routeChanged) {
  const main = $('#main');
  const by = {};
  for (const t of S.tasks) by[t.status.state] = (by[t.status.state] || 0) + 1;
  const ready = S.nodes.filter((n) => n.status.state === 'ready').length;
  const cards = [
    ['Managers', S.nodes.filter((n) => n.spec.role === 'manager').length],
    ['Nodes ready', `${ready} / ${S.nodes.length}`],
    ['Services', S.services.length],
    ['Tasks running', by.running || 0],
    ['Tasks pending', by.pending || 0],
    ['Tasks failed', (by.failed || 0) + (by.rejected || 0)],
  ];
  const tasksByState = Object.keys(by).sort().map((k) => `${statePill(k)} ${by[k]}`).join(' &nbsp; ') || '<span class="muted">no tasks</span>';
  if (routeChanged || !$('#overview')) {
    main.innerHTML = `<div id="overview"><h2>Cluster</h2><div class="cards" id="cards"></div>
      <h3>Tasks by state</h3><p id="bystate"></p>
      <h3>Managers</h3><div id="managers">${managersTable()}</div>
      <h3>Recent events</h3><div id="recent"></div></div>`;
  }
  $('#cards').innerHTML = cards.map(([l, n]) => `<div class="card"><div class="n">${esc(n)}</div><div class="l">${esc(l)}</div></div>`).join('');
  $('#bystate').innerHTML = tasksByState;
  renderEvents();
}

function managersTable() {
  if (!S.health.length) return '<p class="empty">Asking the managers…</p>';
  const rows = S.health.map((h) => {
    const st = h.status || {};
    const leader = st.leader != null && st.raft_id === st.leader;
    return `<tr><td>${esc(nodeName(h.node_id))} ${leader ? pill('leader', 'leader') : ''}</td><td class="mono">${esc(h.addr)}</td>
      <td>${h.reachable ? pill('reachable', 'ok') : pill('unreachable', 'bad')}${h.error ? ` <span class="err">${esc(h.error)}</span>` : ''}</td>
      <td>${esc(st.state || '')}${h.voter ? '' : ' (learner)'}</td><td class="num">${esc(st.term ?? '')}</td>
      <td class="num">${esc(st.last_log_index ?? '')}</td><td class="num">${esc(st.last_applied ?? '')}</td></tr>`;
  }).join('');
  return `<table id="managers-table"><thead><tr><th>Manager</th><th>Address</th><th>Reachability</th><th>Raft state</th><th>Term</th><th>Log index</th><th>Applied</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function nodesView() {
  if (!S.nodes.length) return '<h2>Nodes</h2><p class="empty">No nodes yet: start one with <code>shoal dev</code>, or join workers with <code>shoal cluster join</code>.</p>';
  const use = {};
  for (const t of S.tasks) {
    if (!holdsResources(t)) continue;
    const u = use[t.node_id] || (use[t.node_id] = { cpu: 0, mem: 0, tasks: 0 });
    u.cpu += t.spec.resources.reservations.nano_cpus || 0;
    u.mem += t.spec.resources.reservations.memory_bytes || 0;
    u.tasks += 1;
  }
  const rows = S.nodes.slice().sort((a, b) => a.description.hostname.localeCompare(b.description.hostname)).map((n) => {
    const u = use[n.id] || { cpu: 0, mem: 0, tasks: 0 };
    const r = n.description.resources || {};
    const labels = Object.entries(n.spec.labels || {}).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(' ');
    const ms = n.manager_status;
    const av = n.spec.availability;
    const btn = (to, label) => `<button data-node="${esc(n.id)}" data-availability="${to}" ${av === to ? 'disabled' : ''}>${label}</button>`;
    return `<tr data-hostname="${esc(n.description.hostname)}" data-state="${esc(n.status.state)}">
      <td><b>${esc(n.description.hostname)}</b><br><span class="mono muted">${esc(short(n.id))}</span></td>
      <td>${esc(n.spec.role)}${ms && ms.leader ? ' ' + pill('leader', 'leader') : ''}</td>
      <td>${statePill(n.status.state)}${n.status.message ? `<br><span class="muted">${esc(n.status.message)}</span>` : ''}</td>
      <td>${statePill(av)}</td><td>${labels || '<span class="muted">none</span>'}</td>
      <td>${meter(u.cpu, r.nano_cpus)}${cpus(u.cpu)} / ${cpus(r.nano_cpus || 0)}</td>
      <td>${meter(u.mem, r.memory_bytes)}${bytes(u.mem)} / ${bytes(r.memory_bytes || 0)}</td>
      <td class="num">${u.tasks}</td>
      <td>${btn('active', 'Activate')} ${btn('pause', 'Pause')} ${btn('drain', 'Drain')}</td></tr>`;
  }).join('');
  return `<h2>Nodes</h2><table id="nodes-table"><thead><tr><th>Host</th><th>Role</th><th>Status</th><th>Availability</th><th>Labels</th>
    <th>CPU reserved</th><th>Memory reserved</th><th>Tasks</th><th>Actions</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function serviceCounts(svc) {
  let running = 0;
  for (const t of S.tasks) if (t.service_id === svc.id && t.desired_state === 'running' && t.status.state === 'running') running++;
  return running;
}
function program(spec) {
  const t = spec.task_template;
  return [t.image, ...(t.command || []), ...(t.args || [])].filter(Boolean).join(' ');
}

function servicesView() {
  if (!S.services.length) return '<h2>Services</h2><p class="empty">No services yet. Create one with <code>shoal service create --name web --replicas 3 IMAGE</code>.</p>';
  const rows = S.services.slice().sort((a, b) => a.spec.name.localeCompare(b.spec.name)).map((s) => {
    const u = s.update_status;
    return `<tr data-service="${esc(s.spec.name)}"><td><a href="#/services/${encodeURIComponent(s.id)}">${esc(s.spec.name)}</a></td>
      <td>${esc(modeName(s))}</td><td class="num replicas">${serviceCounts(s)}/${replicasWanted(s)}</td>
      <td class="mono">${esc(program(s.spec))}</td><td>${esc(s.spec.task_template.driver || '')}</td>
      <td>${u ? statePill(u.state) + (u.message ? ` <span class="muted">${esc(u.message)}</span>` : '') : '<span class="muted">none</span>'}</td>
      <td class="muted">${ago(s.updated_at)}</td></tr>`;
  }).join('');
  return `<h2>Services</h2><table id="services-table"><thead><tr><th>Name</th><th>Mode</th><th>Replicas</th><th>Image / command</th><th>Driver</th><th>Update</th><th>Updated</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renderService(id, routeChanged) {
  const main = $('#main');
  const s = S.services.find((x) => x.id === id || x.spec.name === id);
  if (!s) { main.innerHTML = `<p class="empty">Service ${esc(id)} not found (removed?). <a href="#/services">All services</a></p>`; return; }
  if (routeChanged || !$('#service') || $('#service').dataset.id !== s.id) {
    const replicated = !!s.spec.mode.replicated;
    main.innerHTML = `<div id="service" data-id="${esc(s.id)}"><h2><a href="#/services">Services</a> / ${esc(s.spec.name)}</h2>
      <div id="svc-summary"></div>
      <div class="bar">
        ${replicated ? `<label>Replicas <input id="scale-input" type="number" min="0" max="${MAX_REPLICAS}" step="1" value="${s.spec.mode.replicated.replicas}"></label>
        <button id="scale-button" class="primary">Scale</button>` : ''}
        <button id="rollback-button">Roll back</button>
      </div>
      <h3>Tasks</h3><div id="svc-tasks"></div>
      <h3>Logs</h3>
      <div class="bar"><select id="log-task"><option value="">all tasks</option></select>
        <button id="log-follow">Follow</button><button id="log-stop" disabled>Stop</button></div>
      <div id="logs" class="logs"><span class="muted">Press Follow to stream this service's logs.</span></div></div>`;
  }
  const u = s.update_status;
  $('#svc-summary').innerHTML = `<p>${pill(modeName(s))} <span class="replicas">${serviceCounts(s)}/${replicasWanted(s)}</span> running ·
    <span class="mono">${esc(program(s.spec))}</span> · spec version ${s.spec_version}
    ${u ? ' · update ' + statePill(u.state) + ' ' + esc(u.message || '') : ''}</p>`;
  $('#rollback-button').disabled = !s.previous_spec;
  const tasks = S.tasks.filter((t) => t.service_id === s.id)
    .sort((a, b) => (a.slot || 0) - (b.slot || 0) || Date.parse(b.created_at) - Date.parse(a.created_at));
  if (!tasks.length) {
    $('#svc-tasks').innerHTML = '<p class="empty">No tasks: the service is scaled to zero, or the orchestrator has not run yet.</p>';
  } else {
    const rows = tasks.map((t) => {
      const h = t.status.health ? ' ' + pill(t.status.health, t.status.health === 'healthy' ? 'ok' : 'warn') : '';
      const err = t.status.err ? `<span class="err">${esc(t.status.err)}</span>` : '';
      return `<tr data-task="${esc(t.id)}" data-state="${esc(t.status.state)}" data-desired="${esc(t.desired_state)}">
        <td>${esc(s.spec.name)}.${t.slot != null ? t.slot : esc(nodeName(t.node_id))}</td><td class="mono">${esc(short(t.id))}</td>
        <td>${t.node_id ? esc(nodeName(t.node_id)) : '<span class="muted">unassigned</span>'}</td>
        <td>${esc(t.desired_state)}</td><td>${statePill(t.status.state)}${h} <span class="muted">${ago(t.status.timestamp)}</span></td>
        <td>${err || esc(t.status.message)}</td></tr>`;
    }).join('');
    $('#svc-tasks').innerHTML = `<table id="tasks-table"><thead><tr><th>Name</th><th>Task</th><th>Node</th><th>Desired</th><th>State</th><th>Error / message</th></tr></thead><tbody>${rows}</tbody></table>`;
  }
  const sel = $('#log-task');
  const keep = sel.value;
  const live = tasks.filter((t) => t.desired_state === 'running');
  sel.innerHTML = '<option value="">all tasks</option>' + live.map((t) => `<option value="${esc(t.id)}">${esc(s.spec.name)}.${t.slot != null ? t.slot : esc(nodeName(t.node_id))} (${esc(short(t.id))})</option>`).join('');
  sel.value = keep;
}

function eventsView() {
  return '<h2>Events</h2><p class="muted">Changes to nodes, services and tasks as the managers commit them (the last ten minutes, then live).</p><div id="events"></div>';
}

function describeEvent(ev) {
  const o = ev.object || {};
  if (ev.type === 'node') return `${esc(o.description ? o.description.hostname : short(o.id))} ${o.status ? statePill(o.status.state) : ''} ${o.spec ? statePill(o.spec.availability) : ''}`;
  if (ev.type === 'service') return esc(o.spec ? o.spec.name : short(o.id));
  if (ev.type === 'task') {
    const svc = serviceOf(o.service_id);
    const name = `${svc ? svc.spec.name : short(o.service_id)}.${o.slot != null ? o.slot : nodeName(o.node_id)}`;
    return `${esc(name)} ${o.status ? statePill(o.status.state) : ''} ${o.node_id ? 'on ' + esc(nodeName(o.node_id)) : ''} ${o.status && o.status.err ? `<span class="err">${esc(o.status.err)}</span>` : ''}`;
  }
  return esc(short(o.id));
}

function renderEvents() {
  const target = $('#events') || $('#recent');
  if (!target) return;
  const limit = target.id === 'recent' ? 15 : 200;
  const list = S.events.slice(-limit).reverse();
  if (!list.length) { target.innerHTML = '<p class="empty">No events in the last ten minutes.</p>'; return; }
  target.innerHTML = `<table class="events"><thead><tr><th>When</th><th>Kind</th><th>Action</th><th>Object</th></tr></thead><tbody>${
    list.map((ev) => `<tr><td class="muted">${esc(new Date(ev.at).toLocaleTimeString())}</td><td>${esc(ev.type)}</td><td>${esc(ev.action)}</td><td>${describeEvent(ev)}</td></tr>`).join('')
  }</tbody></table>`;
}

// ---------- key-value store ----------
// Read-only: the keys under a prefix (POST /v1/kv/range, read from this manager's replica like
// the rest of the page), then, with Watch on, every change as it is applied (GET /v1/kv/watch,
// from the revision after the one the table holds, so nothing falls between the two). Keys and
// values are bytes, base64 in the API's JSON: they are shown as text when they are UTF-8 without
// control characters, else as base64, marked. They are user data: they reach the page only as
// text nodes and attributes set from script, never as HTML.
const KV_LIMIT = 1000; // keys read per browse
const KV_SHOWN = 80; // characters of a value shown before "Show all"
const KV_LOG = 30; // entries kept in the live log
const KV_RETRY_MS = [500, 1000, 2000, 5000]; // waits between reconnections
const K = {
  shown: null, // the prefix on screen; null when the view is not built
  rows: new Map(), // base64 key -> KeyValue (its lease id as a decimal string)
  expanded: new Set(), // base64 keys whose whole value is shown
  changed: new Set(), // keys put by the last batch of events (highlighted)
  listed: false, more: false, count: 0,
  revision: 0, // the store's revision, as last seen (a read's header, an event, a progress line)
  seen: 0, // the table holds every change up to this revision: a watch resumes after it
  log: [], // newest first
  note: null, // {text, kind, at}: the last thing that happened to the watch
  watching: false, // the Watch toggle
  state: 'off', // the watch: off, connecting, live, reconnecting
  loop: null, // the running watch's token: a loop whose token is no longer this one stops
  abort: null, // the open watch request
  browse: 0, // the current browse: an older one's answer is dropped
};

// A DOM element with attributes (`class`, anything else through setAttribute) and children
// (strings become text nodes: user data is never parsed as HTML; arrays are spread).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null && c !== '') e.append(c);
  return e;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
function b64encode(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function b64decode(s) {
  const bin = atob(s || '');
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
// Control characters (but tab and line breaks) and the bidirectional overrides, which would make
// text look other than it is.
const NOT_TEXT = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
// A base64 field as shown: {text, base64, size}, the text being the base64 itself when the
// bytes are not UTF-8 text.
function shown(b64) {
  const bytes = b64decode(b64);
  let text = null;
  try { text = utf8.decode(bytes); } catch (_) { /* not UTF-8 */ }
  if (text === null || NOT_TEXT.test(text)) return { text: b64 || '', base64: true, size: bytes.length };
  return { text, base64: false, size: bytes.length };
}
function cmpBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}
// (key, range_end) selecting every key that starts with `prefix` (etcd's prefix range); the
// empty prefix selects every key.
function prefixRange(prefix) {
  const key = new TextEncoder().encode(prefix);
  if (!key.length) return { key: Uint8Array.of(0), end: Uint8Array.of(0) };
  const end = Array.from(key);
  while (end.length) {
    const last = end.pop();
    if (last < 0xff) { end.push(last + 1); return { key, end: Uint8Array.from(end) }; }
  }
  return { key, end: Uint8Array.of(0) };
}
// The API's JSON with every lease id as a string: ids are 64-bit, past what a JavaScript number
// holds exactly. (Keys and values are base64, so `"lease":` appears only as a field name.)
const kvParse = (text) => JSON.parse(text.replace(/"lease":(-?\d+)/g, '"lease":"$1"'));
// A lease id as etcd prints it: 16 hex digits; none for 0.
function leaseHex(id) {
  if (id == null || String(id) === '0') return '';
  return BigInt.asUintN(64, BigInt(id)).toString(16).padStart(16, '0');
}

async function kvRange(prefix) {
  const { key, end } = prefixRange(prefix);
  const r = await fetch('/v1/kv/range', {
    method: 'POST',
    headers: { 'X-Shoal-UI': '1', 'Content-Type': 'application/json' },
    body: JSON.stringify({ key: b64encode(key), range_end: b64encode(end), limit: KV_LIMIT, serializable: true }),
  });
  if (!r.ok) throw new Error(await errorOf(r));
  return kvParse(await r.text());
}

// The prefix in the address (`#/kv/<prefix, URI-encoded>`).
function kvHashPrefix() {
  const h = location.hash.replace(/^#\/?/, '');
  if (!h.startsWith('kv/')) return '';
  try { return decodeURIComponent(h.slice(3)); } catch (_) { return h.slice(3); }
}

function kvView() {
  const prefix = kvHashPrefix();
  if (!$('#kv')) {
    $('#main').innerHTML = `<div id="kv"><h2>Key-value</h2>
      <p class="muted">The cluster's key-value store (the etcd API's), read-only: the keys under a prefix as this manager's replica has them; Watch follows every change live. Writes go through <code>shoal kv</code> or <code>etcdctl</code>.</p>
      <div class="bar"><label>Prefix <input id="kv-prefix" type="text" spellcheck="false" autocomplete="off" placeholder="(every key)"></label>
        <button id="kv-browse" class="primary">Browse</button>
        <button id="kv-watch" aria-pressed="false">Watch</button>
        <span id="kv-watch-state"></span>
        <span class="muted" title="The store's revision when the keys were read, or at the last change the watch saw (changes outside the prefix move it too, unseen here)"><span id="kv-count"></span> · store revision <span id="kv-rev" class="mono"></span></span></div>
      <div id="kv-note" class="note" role="status" hidden></div>
      <div id="kv-keys"></div>
      <h3>Live events</h3><div id="kv-log"></div></div>`;
    K.shown = null;
  }
  if (K.shown !== prefix) {
    $('#kv-prefix').value = prefix;
    kvBrowse(prefix);
  }
}

// Leaving the view: the watch stops (and is off when the view comes back).
function kvLeave() {
  K.browse++;
  kvStopWatch();
  K.watching = false;
  K.state = 'off';
  K.shown = null;
}

function kvGo() {
  const p = $('#kv-prefix').value;
  if (route().view === 'kv' && kvHashPrefix() === p) kvBrowse(p);
  else location.hash = '#/kv/' + encodeURIComponent(p);
}

async function kvBrowse(prefix) {
  const me = ++K.browse;
  kvStopWatch(); // restarted on the new listing, when on
  K.shown = prefix;
  K.listed = false;
  K.rows = new Map();
  K.expanded.clear();
  K.changed.clear();
  K.log = [];
  K.note = null;
  if (K.watching) K.state = 'connecting';
  renderKv();
  try {
    const r = await kvRange(prefix);
    if (me !== K.browse) return;
    kvList(r);
    if (K.watching) kvStartWatch();
  } catch (e) {
    if (me !== K.browse) return;
    kvNote(`Could not read the keys: ${e.message}`, 'bad');
  }
  renderKv();
}

// A read's answer replaces the table.
function kvList(r) {
  K.rows = new Map((r.kvs || []).map((kv) => [kv.key, kv]));
  K.changed.clear();
  K.revision = r.revision;
  K.seen = r.revision;
  K.more = !!r.more;
  K.count = r.count;
  K.listed = true;
}

function kvToggleWatch() {
  if (K.watching) {
    K.watching = false;
    kvStopWatch();
    K.state = 'off';
    K.note = null;
    kvLogNote(`Watch stopped; the table holds the changes up to revision ${K.seen}`);
  } else {
    K.watching = true;
    K.state = 'connecting';
    if (K.listed) kvStartWatch(); // else once the keys are read
  }
  renderKv();
}

function kvToggleValue(key) {
  if (K.expanded.has(key)) K.expanded.delete(key); else K.expanded.add(key);
  renderKv();
}

function kvStartWatch() {
  const me = {};
  K.loop = me;
  kvWatch(me);
}
function kvStopWatch() {
  K.loop = null;
  if (K.abort) { K.abort.abort(); K.abort = null; }
}

// The watch, reconnected after the revision the table holds whenever it ends or fails, until it
// is turned off (or the view left, or another prefix browsed: `me` is no longer K.loop).
async function kvWatch(me) {
  let attempt = 0;
  let trouble = false; // the last connection ended or failed
  while (K.loop === me) {
    const ctl = new AbortController();
    K.abort = ctl;
    let compacted = null; // why the changes since K.seen are gone, when they are
    let ended = 'The watch ended';
    const from = K.seen + 1;
    try {
      const { key, end } = prefixRange(K.shown);
      const q = `key=${encodeURIComponent(b64encode(key))}&range_end=${encodeURIComponent(b64encode(end))}&start_revision=${from}&progress=true`;
      const r = await fetch(`/v1/kv/watch?${q}`, { signal: ctl.signal });
      if (K.loop !== me) return;
      if (!r.ok) {
        const msg = await errorOf(r);
        if (!/compacted/i.test(msg)) throw new Error(msg);
        compacted = msg;
      } else {
        K.state = 'live';
        attempt = 0;
        if (trouble) kvNote(`The watch is back, from revision ${from}.`, 'info');
        trouble = false;
        kvLogNote(`Watching from revision ${from}`);
        renderKv();
        await readNdjson(r, (lines) => {
          if (K.loop !== me) return;
          const c = kvApply(lines);
          if (c != null) compacted = `compacted up to revision ${c}`;
        }, kvParse);
      }
    } catch (e) {
      if (K.loop !== me) return; // turned off (the request was aborted)
      ended = `The watch failed (${e.message})`;
    }
    if (K.loop !== me) return;
    if (compacted != null) {
      // The history the watch needed is gone: read the keys again, and watch from there.
      K.state = 'connecting';
      renderKv();
      try {
        const r = await kvRange(K.shown);
        if (K.loop !== me) return;
        kvList(r);
        kvNote(`The store's history from revision ${from} is gone (${compacted}): the keys were read again at revision ${r.revision}, and the watch goes on from there.`, 'warn');
        kvLogNote(`History compacted: keys read again at revision ${r.revision}`);
        renderKv();
        continue;
      } catch (e) {
        if (K.loop !== me) return;
        ended = `The history was compacted and the keys could not be read again (${e.message})`;
      }
    }
    trouble = true;
    K.state = 'reconnecting';
    kvNote(`${ended}: reconnecting from revision ${K.seen + 1}…`, 'bad');
    kvLogNote(`${ended}; reconnecting`);
    renderKv();
    await new Promise((res) => setTimeout(res, KV_RETRY_MS[Math.min(attempt, KV_RETRY_MS.length - 1)]));
    attempt++;
  }
}

// Applies a batch of watch lines to the table; the compact revision if one says the history is
// gone.
function kvApply(lines) {
  let compacted = null;
  K.changed.clear();
  for (const line of lines) {
    if (line.events) {
      const rev = line.events.revision;
      for (const ev of line.events.events || []) {
        const key = ev.kv.key;
        if (ev.kind === 'DELETE') {
          K.rows.delete(key);
          K.expanded.delete(key);
          K.changed.delete(key);
        } else {
          K.rows.set(key, ev.kv);
          K.changed.add(key);
        }
        kvLogAdd({ kind: ev.kind, key, rev });
      }
      K.seen = Math.max(K.seen, rev);
      K.revision = Math.max(K.revision, rev);
    } else if (line.progress) {
      K.seen = Math.max(K.seen, line.progress.revision);
      K.revision = Math.max(K.revision, line.progress.revision);
    } else if (line.compacted) {
      compacted = line.compacted.compact_revision;
    }
  }
  renderKv();
  return compacted;
}

function kvLogAdd(entry) {
  K.log.unshift({ ...entry, at: new Date() });
  if (K.log.length > KV_LOG) K.log.length = KV_LOG;
}
const kvLogNote = (text) => kvLogAdd({ kind: 'NOTE', text });
function kvNote(text, kind) {
  K.note = text ? { text, kind, at: new Date() } : null;
  renderKv();
}

// Text cut to KV_SHOWN characters of its first line.
function clip(text) {
  const first = text.split('\n')[0];
  return first.length > KV_SHOWN ? first.slice(0, KV_SHOWN) + '…' : first + ' …';
}

function kvRow(kv) {
  const key = shown(kv.key);
  const value = shown(kv.value);
  const long = value.text.length > KV_SHOWN || value.text.includes('\n');
  const open = long && K.expanded.has(kv.key);
  const mark = (f) => (f.base64 ? el('span', { class: 'pill warn', title: 'not UTF-8 text: shown as base64' }, 'base64') : null);
  return el('tr', { 'data-key': kv.key, class: K.changed.has(kv.key) ? 'kv-changed' : null },
    el('td', { class: 'kv-key', 'data-encoding': key.base64 ? 'base64' : 'text' }, mark(key), el('span', { class: 'kv-text mono' }, key.text)),
    el('td', { class: 'kv-value', 'data-encoding': value.base64 ? 'base64' : 'text', 'data-size': String(value.size) },
      mark(value),
      el('span', { class: open ? 'kv-text mono kv-full' : 'kv-text mono' }, long && !open ? clip(value.text) : value.text),
      long ? el('button', { class: 'kv-more', 'data-key': kv.key, 'aria-expanded': String(open) }, open ? 'Show less' : `Show all (${bytes(value.size)})`) : null),
    el('td', { class: 'num kv-create' }, String(kv.create_revision)),
    el('td', { class: 'num kv-mod' }, String(kv.mod_revision)),
    el('td', { class: 'num kv-version' }, String(kv.version)),
    el('td', { class: 'mono kv-lease' }, leaseHex(kv.lease)));
}

function renderKv() {
  const box = $('#kv-keys');
  if (!box) return;
  const watch = $('#kv-watch');
  watch.textContent = K.watching ? 'Stop watching' : 'Watch';
  watch.setAttribute('aria-pressed', String(K.watching));
  watch.classList.toggle('primary', K.watching);
  const state = $('#kv-watch-state');
  state.dataset.state = K.state;
  const pills = { connecting: ['connecting…', 'warn'], live: ['live', 'ok'], reconnecting: ['reconnecting…', 'bad'] };
  state.replaceChildren(pills[K.state] ? el('span', { class: `pill ${pills[K.state][1]}` }, pills[K.state][0]) : '');
  const n = K.rows.size;
  $('#kv-count').textContent = K.listed ? `${n} key${n === 1 ? '' : 's'}${K.more ? ` (only the first ${KV_LIMIT} of ${K.count} were read)` : ''}` : 'reading…';
  $('#kv-rev').textContent = K.listed ? String(K.revision) : '';
  const note = $('#kv-note');
  note.hidden = !K.note;
  note.className = 'note ' + (K.note ? K.note.kind : '');
  note.textContent = K.note ? `${K.note.at.toLocaleTimeString()} ${K.note.text}` : '';

  if (!K.listed) {
    box.replaceChildren();
  } else if (!n) {
    const what = K.shown ? ['No keys start with ', el('code', {}, K.shown), '.'] : ['The store has no keys.'];
    box.replaceChildren(el('p', { class: 'empty' }, ...what, ' Write some with ', el('code', {}, 'shoal kv put KEY VALUE'), '.'));
  } else {
    const rows = Array.from(K.rows.values()).map((kv) => [b64decode(kv.key), kv]);
    rows.sort((a, b) => cmpBytes(a[0], b[0]));
    box.replaceChildren(el('table', { id: 'kv-table' },
      el('thead', {}, el('tr', {}, ...['Key', 'Value', 'Created', 'Modified', 'Version', 'Lease'].map((h) => el('th', {}, h)))),
      el('tbody', {}, ...rows.map(([, kv]) => kvRow(kv)))));
  }

  const log = $('#kv-log');
  if (!K.log.length) {
    log.replaceChildren(el('p', { class: 'empty' }, K.watching ? 'No changes yet.' : 'Turn on Watch to see changes as they happen.'));
    return;
  }
  const kinds = { PUT: 'ok', DELETE: 'bad', NOTE: '' };
  log.replaceChildren(el('table', { id: 'kv-log-table', class: 'events' },
    el('thead', {}, el('tr', {}, el('th', {}, 'When'), el('th', {}, 'Change'), el('th', {}, 'Key'), el('th', {}, 'Revision'))),
    el('tbody', {}, ...K.log.map((e) => {
      const key = e.key != null ? shown(e.key) : null;
      return el('tr', { 'data-kind': e.kind },
        el('td', { class: 'muted' }, e.at.toLocaleTimeString()),
        el('td', {}, e.kind === 'NOTE' ? el('span', { class: 'muted' }, 'watch') : el('span', { class: `pill ${kinds[e.kind]}` }, e.kind)),
        key ? el('td', { class: 'kv-text mono' }, key.base64 ? el('span', { class: 'pill warn' }, 'base64') : null, key.text) : el('td', { class: 'muted' }, e.text),
        el('td', { class: 'num' }, e.rev != null ? String(e.rev) : ''));
    }))));
}

// ---------- scheduled jobs ----------
// The scheduled jobs (services in mode `scheduled`, GET /v1/jobs) and their dependency graph
// (GET /v1/jobs/graph), read from this manager's replica when the view opens and whenever the
// state index moves (every run started or finished moves it). "Run now" starts a run
// (POST /v1/jobs/NAME/run); suspending, editing and removing jobs stay with `shoal job`. Names,
// schedules and run messages reach the page only as text (el, svg), never as HTML; the graph is
// SVG drawn with DOM calls, coloured by classes (the CSP refuses inline styles).
const J = {
  jobs: [], // services in mode `scheduled`
  graph: { jobs: [], edges: [] },
  loaded: false,
  error: null, // the last read's failure
  index: null, // the state index the data was read at
  loading: false, again: false, // one read at a time; `again`: read once more after it
  starting: new Set(), // jobs whose Run now is in flight
  shown: null, // the signature of what is on screen: rebuilt only when it changes
};
const JOB_RUNS_SHOWN = 25;
// A run's (or job's) state as a pill: running blue, succeeded green, failed red, skipped and
// replaced amber, never ran grey (the graph's colours).
const JOB_PILL = { running: 'info', succeeded: 'ok', failed: 'bad', skipped: 'warn', replaced: 'warn' };
const jobStateText = (state) => (state === 'fresh' ? 'never ran' : state);
const jobPill = (state) => el('span', { class: `pill ${JOB_PILL[state] || ''}` }, jobStateText(state));
const jobSpec = (s) => s.spec.mode.scheduled || {};

// The state of a job's latest run (any run still going: running), or `fresh`; as the API's graph.
function jobLatest(s) {
  const runs = (s.job && s.job.runs) || [];
  if (runs.some((r) => r.state === 'running')) return 'running';
  return runs.length ? runs[runs.length - 1].state : 'fresh';
}
// The run that finished last (its state and time are the job's last result), or null.
function jobLastFinished(s) {
  const runs = (s.job && s.job.runs) || [];
  for (let i = runs.length - 1; i >= 0; i--) if (runs[i].state !== 'running') return runs[i];
  return null;
}

// A length of time: 250ms, 4.2s, 3m 5s, 2h 10m, 12d, 3y.
function dur(ms) {
  const s = Math.max(0, ms / 1000);
  if (s < 1) return Math.round(ms) + 'ms';
  if (s < 60) return (s < 10 ? s.toFixed(1) : Math.floor(s)) + 's';
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  if (s < 86400 * 365) return Math.floor(s / 86400) + 'd';
  return Math.floor(s / (86400 * 365)) + 'y';
}
// Times that move while the page stays: a span that tickTimes rewrites. `rel`: `ago` (a past
// instant), `until` (a future one), `since` (how long, up to now).
function relText(at, rel) {
  const t = Date.parse(at);
  if (Number.isNaN(t)) return '';
  const d = Date.now() - t;
  if (rel === 'since') return dur(d);
  if (rel === 'until') return d > 0 ? 'due now' : 'in ' + dur(-d).split(' ')[0];
  return ago(at);
}
function timeEl(at, rel, cls) {
  return el('span', { class: cls || 'muted', 'data-at': at, 'data-rel': rel, title: new Date(at).toLocaleString() }, relText(at, rel));
}
function tickTimes(root) {
  if (!root) return;
  root.querySelectorAll('[data-rel]').forEach((e) => { e.textContent = relText(e.dataset.at, e.dataset.rel); });
}
// A local date and time, to the second.
const when = (at) => new Date(at).toLocaleString();

async function loadJobs() {
  if (J.loading) { J.again = true; return; }
  J.loading = true;
  const index = S.cluster ? S.cluster.index : null;
  try {
    const [jobs, graph] = await Promise.all([api('/v1/jobs?stale=true'), api('/v1/jobs/graph?stale=true')]);
    J.jobs = jobs; J.graph = graph; J.loaded = true; J.error = null; J.index = index;
  } catch (e) {
    J.error = e.message;
  }
  J.loading = false;
  if (S.view === 'jobs') renderJobs();
  if (J.again) { J.again = false; loadJobs(); }
}

function jobsView(routeChanged) {
  if (routeChanged || !$('#jobs')) {
    $('#main').replaceChildren(el('div', { id: 'jobs' },
      el('h2', {}, 'Jobs'),
      el('p', { class: 'muted' }, 'Scheduled jobs: each run is a task, started on the schedule, when the parent jobs finish, or by hand. Create, suspend and remove them with ', el('code', {}, 'shoal job'), '.'),
      el('div', { id: 'jobs-note', class: 'note bad', role: 'status', hidden: '' }),
      el('div', { id: 'jobs-list' }),
      el('div', { id: 'jobs-graph' }),
      el('div', { id: 'job-runs' })));
    J.shown = null;
    loadJobs();
  }
  renderJobs();
}

function renderJobs() {
  const box = $('#jobs-list');
  if (!box) return;
  const note = $('#jobs-note');
  note.hidden = !J.error;
  note.textContent = J.error ? `Could not read the jobs: ${J.error}` : '';
  const selected = route().id;
  const sig = JSON.stringify([J.loaded, J.jobs, J.graph, selected, Array.from(J.starting)]);
  if (sig !== J.shown) {
    J.shown = sig;
    box.replaceChildren(jobsTable(selected));
    $('#jobs-graph').replaceChildren(...jobGraph(selected));
    $('#job-runs').replaceChildren(...jobRuns(selected));
  }
  tickTimes($('#jobs'));
}

function jobsTable(selected) {
  if (!J.loaded) return el('p', { class: 'empty' }, J.error ? 'The jobs could not be read.' : 'Reading the jobs…');
  if (!J.jobs.length) {
    return el('p', { class: 'empty' }, 'No scheduled jobs yet. Create one with ',
      el('code', {}, 'shoal job create --name NAME --schedule "0 3 * * *" IMAGE'), ', and one that follows it with ',
      el('code', {}, '--after NAME'), '.');
  }
  const head = ['Name', 'Schedule', 'Next run', 'Latest run', 'Last result', 'OK', 'Failed', 'Skipped', ''];
  const rows = J.jobs.slice().sort((a, b) => a.spec.name.localeCompare(b.spec.name)).map((s) => jobRow(s, selected));
  return el('table', { id: 'jobs-table' },
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...rows));
}

function jobRow(s, selected) {
  const name = s.spec.name;
  const spec = jobSpec(s);
  const st = s.job || {};
  const after = spec.after || [];
  const latest = jobLatest(s);
  const last = jobLastFinished(s);
  const starting = J.starting.has(name);
  let schedule;
  if (spec.schedule) schedule = [el('code', {}, spec.schedule), spec.time_zone ? el('span', { class: 'muted' }, ' ' + spec.time_zone) : null];
  else if (after.length) schedule = 'after ' + after.join(', ');
  else schedule = el('span', { class: 'muted' }, 'by hand only');
  let next;
  if (st.next_run_at) next = [when(st.next_run_at), ' ', timeEl(st.next_run_at, 'until')];
  else next = el('span', { class: 'muted' }, after.length ? 'when its parents finish' : 'none');
  return el('tr', { 'data-job': name, 'data-state': latest, class: name === selected ? 'selected' : null },
    el('td', { class: 'job-name' },
      el('a', { href: '#/jobs/' + encodeURIComponent(name) }, name),
      spec.suspend ? [' ', el('span', { class: 'pill warn job-suspended', title: 'no scheduled or parent-triggered runs (shoal job resume)' }, 'suspended')] : null),
    el('td', { class: 'job-schedule' }, schedule),
    el('td', { class: 'job-next' }, next),
    el('td', { class: 'job-latest' }, jobPill(latest)),
    el('td', { class: 'job-last', 'data-state': last ? last.state : '' },
      last ? [jobPill(last.state), ' ', timeEl(last.finished_at || last.started_at, 'ago')] : el('span', { class: 'muted' }, 'none yet')),
    el('td', { class: 'num job-ok' }, String(st.success_count || 0)),
    el('td', { class: 'num job-failed' }, String(st.error_count || 0)),
    el('td', { class: 'num job-skipped' }, String(st.skipped_count || 0)),
    el('td', {}, el('button', { class: 'job-run', 'data-job': name, disabled: starting ? '' : null, title: `Start a run of ${name} now` }, starting ? 'Starting…' : 'Run now')));
}

function jobRuns(selected) {
  if (!J.loaded) return [];
  if (!selected) return [el('p', { class: 'muted' }, 'Click a job (in the table or the graph) for its recent runs.')];
  const s = J.jobs.find((x) => x.spec.name === selected);
  if (!s) return [el('p', { class: 'empty' }, `No job is named ${selected} (removed?). `, el('a', { href: '#/jobs' }, 'All jobs'))];
  const runs = ((s.job && s.job.runs) || []).slice().reverse().slice(0, JOB_RUNS_SHOWN);
  const title = el('h3', { id: 'job-runs-title' }, 'Runs of ', el('span', { class: 'mono' }, s.spec.name));
  if (!runs.length) return [title, el('p', { class: 'empty' }, 'No runs yet.')];
  const rows = runs.map((r) => {
    let duration = '';
    if (r.finished_at && r.attempts > 0) duration = dur(Date.parse(r.finished_at) - Date.parse(r.started_at));
    else if (r.state === 'running') duration = timeEl(r.started_at, 'since', 'job-elapsed');
    const notes = [];
    if (r.message) notes.push(r.message);
    const parents = Object.entries(r.parents || {}).map(([p, n]) => `${p} #${n}`);
    if (parents.length) notes.push('after ' + parents.join(', '));
    if (r.skipped > 1) notes.push(`${r.skipped} occurrences`);
    if (r.retry_at) notes.push('retry at ' + when(r.retry_at));
    return el('tr', { 'data-run': String(r.number), 'data-state': r.state, 'data-cause': r.cause },
      el('td', { class: 'num run-number' }, String(r.number)),
      el('td', { class: 'run-cause' }, r.cause),
      el('td', { class: 'run-state' }, jobPill(r.state)),
      el('td', { class: 'num run-attempts' }, String(r.attempts || 0)),
      el('td', { class: 'num run-exit' }, r.exit_code == null ? '' : String(r.exit_code)),
      el('td', { class: 'run-started' }, when(r.started_at), ' ', timeEl(r.started_at, 'ago')),
      el('td', { class: 'num run-duration' }, duration),
      el('td', { class: 'run-message' }, notes.join(' · ')));
  });
  const head = ['Run', 'Cause', 'State', 'Attempts', 'Exit code', 'Started', 'Duration', 'Message'];
  const kept = jobSpec(s).history || 10;
  return [title,
    el('table', { id: 'runs-table', 'data-job': s.spec.name },
      el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
      el('tbody', {}, ...rows)),
    el('p', { class: 'muted' }, `The job keeps its last ${kept} runs; `, el('code', {}, `shoal job history ${s.spec.name}`), ' lists them too.')];
}

// ----- the dependency graph, as SVG -----
const SVG_NS = 'http://www.w3.org/2000/svg';
// An SVG element, like el: attributes through setAttribute, strings as text nodes.
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null && v !== false) e.setAttribute(k, String(v));
  for (const c of children.flat()) if (c != null && c !== '') e.append(c);
  return e;
}
const G = { h: 46, gapX: 64, gapY: 18, pad: 14, charW: 7.4 };

// Each job's column: the longest path to it from a job without parents (roots in column 0, a
// child always right of all its parents). A cycle (the API refuses them) is cut where found.
function jobLayers(names, parents) {
  const layer = new Map();
  const visiting = new Set();
  const depth = (n) => {
    if (layer.has(n)) return layer.get(n);
    if (visiting.has(n)) return 0;
    visiting.add(n);
    let d = 0;
    for (const p of parents.get(n)) d = Math.max(d, depth(p) + 1);
    visiting.delete(n);
    layer.set(n, d);
    return d;
  };
  names.forEach(depth);
  return layer;
}

// The graph: columns by layer, each ordered by the mean height of its jobs' parents (fewer
// crossings), centred; edges as curves from a parent's right side to a child's left, arrowed.
function jobGraph(selected) {
  const jobs = (J.graph && J.graph.jobs) || [];
  if (!J.loaded || !jobs.length) return [];
  const byName = new Map(jobs.map((j) => [j.name, j]));
  const parents = new Map(jobs.map((j) => [j.name, []]));
  const edges = ((J.graph && J.graph.edges) || []).filter(([p, c]) => byName.has(p) && byName.has(c) && p !== c);
  for (const [p, c] of edges) parents.get(c).push(p);
  const names = jobs.map((j) => j.name).sort();
  const layer = jobLayers(names, parents);
  const cols = [];
  for (const n of names) (cols[layer.get(n)] || (cols[layer.get(n)] = [])).push(n);
  const rows = Math.max(...cols.map((c) => (c ? c.length : 0)));
  const longest = Math.max(...names.map((n) => n.length));
  const w = Math.round(Math.min(240, Math.max(120, longest * G.charW + 28)));
  const fits = Math.floor((w - 16) / G.charW);
  const pos = new Map(); // name -> {x, y}
  cols.forEach((col, d) => {
    if (!col) return;
    if (d > 0) {
      const mean = (n) => {
        const ys = parents.get(n).filter((p) => pos.has(p)).map((p) => pos.get(p).y);
        return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : Infinity;
      };
      const m = new Map(col.map((n) => [n, mean(n)]));
      col.sort((a, b) => (m.get(a) - m.get(b)) || a.localeCompare(b));
    }
    const top = G.pad + ((rows - col.length) * (G.h + G.gapY)) / 2;
    col.forEach((n, i) => pos.set(n, { x: G.pad + d * (w + G.gapX), y: top + i * (G.h + G.gapY) }));
  });
  const width = G.pad * 2 + cols.length * w + (cols.length - 1) * G.gapX;
  const height = G.pad * 2 + rows * G.h + (rows - 1) * G.gapY;

  const arrow = (id, cls) => svg('marker', { id, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse', markerUnits: 'strokeWidth' },
    svg('path', { class: cls, d: 'M0,0 L10,5 L0,10 z' }));
  const defs = svg('defs', {}, arrow('jobs-arrow', 'job-arrowhead'), arrow('jobs-arrow-on', 'job-arrowhead selected'));
  const lines = edges.map(([p, c]) => {
    const a = pos.get(p), b = pos.get(c);
    const x1 = a.x + w, y1 = a.y + G.h / 2, x2 = b.x - 1, y2 = b.y + G.h / 2;
    const dx = Math.max(24, (x2 - x1) / 2);
    const on = selected && (p === selected || c === selected);
    return svg('path', {
      class: on ? 'job-edge selected' : 'job-edge', 'data-from': p, 'data-to': c, 'marker-end': on ? 'url(#jobs-arrow-on)' : 'url(#jobs-arrow)',
      d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`,
    }, svg('title', {}, `${c} runs after ${p}`));
  });
  const nodes = names.map((n) => {
    const j = byName.get(n);
    const { x, y } = pos.get(n);
    const shown = n.length > fits ? n.slice(0, fits - 1) + '…' : n;
    const sub = jobStateText(j.state) + (j.suspended ? ' · suspended' : '');
    const tip = [n, j.schedule ? `schedule ${j.schedule}` : `after ${parents.get(n).join(', ') || 'nothing (by hand only)'}`,
      `latest run: ${jobStateText(j.state)}`, j.next_run_at ? `next run ${when(j.next_run_at)}` : null, j.suspended ? 'suspended' : null];
    const cls = ['job-node', `st-${j.state}`, j.suspended ? 'suspended' : null, n === selected ? 'selected' : null];
    return svg('g', {
      class: cls.filter(Boolean).join(' '), 'data-job': n, 'data-state': j.state, transform: `translate(${x},${y})`,
      tabindex: 0, role: 'link', 'aria-label': `${n}: ${sub}`,
    },
    svg('title', {}, tip.filter(Boolean).join('\n')),
    svg('rect', { class: 'job-box', width: w, height: G.h, rx: 8, ry: 8 }),
    svg('text', { class: 'job-label', x: w / 2, y: 19, 'text-anchor': 'middle' }, shown),
    svg('text', { class: 'job-sub', x: w / 2, y: 36, 'text-anchor': 'middle' }, sub));
  });
  const keys = ['succeeded', 'failed', 'running', 'skipped', 'fresh'].map((s) =>
    el('span', { class: 'job-key' }, el('span', { class: `job-swatch st-${s}` }), s === 'skipped' ? 'skipped / replaced' : jobStateText(s)));
  return [
    el('h3', {}, 'Dependencies'),
    el('div', { class: 'job-graph' },
      svg('svg', { id: 'jobs-svg', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'The jobs and the jobs they run after' },
        defs, ...lines, ...nodes)),
    el('div', { class: 'job-legend muted' }, 'Latest run: ', ...keys, el('span', { class: 'job-key' }, 'dashed: suspended')),
  ];
}

function openJob(name) {
  location.hash = '#/jobs/' + encodeURIComponent(name);
}

async function runJob(name) {
  if (J.starting.has(name)) return;
  J.starting.add(name);
  renderJobs();
  try {
    await api(`/v1/jobs/${encodeURIComponent(name)}/run`, { method: 'POST' });
    flash(`${name}: a run starts now`);
  } catch (e) { flash(`Could not run ${name}: ${e.message}`, true); }
  J.starting.delete(name);
  renderJobs();
  loadJobs();
}

// ---------- actions ----------
async function setAvailability(node, availability) {
  try {
    await api(`/v1/nodes/${encodeURIComponent(node)}/update`, { method: 'POST', body: JSON.stringify({ availability }) });
    flash(`${nodeName(node)} is now ${availability}`);
  } catch (e) { flash(`Could not change ${nodeName(node)}: ${e.message}`, true); }
  refresh();
}

const MAX_REPLICAS = 100000;
// The Replicas field as a whole number 0..MAX_REPLICAS, or null. An empty field is not 0, and
// neither is text a number input could not parse (its value is then '').
function parseReplicas(raw) {
  const t = String(raw).trim();
  if (!/^[0-9]+$/.test(t)) return null;
  const n = Number(t);
  return n <= MAX_REPLICAS ? n : null;
}

let scaling = false;
async function scale(id) {
  if (scaling) return;
  const input = $('#scale-input');
  const n = parseReplicas(input.value);
  if (n === null) {
    const shown = input.value.trim() || (input.validity && input.validity.badInput ? 'that' : 'an empty field');
    flash(`Not scaled: replicas must be a whole number from 0 to ${MAX_REPLICAS} (got ${shown})`, true);
    return;
  }
  const svc = S.services.find((x) => x.id === id);
  const name = svc ? svc.spec.name : short(id);
  const current = svc && svc.spec.mode.replicated ? svc.spec.mode.replicated.replicas : null;
  if (n === 0 && current !== 0
    && !window.confirm(`Scale ${name} to 0 replicas? Every task of ${name} will be stopped.`)) {
    flash(`Not scaled: ${name} keeps ${current == null ? 'its' : current} replicas`);
    return;
  }
  scaling = true;
  const button = $('#scale-button');
  if (button) button.disabled = true;
  try {
    const s = await api(`/v1/services/${encodeURIComponent(id)}/scale`, { method: 'POST', body: JSON.stringify({ replicas: n }) });
    flash(`${s.spec.name} scaled to ${n}`);
  } catch (e) { flash(`Scale failed: ${e.message}`, true); }
  scaling = false;
  const again = $('#scale-button');
  if (again) again.disabled = false;
  refresh();
}

async function rollback(id) {
  try {
    const s = await api(`/v1/services/${encodeURIComponent(id)}/rollback`, { method: 'POST' });
    flash(`${s.spec.name} is rolling back`);
  } catch (e) { flash(`Rollback failed: ${e.message}`, true); }
  refresh();
}

function stopLogs() {
  if (logAbort) { logAbort.abort(); logAbort = null; }
  const stop = $('#log-stop');
  if (stop) stop.disabled = true;
}

async function followLogs(id) {
  stopLogs();
  const box = $('#logs');
  box.innerHTML = '';
  const task = $('#log-task').value;
  logAbort = new AbortController();
  $('#log-stop').disabled = false;
  const q = `follow=true&tail=200${task ? '&task=' + encodeURIComponent(task) : ''}`;
  try {
    const r = await fetch(`/v1/services/${encodeURIComponent(id)}/logs?${q}`, { signal: logAbort.signal });
    if (!r.ok) { let m = r.statusText; try { m = (await r.json()).error.message; } catch (_) { /* keep */ } throw new Error(m); }
    await readNdjson(r, (records) => {
      const frag = records.map((rec) => {
        if (rec.error) return `<div class="stderr">${esc(rec.error)}</div>`;
        const ts = new Date(rec.timestamp / 1e6).toISOString().slice(11, 23);
        return `<div class="${rec.stream === 'stderr' ? 'stderr' : ''}"><span class="ts">${ts} ${esc(rec.source || short(rec.task_id))}</span> ${esc(rec.line)}</div>`;
      });
      const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
      box.insertAdjacentHTML('beforeend', frag.join(''));
      while (box.childNodes.length > 2000) box.removeChild(box.firstChild);
      if (atBottom) box.scrollTop = box.scrollHeight;
    });
    box.insertAdjacentHTML('beforeend', '<div class="muted">— end of stream —</div>');
  } catch (e) {
    if (e.name !== 'AbortError') box.insertAdjacentHTML('beforeend', `<div class="stderr">${esc(e.message)}</div>`);
  }
  const stop = $('#log-stop');
  if (stop) stop.disabled = true;
}

document.addEventListener('click', (e) => {
  const b = e.target.closest('button');
  if (!b || b.disabled) return;
  if (b.id === 'banner-close') { dismissFlash(); return; }
  if (b.dataset.availability) setAvailability(b.dataset.node, b.dataset.availability);
  if (b.id === 'kv-browse') { kvGo(); return; }
  if (b.id === 'kv-watch') { kvToggleWatch(); return; }
  if (b.classList.contains('kv-more')) { kvToggleValue(b.dataset.key); return; }
  if (b.classList.contains('job-run')) { runJob(b.dataset.job); return; }
  const svc = $('#service');
  if (!svc) return;
  if (b.id === 'scale-button') scale(svc.dataset.id);
  else if (b.id === 'rollback-button') rollback(svc.dataset.id);
  else if (b.id === 'log-follow') followLogs(svc.dataset.id);
  else if (b.id === 'log-stop') stopLogs();
});
// A job in the graph opens its runs (SVG has no links to click or focus).
document.addEventListener('click', (e) => {
  const n = e.target.closest && e.target.closest('.job-node');
  if (n) openJob(n.dataset.job);
});
document.addEventListener('keydown', (e) => {
  if ((e.key === 'Enter' || e.key === ' ') && e.target.classList && e.target.classList.contains('job-node')) { e.preventDefault(); openJob(e.target.dataset.job); }
  if (e.key === 'Enter' && e.target.id === 'scale-input') { const svc = $('#service'); if (svc) scale(svc.dataset.id); }
  if (e.key === 'Enter' && e.target.id === 'kv-prefix') kvGo();
});
window.addEventListener('hashchange', () => render(true));

render(true);
refresh().then(() => render(true));
setInterval(refresh, POLL_MS);
followEvents();
