-- bin/endaoment-sandbox over real sockets on 127.0.0.1.
local socket = require "socket"
local cjson = require "cjson"
local server = require "spec.helpers.sandbox_server"
local http = require "spec.helpers.rawhttp"
local sandbox = require "endaoment.sandbox"

local KEY = "sandbox-key"
local JSON = "application/json"
local uuid = sandbox.new().uuid

local function api_headers(extra)
  local h = { ["x-api-key"] = KEY, ["content-type"] = JSON }
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local function user_json(id)
  return cjson.encode({ partnerUserIdentifier = id, firstName = "Ada", lastName = "Lovelace",
    email = "ada@example.com",
    address = { line1 = "1 Main St", city = "NYC", state = "NY", zip = "10001", country = "USA" } })
end

local function shell(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

describe("endaoment-sandbox server", function()
  local srv

  before_each(function()
    srv = assert(server.start())
  end)
  after_each(function()
    srv.stop()
  end)

  it("starts in under a second on loopback and prints its URL first", function()
    assert.is_true(srv.started_in < 1.0, "started in " .. srv.started_in .. " s")
    assert.matches("^http://127%.0%.0%.1:%d+$", srv.url)
  end)

  it("answers a curl walk through the five journey steps", function()
    local out = os.tmpname()
    finally(function() os.remove(out) end)
    local function curl(method, path, body, extra)
      local cmd = { "curl -s -o " .. out .. " -w '%{http_code}' -X", method,
        server.shell_quote(srv.url .. path), "-H 'x-api-key: " .. KEY .. "'",
        "-H 'content-type: application/json'" }
      for _, h in ipairs(extra or {}) do cmd[#cmd + 1] = "-H " .. server.shell_quote(h) end
      if body then cmd[#cmd + 1] = "--data-binary " .. server.shell_quote(body) end
      local code = tonumber(shell(table.concat(cmd, " ")))
      return code, cjson.decode(read_file(out))
    end
    local ubody = user_json("walk-user-0000000001")
    local s, user = curl("POST", "/v1/auth/partner/users", ubody)
    assert.equal(201, s)
    assert.equal(200, (curl("POST", "/v1/auth/partner/users", ubody)))
    local fbody = cjson.encode({ name = "Walk DAF", partnerAccountIdentifier = "walk-account-000000001" })
    local fund
    s, fund = curl("POST", "/v1/funds/partner", fbody, { "x-endaoment-user-id: " .. user.id })
    assert.equal(201, s)
    assert.equal(200, (curl("POST", "/v1/funds/partner", fbody, { "x-endaoment-user-id: " .. user.id })))
    s = curl("POST", "/v1/donation-pledges/partner/cash-settled", cjson.encode({
      receivingFundId = fund.id, idempotencyKey = uuid(), pledgedAmountMicroDollars = "500000000",
      partnerOperationId = "walk-op-1", partnerUserIdentifier = "walk-user-0000000001" }))
    assert.equal(201, s)
    s = curl("POST", "/v1/donation-pledges/partner/stock-settled", cjson.encode({
      receivingFundId = fund.id, idempotencyKey = uuid(), donationValueMicroDollars = "1507500000",
      partnerOperationId = "walk-op-2", stockPledgeData = { ticker = "AAPL", shares = 10 } }),
      { "x-endaoment-user-id: " .. user.id })
    assert.equal(201, s)
    local sub
    s, sub = curl("POST", "/v1/transfers/partner/grant-submissions", cjson.encode({
      idempotencyKey = uuid(), originFundId = fund.id,
      inboundCustodianTransfer = { amountMicroDollars = "500000000", partnerFundingTransferId = "journal-1",
        sourcePartnerAccountIdentifier = "brokerage-omnibus-0001",
        destinationPartnerAccountIdentifier = "walk-account-000000001", settledAtUtc = "2026-05-04T14:32:01.000Z" },
      grants = { { amountMicroDollars = "250000000", destinationOrgId = sandbox.SEED_ORGS[1].id } } }))
    assert.equal(201, s)
    assert.equal("Accepted", sub.status)
    s = curl("POST", "/v1/missing-org-reports/tech-platform", cjson.encode({ name = "Tiny Food Bank",
      ein = "12-3456789" }))
    assert.equal(201, s)
    local list
    s, list = curl("GET", "/v1/transfers/grants/fund/" .. fund.id)
    assert.equal(200, s)
    assert.equal(sub.grants[1].asyncGrantTransferId, list[1].id)
  end)

  it("keeps a connection alive across requests", function()
    local s = http.connect(srv.url)
    for _ = 1, 3 do
      local res = http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY }, nil, s)
      assert.equal(200, res.status)
      assert.equal("keep-alive", res.headers.connection)
    end
    local res = http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY, connection = "close" }, nil, s)
    assert.equal("close", res.headers.connection)
    local data, err = s:receive(1)
    assert.is_nil(data)
    assert.equal("closed", err)
    s:close()
  end)

  it("serves many clients at once while one client stalls mid-request", function()
    local slow = http.connect(srv.url)
    slow:send("POST /v1/auth/whoami HTTP/1.1\r\nx-api-key: ")   -- and nothing more
    local socks = {}
    local t0 = socket.gettime()
    for i = 1, 30 do
      socks[i] = http.connect(srv.url)
      socks[i]:send(http.format("GET", "/v1/auth/whoami", { ["x-api-key"] = KEY }))
    end
    for i = 1, 30 do
      local res = http.read(socks[i])
      assert.equal(200, res.status)
      socks[i]:close()
    end
    assert.is_true(socket.gettime() - t0 < 2, "30 clients took too long")
    slow:close()
  end)

  it("answers malformed requests with a clear 4xx and keeps serving", function()
    local res = http.request(srv.url, "GET", "/v1/nope", { ["x-api-key"] = KEY })
    assert.equal(404, res.status)
    res = http.request(srv.url, "POST", "/v1/auth/partner/users", api_headers(), "{nope")
    assert.equal(400, res.status)
    res = http.request(srv.url, "POST", "/v1/auth/partner/users",
      { ["x-api-key"] = KEY, ["content-type"] = "text/plain" }, "hello")
    assert.equal(415, res.status)
    local s = http.connect(srv.url)
    s:send("THIS IS NOT HTTP\r\n\r\n")
    res = http.read(s)
    assert.equal(400, res.status)
    s:close()
    s = http.connect(srv.url)
    s:send("GET / HTTP/1.1\r\nx-big: " .. string.rep("a", 70000) .. "\r\n\r\n")
    res = http.read(s)
    assert.equal(431, res.status)
    s:close()
    res = http.request(srv.url, "POST", "/v1/auth/partner/users",
      api_headers({ ["transfer-encoding"] = "chunked" }), "")
    assert.equal(411, res.status)
    -- 10 MB body: answered 413 without a crash; the server keeps serving.
    local code = shell("head -c 10000000 /dev/zero | curl -s -o /dev/null -w '%{http_code}' -X POST " ..
      "-H 'x-api-key: " .. KEY .. "' -H 'content-type: application/json' --data-binary @- " ..
      srv.url .. "/v1/auth/partner/users")
    assert.equal("413", code)
    res = http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY })
    assert.equal(200, res.status)
  end)

  describe("faults on the wire", function()
    local function fault(f)
      local res = http.request(srv.url, "POST", "/__sandbox/faults", { ["content-type"] = JSON }, cjson.encode(f))
      assert.equal(201, res.status)
    end

    it("drops the connection without a response", function()
      fault({ path = "/v1/auth/whoami", drop = true })
      local res, err, partial = http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY })
      assert.is_nil(res)
      assert.equal("closed", err)
      assert.equal("", partial)
      assert.equal(200, http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY }).status)
    end)

    it("cuts a response short of its Content-Length", function()
      fault({ path = "/v1/auth/whoami", truncate = true })
      local s = http.connect(srv.url)
      s:send(http.format("GET", "/v1/auth/whoami", { ["x-api-key"] = KEY }))
      local raw = s:receive("*a")
      s:close()
      local cl = tonumber(raw:match("content%-length: (%d+)"))
      local body = raw:match("\r\n\r\n(.*)$")
      assert.is_true(#body < cl)
    end)

    it("sends a status with Retry-After, and delays an answer without blocking others", function()
      fault({ path = "/v1/auth/whoami", status = 429, retryAfter = "1" })
      local res = http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY })
      assert.equal(429, res.status)
      assert.equal("1", res.headers["retry-after"])
      fault({ path = "/v1/auth/whoami", delayMs = 600 })
      local t0 = socket.gettime()
      local slow = http.connect(srv.url)
      slow:send(http.format("GET", "/v1/auth/whoami", { ["x-api-key"] = KEY }))
      socket.sleep(0.05)
      local fast = http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY })
      assert.equal(200, fast.status)
      assert.is_true(socket.gettime() - t0 < 0.4, "a delayed answer blocked another client")
      assert.equal(200, http.read(slow).status)
      assert.is_true(socket.gettime() - t0 >= 0.6)
      slow:close()
    end)

    it("logs every request with the API key redacted", function()
      http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY })
      local res = http.request(srv.url, "GET", "/__sandbox/requests?path=/v1/auth/whoami", {})
      local log = cjson.decode(res.body).requests
      assert.equal(1, #log)
      assert.equal("[redacted]", log[1].headers["x-api-key"])
      assert.is_nil(res.body:find(KEY, 1, true))
    end)
  end)
