-- The emulator's rules, endpoint by endpoint, called directly (no sockets).
local sandbox = require "endaoment.sandbox"
local cjson = require "cjson"

local KEY = "sandbox-key"
local TOKEN = "sandbox-token"
local RED_CROSS = sandbox.SEED_ORGS[1].id
local WIKIMEDIA = sandbox.SEED_ORGS[2].id
local WIKI_SUBPROJECT = "5b6e6b8e-3f0a-4c47-9a51-0000000000a1"

local emu

local function call(method, path, body, headers)
  headers = headers or { ["x-api-key"] = KEY }
  if body ~= nil and type(body) ~= "string" then
    body = cjson.encode(body)
  end
  if body ~= nil and headers["content-type"] == nil then
    headers["content-type"] = "application/json"
  end
  local status, hdrs, rbody, fault = emu:handle(method, path, headers, body)
  local ok, decoded = pcall(cjson.decode, rbody)
  return status, ok and decoded or rbody, hdrs, fault
end

local function post(path, body, headers) return call("POST", path, body, headers) end
local function get(path, headers) return call("GET", path, nil, headers) end

local function messages(res)
  return type(res.message) == "table" and table.concat(res.message, "\n") or tostring(res.message)
end

local seq = 0
local function pid(prefix)
  seq = seq + 1
  return string.format("%s-%012d", prefix or "partner-user", seq)
end

local function user_body(over)
  local b = {
    partnerUserIdentifier = pid("user"), firstName = "Ada", lastName = "Lovelace",
    email = "Ada@Example.COM", address = { line1 = "1 Main St", city = "New York",
        state = "NY", zip = "10001", country = "USA" },
  }
  for k, v in pairs(over or {}) do b[k] = v end
  return b
end

local function new_user()
  local b = user_body()
  local status, u = post("/v1/auth/partner/users", b)
  assert.equal(201, status)
  return u, b
end

local function new_fund(user)
  user = user or new_user()
  local body = { name = "Lovelace Family DAF", partnerAccountIdentifier = pid("account"), type = "Private" }
  local status, f = post("/v1/funds/partner", body, { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = user.id })
  assert.equal(201, status)
  -- The fund's answer does not carry it (undocumented); the partner knows it.
  assert.is_nil(f.partnerAccountIdentifier)
  f.partnerAccountIdentifier = body.partnerAccountIdentifier
  return f, user, body
end

local rules = require "endaoment.sandbox.rules"
local uuid = sandbox.new().uuid

local function cash(fund, user, amount, key)
  return post("/v1/donation-pledges/partner/cash-settled", {
    receivingFundId = fund.id, idempotencyKey = key or uuid(),
    pledgedAmountMicroDollars = amount or "250000000", partnerOperationId = "op-1",
  }, { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = user.id })
end

local function submission(fund, over)
  local b = {
    idempotencyKey = uuid(), originFundId = fund.id,
    inboundCustodianTransfer = {
      amountMicroDollars = "125000000000", partnerFundingTransferId = "alt-journal-987654",
      sourcePartnerAccountIdentifier = "550e8400-e29b-41d4-a716-446655440000",
      destinationPartnerAccountIdentifier = fund.partnerAccountIdentifier,
      settledAtUtc = "2026-05-04T14:32:01.000Z",
    },
    grants = { { amountMicroDollars = "75000000000", destinationOrgId = RED_CROSS,
      destinationSubprojectId = cjson.null, specialInstructions = cjson.null, hideMyInfoFromOrg = false } },
  }
  for k, v in pairs(over or {}) do b[k] = v end
  return b
end

before_each(function()
  emu = sandbox.new()
end)

