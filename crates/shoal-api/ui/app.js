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
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { const j = await r.json(); if (j.error && j.error.message) msg = j.error.message; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  if (r.status === 204) return null;
  return r.json();
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
async function readNdjson(response, onRecords) {
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
      try { records.push(JSON.parse(line)); } catch (_) { /* skip a bad line */ }
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
  if (!S.loaded) return;
  const main = $('#main');
  if (view === 'nodes') main.innerHTML = nodesView();
  else if (view === 'services' && id) renderService(id, routeChanged);
  else if (view === 'services') main.innerHTML = servicesView();
  else if (view === 'events') { if (routeChanged || !$('#events')) main.innerHTML = eventsView(); renderEvents(); }
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
  const svc = $('#service');
  if (!svc) return;
  if (b.id === 'scale-button') scale(svc.dataset.id);
  else if (b.id === 'rollback-button') rollback(svc.dataset.id);
  else if (b.id === 'log-follow') followLogs(svc.dataset.id);
  else if (b.id === 'log-stop') stopLogs();
});
document.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && e.target.id === 'scale-input') { const svc = $('#service'); if (svc) scale(svc.dataset.id); }
});
window.addEventListener('hashchange', () => render(true));

render(true);
refresh().then(() => render(true));
setInterval(refresh, POLL_MS);
followEvents();