end)

describe("endaoment-sandbox options", function()
  it("adds --latency-ms to every answer without serialising clients", function()
    local srv = assert(server.start({ "--latency-ms", "200" }))
    finally(srv.stop)
    local socks, t0 = {}, socket.gettime()
    for i = 1, 10 do
      socks[i] = http.connect(srv.url)
      socks[i]:send(http.format("GET", "/v1/auth/whoami", { ["x-api-key"] = KEY }))
    end
    for i = 1, 10 do assert.equal(200, http.read(socks[i]).status); socks[i]:close() end
    local took = socket.gettime() - t0
    assert.is_true(took >= 0.2, "latency not applied")
    assert.is_true(took < 0.6, "10 x 200 ms took " .. took .. " s: clients were serialised")
  end)

  it("accepts only the configured API keys and disables controls with --no-controls", function()
    local srv = assert(server.start({ "--api-key", "k-one", "--api-key", "k-two", "--no-controls" }))
    finally(srv.stop)
    assert.equal(200, http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = "k-two" }).status)
    assert.equal(401, http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY }).status)
    assert.equal(404, http.request(srv.url, "GET", "/__sandbox/requests", {}).status)
  end)

  it("rejects unknown options", function()
    local srv, err = server.start({ "--colour" })
    if srv then srv.stop() end
    assert.is_nil(srv)
    assert.matches("unknown option", err)
  end)

  describe("--state", function()
    local path
    before_each(function() path = os.tmpname() os.remove(path) end)
    after_each(function() os.remove(path) os.remove(path .. ".tmp") end)

    local function provision(url, id)
      return http.request(url, "POST", "/v1/auth/partner/users", api_headers(), user_json(id))
    end

    for _, sig in ipairs({ "TERM", "INT" }) do
      it("keeps users across a restart (SIG" .. sig .. ")", function()
        local srv = assert(server.start({ "--state", path }))
        local r1 = provision(srv.url, "state-user-000000001")
        assert.equal(201, r1.status)
        srv.stop(sig)
        srv = assert(server.start({ "--state", path }))
        finally(srv.stop)
        local r2 = provision(srv.url, "state-user-000000001")
        assert.equal(200, r2.status)
        assert.equal(cjson.decode(r1.body).id, cjson.decode(r2.body).id)
      end)
    end

    it("never leaves a corrupt file when killed mid-write", function()
      for round = 1, 3 do
        local srv = assert(server.start({ "--state", path }))
        -- A bounded burst of writes in the background, killed part-way.
        local body = user_json("kill-user-" .. round .. "-IDX-000000"):gsub("IDX", "$i")
        os.execute(string.format("for i in $(seq 1 150); do curl -s -o /dev/null -X POST %s " ..
          "-H 'x-api-key: %s' -H 'content-type: application/json' --data-binary %s; done >/dev/null 2>&1 &",
          srv.url .. "/v1/auth/partner/users", KEY, '"' .. body:gsub('"', '\\"') .. '"'))
        socket.sleep(0.3 + round * 0.1)
        srv.stop("KILL")
        local text = read_file(path)
        assert.is_string(text, "no state file after round " .. round)
        local emu = sandbox.new()
        assert.is_true((emu:load_state(text)), "state file corrupt after kill in round " .. round)
      end
      os.execute("sleep 0.5")   -- let the background loop finish against the dead port
      local srv = assert(server.start({ "--state", path }))
      finally(srv.stop)
      assert.equal(200, http.request(srv.url, "GET", "/v1/auth/whoami", { ["x-api-key"] = KEY }).status)
    end)

    it("refuses to start on a corrupt state file and leaves it untouched", function()
      local f = assert(io.open(path, "wb"))
      f:write("{garbage")
      f:close()
      local srv, err = server.start({ "--state", path })
      if srv then srv.stop() end
      assert.is_nil(srv)
      assert.matches("refusing to start", err)
      assert.equal("{garbage", read_file(path))
    end)
  end)
