-- Retry policy and request shaping, through a scripted transport (no network).
local partner = require "endaoment.partner"
local retry = require "endaoment.partner.retry"
local cjson = require "cjson"

-- A transport that answers from a script and records every request.
local function scripted(answers)
  local t = { requests = {}, sleeps = {} }
  function t.request(_, req)
    t.requests[#t.requests + 1] = req
    local a = table.remove(answers, 1)
    if a == nil then error("scripted transport: no answer left") end
    if a.err then return nil, a.err end
    return { status = a.status, headers = a.headers or {}, body = a.body or "{}" }
  end
  function t.sleep(_, ms) t.sleeps[#t.sleeps + 1] = ms end
  return t
end

local function client(t, extra)
  local o = { api_key = "test-key-1234", base_url = "http://127.0.0.1:1", transport = t,
    retry_base_ms = 100, retry_cap_ms = 1000 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return partner.new(o)
end

local ADDRESS = { line1 = "1 Main St", city = "New York", state = "NY", zip = "10001", country = "USA" }
local function user_body()
  return { partnerUserIdentifier = "retry-user-00000001", firstName = "Ada", lastName = "Lovelace",
    email = "ada@example.com", address = ADDRESS }
end
local FUND = "2b8108d8-30fc-4c62-9b93-07ee1f8b8455"
local function cash_body()
  return { receivingFundId = FUND, pledgedAmountMicroDollars = "1000000", partnerOperationId = "op-1" }
end

describe("retry policy", function()
  it("retries 429, 500, 502, 503, 504 and network errors, then succeeds", function()
    for _, first in ipairs({ { status = 429 }, { status = 500 }, { status = 502 }, { status = 503 },
      { status = 504 }, { err = { kind = "network", message = "reset", retryable = true } },
      { err = { kind = "timeout", message = "slow", retryable = true } } }) do
      local t = scripted({ first, { status = 201, body = '{"id":"x"}' } })
      local res, err, meta = client(t):record_cash_donation(cash_body())
      assert.is_nil(err)
      assert.equal("x", res.id)
      assert.equal(2, meta.attempts)
      assert.equal(t.requests[1].body, t.requests[2].body)   -- same bytes, same key
      assert.equal(1, #t.sleeps)
    end
  end)

  it("never retries another 4xx, a TLS failure or an oversize answer", function()
    for _, a in ipairs({ { status = 400 }, { status = 401 }, { status = 403 }, { status = 404 },
      { status = 409 }, { status = 422 }, { err = { kind = "tls", message = "bad cert", retryable = false } },
      { err = { kind = "too_large", message = "big", retryable = false } } }) do
      local t = scripted({ a, { status = 201 } })
      local _, err, meta = client(t):record_cash_donation(cash_body())
      assert.is_table(err)
      assert.equal(1, meta.attempts)
      assert.equal(1, #t.requests)
    end
  end)

  it("stops after max_retries and reports the last answer", function()
    local t = scripted({ { status = 503 }, { status = 503 }, { status = 503 }, { status = 503 } })
    local _, err, meta = client(t, { max_retries = 2 }):record_cash_donation(cash_body())
    assert.equal("http", err.kind)
    assert.equal(503, err.status)
    assert.is_true(err.retryable)
    assert.equal(3, meta.attempts)
    t = scripted({ { status = 503 } })
    _, err, meta = client(t, { max_retries = 0 }):record_cash_donation(cash_body())
    assert.equal(1, meta.attempts)
    assert.equal(503, err.status)
  end)

  it("waits with full jitter under an exponential ceiling and the cap", function()
    local cfg = { retry_base_ms = 500, retry_cap_ms = 8000 }
    for attempt = 1, 8 do
      local ceiling = math.min(8000, 500 * 2 ^ (attempt - 1))
      assert.equal(0, retry.backoff_ms(attempt, cfg, function() return 0 end))
      assert.equal(math.floor(ceiling * 0.999), retry.backoff_ms(attempt, cfg, function() return 0.999 end))
      for _ = 1, 50 do
        local w = retry.backoff_ms(attempt, cfg)
        assert.is_true(w >= 0 and w <= ceiling)
      end
    end
  end)

  it("honours Retry-After in seconds and as an HTTP date, capped", function()
    assert.equal(3000, retry.parse_retry_after("3"))
    assert.equal(120000, retry.parse_retry_after("Sun, 06 Nov 1994 08:51:00 GMT", 784111740))
    assert.equal(0, retry.parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 + 60))
    assert.is_nil(retry.parse_retry_after("soon"))
    local t = scripted({ { status = 429, headers = { ["retry-after"] = "2" } }, { status = 201 } })
    client(t):record_cash_donation(cash_body())
    assert.same({ 2000 }, t.sleeps)
    t = scripted({ { status = 503, headers = { ["retry-after"] = "3600" } }, { status = 201 } })
    client(t, { retry_after_cap_ms = 5000 }):record_cash_donation(cash_body())
    assert.same({ 5000 }, t.sleeps)
  end)

  it("reports retries through on_retry", function()
    local seen = {}
    local t = scripted({ { status = 500 }, { status = 201 } })
    client(t, { on_retry = function(info) seen[#seen + 1] = info end }):record_cash_donation(cash_body())
    assert.equal(1, #seen)
    assert.equal(500, seen[1].status)
    assert.equal(1, seen[1].attempt)
  end)
end)

describe("requests as sent", function()
  it("puts an idempotency key in every write, even with max_retries = 0", function()
    local t = scripted({ { status = 201, body = '{"id":"p"}' } })
    local _, _, meta = client(t, { max_retries = 0 }):record_cash_donation(cash_body())
    local sent = cjson.decode(t.requests[1].body)
    assert.is_true(partner.is_uuid(sent.idempotencyKey))
    assert.equal(sent.idempotencyKey, meta.idempotency_key)
  end)

  it("uses the caller's key and never modifies the caller's table", function()
    local t = scripted({ { status = 201 } })
    local body = cash_body()
    body.idempotencyKey = "8fc9cf75-7813-4f2f-95d6-7c9f84f0f6ef"
    local before = cjson.encode(body)
    local _, _, meta = client(t):record_cash_donation(body)
    assert.equal(before, cjson.encode(body))
    assert.equal("8fc9cf75-7813-4f2f-95d6-7c9f84f0f6ef", meta.idempotency_key)
    local body2 = cash_body()
    t = scripted({ { status = 201 } })
    client(t):record_cash_donation(body2)
    assert.is_nil(body2.idempotencyKey)
  end)

  it("sends the headers each call needs", function()
    local t = scripted({ { status = 201 }, { status = 201 }, { status = 200 }, { status = 200 } })
    local c = client(t, { bearer_token = "tok-5678" })
    c:create_fund({ name = "F", partnerAccountIdentifier = "account-0000000001" },
      { user_id = "3C90C3CC-0D44-4B50-8888-8DD25736052A" })
    local h = t.requests[1].headers
    assert.equal("test-key-1234", h["x-api-key"])
    assert.equal("3c90c3cc-0d44-4b50-8888-8dd25736052a", h["x-endaoment-user-id"])
    assert.equal("application/json", h["content-type"])
    assert.matches("^endaoment%-partner%-lua/%d+%.%d+%.%d+ %(", h["user-agent"])
    c:create_async_grant({ originFundId = FUND, destinationOrgId = FUND, requestedAmount = "1", purpose = "p" })
    h = t.requests[2].headers
    assert.equal("Bearer tok-5678", h.authorization)
    assert.is_nil(h["x-api-key"])
    c:find_org_by_ein("53-0196605")
    assert.is_nil(t.requests[3].headers["x-api-key"])            -- public endpoint: no key sent
    assert.equal("http://127.0.0.1:1/v1/orgs/ein/53-0196605", t.requests[3].url)
    c:whoami()
    assert.equal("GET", t.requests[4].method)
  end)

  it("refuses an async grant without a Bearer token, sending nothing", function()
    local t = scripted({})
    local _, err = client(t):create_async_grant({ originFundId = FUND, destinationOrgId = FUND,
      requestedAmount = "1", purpose = "p" })
    assert.equal("config", err.kind)
    assert.matches("Bearer", err.message)
    assert.equal(0, #t.requests)
  end)

  it("sends nothing for invalid input and names the field", function()
    local t = scripted({})
    local c = client(t)
    local _, res, err, meta
    res, err, meta = c:record_cash_donation({ receivingFundId = FUND, pledgedAmountMicroDollars = "1.5",
      partnerOperationId = "x" })
    assert.is_nil(res)
    assert.equal("invalid", err.kind)
    assert.equal("pledgedAmountMicroDollars", err.field)
    assert.equal(0, meta.attempts)
    _, err = c:create_fund({ name = "F", partnerAccountIdentifier = "account-0000000001" }, { user_id = "nope" })
    assert.equal("opts.user_id", err.field)
    _, err = c:get_fund("not-a-uuid")
    assert.equal("invalid", err.kind)
    _, err = c:find_org_by_ein("1234")
    assert.equal("ein", err.field)
    _, err = c:record_cash_donation(cash_body(), { colour = "red" })
    assert.equal("invalid", err.kind)
    assert.equal(0, #t.requests)
  end)

  it("decodes errors into kind, status, messages, field and request id", function()
    local t = scripted({ { status = 400, headers = { ["x-request-id"] = "req-1" },
      body = '{"statusCode":400,"message":["grants.2.amountMicroDollars must be a number string"],' ..
        '"error":"Bad Request"}' } })
    local _, err, meta = client(t):request("POST", "/v1/anything", { a = 1 })
    assert.equal("http", err.kind)
    assert.equal(400, err.status)
    assert.equal("grants[3].amountMicroDollars", err.field)
    assert.same({ "grants.2.amountMicroDollars must be a number string" }, err.messages)
    assert.equal("req-1", err.request_id)
    assert.equal(400, meta.status)
    assert.is_false(err.retryable)
    assert.equal("endaoment.partner: http: Bad Request: grants.2.amountMicroDollars must be a number string " ..
      "(field grants[3].amountMicroDollars) [HTTP 400]", tostring(err))
  end)

  it("sets field only for validation messages", function()
    local t = scripted({ { status = 404, body = '{"statusCode":404,"message":"Fund x not found","error":"Not Found"}' },
      { status = 400, body = '{"statusCode":400,"message":["An acting user is required"],"error":"Bad Request"}' } })
    local c = client(t)
    local _, err = c:whoami()
    assert.is_nil(err.field)
    assert.same({ "Fund x not found" }, err.messages)
    _, err = c:whoami()
    assert.is_nil(err.field)
  end)

  it("retries an unknown write through request() only on 429, unless it is declared idempotent", function()
    local tr = scripted({ { status = 503 }, { status = 201 } })
    local _, err, meta = client(tr):request("POST", "/v1/something-new", { a = 1 })
    assert.equal(503, err.status)
    assert.equal(1, meta.attempts)
    tr = scripted({ { status = 429 }, { status = 201 } })
    _, err, meta = client(tr):request("POST", "/v1/something-new", { a = 1 })
    assert.is_nil(err)
    assert.equal(2, meta.attempts)
    tr = scripted({ { status = 503 }, { status = 201 } })
    _, err, meta = client(tr):request("POST", "/v1/something-new", { a = 1 }, { idempotent = true })
    assert.is_nil(err)
    assert.equal(2, meta.attempts)
    tr = scripted({ { err = { kind = "network", message = "reset", retryable = true } }, { status = 201 } })
    _, err, meta = client(tr):request("POST", "/v1/something-new", { idempotencyKey = partner.uuid4() })
    assert.is_nil(err)
    assert.equal(2, meta.attempts)
    tr = scripted({ { status = 503 }, { status = 200 } })
    _, err, meta = client(tr):request("GET", "/v1/anything")
    assert.is_nil(err)
    assert.equal(2, meta.attempts)
  end)

  it("does not resend a keyless cancel after a lost answer", function()
    local tr = scripted({ { err = { kind = "network", message = "reset", retryable = true } }, { status = 200 } })
    local c = client(tr, { bearer_token = "tok" })
    local _, err, meta = c:cancel_async_grant(partner.uuid4())
    assert.equal("network", err.kind)
    assert.equal(1, meta.attempts)
  end)

  it("treats an empty 2xx body as kind decode (204 excepted)", function()
    local t = scripted({ { status = 201, body = "" }, { status = 204, body = "" },
      { status = 200, body = " \r\n\t " }, { status = 404, body = "\n" } })
    local c = client(t)
    local _, err = c:whoami()
    assert.equal("decode", err.kind)
    local res
    res, err = c:whoami()
    assert.is_nil(err)
    assert.same({}, res)
    -- whitespace alone is empty too; an error status keeps its kind
    _, err = c:whoami()
    assert.equal("decode", err.kind)
    assert.matches("empty body", err.message)
    _, err = c:whoami()
    assert.equal("http", err.kind)
    assert.equal(404, err.status)
  end)

  it("reports a 2xx body that is not JSON as kind decode", function()
    local t = scripted({ { status = 200, body = '{"id": "abc' } })
    local _, err = client(t):whoami()
    assert.equal("decode", err.kind)
    assert.equal(200, err.status)
  end)

  it("maps transport failures to their kinds", function()
    local t = scripted({ { err = { kind = "tls", message = "certificate not trusted: pass ca_file",
      retryable = false } } })
    local _, err = client(t):whoami()
    assert.equal("tls", err.kind)
    assert.matches("ca_file", err.message)
  end)
end)

describe("partner.new", function()
  local t = scripted({})
  local function raises(opts, pattern)
    local ok, msg = pcall(partner.new, opts)
    assert.is_false(ok)
    assert.matches(pattern, msg)
  end

  it("requires an environment or a base_url, with no default", function()
    raises({ api_key = "k", transport = t }, "no default")
    raises({ api_key = "k", environment = "prod", transport = t }, "production, staging, dev")
    raises({ api_key = "k", environment = "dev", base_url = "https://x", transport = t }, "not both")
  end)

  it("parses base_url strictly: no userinfo tricks, odd authorities or queries", function()
    for _, u in ipairs({ "http://127.0.0.1:80@evil.example/", "http://localhost:1@evil.example",
      "http://[::1]@evil.example/", "https://user:pw@api.endaoment.org", "http://127.0.0.1\\@evil.example",
      "https://api.endaoment.org?x=1", "https:// api.endaoment.org", "https://", "http://127.0.0.1.evil.example",
      "https://api.endaoment.org:99999", "HTTPS://api.endaoment.org", "https://.evil" }) do
      local ok = pcall(partner.new, { api_key = "k", base_url = u, transport = t })
      assert.is_false(ok, u)
    end
    for _, u in ipairs({ "http://[::1]:8787", "http://127.0.0.2:1", "https://api.endaoment.org/prefix/",
      "https://10.1.2.3:8443" }) do
      assert.is_table(partner.new({ api_key = "k", base_url = u, transport = t }), u)
    end
  end)

  it("allows plain http only to loopback", function()
    raises({ api_key = "k", base_url = "http://api.endaoment.org", transport = t }, "https")
    raises({ api_key = "k", base_url = "http://10.0.0.1:8787", transport = t }, "https")
    assert.is_table(partner.new({ api_key = "k", base_url = "http://127.0.0.1:8787", transport = t }))
    assert.is_table(partner.new({ api_key = "k", base_url = "http://localhost:8787", transport = t }))
    assert.is_table(partner.new({ api_key = "k", environment = "dev", transport = t }))
    assert.equal("https://api.dev.endaoment.org", partner.new({ api_key = "k", environment = "dev",
      transport = t }).base_url)
  end)

  it("raises on unknown options, wrong types and unsafe header values", function()
    raises({ api_key = "k", environment = "dev", transport = t, timout_ms = 5 }, "unknown option 'timout_ms'")
    raises({ api_key = "k", environment = "dev", transport = t, timeout_ms = "5" }, "timeout_ms must be a number")
    raises({ api_key = "k", environment = "dev", transport = t, max_retries = -1 }, "max_retries")
    raises({ api_key = "k\r\nx-evil: 1", environment = "dev", transport = t }, "api_key")
    raises({ environment = "dev", transport = t }, "api_key is required")
    raises({ api_key = "k", environment = "dev", transport = { } }, "request")
  end)

  it("never shows the API key, only its last 4 characters", function()
    local c = partner.new({ api_key = "secret-key-abcd", environment = "dev", transport = t })
    local s = tostring(c)
    assert.is_nil(s:find("secret-key", 1, true))
    assert.matches("%.%.%.abcd", s)
  end)

  it("lists the environments", function()
    assert.equal("https://api.endaoment.org", partner.ENVIRONMENTS.production)
    assert.equal("https://api.staging.endaoment.org", partner.ENVIRONMENTS.staging)
    assert.equal("https://api.dev.endaoment.org", partner.ENVIRONMENTS.dev)
  end)
end)

describe("helpers", function()
  it("re-exports the core's money and id helpers", function()
    assert.equal("125500000", partner.dollars_to_micro("125.50"))
    assert.equal("125.50", partner.micro_to_dollars("125500000"))
    assert.is_true(partner.is_uuid(partner.uuid4()))
    assert.equal("user-0000000000001", partner.partner_identifier("  user-0000000000001 "))
    assert.is_nil((partner.partner_identifier("short")))
    assert.equal(require("cjson").null, partner.null)
  end)

  it("validate runs the same checks as the calls", function()
    assert.is_true(partner.validate("record_cash_donation", cash_body()))
    local ok, err = partner.validate("provision_user", { firstName = "A" })
    assert.is_nil(ok)
    assert.equal("invalid", err.kind)
    ok, err = partner.validate("no_such_op", {})
    assert.is_nil(ok)
    assert.equal("operation", err.field)
    assert.is_true(partner.validate("provision_user", user_body()))
  end)
end)

describe("call options, checked before any transport", function()
  -- A custom transport that records every call: a refused option never reaches it.
  local function recording()
    local t = { calls = 0 }
    function t.request() t.calls = t.calls + 1; return { status = 200, headers = {}, body = "{}" } end
    return t
  end

  local BAD_HEADERS = {
    { ["X-Bad\r\nName"] = "v" }, { ["x-ok"] = "a\r\nX-Injected: 1" }, { ["x-nul"] = "a\0b" }, { ["bad name"] = "v" },
    { [""] = "v" }, { ["x-number"] = 5 }, { [1] = "x-positional: 1" }, { ["Content-Length"] = "0" },
    { host = "evil.example" }, { ["transfer-encoding"] = "chunked" }, { Connection = "close" },
  }

  it("refuses bad opts.headers as invalid, naming the header, with any transport", function()
    local t = recording()
    local c = client(t)
    for i, headers in ipairs(BAD_HEADERS) do
      local name = next(headers)
      for _, run in ipairs({
        function() return c:whoami({ headers = headers }) end,
        function() return c:record_cash_donation(cash_body(), { headers = headers }) end,
        function() return c:request("POST", "/v1/x", "{}", { headers = headers }) end,
      }) do
        local res, err, meta = run()
        assert.is_nil(res)
        assert.equal("invalid", err.kind, "case " .. i)
        assert.equal("opts.headers." .. tostring(name), err.field)
        assert.equal(0, meta.attempts)
        assert.is_nil(tostring(err):find("[\r\n%z]"), "case " .. i .. ": a control byte in the message")
      end
    end
    local res, err = c:whoami({ headers = { ["X-Bad\r\nName"] = "v" } })
    assert.is_nil(res)
    assert.equal("opts.headers.X-Bad\r\nName", err.field)
    assert.matches("opts.headers.X-Bad\\r\\nName", err.message, 1, true)
    assert.equal(0, t.calls)
    -- and the async twin refuses the same, before anything starts
    local h, aerr = c:whoami_async({ headers = { ["X-Bad\r\nName"] = "v" } }, function() end)
    assert.is_nil(h)
    assert.equal("opts.headers.X-Bad\r\nName", aerr.field)
    assert(c:whoami({ headers = { ["x-fine"] = "a\tb" } }))
    assert.equal(1, t.calls)
  end)

  it("refuses a bad opts.timeout_ms as invalid", function()
    local t = recording()
    local c = client(t)
    for _, v in ipairs({ 0, -1, 1.5, 86400001, 0 / 0, math.huge }) do
      local _, err = c:whoami({ timeout_ms = v })
      assert.equal("invalid", err.kind, tostring(v))
      assert.equal("opts.timeout_ms", err.field)
    end
    local _, err = c:whoami({ timeout_ms = "5" })
    assert.equal("opts.timeout_ms", err.field)
    assert.equal(0, t.calls)
    assert(c:whoami({ timeout_ms = 86400000 }))
    assert.equal(1, t.calls)
  end)
end)

describe("sends and the retry budget, through a scripted transport", function()
  it("counts a transport's sends in meta.attempts and tells on_retry of each resend", function()
    local t = scripted({ { status = 503 }, { status = 201, body = '{"id":"x"}' } })
    local answers, budgets = { 1, 3 }, {}
    local request = t.request
    t.request = function(self, req)
      budgets[#budgets + 1] = req.max_sends
      local res, err = request(self, req)
      if res then res.sends = table.remove(answers, 1) end
      return res, err
    end
    local seen = {}
    local _, err, meta = client(t, { max_retries = 5, on_retry = function(info) seen[#seen + 1] = info end })
      :record_cash_donation(cash_body())
    assert.is_nil(err)
    assert.equal(4, meta.attempts)
    assert.same({ 6, 5 }, budgets)                   -- max_retries + 1 sends in all, resends included
    assert.same({ 1, 2, 3 }, { seen[1].attempt, seen[2].attempt, seen[3].attempt })
    assert.same({ false, true, true }, { seen[1].resent == true, seen[2].resent, seen[3].resent })
  end)

  it("gives a write that must not be resent a budget of one send", function()
    local t = scripted({ { status = 200 } })
    client(t, { bearer_token = "tok", max_retries = 4 }):cancel_async_grant(partner.uuid4())
    assert.is_false(t.requests[1].retry_safe)
    assert.equal(1, t.requests[1].max_sends)
  end)

  it("retries by kind, from the one table, when a transport does not say", function()
    for kind, retried in pairs({ network = true, timeout = true, tls = false, too_large = false, unknown = false,
      config = false }) do
      local t = scripted({ { err = { kind = kind, message = "m" } }, { status = 200 } })
      local _, err, meta = client(t):whoami()
      assert.equal(retried and 2 or 1, meta.attempts, kind)
      if not retried then
        assert.equal((kind == "too_large" or kind == "unknown") and "network" or kind, err.kind)
        assert.is_false(err.retryable)
      end
    end
  end)
end)

describe("partner.new's errors", function()
  it("point at the line that called partner.new, whatever the check that failed", function()
    local cases = {
      { api_key = "k", environment = "dev", timout_ms = 5 },
      { api_key = "k", environment = "dev", max_connections = 513 },
      { api_key = "k", environment = "dev", timeout_ms = 86400001 },
      { api_key = "k", environment = "dev", proxy = "ftp://x" },
      { api_key = "k", base_url = "http://127.999.0.1:8787" },
      { api_key = "k", environment = "dev", transport = {} },
      { api_key = "k", environment = "dev", transport = "carrier-pigeon" },
      { api_key = "k", environment = "dev", proxy = "http://127.0.0.1:3128", transport = { request = function() end } },
      { api_key = "k", environment = "dev", ca_file = "/nonexistent/ca.pem" },
    }
    for i, opts in ipairs(cases) do
      local ok, msg = pcall(function()
        local c = partner.new(opts) -- not a tail call: the caller's line is reported
        return c
      end)
      assert.is_false(ok, "case " .. i)
      assert.matches("partner_retry_spec%.lua:%d+: endaoment%.partner%.new: ", msg)
    end
  end)
end)