describe("auth", function()
  it("answers 401 without x-api-key and with a wrong one", function()
    local s, r = post("/v1/auth/partner/users", user_body(), {})
    assert.equal(401, s)
    assert.equal(401, r.statusCode)
    s, r = post("/v1/auth/partner/users", user_body(), { ["x-api-key"] = "wrong" })
    assert.equal(401, s)
    assert.matches("Invalid API key", r.message)
  end)

  it("checks auth before validating the body", function()
    local s = post("/v1/auth/partner/users", {}, {})
    assert.equal(401, s)
  end)

  it("does not accept a Bearer token where the docs say x-api-key only", function()
    local s = post("/v1/auth/partner/users", user_body(), { authorization = "Bearer " .. TOKEN })
    assert.equal(401, s)
  end)

  it("accepts Bearer on fund creation and only Bearer on async grants", function()
    local user = new_user()
    local s = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = pid("acct") },
      { authorization = "Bearer " .. TOKEN, ["x-endaoment-user-id"] = user.id })
    assert.equal(201, s)
    s = post("/v1/transfers/async-grants", {}, { ["x-api-key"] = KEY })
    assert.equal(401, s)
  end)

  it("whoami reports the partner for a key and the OIDC client for a token", function()
    local s, r = get("/v1/auth/whoami")
    assert.equal(200, s)
    assert.equal("Sandbox Partner", r.clientName)
    assert.is_nil(r.openIdConnectClientId)
    s, r = get("/v1/auth/whoami", { authorization = "Bearer " .. TOKEN })
    assert.equal(200, s)
    assert.is_string(r.openIdConnectClientId)
    assert.equal(401, (get("/v1/auth/whoami", {})))
  end)
end)

describe("POST /v1/auth/partner/users", function()
  it("creates with 201, then returns the same user with 200", function()
    local b = user_body()
    local s1, u1 = post("/v1/auth/partner/users", b)
    assert.equal(201, s1)
    assert.is_true(rules.is_uuid(u1.id))
    assert.equal("ada@example.com", u1.email)
    assert.equal("PENDING", u1.emailVerificationStatus)
    assert.equal(b.partnerUserIdentifier, u1.partnerUserIdentifier)
    assert.is_string(u1.techPlatformClientId)
    local s2, u2 = post("/v1/auth/partner/users", b)
    assert.equal(200, s2)
    assert.equal(u1.id, u2.id)
  end)

  it("refreshes the non-email identity on replay and keeps the email", function()
    local b = user_body()
    post("/v1/auth/partner/users", b)
    b.firstName, b.email = "Augusta", "other@example.com"
    local s, u = post("/v1/auth/partner/users", b)
    assert.equal(200, s)
    assert.equal("Augusta", u.firstName)
    assert.equal("ada@example.com", u.email)
  end)

  it("trims the partner identifier before validating and storing it", function()
    local b = user_body({ partnerUserIdentifier = "  user-trim-0000000001 \t" })
    local s, u = post("/v1/auth/partner/users", b)
    assert.equal(201, s)
    assert.equal("user-trim-0000000001", u.partnerUserIdentifier)
    s = post("/v1/auth/partner/users", user_body({ partnerUserIdentifier = "user-trim-0000000001" }))
    assert.equal(200, s)
  end)

  local bad = {
    { "identifier of 15 characters", { partnerUserIdentifier = string.rep("a", 15) }, "partnerUserIdentifier" },
    { "identifier of 65 characters", { partnerUserIdentifier = string.rep("a", 65) }, "partnerUserIdentifier" },
    { "identifier with a control character", { partnerUserIdentifier = "abcdefgh\1ijklmnopq" },
      "partnerUserIdentifier" },
    { "identifier with non-ASCII", { partnerUserIdentifier = "abcdefghijklmnopé" }, "partnerUserIdentifier" },
    { "missing firstName", { firstName = cjson.null }, "firstName" },
    { "empty lastName", { lastName = "" }, "lastName" },
    { "lastName of 256 characters", { lastName = string.rep("é", 256) }, "lastName" },
    { "bad email", { email = "ada@localhost" }, "email" },
    { "address not an object", { address = "1 Main St" }, "address" },
    { "address without line1", { address = { city = "NYC",
        state = "NY", zip = "10001", country = "USA" } }, "address.line1" },
    { "two-letter country", { address = { line1 = "x", city = "NYC", country = "US" } }, "address.country" },
    { "invalid UTF-8", { firstName = "Ad\255a" }, "firstName" },
  }
  for _, case in ipairs(bad) do
    it("answers 400 naming the field for " .. case[1], function()
      local s, r = post("/v1/auth/partner/users", user_body(case[2]))
      assert.equal(400, s)
      assert.equal("Bad Request", r.error)
      assert.is_table(r.message)
      assert.matches(case[3], messages(r), 1, true)
    end)
  end

  it("accepts 255 multibyte characters and the boundary identifier lengths", function()
    assert.equal(201, (post("/v1/auth/partner/users", user_body({ lastName = string.rep("é", 255) }))))
    assert.equal(201, (post("/v1/auth/partner/users", user_body({ partnerUserIdentifier = string.rep("b", 16) }))))
    assert.equal(201, (post("/v1/auth/partner/users", user_body({ partnerUserIdentifier = string.rep("c", 64) }))))
  end)
end)

