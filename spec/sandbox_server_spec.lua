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
    email = "ada@example.com", address = { line1 = "1 Main St", city = "NYC", country = "USA" } })
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
