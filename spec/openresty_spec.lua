-- The client inside nginx (Debian's libnginx-mod-http-lua), over cosockets,
-- against the sandbox: journey from a handler and from a timer, keep-alive,
-- faults, phases without cosockets, TLS, the sandbox mounted in nginx, and
-- proof that a slow upstream does not block the worker.
local cjson = require "cjson"
local socket = require "socket"
local server = require "spec.helpers.sandbox_server"
local openresty = require "spec.helpers.openresty"
local http = require "spec.helpers.rawhttp"
local tls_server = require "spec.helpers.tls_server"

local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"

local function plan(tag)
  return {
    user = { partnerUserIdentifier = "ngx-user-" .. tag .. "-00000001", firstName = "Ada", lastName = "Lovelace",
      email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
          state = "NY", zip = "10001", country = "USA" } },
    fund = { name = "Nginx DAF", partnerAccountIdentifier = "ngx-account-" .. tag .. "-000001" },
    donations = { { kind = "cash", pledgedAmountMicroDollars = "125000000", partnerOperationId = "ngx-cash-1" } },
    grant = {
      inboundCustodianTransfer = { amountMicroDollars = "125000000", partnerFundingTransferId = "ngx-journal-1",
        sourcePartnerAccountIdentifier = "ngx-omnibus-0000001",
        destinationPartnerAccountIdentifier = "ngx-account-" .. tag .. "-000001",
        settledAtUtc = "2026-05-04T14:32:01.000Z" },
      grants = { { amountMicroDollars = "100000000", destinationOrgId = RED_CROSS } },
    },
    missing_orgs = { { name = "Tiny Food Bank", ein = "12-3456789" } },
  }
end