end)

describe("endaoment-sandbox command line", function()
  local function run(args)
    local out = os.tmpname()
    local err = os.tmpname()
    local ok, _, status = os.execute(server.LUA .. " bin/endaoment-sandbox " .. args .. " >" .. out .. " 2>" .. err)
    local code = status or (type(ok) == "number" and ok / 256) or 0  -- 5.1's os.execute: a wait status
    local o, e = read_file(out), read_file(err)
    os.remove(out); os.remove(err)
    return code, o, e
  end

  it("lists every flag, the exit codes and an example in --help", function()
    local code, out = run("--help")
    assert.equal(0, code)
    for _, flag in ipairs({ "--port", "--host", "--api-key", "--bearer-token", "--state", "--latency-ms",
      "--max-body", "--idle-timeout-ms", "--max-connections", "--rules", "--forbid-unknown", "--no-controls",
      "--verbose", "--version",
      "--help" }) do
      assert.truthy(out:find(flag, 1, true), flag .. " missing from --help")
    end
    assert.matches("Exit codes", out)
    assert.matches("Example", out)
  end)

  it("prints its version with --version", function()
    local _, out = run("--version")
    local ok, core = pcall(require, "endaoment.partner.core")
    assert.equal("endaoment-sandbox " .. (ok and core.version or "scm-1") .. "\n", out)
  end)

  it("exits 2 on a bad argument and names it", function()
    local code, _, err = run("--port 70000")
    assert.equal(2, code)
    assert.matches("%-%-port", err)
    local _, _, err2 = run("--idle-timeout-ms 0")
    assert.matches("%-%-idle%-timeout%-ms", err2)
  end)
end)

