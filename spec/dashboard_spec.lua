-- The sandbox dashboard (GET /__sandbox/) and the control endpoints it is
-- built on: the request log with a since-cursor, response bodies, latency,
-- faults, replays and redaction; GET /__sandbox/info and /__sandbox/faults;
-- the page and its assets from bin/endaoment-sandbox and through nginx, 404
-- with --no-controls; and the page itself in a real browser (Debian's
-- chromium, headless, driven by puppeteer-core from spec/browser/: see
-- spec/browser/dashboard.test.js). A browser that cannot start fails this
-- spec; it never skips.
local cjson = require "cjson"
local sandbox = require "endaoment.sandbox"
local dashboard = require "endaoment.sandbox.dashboard"
local server = require "spec.helpers.sandbox_server"
local openresty = require "spec.helpers.openresty"
local http = require "spec.helpers.rawhttp"

local q = server.shell_quote
local BROWSER_DIR = "spec/browser"
local SCREENSHOT = "build/dashboard.png"

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  return ok == true or ok == 0, out, code
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function decode(body) return cjson.decode(body) end

-- An emulator with a clock the test moves.
local function emulator(opts)
  local t = 1700000000
  opts = opts or {}
  opts.now = function() return t end
  local emu = sandbox.new(opts)
  emu.tick = function(s) t = t + s end
  return emu
end

local function call(emu, method, path, body, headers)
  local h = { ["content-type"] = "application/json", ["x-api-key"] = "sandbox-key" }
  for k, v in pairs(headers or {}) do h[k] = v or nil end
  local status, hdrs, rbody, fault = emu:handle(method, path, h, body and cjson.encode(body) or nil)
  return status, hdrs, rbody, fault
end

local function control(emu, method, path, body)
  local status, hdrs, rbody = emu:handle(method, path, { ["content-type"] = "application/json" },
    body and cjson.encode(body) or nil)
  return status, decode(rbody), hdrs
end

local USER = { partnerUserIdentifier = "dash-user-000000001", firstName = "Ada", lastName = "Lovelace",
  email = "ada@example.com", address = { line1 = "1 Main St", city = "New York", state = "NY", zip = "10001",
    country = "USA" } }