describe("POST /v1/funds/partner", function()
  it("creates with 201 and returns the existing fund with 200", function()
    local user = new_user()
    local body = { name = "Lovelace DAF", partnerAccountIdentifier = pid("account"), type = "Transparent" }
    local h = { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = user.id }
    local s1, f1 = post("/v1/funds/partner", body, h)
    assert.equal(201, s1)
    assert.equal("Lovelace DAF", f1.name)
    assert.equal("Lovelace DAF", f1.description)   -- defaults to the name
    assert.equal("Transparent", f1.type)
    assert.equal("0", f1.usdcBalance)
    local s2, f2 = post("/v1/funds/partner", body, h)
    assert.equal(200, s2)
    assert.equal(f1.id, f2.id)
  end)

  it("resolves the acting user from the body partnerUserIdentifier", function()
    local user, ub = new_user()
    local s = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = pid("acct"),
      partnerUserIdentifier = ub.partnerUserIdentifier })
    assert.equal(201, s)
    local _, f = post("/v1/funds/partner", { name = "G", partnerAccountIdentifier = pid("acct"),
      partnerUserIdentifier = ub.partnerUserIdentifier }, { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = user.id })
    assert.is_string(f.id)
  end)

  it("rejects header and body users that disagree with 400", function()
    local u1 = new_user()
    local _, b2 = new_user()
    local s, r = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = pid("acct"),
      partnerUserIdentifier = b2.partnerUserIdentifier }, { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = u1.id })
    assert.equal(400, s)
    assert.matches("different users", messages(r))
  end)

  it("answers 404 for an unknown identifier or header user, 400 for no acting user", function()
    local s = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = pid("acct"),
      partnerUserIdentifier = "no-such-user-000000001" })
    assert.equal(404, s)
    s = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = pid("acct") },
      { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = uuid() })
    assert.equal(404, s)
    s = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = pid("acct") },
      { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = "not-a-uuid" })
    assert.equal(400, s)
    local r
    s, r = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = pid("acct") })
    assert.equal(400, s)
    assert.matches("acting user", messages(r))
  end)

  it("refuses another user's partnerAccountIdentifier with 409", function()
    local f, _, body = new_fund()
    local other = new_user()
    local s = post("/v1/funds/partner", body, { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = other.id })
    assert.equal(409, s)
    assert.is_string(f.id)
  end)

  it("validates name, type and the account identifier", function()
    local user = new_user()
    local h = { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = user.id }
    local s, r = post("/v1/funds/partner", { name = string.rep("n", 256), partnerAccountIdentifier = pid("a") }, h)
    assert.equal(400, s); assert.matches("name", messages(r))
    s, r = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = pid("a"), type = "Community" }, h)
    assert.equal(400, s); assert.matches("type must be one of", messages(r))
    s, r = post("/v1/funds/partner", { name = "F", partnerAccountIdentifier = "too-short" }, h)
    assert.equal(400, s); assert.matches("partnerAccountIdentifier", messages(r))
    s, r = post("/v1/funds/partner", { partnerAccountIdentifier = pid("a") }, h)
    assert.equal(400, s); assert.matches("name should not be empty", messages(r))
  end)

  it("keeps funds of one partner out of another's reach", function()
    emu = sandbox.new { api_keys = { KEY, "second-key" } }
    local f = new_fund()
    local s = get("/v1/funds/" .. f.id, { ["x-api-key"] = "second-key" })
    assert.equal(404, s)
    assert.equal(200, (get("/v1/funds/" .. f.id)))
  end)
