-- The client against the sandbox over real HTTP on 127.0.0.1 (libcurl transport).
local partner = require "endaoment.partner"
local cjson = require "cjson"
local socket = require "socket"
local server = require "spec.helpers.sandbox_server"

local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"
local KEY = "sandbox-key"

local srv, client, seq

local function control(...) return srv.control(...) end
local function logged(path) return srv.logged(path) end
local function fault(f) srv.fault(f) end

local function ident(prefix)
  seq = (seq or 0) + 1
  return string.format("%s-%06d-%08d", prefix, seq, math.random(0, 99999999))
end

local function new_client(extra)
  local o = { api_key = KEY, base_url = srv.url, bearer_token = "sandbox-token",
    retry_base_ms = 20, retry_cap_ms = 100, timeout_ms = 5000 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return partner.new(o)
end

local function user_body()
  return { partnerUserIdentifier = ident("client-user"), firstName = "Ada", lastName = "Lovelace",
    email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
        state = "NY", zip = "10001", country = "USA" } }
end

local function setup_fund()
  local user = assert(client:provision_user(user_body()))
  local acct = ident("client-acct")
  local fund = assert(client:create_fund({ name = "Client DAF", partnerAccountIdentifier = acct },
    { user_id = user.id }))
  return user, fund, acct
end

local function grant_body(fund, acct)
  return {
    originFundId = fund.id,
    inboundCustodianTransfer = { amountMicroDollars = "50000000", partnerFundingTransferId = ident("journal"),
      sourcePartnerAccountIdentifier = "brokerage-omnibus-0001", destinationPartnerAccountIdentifier = acct,
      settledAtUtc = "2026-05-04T14:32:01.000Z" },
    grants = { { amountMicroDollars = "20000000", destinationOrgId = RED_CROSS, hideMyInfoFromOrg = false } },
  }
end

setup(function()
  srv = assert(server.start())
  client = new_client()
end)

teardown(function()
  client:close()
  srv.stop()
end)

before_each(function()
  control("DELETE", "/__sandbox/faults")
  control("DELETE", "/__sandbox/requests")
end)

