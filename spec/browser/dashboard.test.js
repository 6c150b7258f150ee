#!/usr/bin/env node
// Browser tests of the sandbox dashboard (GET /__sandbox/): Debian's chromium,
// headless, driven by puppeteer-core. Run by spec/dashboard_spec.lua, which
// starts the sandbox, runs the demo journey against it and reads the
// results; by hand:
//
//   node spec/browser/dashboard.test.js --url http://127.0.0.1:8787 \
//     [--nginx-url URL] [--screenshot build/dashboard.png] [--chromium /usr/bin/chromium]
//
// Prints one line per test, `RESULT {"name":..,"ok":..,"error":..}`, and
// exits 0 only when every test passed. A browser that cannot start is a
// failure (exit 1, one failed RESULT per test), never a skip.
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const URL_ = (args.url || '').replace(/\/$/, '');
const NGINX = args['nginx-url'] ? args['nginx-url'].replace(/\/$/, '') : null;
const SHOT = args.screenshot || path.join(require('node:os').tmpdir(), 'endaoment-dashboard.png');
const CHROMIUM = args.chromium || process.env.CHROMIUM || '/usr/bin/chromium';
const KEY = 'sandbox-key';

const TESTS = [
  'the page loads under its CSP with no console error',
  'the page lists the journey: user, fund and balance, pledges, submission',
  'a fault injected from the page meets a client call and shows in the log',
  'a drop fault from the page shows as dropped',
  'a submission status advanced from the page',
  'the log filters by path, status and partner',
  'a screenshot with data',
  'script and onerror payloads show as text and never run',
  'clearing the log and resetting ask first',
];
if (NGINX) TESTS.push('the page works through nginx');

function emit(name, ok, error) {
  process.stdout.write('RESULT ' + JSON.stringify({ name, ok, error: error ? String(error) : undefined }) + '\n');
}

// Whole run bounded: whatever hangs, the spec gets an answer.
const WATCHDOG_MS = Number(args['timeout-ms'] || 70000);
const done = new Set();
setTimeout(() => {
  for (const t of TESTS) if (!done.has(t)) emit(t, false, 'timed out after ' + WATCHDOG_MS + ' ms (whole run)');
  process.exit(1);
}, WATCHDOG_MS).unref();