describe("sandbox request log and control endpoints", function()
  it("records latency, the answer, the partner and the idempotency key; replays are marked", function()
    local emu = emulator()
    local _, _, ubody = call(emu, "POST", "/v1/auth/partner/users", USER)
    local user = decode(ubody)
    local _, _, fbody = call(emu, "POST", "/v1/funds/partner",
      { name = "F", partnerAccountIdentifier = "dash-account-000000001" }, { ["x-endaoment-user-id"] = user.id })
    local fund = decode(fbody)
    local pledge = { idempotencyKey = "0b6f3c1e-7a2d-4e5f-9b8c-1d2e3f4a5b6c", receivingFundId = fund.id,
      pledgedAmountMicroDollars = "5000000", partnerOperationId = "op-1" }
    assert.equal(201, (call(emu, "POST", "/v1/donation-pledges/partner/cash-settled", pledge,
      { ["x-endaoment-user-id"] = user.id })))
    assert.equal(201, (call(emu, "POST", "/v1/donation-pledges/partner/cash-settled", pledge,
      { ["x-endaoment-user-id"] = user.id })))     -- the replay: the first answer again
    local status, log = control(emu, "GET", "/__sandbox/requests")
    assert.equal(200, status)
    assert.equal(4, #log.requests)
    assert.equal(4, log.cursor)
    assert.is_false(log.more)
    assert.equal(0, log.epoch)
    assert.equal(emu:revision(), log.stateRev)
    local first, replay = log.requests[3], log.requests[4]
    assert.equal(pledge.idempotencyKey, first.idempotencyKey)
    assert.is_false(first.replayed)
    assert.is_true(replay.replayed)
    assert.equal(201, first.status)
    assert.equal(201, replay.status)
    assert.equal(first.responseBody, replay.responseBody)
    assert.equal("true", replay.responseHeaders["x-idempotent-replayed"])
    assert.equal(sandbox.new().partners[1].id, first.partnerId)
    assert.equal(0, first.latencyMs)
    assert.equal(cjson.null, log.requests[1].idempotencyKey)
    assert.equal(cjson.null, first.fault)
    assert.equal(user.id, decode(log.requests[1].responseBody).id)
  end)

  it("pages with since and limit, filters, and changes epoch on clear and reset", function()
    local emu = emulator()
    for i = 1, 5 do call(emu, "GET", "/v1/auth/whoami?n=" .. i) end
    call(emu, "GET", "/v1/funds/nope", nil, { ["x-api-key"] = "wrong-key-123" })
    local _, page1 = control(emu, "GET", "/__sandbox/requests?since=0&limit=2")
    assert.same({ 1, 2 }, { page1.requests[1].seq, page1.requests[2].seq })
    assert.is_true(page1.more)
    assert.equal(2, page1.cursor)
    local _, page2 = control(emu, "GET", "/__sandbox/requests?since=2&limit=10")
    assert.equal(4, #page2.requests)
    assert.is_false(page2.more)
    assert.equal(6, page2.cursor)
    assert.equal("n=3", page2.requests[1].query)
    local _, none = control(emu, "GET", "/__sandbox/requests?since=6")
    assert.same({}, none.requests)
    assert.equal(6, none.cursor)
    local _, s4 = control(emu, "GET", "/__sandbox/requests?status=4xx")
    assert.equal(1, #s4.requests)
    assert.equal(401, s4.requests[1].status)
    assert.equal(cjson.null, s4.requests[1].partnerId)
    local _, by_status = control(emu, "GET", "/__sandbox/requests?status=200&pathContains=whoami&method=get")
    assert.equal(5, #by_status.requests)
    local pid = emu.partners[1].id
    local _, by_partner = control(emu, "GET", "/__sandbox/requests?partnerId=" .. pid)
    assert.equal(5, #by_partner.requests)
    -- A filtered read still moves the cursor past what it skipped.
    local _, filtered = control(emu, "GET", "/__sandbox/requests?since=0&status=5xx")
    assert.same({}, filtered.requests)
    assert.equal(6, filtered.cursor)
    control(emu, "DELETE", "/__sandbox/requests")
    local _, cleared = control(emu, "GET", "/__sandbox/requests?since=6")
    assert.equal(1, cleared.epoch)
    call(emu, "GET", "/v1/auth/whoami")
    local _, after = control(emu, "GET", "/__sandbox/requests?since=0")
    assert.equal(7, after.requests[1].seq)      -- seq keeps growing across a clear
    control(emu, "POST", "/__sandbox/reset")
    local _, reset = control(emu, "GET", "/__sandbox/requests")
    assert.equal(2, reset.epoch)
    assert.same({}, reset.requests)
  end)

  it("records the fault applied and its delay in the latency", function()
    local emu = emulator()
    assert.equal(201, (control(emu, "POST", "/__sandbox/faults",
      { path = "/v1/auth/whoami", status = 503, retryAfter = 2, delayMs = 250 })))
    assert.equal(201, (control(emu, "POST", "/__sandbox/faults", { path = "/v1/auth/whoami", drop = true })))
    local _, pending = control(emu, "GET", "/__sandbox/faults")
    assert.equal(2, #pending.faults)
    assert.equal(503, pending.faults[1].status)
    assert.equal(1, pending.faults[1].count)
    assert.equal(503, (call(emu, "GET", "/v1/auth/whoami")))
    local _, _, _, tf = call(emu, "GET", "/v1/auth/whoami")
    assert.is_true(tf.drop)
    local _, log = control(emu, "GET", "/__sandbox/requests")
    assert.same({ status = 503, retryAfter = "2", delayMs = 250 }, log.requests[1].fault)
    assert.equal(250, log.requests[1].latencyMs)
    assert.equal("2", log.requests[1].responseHeaders["retry-after"])
    assert.matches("Injected fault", log.requests[1].responseBody)
    assert.equal(0, log.requests[2].status)
    assert.is_true(log.requests[2].fault.drop)
    assert.equal("", log.requests[2].responseBody)
    local _, empty = control(emu, "GET", "/__sandbox/faults")
    assert.same({}, empty.faults)
  end)

  it("never shows an API key or Bearer token, in headers, bodies, query or answers", function()
    local emu = emulator({ api_keys = { "sandbox-key", "second-partner-key" }, bearer_tokens = { "tok-secret-1" } })
    call(emu, "POST", "/v1/missing-org-reports/tech-platform",
      { name = "leak sandbox-key and second-partner-key and tok-secret-1", ein = "12-3456789" },
      { ["x-echo"] = "sandbox-key", authorization = "Bearer tok-secret-1" })
    call(emu, "GET", "/v1/orgs/ein/second-partner-key?k=sandbox-key")
    call(emu, "GET", "/v1/auth/whoami", nil, { ["x-api-key"] = "a-wrong-key-xyz" })
    call(emu, "POST", "/v1/funds/partner", { name = "x a-wrong-key-xyz" }, { ["x-api-key"] = "a-wrong-key-xyz" })
    local _, _, raw = emu:handle("GET", "/__sandbox/requests", {}, nil)
    for _, secret in ipairs({ "sandbox-key", "second-partner-key", "tok-secret-1", "a-wrong-key-xyz" }) do
      assert.is_nil(raw:find(secret, 1, true), secret .. " is in the log")
    end
    local log = decode(raw).requests
    assert.equal("[redacted]", log[1].headers["x-api-key"])
    assert.equal("[redacted]", log[1].headers["authorization"])
    assert.equal("[redacted]", log[1].headers["x-echo"])
    assert.matches("leak %[redacted%] and %[redacted%]", log[1].body)
    assert.matches("leak %[redacted%]", log[1].responseBody)
  end)

  it("GET /__sandbox/info lists partners without keys, the seeded orgs, statuses and operations", function()
    local emu = emulator({ api_keys = { "k-one-1234", "k-two-5678" } })
    local status, info, _ = control(emu, "GET", "/__sandbox/info")
    assert.equal(200, status)
    assert.equal(2, #info.partners)
    assert.same({ id = emu.partners[2].id, name = "Sandbox Partner 2" }, info.partners[2])
    assert.equal(4, #info.orgs)
    assert.equal("American Red Cross", info.orgs[1].name)
    assert.equal(2, #info.unonboardedOrgs)
    assert.equal("Accepted", info.grantSubmissionStatuses[1])
    assert.truthy(#info.operations >= 6)
    local _, _, raw = emu:handle("GET", "/__sandbox/info", {}, nil)
    assert.is_nil(raw:find("k-one-1234", 1, true))
  end)

  it("serves the page and its assets under a strict CSP; 404 without controls; not logged", function()
    local emu = emulator()
    for _, p in ipairs({ "/__sandbox/", "/__sandbox", "/__sandbox/?x=1" }) do
      local status, hdrs, body = emu:handle("GET", p, {}, nil)
      assert.equal(200, status, p)
      assert.equal("text/html; charset=utf-8", hdrs["content-type"])
      assert.equal(dashboard.CSP, hdrs["content-security-policy"])
      assert.equal("nosniff", hdrs["x-content-type-options"])
      assert.matches("<title>Endaoment sandbox</title>", body, 1, true)
    end
    local csp = dashboard.CSP
    for _, d in ipairs({ "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
      "img-src 'self' data:", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'" }) do
      assert.truthy(csp:find(d, 1, true), d)
    end
    assert.is_nil(csp:find("unsafe", 1, true))
    local types = { ["dashboard.js"] = "text/javascript", ["dashboard.css"] = "text/css",
      ["favicon.svg"] = "image/svg+xml" }
    for name, ctype in pairs(types) do
      local status, hdrs, body = emu:handle("GET", "/__sandbox/" .. name, {}, nil)
      assert.equal(200, status, name)
      assert.equal(ctype, hdrs["content-type"]:match("^[^;]+"))
      assert.truthy(#body > 100)
    end
    assert.equal(404, (emu:handle("GET", "/__sandbox/other.js", {}, nil)))
    assert.equal(404, (emu:handle("POST", "/__sandbox", {}, nil)))
    assert.same({}, emu.log)
    -- No inline script or style, no external URL: CSP needs no 'unsafe-inline'.
    local html = dashboard.HTML
    assert.is_nil(html:find("<script>", 1, true))
    assert.is_nil(html:find("<style", 1, true))
    assert.is_nil(html:find(" style=", 1, true))
    assert.is_nil(html:find("https?://"))
    assert.is_nil(dashboard.JS:find("innerHTML", 1, true))
    assert.is_nil(dashboard.JS:find("https?://"))
    local off = sandbox.new({ controls = false })
    for _, p in ipairs({ "/__sandbox/", "/__sandbox", "/__sandbox/dashboard.js", "/__sandbox/info" }) do
      assert.equal(404, (off:handle("GET", p, {}, nil)), p)
    end
  end)
end)

describe("sandbox dashboard from the server and through nginx", function()
  it("bin/endaoment-sandbox serves it, and answers 404 with --no-controls", function()
    local srv = assert(server.start({}))
    local off = assert(server.start({ "--no-controls" }))
    finally(function() srv.stop(); off.stop() end)
    local res = assert(http.request(srv.url, "GET", "/__sandbox/", {}))
    assert.equal(200, res.status)
    assert.equal(dashboard.CSP, res.headers["content-security-policy"])
    assert.equal(dashboard.HTML, res.body)
    res = assert(http.request(srv.url, "GET", "/__sandbox/dashboard.js", {}))
    assert.equal(200, res.status)
    assert.equal(dashboard.JS, res.body)
    for _, p in ipairs({ "/__sandbox/", "/__sandbox/dashboard.js", "/__sandbox/requests?since=0" }) do
      assert.equal(404, assert(http.request(off.url, "GET", p, {})).status, p)
    end
  end)

  it("works mounted in nginx: the page, an asset and the JSON endpoints", function()
    local ng = assert(openresty.start({ http = [[
  init_by_lua_block { require("endaoment.sandbox.ngx").configure() }
  server {
    listen 127.0.0.1:{port1};
    location / { content_by_lua_block { require("endaoment.sandbox.ngx").serve() } }
  }
]] }))
    local stopped = false
    finally(function() if not stopped then ng.stop() end end)
    local url = ng.url()
    local res = assert(http.request(url, "GET", "/__sandbox/", {}))
    assert.equal(200, res.status)
    assert.equal("text/html; charset=utf-8", res.headers["content-type"])
    assert.equal(dashboard.CSP, res.headers["content-security-policy"])
    assert.equal(dashboard.HTML, res.body)
    res = assert(http.request(url, "GET", "/__sandbox/dashboard.css", {}))
    assert.equal(200, res.status)
    assert.equal(dashboard.CSS, res.body)
    res = assert(http.request(url, "GET", "/v1/auth/whoami", { ["x-api-key"] = "sandbox-key" }))
    assert.equal(200, res.status)
    res = assert(http.request(url, "GET", "/__sandbox/requests?since=0", {}))
    local log_body = decode(res.body)
    assert.equal(1, #log_body.requests)
    assert.equal("[redacted]", log_body.requests[1].headers["x-api-key"])
    assert.is_number(log_body.requests[1].latencyMs)
    stopped = true
    local ok, log = ng.stop()
    assert(ok, log)
  end)
end)

-- The browser tests: spec/browser/dashboard.test.js prints one RESULT line
-- per test; each is one `it` here.
local BROWSER_TESTS = {
  "the page loads under its CSP with no console error",
  "the page lists the journey: user, fund and balance, pledges, submission",
  "a fault injected from the page meets a client call and shows in the log",
  "a drop fault from the page shows as dropped",
  "a submission status advanced from the page",
  "the log filters by path, status and partner",
  "a screenshot with data",
  "script and onerror payloads show as text and never run",
  "clearing the log and resetting ask first",
  "the page works through nginx",
}

-- node_modules from the committed package-lock.json (npm ci), once; a lock
-- keeps concurrent runs from installing over each other.
local function ensure_node_modules()
  if not sh("command -v node >/dev/null && command -v npm >/dev/null") then
    return nil, "node and npm are needed for the browser tests (Node.js 18 or later)"
  end
  local pkg = read(BROWSER_DIR .. "/package.json")
  if not pkg then return nil, BROWSER_DIR .. "/package.json is missing" end
  local want = cjson.decode(pkg).dependencies["puppeteer-core"]
  local function installed()
    local pj = read(BROWSER_DIR .. "/node_modules/puppeteer-core/package.json")
    return pj and cjson.decode(pj).version == want
  end
  if installed() then return true end
  local ok, out = sh("cd " .. q(BROWSER_DIR) .. " && flock /tmp/endaoment-partner-npm-ci.lock " ..
    "sh -c 'test -f node_modules/puppeteer-core/package.json && " ..
    "grep -q \"\\\"version\\\": \\\"" .. want .. "\\\"\" node_modules/puppeteer-core/package.json || " ..
    "timeout 300 npm ci --no-audit --no-fund --loglevel=error'")
  if not ok or not installed() then return nil, "npm ci in " .. BROWSER_DIR .. " failed:\n" .. out end
  return true
end

describe("sandbox dashboard in Chromium", function()
  local results, run_error, output = {}, nil, ""

  setup(function()
    local ok, err = ensure_node_modules()
    if not ok then run_error = err; return end
    local srv
    srv, err = server.start({})
    if not srv then run_error = err; return end
    local ng
    ng, err = openresty.start({ http = [[
  init_by_lua_block { require("endaoment.sandbox.ngx").configure() }
  server {
    listen 127.0.0.1:{port1};
    location / { content_by_lua_block { require("endaoment.sandbox.ngx").serve() } }
  }
]] })
    local good, why = pcall(function()
      assert(ng, "nginx did not start: " .. tostring(err))
      -- The demo journey against the sandbox, as `make demo` runs it against a running one;
      -- twice: the second run's keys are the same, so its money steps are replays.
      for _ = 1, 2 do
        local jok, jout = sh("env -u ENDAOMENT_ENV -u ENDAOMENT_BEARER_TOKEN ENDAOMENT_BASE_URL=" .. q(srv.url) ..
          " ENDAOMENT_API_KEY=sandbox-key timeout 60 " .. server.LUA ..
          " bin/endaoment-journey --no-state examples/plan.json")
        assert(jok, "the journey failed:\n" .. jout)
      end
      os.execute("mkdir -p build")
      local _
      _, output = sh("timeout 90 node " .. BROWSER_DIR .. "/dashboard.test.js --url " .. q(srv.url) ..
        " --nginx-url " .. q(ng.url()) .. " --screenshot " .. q(SCREENSHOT) .. " --timeout-ms 80000")
      for line in output:gmatch("[^\n]+") do
        local json = line:match("^RESULT (.*)$")
        if json then
          local r = cjson.decode(json)
          results[r.name] = r
        end
      end
      local shot = output:match("SCREENSHOT ([^\n]+)")
      if shot then print("\ndashboard screenshot: " .. shot) end
    end)
    if ng then
      local nok, nlog = ng.stop()
      if not nok and good then good, why = false, nlog end
    end
    srv.stop()
    if not good then run_error = tostring(why) end
  end)

  for _, name in ipairs(BROWSER_TESTS) do
    it(name, function()
      assert(not run_error, run_error)
      local r = results[name]
      assert(r, "no result from the browser run:\n" .. output:sub(1, 4000))
      assert(r.ok, r.error)
    end)
  end
end)