describe("the partner journey over HTTP", function()
  it("runs the five steps and the async grant", function()
    local ub = user_body()
    local user, err, meta = client:provision_user(ub)
    assert.is_nil(err)
    assert.equal(201, meta.status)
    assert.is_true(partner.is_uuid(user.id))
    assert.is_string(meta.request_id)
    assert.equal(1, meta.attempts)
    assert.is_number(meta.elapsed_ms)
    local again
    again, err, meta = client:provision_user(ub)
    assert.is_nil(err)
    assert.equal(200, meta.status)
    assert.equal(user.id, again.id)

    local acct = ident("journey-acct")
    local fund
    fund, err, meta = client:create_fund({ name = "Journey DAF", partnerAccountIdentifier = acct, type = "Private" },
      { user_id = user.id })
    assert.is_nil(err)
    assert.equal(201, meta.status)

    local pledge
    pledge, err, meta = client:record_cash_donation({ receivingFundId = fund.id,
      pledgedAmountMicroDollars = partner.dollars_to_micro("125.50"), partnerOperationId = "cash-1" },
      { user_id = user.id })
    assert.is_nil(err)
    assert.is_true(partner.is_uuid(pledge.id))
    assert.is_true(partner.is_uuid(meta.idempotency_key))

    local stock
    stock, err = client:record_stock_donation({ receivingFundId = fund.id, donationValueMicroDollars = 15075000000,
      partnerOperationId = "stock-1", partnerUserIdentifier = ub.partnerUserIdentifier,
      stockPledgeData = { ticker = "AAPL", shares = 100, lots = { { numberOfShares = 50, purchasePrice = 150.75,
        purchaseDate = "2023-01-15T00:00:00.000Z", employeeStockPlan = "RSU", lotId = "LOT123" } } } })
    assert.is_nil(err)
    assert.is_string(stock.id)

    local f2 = assert(client:get_fund(fund.id))
    assert.equal("15200500000", f2.usdcBalance)    -- 125.50 + 15075.00 dollars, exactly

    local sub
    sub, err, meta = client:submit_grant(grant_body(fund, acct))
    assert.is_nil(err)
    assert.equal(201, meta.status)
    assert.equal("Accepted", sub.status)
    assert.is_true(partner.is_uuid(sub.grants[1].asyncGrantTransferId))

    local rep
    rep, err = client:report_missing_org({ name = "Tiny Food Bank", ein = "12-3456789" })
    assert.is_nil(err)
    assert.equal("Pending", rep.status)

    local org = assert(client:find_org_by_ein("530196605"))
    assert.equal(RED_CROSS, org.id)

    local ag
    ag, err = client:create_async_grant({ originFundId = fund.id, destinationOrgId = org.id,
      requestedAmount = "1000000", purpose = "Disaster relief" })
    assert.is_nil(err)
    assert.equal("PendingLiquidation", ag.asyncStatus)
    local cancelled = assert(client:cancel_async_grant(ag.id))
    assert.equal("Cancelled", cancelled.asyncStatus)

    local grants = assert(client:list_fund_grants(fund.id))
    assert.equal(ag.id, grants[1].id)                -- newest first
    assert.equal(sub.grants[1].asyncGrantTransferId, grants[2].id)

    local me = assert(client:whoami())
    assert.equal("Sandbox Partner", me.clientName)
  end)

  it("sends the trimmed identifier and the documented headers", function()
    local ub = user_body()
    local trimmed = ub.partnerUserIdentifier
    ub.partnerUserIdentifier = "  " .. trimmed .. "\t"
    local user = assert(client:provision_user(ub))
    assert.equal(trimmed, user.partnerUserIdentifier)
    local log = logged("/v1/auth/partner/users")
    local sent = cjson.decode(log[#log].body)
    assert.equal(trimmed, sent.partnerUserIdentifier)
    assert.matches("^endaoment%-partner%-lua/.* %(.*; libcurl/", log[#log].headers["user-agent"])
  end)
end)

describe("errors over HTTP", function()
  it("kind http: a 400 names the field and is not retried", function()
    local _, err, meta = client:create_fund({ name = "F", partnerAccountIdentifier = ident("acct") })
    assert.equal("http", err.kind)
    assert.equal(400, err.status)
    assert.matches("acting user", err.message)
    assert.equal(1, meta.attempts)
  end)

  it("kind http 404 for an unknown fund", function()
    local _, err = client:get_fund(partner.uuid4())
    assert.equal(404, err.status)
    assert.is_false(err.retryable)
  end)

  it("kind http 401 for a wrong key, and the key appears nowhere", function()
    local c = new_client({ api_key = "wrong-key-9876" })
    local _, err = c:whoami()
    assert.equal(401, err.status)
    local text = tostring(err) .. cjson.encode(err.body or "") .. tostring(c)
    assert.is_nil(text:find("wrong-key", 1, true))
    c:close()
  end)

  it("kind invalid: nothing is sent", function()
    local before = #logged("/v1/transfers/partner/grant-submissions")
    local _, err, meta = client:submit_grant({ originFundId = partner.uuid4(), grants = {} })
    assert.equal("invalid", err.kind)
    assert.equal(0, meta.attempts)
    assert.equal(before, #logged("/v1/transfers/partner/grant-submissions"))
  end)

  it("kind decode: a 2xx with a body that is not JSON", function()
    fault({ path = "/v1/auth/whoami", malformed = true })
    local _, err = client:whoami()
    assert.equal("decode", err.kind)
  end)

  it("kind timeout: an answer slower than timeout_ms", function()
    fault({ path = "/v1/auth/whoami", delayMs = 1500 })
    local c = new_client({ timeout_ms = 300, max_retries = 0 })
    local t0 = socket.gettime()
    local _, err = c:whoami()
    local took = socket.gettime() - t0
    c:close()
    assert.equal("timeout", err.kind)
    assert.is_true(err.retryable)
    assert.is_true(took < 1.2, "timeout took " .. took .. " s")
  end)

  it("kind network: nothing listening", function()
    local s = socket.bind("127.0.0.1", 0)
    local _, port = s:getsockname()
    s:close()
    local c = new_client({ base_url = "http://127.0.0.1:" .. port, max_retries = 1 })
    local _, err, meta = c:whoami()
    c:close()
    assert.equal("network", err.kind)
    assert.equal(2, meta.attempts)
  end)

  it("kind network: a body cut short of its Content-Length is not a success", function()
    fault({ path = "/v1/auth/whoami", truncate = true, count = 5 })
    local _, err, meta = client:whoami()
    assert.equal("network", err.kind)
    assert.equal(3, meta.attempts)
  end)
end)

describe("retries over HTTP, exactly once", function()
  local function keys_of(path)
    local out = {}
    for _, r in ipairs(logged(path)) do out[#out + 1] = cjson.decode(r.body).idempotencyKey end
    return out
  end

  it("after a 503: one key on every attempt, one pledge", function()
    local user, fund = setup_fund()
    fault({ path = "/v1/donation-pledges/partner/cash-settled", status = 503, count = 2 })
    local p, err, meta = client:record_cash_donation({ receivingFundId = fund.id,
      pledgedAmountMicroDollars = "7000000", partnerOperationId = "retry-503" }, { user_id = user.id })
    assert.is_nil(err)
    assert.equal(3, meta.attempts)
    local keys = keys_of("/v1/donation-pledges/partner/cash-settled")
    assert.equal(3, #keys)
    assert.equal(keys[1], keys[2]); assert.equal(keys[2], keys[3])
    assert.equal(meta.idempotency_key, keys[1])
    assert.is_string(p.id)
    assert.equal("7000000", assert(client:get_fund(fund.id)).usdcBalance)
  end)

  it("after a dropped connection once the server committed: one submission", function()
    local _, fund, acct = setup_fund()
    fault({ path = "/v1/transfers/partner/grant-submissions", drop = true, after = true })
    -- A fresh client has no connection to reuse, so the retry is ours, not libcurl's.
    local c = new_client()
    local sub, err, meta = c:submit_grant(grant_body(fund, acct))
    c:close()
    assert.is_nil(err)
    assert.equal(2, meta.attempts)
    assert.equal(200, meta.status)                   -- the replay of the first, committed attempt
    local keys = keys_of("/v1/transfers/partner/grant-submissions")
    assert.equal(2, #keys)
    assert.equal(keys[1], keys[2])
    local grants = assert(client:list_fund_grants(fund.id))
    assert.equal(1, #grants)
    assert.equal(sub.grants[1].asyncGrantTransferId, grants[1].id)
  end)

  it("survives libcurl's silent resend on a reused connection, and counts it", function()
    local _, fund, acct = setup_fund()
    local c = new_client()
    assert(c:whoami())                               -- leaves a kept-alive connection to reuse
    fault({ path = "/v1/transfers/partner/grant-submissions", drop = true, after = true })
    local _, err, meta = c:submit_grant(grant_body(fund, acct))
    c:close()
    assert.is_nil(err)
    local keys = keys_of("/v1/transfers/partner/grant-submissions")
    assert.equal(2, #keys)                           -- libcurl sent the POST twice,
    assert.equal(2, meta.attempts)                   -- and meta says so,
    assert.equal(keys[1], keys[2])                   -- with the same key,
    assert.equal(1, #assert(client:list_fund_grants(fund.id)))   -- so one grant exists.
  end)

  it("with max_retries = 0 sends once: libcurl's resend on a reused connection is refused", function()
    local _, fund, acct = setup_fund()
    local c = new_client({ max_retries = 0 })
    assert(c:whoami())                               -- leaves a kept-alive connection to reuse
    fault({ path = "/v1/transfers/partner/grant-submissions", drop = true, after = true })
    local _, err, meta = c:submit_grant(grant_body(fund, acct))
    c:close()
    assert.equal("network", err.kind)                -- the outcome is unknown...
    assert.is_true(err.retryable)                    -- ...and safe to learn by resending the same body
    assert.matches("not sent again", err.message)
    assert.equal(1, meta.attempts)
    assert.equal(1, #keys_of("/v1/transfers/partner/grant-submissions"))
    assert.equal(1, #assert(client:list_fund_grants(fund.id)))   -- the first one was committed
  end)

  it("after a 429 with Retry-After: waits as told, one grant", function()
    local _, fund, acct = setup_fund()
    fault({ path = "/v1/transfers/partner/grant-submissions", status = 429, retryAfter = "1" })
    local t0 = socket.gettime()
    local _, err, meta = client:submit_grant(grant_body(fund, acct))
    local took = socket.gettime() - t0
    assert.is_nil(err)
    assert.equal(2, meta.attempts)
    assert.is_true(took >= 1.0, "Retry-After not honoured: " .. took .. " s")
    assert.equal(1, #assert(client:list_fund_grants(fund.id)))
    local keys = keys_of("/v1/transfers/partner/grant-submissions")
    assert.equal(keys[1], keys[2])
  end)

  it("after a timeout once the server committed: one pledge", function()
    local user, fund = setup_fund()
    fault({ path = "/v1/donation-pledges/partner/cash-settled", delayMs = 800 })
    local c = new_client({ timeout_ms = 300, max_retries = 2 })
    local _, err, meta = c:record_cash_donation({ receivingFundId = fund.id, pledgedAmountMicroDollars = "5",
      partnerOperationId = "retry-timeout" }, { user_id = user.id })
    c:close()
    assert.is_nil(err)
    assert.equal(2, meta.attempts)
    assert.equal("5", assert(client:get_fund(fund.id)).usdcBalance)
  end)
end)