describe("endaoment.sandbox.server in process", function()
  it("listens, serves one request per step and closes", function()
    local srv = assert(require("endaoment.sandbox.server").new({ port = 0 }))
    local url = assert(srv:listen())
    finally(function() srv:close() end)
    assert.matches("^http://127%.0%.0%.1:%d+$", url)
    local s = http.connect(url)
    s:send(http.format("GET", "/v1/auth/whoami", { ["x-api-key"] = KEY, connection = "close" }))
    s:settimeout(0)
    local got = ""
    for _ = 1, 50 do
      srv:step(0.02)
      local data, _, partial = s:receive("*a")
      got = got .. (data or partial or "")
      if got:find("}$") then break end
    end
    s:close()
    assert.matches("^HTTP/1%.1 200 OK", got)
    assert.equal(0, (srv:connections()))
  end)

  it("refuses a state file that is not one, without touching it", function()
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local f = assert(io.open(path, "wb")); f:write("[1,2]"); f:close()
    local srv, err = require("endaoment.sandbox.server").new({ port = 0, state = path })
    assert.is_nil(srv)
    assert.matches("refusing to start", err)
    assert.equal("[1,2]", read_file(path))
  end)
end)

describe("endaoment.sandbox.faults", function()
  local faults = require "endaoment.sandbox.faults"

  it("plans latency for the API only, and the fault's delay on top", function()
    assert.equal(0, faults.plan("/__sandbox/state", 200, {}, "{}", nil, 300).delay_ms)
    assert.equal(300, faults.plan("/v1/auth/whoami", 200, {}, "{}", nil, 300).delay_ms)
    assert.equal(550, faults.plan("/v1/auth/whoami", 200, {}, "{}", { delay_ms = 250 }, 300).delay_ms)
  end)

  it("truncates under the full Content-Length, then closes; drops with nothing sent", function()
    local p = faults.plan("/v1/x", 200, {}, "0123456789", { truncate = true }, 0)
    assert.equal(10, p.content_length)
    assert.equal(5, p.send_bytes)
    assert.equal("01234", faults.sent_body(p))
    assert.is_true(p.close)
    p = faults.plan("/v1/x", 0, {}, "", { drop = true }, 0)
    assert.is_true(p.drop)
    p = faults.plan("/v1/x", 200, {}, "abc", nil, 0)
    assert.equal("abc", faults.sent_body(p))
    assert.is_false(p.close or p.drop)
  end)
end)

