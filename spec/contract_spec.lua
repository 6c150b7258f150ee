-- The contract made faithful to Endaoment's docs: the rule policy (guesses
-- warn, documented rules refuse), the pass-through missing-org report, null
-- ids, documented field names, option checks, the new reads and paging.
local partner = require "endaoment.partner"
local journey = require "endaoment.partner.journey"
local server = require "spec.helpers.sandbox_server"
local util = require "spec.helpers.util"
local count = util.count

local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"

local function address(country, extra)
  local a = { line1 = "1 Main St", city = "New York", country = country or "USA" }
  for k, v in pairs(extra or { state = "NY", zip = "10001" }) do a[k] = v end
  return a
end

local function user_body(suffix, addr)
  return { partnerUserIdentifier = "contract-user-" .. suffix, firstName = "Ada", lastName = "Lovelace",
    email = "ada@example.com", address = addr or address() }
end


local function fund_for(c, suffix)
  local user = assert(c:provision_user(user_body(suffix)))
  local fund = assert(c:create_fund({ name = "Contract DAF", partnerAccountIdentifier = "contract-acct-" .. suffix },
    { user_id = user.id }))
  return user, fund
end

describe("rule policy", function()
  local strict_srv, doc_srv
  setup(function()
    strict_srv = assert(server.start())
    doc_srv = assert(server.start({ "--rules", "documented" }))
  end)
  teardown(function()
    strict_srv.stop()
    doc_srv.stop()
  end)

  it("a guessed rule warns and sends by default; strict = true refuses before sending", function()
    local c = partner.new({ api_key = "sandbox-key", base_url = doc_srv.url })
    local user, fund = fund_for(c, "00000001")
    local body = { receivingFundId = fund.id, donationValueMicroDollars = "5000000", partnerOperationId = "ct-1",
      stockPledgeData = { ticker = "brk b", shares = 1 } }
    local r, err, meta = c:record_stock_donation(body, { user_id = user.id })
    assert.is_nil(err)
    assert.truthy(r.id)
    assert.equal(1, #meta.warnings)
    assert.equal("stockPledgeData.ticker", meta.warnings[1].field)
    assert.equal("format", meta.warnings[1].rule)
    assert.matches("1%-10 characters", meta.warnings[1].message)
    local strict = partner.new({ api_key = "sandbox-key", base_url = doc_srv.url, strict = true })
    local n = #doc_srv.logged()
    local r2, err2 = strict:record_stock_donation(body, { user_id = user.id })
    assert.is_nil(r2)
    assert.equal("invalid", err2.kind)
    assert.equal("stockPledgeData.ticker", err2.field)
    assert.equal(n, #doc_srv.logged())
    c:close(); strict:close()
  end)

  it("a documented rule refuses before anything is sent, whatever the mode", function()
    local c = partner.new({ api_key = "sandbox-key", base_url = doc_srv.url })
    local n = #doc_srv.logged()
    local r, err = c:record_cash_donation({ receivingFundId = RED_CROSS, pledgedAmountMicroDollars = "1",
      partnerOperationId = string.rep("x", 37) })
    assert.is_nil(r)
    assert.equal("partnerOperationId", err.field)
    assert.equal(n, #doc_srv.logged())
    c:close()
  end)

  it("USA addresses need state and zip: a guess the sandbox enforces unless --rules documented", function()
    local no_state = user_body("00000002", address("USA", {}))
    for _, srv in ipairs({ strict_srv, doc_srv }) do
      local c = partner.new({ api_key = "sandbox-key", base_url = srv.url })
      local r, err, meta = c:provision_user(no_state)
      if srv == strict_srv then
        assert.is_nil(r)
        assert.equal(400, err.status)
        assert.matches("state should not be empty when country is USA", tostring(err))
      else
        assert.truthy(r, tostring(err))
      end
      assert.equal(2, #meta.warnings)
      assert.equal("address.state", meta.warnings[1].field)
      assert.equal("address.zip", meta.warnings[2].field)
      c:close()
    end
    local c = partner.new({ api_key = "sandbox-key", base_url = strict_srv.url })
    local _, _, meta = c:provision_user(user_body("00000003", address("GBR", {})))
    assert.is_nil(meta.warnings)
    c:close()
  end)

  it("--forbid-unknown refuses fields the schema does not list, as forbidNonWhitelisted would", function()
    local srv = assert(server.start({ "--forbid-unknown" }))
    finally(srv.stop)
    local c = partner.new({ api_key = "sandbox-key", base_url = srv.url })
    local body = user_body("00000004")
    body.nickname = "Ada"
    local r, err = c:provision_user(body)
    assert.is_nil(r)
    assert.equal(400, err.status)
    assert.matches("property nickname should not exist", tostring(err))
    c:close()
  end)
end)

describe("contract fixes", function()
  local srv, c
  setup(function()
    srv = assert(server.start())
    c = partner.new({ api_key = "sandbox-key", bearer_token = "sandbox-token", base_url = srv.url,
      retry_base_ms = 5, retry_cap_ms = 10 })
  end)
  teardown(function()
    c:close()
    srv.stop()
  end)

  it("the missing-org report passes through: no invented field or key, retried only on 429", function()
    local r, err, meta = c:report_missing_org({ ein = "98-7654321", contactEmail = "x@y.org" })
    assert.is_nil(err)
    assert.is_nil(meta.idempotency_key)
    local logged = srv.logged("/v1/missing-org-reports/tech-platform")
    local sent = require("cjson").decode(logged[#logged].body)
    assert.same({ ein = "98-7654321", contactEmail = "x@y.org" }, sent)
    assert.equal("98-7654321", r.ein)
    srv.fault({ path = "/v1/missing-org-reports/tech-platform", status = 503 })
    local _, err2, meta2 = c:report_missing_org({ name = "Once Only" })
    assert.equal(503, err2.status)
    assert.equal(1, meta2.attempts)
    srv.fault({ path = "/v1/missing-org-reports/tech-platform", status = 429 })
    local r3, _, meta3 = c:report_missing_org({ name = "After 429" })
    assert.truthy(r3)
    assert.equal(2, meta3.attempts)
  end)

  it("an org known to the IRS but not onboarded has a null id; only unknown EINs are 404", function()
    local org = assert(c:find_org_by_ein("52-1693387"))
    assert.is_true(partner.is_null(org.id))
    assert.truthy(org.id)   -- why is_null exists: JSON null is truthy in Lua
    assert.equal("Neighborhood Food Pantry", org.name)
    assert.is_false(partner.is_null(assert(c:find_org_by_ein("530196605")).id))
    local none, err = c:find_org_by_ein("11-1111111")
    assert.is_nil(none)
    assert.equal(404, err.status)
  end)

  it("an EIN path parameter is checked by the core's rule before anything is sent", function()
    for _, bad in ipairs({ "12345678", "1234567890", "123-456789", "12-345678a", "", 530196605 }) do
      local none, err, meta = c:find_org_by_ein(bad)
      assert.is_nil(none)
      assert.equal("invalid", err.kind)
      assert.equal("ein", err.field)
      assert.equal(0, meta.attempts)
    end
  end)

  it("fund reads use the documented names", function()
    local _, fund = fund_for(c, "00000010")
    local f = assert(c:get_fund(fund.id))
    assert.equal(0, f.grantsGiven)
    assert.is_nil(f.grantCount)
    assert.is_nil(f.partnerAccountIdentifier)
  end)

  it("whoami answers the documented fields", function()
    local me = assert(c:whoami())
    assert.equal("string", type(me.clientName))
    assert.equal("table", type(me.roles))
    local oauth = partner.new({ bearer_token = "sandbox-token", base_url = srv.url })
    assert.equal("string", type(assert(oauth:whoami()).openIdConnectClientId))
    oauth:close()
  end)

  it("call options that do not apply are refused as invalid, naming the option, before sending", function()
    local n = #srv.logged()
    local cases = {
      { "submit_grant", { {}, { user_id = RED_CROSS } }, "opts.user_id" },
      { "provision_user", { {}, { bearer_token = "t" } }, "opts.bearer_token" },
      { "provision_user", { {}, { idempotency_key = RED_CROSS } }, "opts.idempotency_key" },
      { "find_org_by_ein", { "530196605", { bearer_token = "t" } }, "opts.bearer_token" },
      { "get_fund", { RED_CROSS, { user_id = RED_CROSS } }, "opts.user_id" },
      { "report_missing_org", { {}, { idempotency_key = RED_CROSS } }, "opts.idempotency_key" },
    }
    for _, case in ipairs(cases) do
      local r, err = c[case[1]](c, table.unpack(case[2]))
      assert.is_nil(r, case[1])
      assert.equal("invalid", err.kind, case[1])
      assert.equal(case[3], err.field, case[1])
      assert.matches("would be ignored", err.message)
    end
    assert.equal(n, #srv.logged())
  end)

  it("exposes the documented status enums as constants", function()
    assert.equal("Accepted", partner.GRANT_SUBMISSION_STATUS.Accepted)
    assert.equal("ConsolidatedToFund", partner.GRANT_SUBMISSION_STATUS.ConsolidatedToFund)
    assert.equal("PendingLiquidation", partner.ASYNC_STATUS.PendingLiquidation)
    assert.equal(12, #partner.enums.grant_submission_status)
  end)

  it("a sandbox control moves a grant submission through the documented statuses", function()
    local _, fund = fund_for(c, "00000011")
    local sub = assert(c:submit_grant({ originFundId = fund.id,
      inboundCustodianTransfer = { amountMicroDollars = "1000000", partnerFundingTransferId = "ct-status-1",
        sourcePartnerAccountIdentifier = "omnibus-account-00001",
        destinationPartnerAccountIdentifier = "contract-acct-00000011", settledAtUtc = "2026-05-04T14:32:01.000Z" },
      grants = { { amountMicroDollars = "1000000", destinationOrgId = RED_CROSS } } }))
    assert.equal(partner.GRANT_SUBMISSION_STATUS.Accepted, sub.status)
    local status, r = srv.control("POST", "/__sandbox/grant-submissions/" .. sub.id .. "/status")
    assert.equal(200, status)
    assert.equal("RedeemQueued", r.status)
    status, r = srv.control("POST", "/__sandbox/grant-submissions/" .. sub.id .. "/status", { status = "Failed" })
    assert.equal(200, status)
    assert.equal("Failed", r.status)
    local _, st = srv.control("GET", "/__sandbox/state")
    assert.equal("Failed", st.submissions[sub.id].status)
    status = srv.control("POST", "/__sandbox/grant-submissions/" .. sub.id .. "/status", { status = "Nope" })
    assert.equal(400, status)
  end)

  it("the journey takes the destination account from the plan, never from a guess", function()
    local plan = { user_id = RED_CROSS, fund_id = RED_CROSS, grant = {
      inboundCustodianTransfer = { amountMicroDollars = "1000000", partnerFundingTransferId = "ct-j-1",
        sourcePartnerAccountIdentifier = "omnibus-account-00001", settledAtUtc = "2026-05-04T14:32:01.000Z" },
      grants = { { amountMicroDollars = "1000000", destinationOrgId = RED_CROSS } } } }
    local ok, err = journey.validate(plan)
    assert.is_nil(ok)
    assert.equal("grant.inboundCustodianTransfer.destinationPartnerAccountIdentifier", err.field)
  end)
end)

describe("new reads and paging", function()
  local srv, c
  setup(function()
    srv = assert(server.start())
    c = partner.new({ api_key = "sandbox-key", base_url = srv.url })
  end)
  teardown(function()
    c:close()
    srv.stop()
  end)

  it("search_orgs finds onboarded and not-onboarded orgs, and each() pages until a short page", function()
    local page = assert(c:search_orgs({ searchTerm = "o", count = 2 }))
    assert.equal(2, #page)
    local names, pages = {}, c:each("search_orgs", { searchTerm = "o", count = 2 })
    for org in pages do names[#names + 1] = org.name end
    assert.is_nil(pages.err)
    assert.is_true(#names >= 5, table.concat(names, ", "))
    assert.equal(math.floor(#names / 2) + 1, pages.pages)
    local nulls = 0
    for org in c:each("search_orgs", { searchTerm = "e" }) do
      if partner.is_null(org.id) then nulls = nulls + 1 end
    end
    assert.equal(2, nulls)
    local req = srv.logged("/v2/orgs/search")
    assert.is_nil(req[#req].headers["x-api-key"])   -- public: no key sent
  end)

  it("search_subprojects caps count at 25 before sending", function()
    local n = #srv.logged()
    local r, err = c:search_subprojects({ searchTerm = "wiki", count = 26 })
    assert.is_nil(r)
    assert.equal("query.count", err.field)
    assert.equal(n, #srv.logged())
    local list = assert(c:search_subprojects({ searchTerm = "wiki", count = 25 }))
    assert.equal(1, #list)
    local _, err2 = c:search_orgs({ searchTerm = "x", color = "red" })
    assert.equal("query.color", err2.field)
    local _, err3 = c:search_orgs({})
    assert.equal("query.searchTerm", err3.field)
  end)

  it("fund_activity lists a fund's pledges and grants, newest first, page by page", function()
    local user, fund = fund_for(c, "00000020")
    for i = 1, 5 do
      assert(c:record_cash_donation({ receivingFundId = fund.id, pledgedAmountMicroDollars = tostring(i * 1000000),
        partnerOperationId = "act-" .. i }, { user_id = user.id }))
    end
    local seen = {}
    local pages = c:each("fund_activity", fund.id, { count = 2 })
    for item in pages do seen[#seen + 1] = item.partnerOperationId end
    assert.is_nil(pages.err)
    assert.same({ "act-5", "act-4", "act-3", "act-2", "act-1" }, seen)
    assert.equal(3, pages.pages)
    local bad = c:each("fund_activity", "not-a-uuid")
    for _ in bad do error("no items expected") end
    assert.equal("id", bad.err.field)
    local none = c:each("get_fund", fund.id)
    for _ in none do error("no items expected") end
    assert.equal("op", none.err.field)
    assert.equal(5, count(seen))
  end)
end)