end)

describe("settled pledges", function()
  it("records a cash pledge, credits the fund and replays by idempotencyKey", function()
    local fund, user = new_fund()
    local key = uuid()
    local s1, p1 = cash(fund, user, "250000000", key)
    assert.equal(201, s1)
    assert.is_string(p1.id)
    local s2, p2, h2 = cash(fund, user, "250000000", key)
    assert.equal(201, s2)
    assert.equal(p1.id, p2.id)
    assert.equal("true", h2["x-idempotent-replayed"])
    local _, f = get("/v1/funds/" .. fund.id)
    assert.equal("250000000", f.usdcBalance)    -- credited once
  end)

  it("answers 409 for the same key with another payload", function()
    local fund, user = new_fund()
    local key = uuid()
    cash(fund, user, "1000000", key)
    local s, r = cash(fund, user, "2000000", key)
    assert.equal(409, s)
    assert.matches("already used", messages(r))
    local _, f = get("/v1/funds/" .. fund.id)
    assert.equal("1000000", f.usdcBalance)
  end)

  it("adds amounts beyond 2^53 exactly", function()
    local fund, user = new_fund()
    cash(fund, user, "9007199254740993")
    cash(fund, user, "9007199254740993")
    local _, f = get("/v1/funds/" .. fund.id)
    assert.equal("18014398509481986", f.usdcBalance)
  end)

  for _, amount in ipairs({ "1.5", "-5", "1e6", "0", " 5", "+5", "05", "", "9223372036854775808" }) do
    it("rejects the amount " .. string.format("%q", amount), function()
      local fund, user = new_fund()
      local s, r = cash(fund, user, amount)
      assert.equal(400, s)
      assert.matches("pledgedAmountMicroDollars", messages(r))
    end)
  end

  it("rejects a JSON number amount and accepts the int64 maximum", function()
    local fund, user = new_fund()
    local s = post("/v1/donation-pledges/partner/cash-settled", '{"receivingFundId":"' .. fund.id ..
      '","idempotencyKey":"' .. uuid() .. '","pledgedAmountMicroDollars":5000000,"partnerOperationId":"x"}',
      { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = user.id, ["content-type"] = "application/json" })
    assert.equal(400, s)
    assert.equal(201, (cash(fund, user, "9223372036854775807")))
  end)

  it("checks partnerOperationId length, the fund and the acting user", function()
    local fund, user = new_fund()
    local h = { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = user.id }
    local body = { receivingFundId = fund.id, idempotencyKey = uuid(), pledgedAmountMicroDollars = "1",
      partnerOperationId = string.rep("x", 37) }
    local s, r = post("/v1/donation-pledges/partner/cash-settled", body, h)
    assert.equal(400, s); assert.matches("partnerOperationId", messages(r))
    body.partnerOperationId = string.rep("x", 36)
    body.receivingFundId = uuid()
    assert.equal(404, (post("/v1/donation-pledges/partner/cash-settled", body, h)))
    body.receivingFundId = fund.id
    assert.equal(400, (post("/v1/donation-pledges/partner/cash-settled", body)))   -- no acting user
    assert.equal(201, (post("/v1/donation-pledges/partner/cash-settled", body, h)))
  end)

  it("records a stock pledge with lots and validates stockPledgeData", function()
    local fund, user, _ = new_fund()
    local h = { ["x-api-key"] = KEY, ["x-endaoment-user-id"] = user.id }
    local body = {
      receivingFundId = fund.id, idempotencyKey = uuid(), donationValueMicroDollars = "15075000000",
      partnerOperationId = "stock-op-1",
      stockPledgeData = { ticker = "AAPL", shares = 100, lots = { { numberOfShares = 50, purchasePrice = 150.75,
        purchaseDate = "2023-01-15T00:00:00.000Z", employeeStockPlan = "RSU", lotId = "LOT123" } } },
    }
    local s, r = post("/v1/donation-pledges/partner/stock-settled", body, h)
    assert.equal(201, s)
    assert.is_string(r.id)
    local _, f = get("/v1/funds/" .. fund.id)
    assert.equal("15075000000", f.usdcBalance)
    body.idempotencyKey = uuid()
    body.stockPledgeData = { ticker = "aapl!", shares = 0,
      lots = { { numberOfShares = 1, purchasePrice = -1, purchaseDate = "2023-02-29T00:00:00Z" } } }
    s, r = post("/v1/donation-pledges/partner/stock-settled", body, h)
    assert.equal(400, s)
    local m = messages(r)
    assert.matches("stockPledgeData.ticker", m, 1, true)
    assert.matches("stockPledgeData.shares", m, 1, true)
    assert.matches("stockPledgeData.lots.0.purchasePrice", m, 1, true)
    assert.matches("stockPledgeData.lots.0.purchaseDate", m, 1, true)
    body.stockPledgeData = nil
    s, r = post("/v1/donation-pledges/partner/stock-settled", body, h)
    assert.equal(400, s); assert.matches("stockPledgeData should not be empty", messages(r))
  end)
end)