function assert(cond, msg) { if (!cond) throw new Error(msg); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function control(method, p, body, base) {
  const res = await fetch((base || URL_) + '/__sandbox/' + p, {
    method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
  return { status: res.status, headers: res.headers, text, json };
}

async function api(method, p, body, headers) {
  const res = await fetch(URL_ + p, {
    method,
    headers: Object.assign({ 'x-api-key': KEY, 'content-type': 'application/json' }, headers || {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, json: await res.json().catch(() => null) };
}

// A request with a raw path (fetch would percent-encode it; a space is not allowed in one).
function rawRequest(method, rawPath, headers, body) {
  return new Promise((resolve, reject) => {
    const u = new URL(URL_);
    const req = http.request({ host: u.hostname, port: u.port, method, path: rawPath, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end(body);
  });
}

// A plain client call with curl: -> { code, headers, body, exit }.
function curl(p) {
  try {
    const out = execFileSync('curl', ['-s', '-i', '--max-time', '5', '-H', 'x-api-key: ' + KEY, URL_ + p],
      { encoding: 'utf8', timeout: 8000 });
    const code = Number((/^HTTP\/\S+ (\d+)/.exec(out) || [])[1]);
    return { code, raw: out, exit: 0 };
  } catch (e) {
    return { code: 0, raw: String(e.stdout || ''), exit: e.status };
  }
}

// ---- page helpers ----
const problems = [];   // console errors, page errors, CSP violations, failed loads of the current page
let dialogAnswer = true;
let dialogs = [];

async function openPage(browser, base, opts) {
  const page = await browser.newPage();
  page.setDefaultTimeout(10000);
  await page.setViewport({ width: 1440, height: 1000, deviceScaleFactor: 1 });
  if (opts && opts.bypassCSP) await page.setBypassCSP(true);
  await page.evaluateOnNewDocument(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
    });
  });
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  page.on('pageerror', (e) => problems.push('pageerror: ' + e.message));
  page.on('requestfailed', (r) => problems.push('requestfailed: ' + r.url() + ' ' + (r.failure() || {}).errorText));
  page.on('response', (r) => { if (r.status() >= 400) problems.push('HTTP ' + r.status() + ': ' + r.url()); });
  page.on('request', (r) => {
    if (!r.url().startsWith(base + '/') && !r.url().startsWith('data:')) problems.push('foreign request: ' + r.url());
  });
  page.on('dialog', async (d) => {
    dialogs.push(d.message());
    if (dialogAnswer) await d.accept(); else await d.dismiss();
  });
  const res = await page.goto(base + '/__sandbox/', { waitUntil: 'load' });
  await waitPolls(page, 1);
  return { page, res };
}

async function polls(page) {
  return page.evaluate(() => Number(document.body.dataset.polls || 0));
}
// Waits until the page has polled `n` more times (so it shows what the server has now).
async function waitPolls(page, n) {
  const start = n === 1 ? 0 : await polls(page);
  await page.waitForFunction((s, k) => Number(document.body.dataset.polls || 0) >= s + k, {}, start, n === 1 ? 1 : n);
}
const text = (page, sel) => page.$eval(sel, (e) => e.textContent);
async function rows(page, sel) {
  return page.$$eval(sel + ' tbody tr', (trs) => trs.map((tr) => Array.from(tr.cells).map((td) => td.textContent)));
}
async function logRows(page) {
  return page.$$eval('#log-body tr.entry', (trs) => trs.map((tr) => ({
    seq: Number(tr.dataset.seq), hidden: tr.hidden,
    cells: Array.from(tr.cells).map((td) => td.textContent),
  })));
}
async function waitLog(page, pred, what) {
  const deadline = Date.now() + 8000;
  for (;;) {
    const r = await logRows(page);
    const hit = r.find(pred);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error('the log never showed ' + what + ': ' + JSON.stringify(r.slice(0, 5)));
    await sleep(150);
  }
}
async function setValue(page, sel, value) {
  await page.$eval(sel, (e) => { e.value = ''; });
  if (value !== '') await page.type(sel, String(value));
}

async function main() {
  assert(URL_, 'usage: dashboard.test.js --url http://127.0.0.1:PORT');
  let puppeteer;
  let browser;
  try {
    puppeteer = require('puppeteer-core');
    browser = await puppeteer.launch({
      executablePath: CHROMIUM, headless: true, timeout: 20000,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
        '--no-default-browser-check', '--disable-extensions', '--font-render-hinting=none'],
    });
  } catch (e) {
    for (const t of TESTS) emit(t, false, 'the browser did not start (' + CHROMIUM + '): ' + e.message);
    process.exit(1);
  }
  let failed = 0;
  let page;
  let ctx = {};
  async function test(name, fn) {
    problems.length = 0;
    try {
      await fn();
      emit(name, true);
    } catch (e) {
      failed++;
      const seen = problems.length ? '\nseen in the browser: ' + problems.slice(0, 8).join(' | ') : '';
      emit(name, false, ((e && e.stack) || e) + seen);
    }
    done.add(name);
  }

  await test(TESTS[0], async () => {
    const c = await control('GET', '');
    assert(c.status === 200, 'GET /__sandbox/ answered ' + c.status);
    const csp = c.headers.get('content-security-policy') || '';
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
      "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'", "require-trusted-types-for 'script'"]) {
      assert(csp.includes(d), 'CSP lacks ' + d + ': ' + csp);
    }
    assert(!/unsafe-inline|unsafe-eval/.test(csp), 'CSP allows unsafe: ' + csp);
    assert(!/<script>|<style>|\sstyle=|\son\w+=/.test(c.text), 'the page has inline script or style');
    assert(!/https?:\/\//.test(c.text), 'the page names an external URL');
    const opened = await openPage(browser, URL_);
    page = opened.page;
    assert(opened.res.headers()['content-security-policy'] === csp, 'the browser got another CSP');
    await waitPolls(page, 1);
    const csps = await page.evaluate(() => window.__csp);
    assert(csps.length === 0, 'CSP violations: ' + csps.join(', '));
    assert(problems.length === 0, 'problems on load: ' + problems.join(' | '));
    const conn = await text(page, '#conn-text');
    assert(/^live/.test(conn), 'not live: ' + conn);
  });

  await test(TESTS[1], async () => {
    assert(page, 'no page');
    const users = await rows(page, '#users');
    assert(users.length === 1 && users[0][0] === 'demo-user-000000001', 'users: ' + JSON.stringify(users));
    assert(users[0][1] === 'Ada Lovelace', 'user name: ' + users[0][1]);
    const funds = await rows(page, '#funds');
    assert(funds.length === 1 && funds[0][0] === 'Lovelace Family DAF', 'funds: ' + JSON.stringify(funds));
    assert(funds[0][3].includes('$1,632.50') && funds[0][3].includes('1632500000'), 'balance: ' + funds[0][3]);
    const pledges = await rows(page, '#pledges');
    const ops = pledges.map((r) => r[2]).sort();   // two, although the journey ran twice
    assert(JSON.stringify(ops) === '["demo-cash-1","demo-stock-1"]', 'pledges: ' + JSON.stringify(pledges));
    assert(pledges.some((r) => r[1].includes('$125.00')) && pledges.some((r) => r[1].includes('$1,507.50')),
      'pledge amounts: ' + JSON.stringify(pledges));
    const subs = await rows(page, '#submissions');
    assert(subs.length === 1 && subs[0][4] === 'Accepted', 'submissions: ' + JSON.stringify(subs));
    assert(subs[0][2].includes('$100.00'), 'submission amount: ' + subs[0][2]);
    const reports = await rows(page, '#reports');
    assert(reports.length === 1 && reports[0][0] === 'Tiny Food Bank', 'reports: ' + JSON.stringify(reports));
    const orgs = await text(page, '#orgs');
    assert(orgs.includes('American Red Cross') && orgs.includes('53-0196605'), 'seeded orgs: ' + orgs.slice(0, 200));
    const log = await logRows(page);
    assert(log.length >= 6, 'log rows: ' + log.length);
    assert(log[0].seq > log[log.length - 1].seq, 'the log is not newest first');
    const keyed = log.filter((r) => /^[0-9a-f-]{36}/.test(r.cells[6]));
    assert(keyed.length >= 3, 'idempotency keys shown: ' + keyed.length);
    // The journey ran twice: its second submission is a replay of the first, and marked so.
    const subs2 = log.filter((r) => r.cells[2] === '/v1/transfers/partner/grant-submissions');
    assert(subs2.length === 2 && subs2[0].cells[6].endsWith('replay') && !subs2[1].cells[6].endsWith('replay') &&
      subs2[0].cells[6].replace(/replay$/, '') === subs2[1].cells[6], 'replay not marked: ' + JSON.stringify(subs2));
    assert(subs2[0].cells[3] === '200' && subs2[1].cells[3] === '201', 'replay statuses: ' + JSON.stringify(subs2));
    const summary = await text(page, '#summary');
    assert(summary.includes('$1,632.50'), 'summary: ' + summary);
  });

  await test(TESTS[2], async () => {
    await setValue(page, '#fault-path', '/v1/auth/whoami');
    await page.select('#fault-method', 'GET');
    await page.select('#fault-kind', 'status');
    await setValue(page, '#fault-status', '503');
    await setValue(page, '#fault-retry', '7');
    await setValue(page, '#fault-count', '1');
    await page.click('#fault-submit');
    await page.waitForFunction(() => document.querySelector('#pending-faults').textContent.includes('/v1/auth/whoami'));
    const queued = (await control('GET', 'faults')).json.faults;
    assert(queued.length === 1 && queued[0].status === 503 && queued[0].method === 'GET' &&
      queued[0].retryAfter === '7', 'queued: ' + JSON.stringify(queued));
    const r = curl('/v1/auth/whoami');
    assert(r.code === 503, 'the client got ' + r.code + ' (exit ' + r.exit + ')');
    assert(/\r\nretry-after: 7\r\n/i.test(r.raw), 'no Retry-After: ' + r.raw.slice(0, 300));
    assert(curl('/v1/auth/whoami').code === 200, 'the fault outlived its count');
    const hit = await waitLog(page, (x) => x.cells[2] === '/v1/auth/whoami' && x.cells[3] === '503', 'the 503');
    assert(hit.cells[5].includes('503') && hit.cells[5].includes('Retry-After 7'), 'fault cell: ' + hit.cells[5]);
    await page.waitForFunction(() => !document.querySelector('#pending-faults').textContent.includes('/v1/'));
    // Its bodies open on click; the key is redacted.
    await page.click('#log-body tr.entry[data-seq="' + hit.seq + '"]');
    const detail = await text(page, '#log-body tr.detail[data-detail="' + hit.seq + '"]');
    assert(detail.includes('Injected fault'), 'response body not shown: ' + detail.slice(0, 400));
    assert(detail.includes('x-api-key') && detail.includes('[redacted]'), 'headers not shown redacted');
    assert(!detail.includes(KEY), 'the API key is shown');
    await page.click('#log-body tr.entry[data-seq="' + hit.seq + '"]');
    assert(problems.length === 0, 'problems: ' + problems.join(' | '));
  });

  await test(TESTS[3], async () => {
    await setValue(page, '#fault-path', '/v1/auth/whoami');
    await page.select('#fault-method', '');
    await page.select('#fault-kind', 'drop');
    await page.click('#fault-submit');
    await page.waitForFunction(() => document.querySelector('#pending-faults').textContent.includes('drop'));
    const r = curl('/v1/auth/whoami');
    assert(r.code === 0 && r.exit !== 0, 'a dropped call answered ' + r.code);
    const hit = await waitLog(page, (x) => x.cells[3] === 'dropped', 'the dropped request');
    assert(hit.cells[5].includes('drop'), 'fault cell: ' + hit.cells[5]);
  });

  await test(TESTS[4], async () => {
    ctx.subId = Object.keys((await control('GET', 'state')).json.submissions)[0];
    assert(ctx.subId, 'no submission');
    const sel = '#submissions tr[data-id="' + ctx.subId + '"]';
    const next = await page.$eval(sel + ' select.sub-status', (s) => s.value);
    assert(next === 'RedeemQueued', 'the next status offered is ' + next);
    await page.select(sel + ' select.sub-status', 'CircleToAmpSubmitted');
    await page.click(sel + ' button.sub-advance');
    await page.waitForFunction((s) => {
      const tag = document.querySelector(s + ' [data-status]');
      return tag && tag.dataset.status === 'CircleToAmpSubmitted';
    }, {}, sel);
    const state = (await control('GET', 'state')).json;
    assert(state.submissions[ctx.subId].status === 'CircleToAmpSubmitted',
      '/__sandbox/state says ' + state.submissions[ctx.subId].status);
    const toast = await text(page, '#toast');
    assert(toast.includes('CircleToAmpSubmitted'), 'toast: ' + toast);
  });

  await test(TESTS[5], async () => {
    const visible = async () => (await logRows(page)).map((r) => r.cells[2] + ' ' + r.cells[3]);
    await page.type('#filter-path', 'whoami');
    let v = await visible();
    assert(v.length === 3 && v.every((x) => x.startsWith('/v1/auth/whoami')), 'path filter: ' + JSON.stringify(v));
    await page.select('#filter-status', '5xx');
    v = await visible();
    assert(v.length === 1 && v[0] === '/v1/auth/whoami 503', 'status filter: ' + JSON.stringify(v));
    await setValue(page, '#filter-path', '');
    await page.select('#filter-status', '');
    // A second partner's key is not configured: filter on partner 1, then on a partner with no requests.
    const partners = (await control('GET', 'info')).json.partners;
    await page.select('#filter-partner', partners[0].id);
    v = await visible();
    assert(v.length >= 8, 'partner filter hid requests: ' + v.length);
    const users = await rows(page, '#users');
    assert(users.length === 1, 'partner filter on state: ' + users.length);
    await page.select('#filter-partner', '');
    const all = await visible();
    assert(all.length === v.length, 'filters not cleared');
  });

  await test(TESTS[6], async () => {
    // Open the grant submission's request, as a user would, for the picture.
    const sub = (await logRows(page)).find((r) => r.cells[2] === '/v1/transfers/partner/grant-submissions');
    if (sub) await page.click('#log-body tr.entry[data-seq="' + sub.seq + '"]');
    await page.evaluate(() => { document.getElementById('toast').className = ''; });
    await sleep(300);
    fs.mkdirSync(path.dirname(SHOT), { recursive: true });
    // The whole page in one viewport (fullPage: true can leave scrolled boxes half painted).
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    await page.setViewport({ width: 1440, height, deviceScaleFactor: 1 });
    await sleep(300);
    await page.screenshot({ path: SHOT });
    await page.setViewport({ width: 1440, height: 1000, deviceScaleFactor: 1 });
    const size = fs.statSync(SHOT).size;
    assert(size > 20000, 'screenshot too small: ' + size);
    process.stdout.write('SCREENSHOT ' + SHOT + '\n');
    if (sub) await page.click('#log-body tr.entry[data-seq="' + sub.seq + '"]');
  });

  await test(TESTS[7], async () => {
    const IMG = '<img src=x onerror=window.__pwned=1>';
    const SCRIPT = '<script>window.__pwned=2</script>';
    const state = (await control('GET', 'state')).json;
    const fundId = Object.keys(state.funds)[0];
    const fund = state.funds[fundId];
    assert(fund, 'no fund in the state');
    let r = await api('POST', '/v1/missing-org-reports/tech-platform', { name: IMG, ein: '98-7654321' },
      { 'x-note': '<script>window.__pwned=3</script>' });
    assert(r.status === 201, 'report: ' + r.status + ' ' + JSON.stringify(r.json));
    r = await api('POST', '/v1/donation-pledges/partner/cash-settled', {
      idempotencyKey: '3f6c7a52-1d2e-4b8f-9a61-0c5d8e7f9a10', receivingFundId: fundId,
      pledgedAmountMicroDollars: '1000000', partnerOperationId: SCRIPT,
    }, { 'x-endaoment-user-id': fund.userId });
    assert(r.status === 201, 'pledge: ' + r.status + ' ' + JSON.stringify(r.json));
    // A key that is not a UUID (refused, but logged) and a path with markup.
    await api('POST', '/v1/missing-org-reports/tech-platform',
      { name: 'x', ein: '11-2223334', idempotencyKey: '<svg onload=window.__pwned=4>' });
    await rawRequest('GET', '/v1/<img/src=x/onerror=window.__pwned=5>', { 'x-api-key': KEY });
    // The page as a browser with no CSP would run it: only the escaping keeps it inert.
    const opened = await openPage(browser, URL_, { bypassCSP: true });
    const p2 = opened.page;
    const reports = await rows(p2, '#reports');
    assert(reports.some((x) => x[0] === IMG), 'the report name is not shown as text: ' + JSON.stringify(reports));
    const pledges = await rows(p2, '#pledges');
    assert(pledges.some((x) => x[2] === SCRIPT), 'the operation id is not shown as text');
    // Open every logged request, so the bodies and headers render too.
    const entries = await logRows(p2);
    for (const e of entries.slice(0, 6)) await p2.click('#log-body tr.entry[data-seq="' + e.seq + '"]');
    const body = await p2.evaluate(() => document.body.textContent);
    for (const s of [IMG, SCRIPT, '<script>window.__pwned=3</script>', '<svg onload=window.__pwned=4>',
      '/v1/<img/src=x/onerror=window.__pwned=5>']) {
      assert(body.includes(s), 'not shown as text: ' + s);
    }
    await sleep(500);
    const dom = await p2.evaluate(() => ({
      pwned: typeof window.__pwned,
      imgs: Array.from(document.images).map((i) => i.getAttribute('src')),
      scripts: document.scripts.length,
      handlers: document.querySelectorAll('[onerror],[onload]').length,
      svgs: document.querySelectorAll('svg').length,
    }));
    assert(dom.pwned === 'undefined', 'window.__pwned is ' + dom.pwned);
    assert(dom.imgs.every((s) => s === '/__sandbox/favicon.svg'), 'injected images: ' + dom.imgs.join(','));
    assert(dom.scripts === 1 && dom.handlers === 0 && dom.svgs === 0, 'injected elements: ' + JSON.stringify(dom));
    await p2.close();
    // The first page, CSP enforced, polled them in: no violation, nothing ran.
    assert(page, 'no page from the first test');
    await waitPolls(page, 2);
    const csps = await page.evaluate(() => window.__csp);
    assert(csps.length === 0, 'CSP violations: ' + csps.join(', '));
    assert(await page.evaluate(() => typeof window.__pwned) === 'undefined', 'window.__pwned set on the CSP page');
    const p1 = problems.filter((x) => !x.startsWith('HTTP 4'));
    assert(p1.length === 0, 'problems: ' + p1.join(' | '));
  });

  await test(TESTS[8], async () => {
    const before = (await control('GET', 'requests')).json.requests.length;
    assert(before > 0, 'empty log');
    dialogs = [];
    dialogAnswer = false;
    await page.click('#btn-clear-log');
    await sleep(300);
    assert(dialogs.length === 1, 'clear log did not ask');
    assert((await control('GET', 'requests')).json.requests.length === before, 'the log was cleared when declined');
    dialogAnswer = true;
    await page.click('#btn-clear-log');
    await page.waitForFunction(() => document.querySelector('#log-body').textContent.includes('No requests yet'));
    assert((await control('GET', 'requests')).json.requests.length === 0, 'the log was not cleared');
    assert((await rows(page, '#users')).length === 1, 'clearing the log touched the state');
    dialogAnswer = false;
    await page.click('#btn-reset');
    await sleep(300);
    assert(dialogs.length === 3, 'reset did not ask: ' + dialogs.length);
    assert(Object.keys((await control('GET', 'state')).json.users).length === 1, 'reset when declined');
    dialogAnswer = true;
    await page.click('#btn-reset');
    await page.waitForFunction(() => document.querySelector('#users').textContent.includes('No users yet'));
    assert(Object.keys((await control('GET', 'state')).json.users).length === 0, 'the state was not reset');
    // A new request after the reset still shows.
    curl('/v1/auth/whoami');
    await waitLog(page, (x) => x.cells[2] === '/v1/auth/whoami', 'a request after the reset');
  });

  if (NGINX) {
    await test('the page works through nginx', async () => {
      const c = await control('GET', '', null, NGINX);
      assert(c.status === 200 && c.headers.get('content-security-policy'), 'nginx: ' + c.status);
      const opened = await openPage(browser, NGINX);
      const orgs = await text(opened.page, '#orgs');
      assert(orgs.includes('American Red Cross'), 'no seeded orgs through nginx');
      assert(/^live/.test(await text(opened.page, '#conn-text')), 'not live through nginx');
      assert(problems.length === 0, 'problems: ' + problems.join(' | '));
      await opened.page.close();
    });
  }

  await browser.close();
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  for (const t of TESTS) if (!done.has(t)) emit(t, false, 'the run stopped: ' + ((e && e.stack) || e));
  process.exit(1);
});