local HTTP_BLOCK = [[
  lua_shared_dict results 1m;
  lua_ssl_trusted_certificate {ca};
  lua_ssl_verify_depth 2;
  init_by_lua_block {
    local partner = require "endaoment.partner"
    local fast = { retry_base_ms = 20, retry_cap_ms = 50 }
    local function client(url, extra)
      local o = { api_key = "sandbox-key", base_url = url, bearer_token = "sandbox-token" }
      for k, v in pairs(fast) do o[k] = v end
      for k, v in pairs(extra or {}) do o[k] = v end
      return partner.new(o)
    end
    -- Module-level clients: they hold no socket between requests.
    CLIENTS = {
      main = client("{sandbox}"),
      short = client("{sandbox}", { timeout_ms = 300, max_retries = 0 }),
      slow = client("{slow}"),
      nginx_sandbox = client("http://127.0.0.1:{port2}"),
      tls = client("https://localhost:{port3}"),
      tls_wrong_host = client("https://127.0.0.2:{port3}"),
      chunked = client("http://127.0.0.1:{port1}/chunked"),
      chunked_small = client("http://127.0.0.1:{port1}/chunked", { max_response_bytes = 64 }),
      trickle = client("http://127.0.0.1:{port1}/trickle", { timeout_ms = 500, max_retries = 0 }),
    }
    require("endaoment.sandbox.ngx").configure()
  }
  init_worker_by_lua_block {
    local _, err = CLIENTS.main:whoami()
    ngx.shared.results:set("init_worker", err and (err.kind .. ": " .. err.message) or "no error")
  }
  server {
    listen 127.0.0.1:{port1};
    default_type application/json;
    location = /call {
      content_by_lua_block {
        local cjson = require "cjson"
        local args = ngx.req.get_uri_args()
        local c = CLIENTS[args.client or "main"]
        local res, err, meta = c:whoami()
        ngx.say(cjson.encode({ ok = res ~= nil, err_kind = err and err.kind, err = err and tostring(err),
          attempts = meta.attempts, status = meta.status, reused = c.transport.last_reused_times,
          transport = c.transport.name, curl_loaded = package.loaded["endaoment.partner.curl"] ~= nil }))
      }
    }
    location = /journey {
      content_by_lua_block {
        local cjson = require "cjson"
        local journey = require "endaoment.partner.journey"
        ngx.req.read_body()
        local args = ngx.req.get_uri_args()
        local result, err = journey.run(CLIENTS[args.client or "main"], cjson.decode(ngx.req.get_body_data()))
        local steps = {}
        for i, s in ipairs(result and result.steps or {}) do steps[i] = s.name .. ":" .. s.outcome end
        ngx.say(cjson.encode({ ok = result ~= nil, err = err and tostring(err), steps = steps,
          curl_loaded = package.loaded["endaoment.partner.curl"] ~= nil }))
      }
    }
    location = /timer-journey {
      content_by_lua_block {
        local cjson = require "cjson"
        ngx.req.read_body()
        local plan = cjson.decode(ngx.req.get_body_data())
        local ok, err = ngx.timer.at(0, function(premature)
          if premature then return end
          local journey = require "endaoment.partner.journey"
          local result, jerr = journey.run(CLIENTS.main, plan)
          ngx.shared.results:set("timer", cjson.encode({ ok = result ~= nil, err = jerr and tostring(jerr),
            steps = result and #result.steps or 0, phase = ngx.get_phase() }))
        end)
        ngx.say(cjson.encode({ scheduled = ok, err = err }))
      }
    }
    # An upstream that answers in chunks (no Content-Length), 4 x 25 bytes.
    location = /chunked/v1/auth/whoami {
      content_by_lua_block {
        ngx.print('{"clientName":"chunky",')
        ngx.flush(true)
        ngx.print('"roles":["a","b","c"],')
        ngx.flush(true)
        ngx.print('"pad":"' .. string.rep("x", 40) .. '"}')
      }
    }
    # Six chunks, 300 ms apart: each read is quick, the whole answer is not.
    location = /trickle/v1/auth/whoami {
      content_by_lua_block {
        for i = 1, 6 do
          ngx.print(i == 1 and '{"parts":["' or '","')
          ngx.flush(true)
          ngx.sleep(0.3)
        end
        ngx.print('"]}')
      }
    }
    location = /log-phase {
      content_by_lua_block { ngx.say('{"ok":true}') }
      log_by_lua_block {
        local _, err = CLIENTS.main:whoami()
        ngx.shared.results:set("log", err and (err.kind .. ": " .. err.message) or "no error")
      }
    }
    location = /results {
      content_by_lua_block {
        local cjson = require "cjson"
        local d = ngx.shared.results
        ngx.say(cjson.encode({ init_worker = d:get("init_worker"), log = d:get("log"), timer = d:get("timer") }))
      }
    }
  }
  server {
    listen 127.0.0.1:{port2};
    location / { content_by_lua_block { require("endaoment.sandbox.ngx").serve() } }
  }
  server {
    listen 127.0.0.1:{port3} ssl;
    listen 127.0.0.2:{port3} ssl;
    server_name localhost;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
]]

describe("OpenResty", function()
  local sb, slow, ng, certdir

  local function get(path)
    return cjson.decode(assert(http.request(ng.url(1), "GET", path, {})).body)
  end
  local function post(path, body)
    return cjson.decode(assert(http.request(ng.url(1), "POST", path, { ["content-type"] = "application/json" },
      cjson.encode(body))).body)
  end
  local function count(t) local n = 0 for _ in pairs(t or {}) do n = n + 1 end return n end

  lazy_setup(function()
    sb = assert(server.start())
    slow = assert(server.start({ "--latency-ms", "200" }))
    certdir = os.tmpname()
    os.remove(certdir)
    os.execute("mkdir -p " .. certdir)
    local certs = assert(tls_server.make_certs(certdir))
    local block = HTTP_BLOCK:gsub("{(%a+)}", { sandbox = sb.url, slow = slow.url, ca = certs.ca,
      cert = certs.cert, key = certs.key })
    local err
    ng, err = openresty.start({ http = block, ports = 3 })
    assert(ng, "nginx with lua-nginx-module (Debian libnginx-mod-http-lua): " .. tostring(err))
  end)

  lazy_teardown(function()
    local ok, problem = true, nil
    if ng then ok, problem = ng.stop() end
    if sb then sb.stop() end
    if slow then slow.stop() end
    if certdir then os.execute("rm -rf " .. certdir) end
    assert(ok, problem)
  end)

  before_each(function()
    sb.control("POST", "/__sandbox/reset")
  end)

  it("runs the five journey steps from a request handler, over cosockets, never loading libcurl", function()
    local r = post("/journey", plan("handler"))
    assert.is_nil(r.err)
    assert.is_true(r.ok)
    assert.same({ "provision_user:created", "create_fund:created", "record_cash_donation:created",
      "submit_grant:created", "report_missing_org:created" }, r.steps)
    assert.is_false(r.curl_loaded)
    local _, st = sb.control("GET", "/__sandbox/state")
    assert.equal(1, count(st.users)); assert.equal(1, count(st.funds)); assert.equal(1, count(st.pledges))
    assert.equal(1, count(st.submissions)); assert.equal(1, count(st.reports))
    local ua = sb.logged("/v1/auth/partner/users")[1].headers["user-agent"]
    assert.matches("ngx_lua", ua)
  end)

  it("runs the journey from ngx.timer.at", function()
    local r = post("/timer-journey", plan("timer"))
    assert.is_truthy(r.scheduled)
    local deadline, res = socket.gettime() + 5
    repeat
      socket.sleep(0.05)
      res = get("/results").timer
    until res or socket.gettime() > deadline
    local t = cjson.decode((assert(res, "the timer never finished")))
    assert.is_true(t.ok, t.err)
    assert.equal(5, t.steps)
    assert.equal("timer", t.phase)
  end)

  it("reuses kept-alive connections (getreusedtimes)", function()
    local first = get("/call")
    local second = get("/call")
    assert.is_true(first.ok and second.ok)
    assert.equal("ngx", second.transport)
    assert.is_true(second.reused > first.reused or second.reused >= 1)
  end)

  it("retries a 503 and a dropped connection as the curl path does, with one key", function()
    sb.fault({ path = "/v1/auth/whoami", status = 503 })
    local r = get("/call")
    assert.is_true(r.ok)
    assert.equal(2, r.attempts)
    sb.fault({ path = "/v1/auth/whoami", drop = true })
    r = get("/call")
    assert.is_true(r.ok)
    assert.equal(2, r.attempts)
  end)

  it("reports a slow answer as kind timeout, and a short body as kind network", function()
    sb.fault({ path = "/v1/auth/whoami", delayMs = 1000 })
    local t0 = socket.gettime()
    local r = get("/call?client=short")
    assert.equal("timeout", r.err_kind)
    assert.is_true(socket.gettime() - t0 < 0.9)
    sb.fault({ path = "/v1/auth/whoami", truncate = true })
    r = get("/call?client=short")
    assert.equal("network", r.err_kind)
    assert.matches("bytes remaining", r.err)
  end)

  it("reads a chunked answer, and caps it at max_response_bytes", function()
    local r = get("/call?client=chunked")
    assert.is_true(r.ok, r.err)
    r = get("/call?client=chunked_small")
    assert.equal("network", r.err_kind)
    assert.matches("max_response_bytes", r.err)
    assert.equal(1, r.attempts)
  end)

  it("holds timeout_ms over the whole answer, not per read", function()
    local t0 = socket.gettime()
    local r = get("/call?client=trickle")
    local took = socket.gettime() - t0
    assert.equal("timeout", r.err_kind)
    assert.is_true(took < 1.0, string.format("a 500 ms timeout took %.2f s", took))
  end)

  it("refuses to block in phases without cosockets, pointing to ngx.timer.at", function()
    get("/log-phase")
    socket.sleep(0.05)
    local r = get("/results")
    assert.matches("^config: .*init_worker phase.*ngx%.timer%.at", r.init_worker)
    assert.matches("^config: .*log phase.*ngx%.timer%.at", r.log)
  end)

  it("does not block the worker: 20 concurrent calls to a 200 ms upstream finish together", function()
    local socks = {}
    local t0 = socket.gettime()
    for i = 1, 20 do
      socks[i] = http.connect(ng.url(1))
      socks[i]:send(http.format("GET", "/call?client=slow", {}))
    end
    for i = 1, 20 do
      local res = assert(http.read(socks[i]))
      assert.is_true(cjson.decode(res.body).ok)
      socks[i]:close()
    end
    local took = socket.gettime() - t0
    assert.is_true(took < 0.6, string.format("20 x 200 ms took %.3f s: the worker was blocked", took))
  end)

  it("verifies TLS with lua_ssl_trusted_certificate and explains a wrong host name", function()
    local r = get("/call?client=tls")
    assert.is_true(r.ok, r.err)
    r = get("/call?client=tls_wrong_host")
    assert.equal("tls", r.err_kind)
    assert.matches("127.0.0.2", r.err, 1, true)
    assert.matches("lua_ssl_trusted_certificate", r.err)
  end)

  describe("the sandbox mounted in nginx", function()
    it("answers a journey and the test controls", function()
      local r = post("/journey?client=nginx_sandbox", plan("mounted"))
      assert.is_true(r.ok, r.err)
      assert.equal(5, #r.steps)
      local res = http.request(ng.url(2), "GET", "/__sandbox/state", {})
      local st = cjson.decode(res.body)
      assert.equal(1, count(st.submissions))
      res = http.request(ng.url(2), "POST", "/v1/auth/partner/users",
        { ["x-api-key"] = "wrong", ["content-type"] = "application/json" }, "{}")
      assert.equal(401, res.status)
    end)

    it("applies drop and delay faults with nginx's means", function()
      local res = http.request(ng.url(2), "POST", "/__sandbox/faults", { ["content-type"] = "application/json" },
        cjson.encode({ path = "/v1/auth/whoami", drop = true }))
      assert.equal(201, res.status)
      local r, err = http.request(ng.url(2), "GET", "/v1/auth/whoami", { ["x-api-key"] = "sandbox-key" })
      assert.is_nil(r)
      assert.equal("closed", err)
      http.request(ng.url(2), "POST", "/__sandbox/faults", { ["content-type"] = "application/json" },
        cjson.encode({ path = "/v1/auth/whoami", delayMs = 300 }))
      local t0 = socket.gettime()
      r = http.request(ng.url(2), "GET", "/v1/auth/whoami", { ["x-api-key"] = "sandbox-key" })
      assert.equal(200, r.status)
      assert.is_true(socket.gettime() - t0 >= 0.3)
    end)
  end)
end)