describe("POST /v1/transfers/partner/grant-submissions", function()
  it("accepts a submission, answers each grant's transfer id and lists the grants", function()
    local fund = new_fund()
    local b = submission(fund)
    b.grants[2] = { amountMicroDollars = "1000000", destinationSubprojectId = WIKI_SUBPROJECT }
    local s, r = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(201, s)
    assert.equal("Accepted", r.status)
    assert.equal(fund.id, r.originFundId)
    assert.equal("ReportedSettled", r.inboundCustodianTransfer.status)
    assert.equal(2, #r.grants)
    for _, g in ipairs(r.grants) do assert.is_true(rules.is_uuid(g.asyncGrantTransferId)) end
    local _, list = get("/v1/transfers/grants/fund/" .. fund.id)
    assert.equal(2, #list)
    local ids = { [list[1].id] = true, [list[2].id] = true }
    assert.is_true(ids[r.grants[1].asyncGrantTransferId] and ids[r.grants[2].asyncGrantTransferId])
  end)

  it("replays the same key with 200 and the same body, and refuses another payload with 409", function()
    local fund = new_fund()
    local b = submission(fund)
    local s1, r1 = post("/v1/transfers/partner/grant-submissions", b)
    local s2, r2 = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(201, s1)
    assert.equal(200, s2)
    assert.same(r1, r2)
    local _, list = get("/v1/transfers/grants/fund/" .. fund.id)
    assert.equal(1, #list)
    b.grants[1].amountMicroDollars = "1"
    assert.equal(409, (post("/v1/transfers/partner/grant-submissions", b)))
  end)

  it("lists grants newest first", function()
    local fund = new_fund()
    local _, a = post("/v1/transfers/partner/grant-submissions", submission(fund))
    local _, b = post("/v1/transfers/partner/grant-submissions", submission(fund))
    local _, list = get("/v1/transfers/grants/fund/" .. fund.id)
    assert.equal(b.grants[1].asyncGrantTransferId, list[1].id)
    assert.equal(a.grants[1].asyncGrantTransferId, list[2].id)
    assert.equal("PendingLiquidation", list[1].asyncStatus)
  end)

  it("accepts 1 and 50 grants, refuses 0 and 51", function()
    local fund = new_fund()
    local function with(n)
      local grants = setmetatable({}, { __jsontype = "array" })
      for i = 1, n do grants[i] = { amountMicroDollars = "1000", destinationOrgId = WIKIMEDIA } end
      local b = submission(fund, { grants = grants })
      if n == 0 then
        return post("/v1/transfers/partner/grant-submissions",
          (cjson.encode(b):gsub('"grants":{}', '"grants":[]')))
      end
      return post("/v1/transfers/partner/grant-submissions", b)
    end
    assert.equal(201, (with(1)))
    assert.equal(201, (with(50)))
    local s, r = with(0)
    assert.equal(400, s); assert.matches("grants must contain at least 1", messages(r))
    s, r = with(51)
    assert.equal(400, s); assert.matches("no more than 50", messages(r))
  end)

  it("names the field of each invalid grant", function()
    local fund = new_fund()
    local b = submission(fund)
    b.grants = { { amountMicroDollars = "1", destinationOrgId = RED_CROSS },
      { amountMicroDollars = "1.5", destinationOrgId = RED_CROSS },
      { amountMicroDollars = "1" },
      { amountMicroDollars = "1", destinationOrgId = "not-a-uuid" } }
    local s, r = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(400, s)
    local m = messages(r)
    assert.matches("grants.1.amountMicroDollars", m, 1, true)
    assert.matches("grants.3.destinationOrgId must be a UUID", m, 1, true)
  end)

  it("requires a destination, a known org, and grants within the inbound amount", function()
    local fund = new_fund()
    local b = submission(fund)
    b.grants = { { amountMicroDollars = "1" } }
    local s, r = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(400, s); assert.matches("grants.0 must have a destinationOrgId", messages(r), 1, true)
    b.grants = { { amountMicroDollars = "1", destinationOrgId = uuid() } }
    s, r = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(400, s); assert.matches("not a known organization", messages(r))
    b.grants = { { amountMicroDollars = "125000000001", destinationOrgId = RED_CROSS } }
    s, r = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(400, s); assert.matches("may not total more than the inbound transfer", messages(r))
    b.grants = { { amountMicroDollars = "125000000000", destinationOrgId = RED_CROSS } }
    assert.equal(201, (post("/v1/transfers/partner/grant-submissions", b)))
  end)

  it("checks the inbound transfer's fields, fund and destination account", function()
    local fund = new_fund()
    local b = submission(fund)
    b.inboundCustodianTransfer.settledAtUtc = "2026-02-29T00:00:00Z"
    local s, r = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(400, s); assert.matches("inboundCustodianTransfer.settledAtUtc", messages(r), 1, true)
    b = submission(fund)
    b.inboundCustodianTransfer.destinationPartnerAccountIdentifier = "another-account-00001"
    s, r = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(400, s); assert.matches("destinationPartnerAccountIdentifier", messages(r))
    b = submission(fund, { originFundId = uuid() })
    assert.equal(404, (post("/v1/transfers/partner/grant-submissions", b)))
    b = submission(fund)
    b.inboundCustodianTransfer = nil
    s, r = post("/v1/transfers/partner/grant-submissions", b)
    assert.equal(400, s); assert.matches("inboundCustodianTransfer should not be empty", messages(r))
  end)
end)

describe("POST /v1/missing-org-reports/tech-platform", function()
  it("records a report and returns it again for the same EIN", function()
    local s, r = post("/v1/missing-org-reports/tech-platform",
      { name = "Tiny Food Bank", ein = "12-3456789", website = "https://tiny.example", contactEmail = "a@b.org" })
    assert.equal(201, s)
    assert.equal("12-3456789", r.ein)             -- kept as sent: the schema is not public
    assert.equal("a@b.org", r.contactEmail)      -- unknown fields kept
    local s2, r2 = post("/v1/missing-org-reports/tech-platform", { name = "Tiny Food Bank", ein = "123456789" })
    assert.equal(200, s2)
    assert.equal(r.id, r2.id)
  end)

  it("replays by idempotencyKey, and forwards a body it cannot know as sent", function()
    local key = uuid()
    local _, r1 = post("/v1/missing-org-reports/tech-platform", { name = "No EIN Org", idempotencyKey = key })
    local s2, r2 = post("/v1/missing-org-reports/tech-platform", { name = "No EIN Org", idempotencyKey = key })
    assert.equal(200, s2)
    assert.equal(r1.id, r2.id)
    local s, r = post("/v1/missing-org-reports/tech-platform", { ein = "12345", note = "no name" })
    assert.equal(201, s)
    assert.equal("12345", r.ein)
    assert.equal("no name", r.note)
    s = post("/v1/missing-org-reports/tech-platform", { idempotencyKey = "nope" })
    assert.equal(400, s)
    s = post("/v1/missing-org-reports/tech-platform", { notes = string.rep("n", 20000) })
    assert.equal(400, s)
  end)
end)

describe("OAuth async grants", function()
  local bearer = { authorization = "Bearer " .. TOKEN }
  it("creates a pending grant within the balance, replays it, and cancels it", function()
    local fund, user = new_fund()
    cash(fund, user, "5000000")
    local body = { idempotencyKey = uuid(), originFundId = fund.id, destinationOrgId = RED_CROSS,
      requestedAmount = "4000000", purpose = "Disaster relief" }
    local s, g = post("/v1/transfers/async-grants", body, bearer)
    assert.equal(200, s)
    assert.equal("PendingLiquidation", g.asyncStatus)
    assert.equal("4000000", g.requestedAmount)
    assert.equal(RED_CROSS, g.destinationOrg.id)
    local s2, g2 = post("/v1/transfers/async-grants", body, bearer)
    assert.equal(200, s2)
    assert.equal(g.id, g2.id)
    local over = { idempotencyKey = uuid(), originFundId = fund.id, destinationOrgId = RED_CROSS,
      requestedAmount = "1000001", purpose = "Too much" }
    local s3, r3 = post("/v1/transfers/async-grants", over, bearer)
    assert.equal(400, s3); assert.matches("Insufficient", messages(r3))
    local s4, c = post("/v1/transfers/async-grants/" .. g.id .. "/cancel", nil, bearer)
    assert.equal(200, s4)
    assert.equal("Cancelled", c.asyncStatus)
    assert.equal(400, (post("/v1/transfers/async-grants/" .. g.id .. "/cancel", nil, bearer)))
    assert.equal(200, (post("/v1/transfers/async-grants", over, bearer)))   -- balance freed
  end)

  it("validates purpose length and required fields", function()
    local fund = new_fund()
    local s, r = post("/v1/transfers/async-grants", { idempotencyKey = uuid(), originFundId = fund.id,
      destinationOrgId = RED_CROSS, requestedAmount = "1", purpose = string.rep("p", 512) }, bearer)
    assert.equal(400, s); assert.matches("purpose must be shorter than or equal to 511", messages(r))
    s, r = post("/v1/transfers/async-grants", { originFundId = fund.id }, bearer)
    assert.equal(400, s)
    assert.matches("idempotencyKey should not be empty", messages(r))
    assert.matches("requestedAmount should not be empty", messages(r))
  end)
end)

describe("reads", function()
  it("GET /v1/funds/{id}: 400 for a non-UUID, 404 for unknown", function()
    assert.equal(400, (get("/v1/funds/abc")))
    assert.equal(404, (get("/v1/funds/" .. uuid())))
  end)

  it("GET /v1/orgs/ein/{ein} with and without hyphen, unknown and malformed", function()
    local s, o = get("/v1/orgs/ein/53-0196605", {})
    assert.equal(200, s)
    assert.equal("American Red Cross", o.name)
    assert.equal(200, (get("/v1/orgs/ein/530196605", {})))
    assert.equal(404, (get("/v1/orgs/ein/999999999", {})))
    assert.equal(400, (get("/v1/orgs/ein/12", {})))
  end)
end)

describe("malformed requests", function()
  it("answers 404 for unknown paths and wrong methods", function()
    local s, r = get("/v1/nope")
    assert.equal(404, s); assert.equal("Cannot GET /v1/nope", r.message)
    assert.equal(404, (get("/v1/auth/partner/users")))
  end)

  it("answers 400 for bad JSON and non-object bodies, 415 for another content type", function()
    local s, r = post("/v1/auth/partner/users", "{bad json")
    assert.equal(400, s); assert.matches("Malformed JSON", r.message)
    s = post("/v1/auth/partner/users", "[1,2]")
    assert.equal(400, s)
    s = post("/v1/auth/partner/users", "\"x\"")
    assert.equal(400, s)
    s, r = post("/v1/auth/partner/users", "a=b", { ["x-api-key"] = KEY, ["content-type"] = "text/plain" })
    assert.equal(415, s); assert.matches("application/json", r.message)
  end)

  it("tolerates a query string and a trailing slash", function()
    assert.equal(200, (get("/v1/auth/whoami/?x=1")))
  end)
end)

describe("test controls", function()
  local function fault(f) return post("/__sandbox/faults", f, {}) end

  it("answers an injected status without running the handler", function()
    assert.equal(201, (fault({ path = "/v1/auth/partner/users", status = 503, retryAfter = "2" })))
    local b = user_body()
    local s, _, h = post("/v1/auth/partner/users", b)
    assert.equal(503, s)
    assert.equal("2", h["retry-after"])
    assert.equal(201, (post("/v1/auth/partner/users", b)))     -- not created by the faulted call
  end)

  it("runs the handler first for an 'after' fault", function()
    fault({ path = "/v1/auth/partner/users", status = 500, after = true })
    local b = user_body()
    assert.equal(500, (post("/v1/auth/partner/users", b)))
    assert.equal(200, (post("/v1/auth/partner/users", b)))      -- it was created
  end)

  it("hands transport faults to the server and counts uses", function()
    fault({ path = "/v1/auth/whoami", drop = true, count = 2 })
    local _, _, _, f = get("/v1/auth/whoami")
    assert.is_true(f.drop)
    _, _, _, f = get("/v1/auth/whoami")
    assert.is_true(f.drop)
    local s, _, _, f3 = get("/v1/auth/whoami")
    assert.equal(200, s); assert.is_nil(f3)
    fault({ path = "/v1/auth/whoami", delayMs = 250, method = "GET" })
    _, _, _, f = get("/v1/auth/whoami")
    assert.equal(250, f.delay_ms)
    fault({ path = "/v1/auth/whoami", truncate = true })
    _, _, _, f = get("/v1/auth/whoami")
    assert.is_true(f.truncate)
  end)

  it("garbles the body for a malformed fault", function()
    fault({ path = "/v1/auth/whoami", malformed = true })
    local s, body = get("/v1/auth/whoami")
    assert.equal(200, s)
    assert.is_string(body)
    assert.is_false((pcall(cjson.decode, body)))
  end)

  it("rejects malformed fault definitions", function()
    assert.equal(400, (fault({ path = "/x" })))
    assert.equal(400, (fault({ status = 500 })))
    assert.equal(400, (fault({ path = "/x", status = 500, colour = "red" })))
  end)

  it("logs requests with the credentials redacted, and resets", function()
    post("/v1/auth/partner/users", user_body(), { ["x-api-key"] = KEY, authorization = "Bearer secret" })
    local s, r = get("/__sandbox/requests?path=/v1/auth/partner/users", {})
    assert.equal(200, s)
    assert.equal(1, #r.requests)
    local e = r.requests[1]
    assert.equal("POST", e.method)
    assert.equal("[redacted]", e.headers["x-api-key"])
    assert.equal("[redacted]", e.headers.authorization)
    assert.equal(201, e.status)
    assert.matches("partnerUserIdentifier", e.body)
    assert.is_nil(string.find(cjson.encode(r), KEY, 1, true))
    assert.equal(200, (post("/__sandbox/reset", nil, {})))
    local _, r2 = get("/__sandbox/requests", {})
    assert.equal(0, #r2.requests)
  end)

  it("are absent with controls = false", function()
    emu = sandbox.new { controls = false }
    assert.equal(404, (get("/__sandbox/requests", {})))
  end)
end)

describe("state", function()
  it("survives encode_state/load_state with idempotency intact", function()
    local fund, user = new_fund()
    local key = uuid()
    local _, p1 = cash(fund, user, "7", key)
    local saved = emu:encode_state()
    emu = sandbox.new()
    assert.is_true(emu:load_state(saved))
    local s, p2 = cash(fund, user, "7", key)
    assert.equal(201, s)
    assert.equal(p1.id, p2.id)
    local _, f = get("/v1/funds/" .. fund.id)
    assert.equal("7", f.usdcBalance)
  end)

  it("refuses a file that is not sandbox state", function()
    assert.is_nil((emu:load_state("{not json")))
    assert.is_nil((emu:load_state("[]")))
    assert.is_nil((emu:load_state('{"users":1}')))
  end)

  it("bumps the revision only on changes", function()
    local r0 = emu:revision()
    get("/v1/auth/whoami")
    assert.equal(r0, emu:revision())
    new_user()
    assert.is_true(emu:revision() > r0)
  end)
end)
