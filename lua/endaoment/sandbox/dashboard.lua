-- endaoment.sandbox.dashboard: the sandbox's dashboard page, served under
-- /__sandbox/ by the emulator's test controls (so by bin/endaoment-sandbox
-- and by nginx alike, and never with --no-controls).
--
--   GET /__sandbox/               the page (M.HTML)
--   GET /__sandbox/dashboard.css  its style (M.CSS)
--   GET /__sandbox/dashboard.js   its script (M.JS)
--   GET /__sandbox/favicon.svg    its icon (M.FAVICON)
--
-- Self-contained: no external asset, no inline script or style, served
-- under the strict Content-Security-Policy M.CSP (Trusted Types required, so
-- an innerHTML assignment would throw). Everything the page shows comes
-- from the documented JSON endpoints under /__sandbox/ (docs/sandbox.md),
-- polled once a second. Every value shown was sent by a client of the
-- sandbox: the script builds the DOM with createElement and textContent
-- only. Pure Lua, no I/O: the assets are strings, so the module works
-- wherever LuaRocks installs it.
local M = {}

M.CSP = table.concat({
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
  "img-src 'self' data:", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
  "require-trusted-types-for 'script'", "trusted-types 'none'",
}, "; ")

M.HTML = [==[
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Endaoment sandbox</title>
<link rel="icon" type="image/svg+xml" href="/__sandbox/favicon.svg">
<link rel="stylesheet" href="/__sandbox/dashboard.css">
<script src="/__sandbox/dashboard.js" defer></script>
</head>
<body>
<header class="top">
  <div class="brand">
    <img src="/__sandbox/favicon.svg" alt="" width="22" height="22">
    <h1>Endaoment sandbox</h1>
    <span id="version" class="muted"></span>
  </div>
  <div class="conn">
    <span id="conn" class="dot"></span><span id="conn-text">connecting…</span>
    <label class="switch"><input type="checkbox" id="live" checked> Live</label>
  </div>
</header>
<main>
  <section id="summary" class="cards" aria-label="Summary"></section>

  <div class="layout">
    <aside class="side">
      <section class="panel">
        <h2>Inject a fault</h2>
        <form id="fault-form" autocomplete="off">
          <label>Path <input id="fault-path" list="api-paths" required placeholder="/v1/auth/whoami"></label>
          <datalist id="api-paths"></datalist>
          <div class="row2">
            <label>Method
              <select id="fault-method">
                <option value="">any</option><option>GET</option><option>POST</option>
                <option>PUT</option><option>PATCH</option><option>DELETE</option>
              </select>
            </label>
            <label>Count <input id="fault-count" type="number" min="1" value="1"></label>
          </div>
          <label>Fault
            <select id="fault-kind">
              <option value="status">answer with a status</option>
              <option value="drop">drop the connection</option>
              <option value="truncate">truncate the body</option>
              <option value="malformed">malformed JSON body</option>
              <option value="delay">delay only</option>
            </select>
          </label>
          <div class="row2" id="fault-status-row">
            <label>Status <input id="fault-status" type="number" min="100" max="599" value="503"></label>
            <label>Retry-After <input id="fault-retry" placeholder="seconds"></label>
          </div>
          <label><span id="fault-delay-label">Delay (ms)</span> <input id="fault-delay" type="number" min="0"></label>
          <label class="check"><input id="fault-after" type="checkbox"> after: run the request first, then fail</label>
          <button id="fault-submit" type="submit" class="primary">Queue fault</button>
        </form>
        <h3>Queued faults</h3>
        <ul id="pending-faults" class="faults"></ul>
        <button id="btn-clear-faults" type="button">Clear queued faults</button>
      </section>
      <section class="panel danger">
        <h2>Reset</h2>
        <p class="note">Both ask first: neither can be undone.</p>
        <button id="btn-clear-log" type="button">Clear request log</button>
        <button id="btn-reset" type="button" class="bad">Reset sandbox state</button>
      </section>
    </aside>

    <section class="panel state" aria-label="State">
      <h2>Users</h2><div id="users"></div>
      <h2>Funds</h2><div id="funds"></div>
      <h2>Pledges</h2><div id="pledges"></div>
      <h2>Grant submissions</h2><div id="submissions"></div>
      <h2>Grant transfers</h2><div id="grants"></div>
      <h2>Missing-org reports</h2><div id="reports"></div>
      <h2>Seeded organizations</h2><div id="orgs"></div>
    </section>
  </div>

  <section class="panel log" aria-label="Request log">
    <div class="log-head">
      <h2>Request log</h2>
      <span id="log-count" class="muted"></span>
      <div class="filters">
        <input id="filter-path" type="search" placeholder="filter path" aria-label="Filter by path">
        <select id="filter-status" aria-label="Filter by status">
          <option value="">any status</option><option value="2xx">2xx</option><option value="4xx">4xx</option>
          <option value="5xx">5xx</option><option value="0">dropped</option>
        </select>
        <select id="filter-partner" aria-label="Filter by partner"><option value="">any partner</option></select>
      </div>
    </div>
    <table class="log-table">
      <thead><tr><th>Time (UTC)</th><th>Method</th><th>Path</th><th>Status</th><th>Latency</th><th>Fault</th>
        <th>Idempotency key</th></tr></thead>
      <tbody id="log-body"></tbody>
    </table>
  </section>
</main>
<div id="toast" role="status" aria-live="polite"></div>
</body>
</html>
]==]