describe("the emulator's money and ids", function()
  local INT64_MAX = "9223372036854775807"

  local function call(emu, method, path, body, extra)
    local h = { ["x-api-key"] = KEY, ["content-type"] = JSON }
    for k, v in pairs(extra or {}) do h[k] = v end
    local status, _, rbody = emu:handle(method, path, h, body and cjson.encode(body) or nil)
    return status, cjson.decode(rbody)
  end

  it("refuses a pledge or grant that would take a fund's totals past int64, changing nothing", function()
    local emu = sandbox.new()
    local s, user = call(emu, "POST", "/v1/auth/partner/users", cjson.decode(user_json("int64-user-000000001")))
    assert.equal(201, s)
    local fund
    s, fund = call(emu, "POST", "/v1/funds/partner",
      { name = "Big DAF", partnerAccountIdentifier = "int64-acct-000000001" }, { ["x-endaoment-user-id"] = user.id })
    assert.equal(201, s)
    local function pledge(amount)
      return call(emu, "POST", "/v1/donation-pledges/partner/cash-settled", { receivingFundId = fund.id,
        idempotencyKey = uuid(), pledgedAmountMicroDollars = amount, partnerOperationId = uuid(),
        partnerUserIdentifier = "int64-user-000000001" })
    end
    assert.equal(201, (pledge("9223372036854775000")))
    assert.equal(201, (pledge("807")))                     -- exactly INT64_MAX
    local rev = emu:revision()
    local r
    s, r = pledge("1")
    assert.equal(400, s)
    assert.matches("usdcBalance", r.message)
    assert.equal(rev, emu:revision())
    local _, f = call(emu, "GET", "/v1/funds/" .. fund.id)
    assert.equal(INT64_MAX, f.usdcBalance)
    assert.equal(INT64_MAX, f.lifetimeDonationsUsdc)
    local function submit(amount)
      return call(emu, "POST", "/v1/transfers/partner/grant-submissions", {
        idempotencyKey = uuid(), originFundId = fund.id,
        inboundCustodianTransfer = { amountMicroDollars = amount, partnerFundingTransferId = uuid(),
          sourcePartnerAccountIdentifier = "brokerage-omnibus-0001",
          destinationPartnerAccountIdentifier = "int64-acct-000000001", settledAtUtc = "2026-05-04T14:32:01.000Z" },
        grants = { { amountMicroDollars = amount, destinationOrgId = sandbox.SEED_ORGS[1].id } } })
    end
    assert.equal(201, (submit(INT64_MAX)))
    rev = emu:revision()
    s, r = submit("1")
    assert.equal(400, s)
    assert.matches("totalGrantedUsdc", r.message)
    assert.equal(rev, emu:revision())
    _, f = call(emu, "GET", "/v1/funds/" .. fund.id)
    assert.equal(INT64_MAX, f.totalGrantedUsdc)
    local _, list = call(emu, "GET", "/v1/transfers/grants/fund/" .. fund.id)
    assert.equal(1, #list)
  end)

  it("hands out different ids in two fresh Lua 5.1 processes", function()
    local cmd = "lua5.1 -e 'package.path = \"./lua/?.lua;\" .. package.path " ..
      "local e = require(\"endaoment.sandbox\").new() print(e.uuid() .. \" \" .. e.uuid())'"
    local a, b = shell(cmd), shell(cmd)
    assert.matches("^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+ ", a)
    assert.not_equal(a, b)
  end)
end)

describe("the canonical JSON encoder", function()
  it("lives in the client package; the sandbox re-exports it", function()
    assert.equal(require("endaoment.partner.json"), require("endaoment.sandbox.json"))
    assert.equal('{"a":[],"b":{"c":1}}', require("endaoment.partner.json").encode({
      b = { c = 1 }, a = require("endaoment.partner.json").array() }))
  end)

  it("is all the journey needs: it loads no sandbox module", function()
    local out = shell(server.LUA .. " -e 'require \"endaoment.partner.journey\" " ..
      "for k in pairs(package.loaded) do if k:find(\"sandbox\") then print(k) end end print(\"done\")' 2>&1")
    assert.equal("done\n", out)
  end)
end)