M.CSS = [==[
:root {
  --bg: #f4f6f8; --panel: #ffffff; --line: #e1e5ea; --text: #1d2733; --muted: #6b7785;
  --accent: #1f6feb; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --soft: #f6f8fa;
  --mono: "DejaVu Sans Mono", ui-monospace, Menlo, Consolas, monospace;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text);
  font: 13px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
.top { display: flex; justify-content: space-between; align-items: center; padding: 10px 20px;
  background: #0f2236; color: #fff; }
.brand { display: flex; align-items: center; gap: 10px; }
.brand h1 { font-size: 17px; margin: 0; font-weight: 600; }
.brand .muted { color: #9fb3c8; }
.conn { display: flex; align-items: center; gap: 8px; color: #d5e1ec; }
.dot { width: 9px; height: 9px; border-radius: 50%; background: #8a98a8; display: inline-block; }
.dot.ok { background: #3fb950; box-shadow: 0 0 0 3px rgba(63, 185, 80, .25); }
.dot.bad { background: #f85149; }
.dot.paused { background: #d29922; }
.switch { margin-left: 10px; cursor: pointer; }
main { padding: 16px 20px 40px; max-width: 1600px; margin: 0 auto; }
.cards { display: grid; grid-template-columns: repeat(8, 1fr); gap: 10px; margin-bottom: 14px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .value { font-size: 20px; font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card .label { color: var(--muted); font-size: 12px; }
.layout { display: grid; grid-template-columns: 320px 1fr; gap: 14px; align-items: start; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px;
  margin-bottom: 14px; min-width: 0; }
h2 { font-size: 14px; margin: 0 0 8px; }
.state h2 { margin-top: 16px; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.state h2:first-child { margin-top: 0; }
h3 { font-size: 13px; margin: 14px 0 6px; }
h4 { margin: 0 0 6px; font-size: 13px; }
h5 { margin: 10px 0 4px; font-size: 12px; color: var(--muted); }
form label { display: block; margin-bottom: 8px; color: var(--muted); font-size: 12px; }
form input, form select { display: block; width: 100%; margin-top: 3px; }
input, select, button { font: inherit; color: var(--text); }
input, select { padding: 5px 7px; border: 1px solid #cdd4dc; border-radius: 6px; background: #fff; }
label.check { display: flex; gap: 6px; align-items: center; color: var(--text); }
label.check input { width: auto; margin: 0; }
.row2 { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.row2[hidden] { display: none; }
button { padding: 6px 12px; border: 1px solid #cdd4dc; border-radius: 6px; background: var(--soft);
  cursor: pointer; }
button:hover { background: #eef1f4; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; width: 100%; }
button.primary:hover { background: #1a5fcc; }
button.bad { color: var(--bad); border-color: #f1aeb5; }
.danger button { display: block; width: 100%; margin-top: 8px; }
.note { color: var(--muted); font-size: 12px; margin: 4px 0; }
table { width: 100%; border-collapse: collapse; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; padding: 5px 8px;
  border-bottom: 1px solid var(--line); white-space: nowrap; }
td { padding: 5px 8px; border-bottom: 1px solid #eef1f4; vertical-align: top; overflow-wrap: anywhere; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
.empty { color: var(--muted); font-style: italic; margin: 2px 0 4px; }
.mono { font-family: var(--mono); font-size: 12px; }
.muted { color: var(--muted); }
.strong { font-weight: 600; }
.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.money { display: inline-flex; flex-direction: column; line-height: 1.25; white-space: nowrap; }
.money .usd { font-weight: 600; font-variant-numeric: tabular-nums; }
.money .micro { font-family: var(--mono); font-size: 11px; color: var(--muted); }
.tag { display: inline-block; padding: 1px 7px; border-radius: 10px; background: #eaeef2; font-size: 12px;
  white-space: nowrap; }
.tag.sub-accepted { background: #ddf4ff; color: #0550ae; }
.tag.sub-failed, .tag.sub-cancelled { background: #ffebe9; color: var(--bad); }
.tag.sub-consolidatedtofund { background: #dafbe1; color: var(--ok); }
.inline { display: inline-flex; gap: 6px; }
.inline select { max-width: 230px; }
.inline button { padding: 4px 10px; }
.faults { list-style: none; padding: 0; margin: 0 0 8px; }
.faults li { display: flex; gap: 8px; align-items: baseline; padding: 4px 0; border-bottom: 1px solid #eef1f4;
  flex-wrap: wrap; }
.fault { display: inline-block; padding: 1px 7px; border-radius: 10px; background: #fff1e5; color: #953800;
  font-size: 12px; white-space: nowrap; }
.log-head { display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; margin-bottom: 6px; }
.log-head h2 { margin: 0; }
.filters { margin-left: auto; display: flex; gap: 8px; }
.filters input { width: 220px; }
.log-table { table-layout: fixed; }
.log-table th:nth-child(1) { width: 110px; }
.log-table th:nth-child(2) { width: 74px; }
.log-table th:nth-child(4) { width: 80px; }
.log-table th:nth-child(5) { width: 84px; }
.log-table th:nth-child(6) { width: 200px; }
.log-table th:nth-child(7) { width: 360px; }
tr.entry { cursor: pointer; }
tr.entry:hover td { background: #f1f6ff; }
tr.entry.open td { background: #eaf2ff; }
tr.entry.faulted td:first-child { box-shadow: inset 3px 0 0 #fb8f44; }
td.path { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.keycell { display: flex; align-items: center; gap: 6px; min-width: 0; }
.keytext { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; min-width: 0; }
.method { font-family: var(--mono); font-size: 11px; font-weight: 700; padding: 1px 5px; border-radius: 4px;
  background: #eaeef2; }
.m-post { background: #ddf4ff; color: #0550ae; }
.m-get { background: #dafbe1; color: #116329; }
.m-delete { background: #ffebe9; color: #a40e26; }
.st { font-family: var(--mono); font-weight: 700; }
.st2 { color: var(--ok); }
.st3 { color: var(--accent); }
.st4 { color: var(--warn); }
.st5, .st0 { color: var(--bad); }
.replay { flex: none; padding: 0 6px; border-radius: 10px; background: #fbefff; color: #8250df;
  font-family: system-ui, sans-serif; font-size: 11px; font-weight: 600; }
tr.detail td { background: #f8fafc; padding: 10px 14px 14px; }
.detail-grid { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; font-size: 12px; }
.kv dt { color: var(--muted); font-family: var(--mono); }
.kv dd { margin: 0; font-family: var(--mono); overflow-wrap: anywhere; }
pre.body { margin: 0; padding: 8px 10px; background: #0f2236; color: #e6edf3; border-radius: 6px;
  font: 12px/1.4 var(--mono); max-height: 320px; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
#toast { position: fixed; right: 20px; bottom: 20px; padding: 10px 14px; border-radius: 8px; background: #0f2236;
  color: #fff; opacity: 0; transition: opacity .2s; pointer-events: none; max-width: 520px; }
#toast.show { opacity: 1; }
#toast.bad { background: var(--bad); }
@media (max-width: 1100px) {
  .cards { grid-template-columns: repeat(4, 1fr); }
  .layout { grid-template-columns: 1fr; }
}
]==]

M.JS = [==[
// The sandbox dashboard. Every value shown came from clients of the
// sandbox, so the DOM is built with createElement and textContent only:
// nothing from the data is ever parsed as HTML.
'use strict';
(function () {
  const BASE = '/__sandbox/';
  const POLL_MS = 1000;
  const MAX_ENTRIES = 2000;
  const MAX_ROWS = 300;

  const S = {
    info: null, state: null, faults: [], log: [], cursor: 0, epoch: null, rev: null,
    expanded: new Set(), live: true, timer: null, polling: false, again: false,
  };

  // el('div', { class: 'x', title: 't' }, child, 'text', ...): text is a text node.
  function el(tag, attrs) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (let i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function add(parent, c) {
    if (c === undefined || c === null || c === false) return;
    if (Array.isArray(c)) { c.forEach((x) => add(parent, x)); return; }
    parent.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  const $ = (id) => document.getElementById(id);

  async function api(method, path, body) {
    const opts = { method: method, headers: { accept: 'application/json' }, cache: 'no-store' };
    if (body !== undefined) {
      opts.headers['content-type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(BASE + path, opts);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!res.ok) {
      const m = data && data.message;
      throw new Error(res.status + ' ' + (Array.isArray(m) ? m.join('; ') : (m || res.statusText)));
    }
    return data;
  }

  // ---- formatting ----
  function dollars(micro) {
    try {
      let v = BigInt(micro);
      const neg = v < 0n;
      if (neg) v = -v;
      let frac = (v % 1000000n).toString().padStart(6, '0').replace(/0+$/, '');
      if (frac.length < 2) frac = frac.padEnd(2, '0');
      return (neg ? '-$' : '$') + (v / 1000000n).toLocaleString('en-US') + '.' + frac;
    } catch (e) {
      return String(micro);
    }
  }
  function money(micro) {
    return el('span', { class: 'money' }, el('span', { class: 'usd', text: dollars(micro) }),
      el('span', { class: 'micro', text: String(micro) + ' µ$' }));
  }
  function short(id) { return typeof id === 'string' && id.length > 13 ? id.slice(0, 8) + '…' : id; }
  function idCell(id) { return el('span', { class: 'mono', title: id, text: short(id) }); }
  function clock(iso) { return typeof iso === 'string' ? iso.replace(/^.*T/, '').replace(/Z$/, '') : ''; }
  function ein(s) { return typeof s === 'string' && /^\d{9}$/.test(s) ? s.slice(0, 2) + '-' + s.slice(2) : s; }
  function pretty(text) {
    if (typeof text !== 'string' || text === '') return '(empty)';
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }
  function statusClass(s) {
    if (!s) return 'st st0';
    return 'st st' + Math.floor(s / 100);
  }
  function faultText(f) {
    if (!f) return '';
    const parts = [];
    if (f.status) parts.push(String(f.status));
    if (f.drop) parts.push('drop');
    if (f.truncate) parts.push('truncate');
    if (f.malformed) parts.push('malformed');
    if (f.delayMs) parts.push('delay ' + f.delayMs + 'ms');
    if (f.retryAfter) parts.push('Retry-After ' + f.retryAfter);
    if (f.after) parts.push('after');
    return parts.join(' · ');
  }
  function values(obj) { return obj && typeof obj === 'object' ? Object.values(obj) : []; }
  function byCreated(a, b) { return String(b.createdAtUtc || '').localeCompare(String(a.createdAtUtc || '')); }

  function toast(text, bad) {
    const t = $('toast');
    t.textContent = text;
    t.className = bad ? 'show bad' : 'show';
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.className = ''; }, 4000);
  }

  // ---- filters ----
  function filters() {
    return { path: $('filter-path').value.trim(), status: $('filter-status').value,
      partner: $('filter-partner').value };
  }
  function partnerOk(pid) { const p = filters().partner; return !p || pid === p; }
  function statusOk(want, s) {
    if (!want) return true;
    const m = /^(\d)xx$/.exec(want);
    if (m) return Math.floor((s || 0) / 100) === Number(m[1]);
    return Number(want) === s;
  }
  function entryOk(e, f) {
    return (!f.path || String(e.path).includes(f.path)) && statusOk(f.status, e.status) &&
      (!f.partner || e.partnerId === f.partner);
  }

  // ---- tables ----
  function table(id, headers, rows, empty) {
    const host = $(id);
    clear(host);
    if (!rows.length) { host.appendChild(el('p', { class: 'empty', text: empty })); return; }
    const thead = el('thead', null, el('tr', null, headers.map((h) => el('th', { text: h }))));
    const tbody = el('tbody');
    rows.forEach((r) => {
      const tr = el('tr', r.attrs || null);
      r.cells.forEach((c) => tr.appendChild(el('td', null, c)));
      tbody.appendChild(tr);
    });
    host.appendChild(el('table', null, thead, tbody));
  }

  function partnerName(pid) {
    const p = S.info && S.info.partners.find((x) => x.id === pid);
    return p ? p.name : (pid || '');
  }
  function orgName(id) {
    const o = S.info && S.info.orgs.find((x) => x.id === id);
    return o ? o.name : (id || '—');
  }

  function renderState() {
    const st = S.state || {};
    const users = values(st.users).filter((u) => partnerOk(u.partnerId)).sort(byCreated);
    const funds = values(st.funds).filter((f) => partnerOk(f.partnerId)).sort(byCreated);
    const fundById = st.funds || {};
    const userById = st.users || {};
    const fundPartner = (id) => (fundById[id] ? fundById[id].partnerId : null);
    const pledges = values(st.pledges).filter((p) => partnerOk(fundPartner(p.fundId))).sort(byCreated);
    const subs = values(st.submissions).filter((s) => partnerOk(s.partnerId)).sort(byCreated);
    const grants = values(st.grants).filter((g) => partnerOk(fundPartner(g.fundId))).sort(byCreated);
    const reports = values(st.reports).filter((r) => partnerOk(r.partnerId)).sort(byCreated);
    const fundName = (id) => (fundById[id] ? fundById[id].name : short(id));
    const userPid = (id) => (userById[id] ? userById[id].partnerUserIdentifier : short(id));

    let balance = 0n;
    funds.forEach((f) => { try { balance += BigInt(f.usdcBalance); } catch (e) { /* not a number */ } });
    renderSummary([
      ['Users', users.length], ['Funds', funds.length], ['Balance', dollars(balance.toString())],
      ['Pledges', pledges.length], ['Grant submissions', subs.length], ['Missing-org reports', reports.length],
      ['Requests logged', S.log.length], ['Faults queued', S.faults.length],
    ]);

    table('users', ['Partner user id', 'Name', 'Email', 'Email status', 'Id', 'Partner'], users.map((u) => ({
      attrs: { 'data-id': u.id },
      cells: [el('span', { class: 'strong', text: u.partnerUserIdentifier }),
        [u.firstName, u.lastName].filter(Boolean).join(' '), u.email,
        el('span', { class: 'tag', text: u.emailVerificationStatus }), idCell(u.id), partnerName(u.partnerId)],
    })), 'No users yet: provision one with POST /v1/auth/partner/users.');

    table('funds', ['Fund', 'Account id', 'Owner', 'Balance', 'Lifetime donations', 'Granted', 'Grants'],
      funds.map((f) => ({
        attrs: { 'data-id': f.id },
        cells: [el('span', { class: 'strong', text: f.name }),
          el('span', { class: 'mono', text: f.partnerAccountIdentifier }), userPid(f.userId),
          money(f.usdcBalance), money(f.lifetimeDonationsUsdc), money(f.totalGrantedUsdc), String(f.grantCount)],
      })), 'No funds yet.');

    table('pledges', ['Kind', 'Amount', 'Partner operation id', 'Fund', 'Created', 'Id'], pledges.map((p) => ({
      attrs: { 'data-id': p.id },
      cells: [el('span', { class: 'tag', text: p.kind }), money(p.amountMicroDollars),
        el('span', { class: 'mono', text: p.partnerOperationId }), fundName(p.fundId), clock(p.createdAtUtc),
        idCell(p.id)],
    })), 'No pledges yet.');

    const statuses = (S.info && S.info.grantSubmissionStatuses) || [];
    table('submissions', ['Id', 'Fund', 'Amount', 'Grants', 'Status', 'Advance to'], subs.map((s) => {
      const amount = (s.grants || []).reduce((a, g) => {
        try { return a + BigInt(g.amountMicroDollars); } catch (e) { return a; }
      }, 0n);
      const idx = statuses.indexOf(s.status);
      const select = el('select', { class: 'sub-status', 'aria-label': 'New status' },
        statuses.map((v, i) => el('option', { value: v, selected: i === idx + 1 || undefined, text: v })));
      const button = el('button', { class: 'sub-advance', type: 'button', text: 'Set status',
        onclick: () => advance(s.id, select.value) });
      return {
        attrs: { 'data-id': s.id },
        cells: [idCell(s.id), fundName(s.originFundId), money(amount.toString()), String((s.grants || []).length),
          el('span', { class: 'tag sub-' + String(s.status).toLowerCase(), 'data-status': s.status, text: s.status }),
          el('span', { class: 'inline' }, select, button)],
      };
    }), 'No grant submissions yet.');

    table('grants', ['Id', 'Fund', 'Amount', 'Destination', 'Async status', 'Submission'], grants.map((g) => ({
      attrs: { 'data-id': g.id },
      cells: [idCell(g.id), fundName(g.fundId), money(g.amount), orgName(g.destinationOrgId),
        el('span', { class: 'tag', text: g.asyncStatus }), g.submissionId ? idCell(g.submissionId) : 'OAuth grant'],
    })), 'No grant transfers yet.');

    table('reports', ['Name', 'EIN', 'Website', 'Status', 'Created', 'Id'], reports.map((r) => ({
      attrs: { 'data-id': r.id },
      cells: [el('span', { class: 'strong', text: typeof r.name === 'string' ? r.name : JSON.stringify(r.name) }),
        ein(r.ein), r.website, el('span', { class: 'tag', text: r.status }), clock(r.createdAtUtc), idCell(r.id)],
    })), 'No missing-org reports yet.');
  }

  function renderOrgs() {
    const info = S.info;
    const rows = info.orgs.map((o) => ({ cells: [el('span', { class: 'strong', text: o.name }), ein(o.ein),
      idCell(o.id), o.nteeCode, o.website] }));
    info.unonboardedOrgs.forEach((o) => rows.push({ cells: [el('span', { class: 'strong', text: o.name }), ein(o.ein),
      el('span', { class: 'muted', text: 'not onboarded' }), o.nteeCode, o.website] }));
    table('orgs', ['Organization', 'EIN', 'Id', 'NTEE', 'Website'], rows, 'No seeded organizations.');
    (info.subprojects || []).forEach((s) => {
      $('orgs').appendChild(el('p', { class: 'note' }, 'Subproject ', el('strong', { text: s.name }),
        ' (', el('span', { class: 'mono', text: s.id }), ') sponsored by ', orgName(s.sponsorOrgId)));
    });
  }

  function renderSummary(items) {
    const host = $('summary');
    clear(host);
    items.forEach(([label, value]) => host.appendChild(el('div', { class: 'card' },
      el('div', { class: 'value', text: value }), el('div', { class: 'label', text: label }))));
  }

  function renderFaults() {
    const host = $('pending-faults');
    clear(host);
    if (!S.faults.length) { host.appendChild(el('li', { class: 'empty', text: 'No faults queued.' })); return; }
    S.faults.forEach((f) => host.appendChild(el('li', null,
      el('span', { class: 'mono', text: (f.method || 'any') + ' ' + f.path }),
      el('span', { class: 'fault', text: faultText(f) }),
      el('span', { class: 'muted', text: '×' + f.count }))));
  }

  function kv(obj) {
    const dl = el('dl', { class: 'kv' });
    Object.keys(obj || {}).sort().forEach((k) => {
      dl.appendChild(el('dt', { text: k }));
      dl.appendChild(el('dd', { text: obj[k] }));
    });
    return dl;
  }

  function detailRow(e, span) {
    const partner = e.partnerId ? partnerName(e.partnerId) + ' (' + e.partnerId + ')' : '—';
    const meta = { seq: e.seq, time: e.time, partner: partner,
      idempotencyKey: e.idempotencyKey || '—', query: e.query || '—', fault: faultText(e.fault) || '—',
      replayed: e.replayed ? 'yes' : 'no', latencyMs: e.latencyMs };
    return el('tr', { class: 'detail', 'data-detail': e.seq }, el('td', { colspan: span },
      el('div', { class: 'detail-grid' },
        el('div', null, el('h4', { text: 'Request' }), kv(meta), el('h5', { text: 'Headers' }), kv(e.headers),
          el('h5', { text: 'Body' }), el('pre', { class: 'body req-body', text: pretty(e.body) })),
        el('div', null, el('h4', { text: 'Response ' + (e.status || 'dropped') }), el('h5', { text: 'Headers' }),
          kv(e.responseHeaders), el('h5', { text: 'Body' }),
          el('pre', { class: 'body res-body', text: e.status ? pretty(e.responseBody) : '(connection dropped)' })))));
  }

  function renderLog() {
    const f = filters();
    const tbody = $('log-body');
    clear(tbody);
    let shown = 0, matched = 0;
    for (let i = S.log.length - 1; i >= 0; i--) {
      const e = S.log[i];
      if (!entryOk(e, f)) continue;
      matched++;
      if (shown >= MAX_ROWS) continue;
      shown++;
      const open = S.expanded.has(e.seq);
      const tr = el('tr', { class: 'entry' + (open ? ' open' : '') + (e.fault ? ' faulted' : ''), 'data-seq': e.seq,
        tabindex: 0, 'aria-expanded': open ? 'true' : 'false',
        onclick: () => toggle(e.seq), onkeydown: (ev) => { if (ev.key === 'Enter') toggle(e.seq); } },
      el('td', { class: 'mono muted', text: clock(e.time) }),
      el('td', null, el('span', { class: 'method m-' + String(e.method).toLowerCase(), text: e.method })),
      el('td', { class: 'path mono', title: e.path + (e.query ? '?' + e.query : '') },
        e.path, e.query ? el('span', { class: 'muted', text: '?' + e.query }) : null),
      el('td', null, el('span', { class: statusClass(e.status), text: e.status ? e.status : 'dropped' })),
      el('td', { class: 'num', text: e.latencyMs !== undefined ? e.latencyMs + ' ms' : '' }),
      el('td', null, e.fault ? el('span', { class: 'fault', text: faultText(e.fault) }) : null),
      el('td', { title: e.idempotencyKey || '' }, el('div', { class: 'keycell' },
        el('span', { class: 'mono keytext', text: e.idempotencyKey || '' }),
        e.replayed ? el('span', { class: 'replay', text: 'replay' }) : null)));
      tbody.appendChild(tr);
      if (open) tbody.appendChild(detailRow(e, 7));
    }
    if (!matched) {
      tbody.appendChild(el('tr', null, el('td', { colspan: 7, class: 'empty',
        text: S.log.length ? 'No request matches the filters.' : 'No requests yet.' })));
    }
    $('log-count').textContent = matched > shown ? 'newest ' + shown + ' of ' + matched + ' shown'
      : matched + ' of ' + S.log.length + ' shown';
  }

  function toggle(seq) {
    if (S.expanded.has(seq)) S.expanded.delete(seq); else S.expanded.add(seq);
    renderLog();
  }

  // ---- polling ----
  async function poll() {
    if (S.polling) { S.again = true; return; }
    S.polling = true;
    clearTimeout(S.timer);
    try {
      let more = true, changed = false, rev = null, rounds = 0;
      while (more && rounds++ < 20) {
        const r = await api('GET', 'requests?since=' + S.cursor + '&limit=500');
        if (S.epoch !== null && r.epoch !== S.epoch) {
          S.epoch = r.epoch; S.log = []; S.cursor = 0; S.rev = null; S.expanded.clear(); changed = true;
          continue;
        }
        S.epoch = r.epoch;
        if (r.requests.length) { S.log.push(...r.requests); changed = true; }
        S.cursor = r.cursor;
        more = r.more;
        rev = r.stateRev;
      }
      if (S.log.length > MAX_ENTRIES) S.log.splice(0, S.log.length - MAX_ENTRIES);
      const faults = (await api('GET', 'faults')).faults;
      const faultsChanged = JSON.stringify(faults) !== JSON.stringify(S.faults);
      S.faults = faults;
      if (rev !== S.rev || changed || faultsChanged) {
        if (rev !== S.rev) { S.state = await api('GET', 'state'); S.rev = rev; }
        renderState();
      }
      if (faultsChanged) renderFaults();
      if (changed) renderLog();
      S.polls = (S.polls || 0) + 1;
      document.body.dataset.polls = String(S.polls);
      setConn('ok', 'live · rev ' + S.rev + ' · ' + new Date().toLocaleTimeString('en-GB'));
    } catch (e) {
      setConn('bad', 'disconnected: ' + e.message);
    } finally {
      S.polling = false;
      if (S.again) { S.again = false; poll(); } else if (S.live) S.timer = setTimeout(poll, POLL_MS);
    }
  }
  function setConn(kind, text) {
    $('conn').className = 'dot ' + kind;
    $('conn-text').textContent = text;
  }

  // ---- controls ----
  async function act(label, fn) {
    try {
      const r = await fn();
      toast(label);
      poll();
      return r;
    } catch (e) {
      toast(label + ' failed: ' + e.message, true);
      return null;
    }
  }

  function advance(id, status) {
    return act('Grant submission ' + short(id) + ' is now ' + status,
      () => api('POST', 'grant-submissions/' + encodeURIComponent(id) + '/status', { status: status }));
  }

  function faultFromForm() {
    const f = { path: $('fault-path').value.trim() };
    const method = $('fault-method').value;
    if (method) f.method = method;
    const count = parseInt($('fault-count').value, 10);
    if (count > 0) f.count = count;
    const kind = $('fault-kind').value;
    if (kind === 'status') f.status = parseInt($('fault-status').value, 10);
    else if (kind === 'drop') f.drop = true;
    else if (kind === 'truncate') f.truncate = true;
    else if (kind === 'malformed') f.malformed = true;
    const delay = parseInt($('fault-delay').value, 10);
    if (delay > 0) f.delayMs = delay;
    const retry = $('fault-retry').value.trim();
    if (retry && kind === 'status') f.retryAfter = retry;
    if ($('fault-after').checked) f.after = true;
    return f;
  }

  function syncFaultForm() {
    const kind = $('fault-kind').value;
    $('fault-status-row').hidden = kind !== 'status';
    $('fault-delay-label').textContent = kind === 'delay' ? 'Delay (ms)' : 'Extra delay (ms, optional)';
  }

  function setup() {
    $('fault-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const f = faultFromForm();
      act('Fault queued on ' + f.path + ': ' + faultText(f), () => api('POST', 'faults', f));
    });
    $('fault-kind').addEventListener('change', syncFaultForm);
    syncFaultForm();
    $('btn-clear-faults').addEventListener('click', () => act('Queued faults cleared', () => api('DELETE', 'faults')));
    $('btn-clear-log').addEventListener('click', () => {
      if (!window.confirm('Clear the request log? Every logged request is forgotten.')) return;
      act('Request log cleared', () => api('DELETE', 'requests'));
    });
    $('btn-reset').addEventListener('click', () => {
      if (!window.confirm('Reset the sandbox? Every user, fund, pledge, grant, report, queued fault and ' +
        'logged request is forgotten.')) return;
      act('Sandbox reset', () => api('POST', 'reset'));
    });
    ['filter-path', 'filter-status', 'filter-partner'].forEach((id) => {
      $(id).addEventListener('input', () => { renderLog(); renderState(); });
    });
    $('live').addEventListener('change', () => {
      S.live = $('live').checked;
      if (S.live) poll(); else { clearTimeout(S.timer); setConn('paused', 'paused'); }
    });
  }

  async function start() {
    setup();
    try {
      S.info = await api('GET', 'info');
    } catch (e) {
      setConn('bad', 'cannot load /__sandbox/info: ' + e.message);
      return;
    }
    $('version').textContent = 'v' + S.info.version;
    const sel = $('filter-partner');
    S.info.partners.forEach((p) => sel.appendChild(el('option', { value: p.id,
      text: p.name + ' (' + short(p.id) + ')' })));
    const list = $('api-paths');
    S.info.operations.forEach((o) => list.appendChild(el('option', { value: o.path, text: o.method + ' ' + o.name })));
    renderOrgs();
    renderFaults();
    renderLog();
    document.body.dataset.ready = 'true';
    poll();
  }

  document.addEventListener('DOMContentLoaded', start);
}());
]==]

M.FAVICON = [==[
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
<rect width="32" height="32" rx="7" fill="#1f6feb"/>
<path d="M9 7h14v4.2h-9.2v2.9h8v4h-8v2.7H23V25H9z" fill="#fff"/>
</svg>
]==]

local ASSETS = {
  ["index.html"] = { "text/html; charset=utf-8", "HTML" },
  ["dashboard.css"] = { "text/css; charset=utf-8", "CSS" },
  ["dashboard.js"] = { "text/javascript; charset=utf-8", "JS" },
  ["favicon.svg"] = { "image/svg+xml", "FAVICON" },
}

-- asset(name) -> { body, headers } or nil: "index.html" is the page.
function M.asset(name)
  local a = ASSETS[name]
  if not a then return nil end
  return {
    body = M[a[2]],
    headers = {
      ["content-type"] = a[1],
      ["content-security-policy"] = M.CSP,
      ["x-content-type-options"] = "nosniff",
      ["x-frame-options"] = "DENY",
      ["referrer-policy"] = "no-referrer",
      ["cross-origin-opener-policy"] = "same-origin",
      ["cross-origin-resource-policy"] = "same-origin",
      ["cache-control"] = "no-store",
    },
  }
end

return M
