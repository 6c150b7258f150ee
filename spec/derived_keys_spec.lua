-- Derived idempotency keys through the client, against the sandbox: a
-- re-run of the same code records the same money once.
local partner = require "endaoment.partner"
local server = require "spec.helpers.sandbox_server"
local util = require "spec.helpers.util"
local count = util.count

local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"
local V4 = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local srv, client


local function state()
  local _, st = srv.control("GET", "/__sandbox/state")
  return st
end

local function setup_fund(c, suffix)
  local user = assert(c:provision_user {
    partnerUserIdentifier = "derived-user-" .. suffix, firstName = "Ada", lastName = "Lovelace",
    email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
      state = "NY", zip = "10001", country = "USA" },
  })
  local fund = assert(c:create_fund({ name = "Derived DAF", partnerAccountIdentifier = "derived-acct-" .. suffix },
    { user_id = user.id }))
  return user, fund
end

setup(function()
  srv = assert(server.start())
  client = partner.new({ api_key = "sandbox-key", base_url = srv.url, retry_base_ms = 10, retry_cap_ms = 20 })
end)

teardown(function()
  client:close()
  srv.stop()
end)

describe("derived keys", function()
  it("derive_key is deterministic, strict v4, and depends on namespace, op and id", function()
    local k = assert(client:derive_key("record_cash_donation", "ledger-42"))
    assert.matches(V4, k)
    assert.equal("169245aa-c9b6-4763-839d-b279ddbf38de", k)   -- docs/derived-keys.md
    assert.equal(k, client:derive_key("record_cash_donation", "ledger-42"))
    assert.not_equal(k, client:derive_key("record_stock_donation", "ledger-42"))
    assert.not_equal(k, client:derive_key("record_cash_donation", "ledger-43"))
    local other = partner.new({ api_key = "k", base_url = srv.url,
      key_namespace = "0E2B7C4A-1111-4222-8333-944455556666" })
    assert.not_equal(k, other:derive_key("record_cash_donation", "ledger-42"))
    assert.equal(other:derive_key("record_cash_donation", "ledger-42"),
      partner.new({ api_key = "k", base_url = srv.url, key_namespace = "0e2b7c4a-1111-4222-8333-944455556666" })
        :derive_key("record_cash_donation", "ledger-42"))
    local nk, e = client:derive_key("record_cash_donation", "")
    assert.is_nil(nk); assert.equal("invalid", e.kind); assert.equal("natural_id", e.field)
    nk, e = client:derive_key("Bad Op", "x")
    assert.is_nil(nk); assert.equal("op", e.field)
  end)

  it("bad key_namespace or derive_keys raise in new()", function()
    assert.has_error(function() partner.new({ api_key = "k", base_url = srv.url, key_namespace = "nope" }) end)
    assert.has_error(function() partner.new({ api_key = "k", base_url = srv.url, derive_keys = "no" }) end)
  end)

  it("a pledge without a key gets the key derived from partnerOperationId; a re-run replays it", function()
    local user, fund = setup_fund(client, "000001")
    local body = { receivingFundId = fund.id, pledgedAmountMicroDollars = "125000000", partnerOperationId = "dk-1" }
    local p1, e1, m1 = client:record_cash_donation(body, { user_id = user.id })
    assert.is_nil(e1)
    assert.equal("derived", m1.idempotency_key_source)
    assert.equal(client:derive_key("record_cash_donation", "dk-1"), m1.idempotency_key)
    local p2, _, m2 = client:record_cash_donation(body, { user_id = user.id })
    assert.equal(p1.id, p2.id)
    assert.equal(m1.idempotency_key, m2.idempotency_key)
    assert.equal("true", m2.headers["x-idempotent-replayed"])
    local f = assert(client:get_fund(fund.id))
    assert.equal("125000000", f.usdcBalance)
  end)

  it("a grant submission derives from partnerFundingTransferId", function()
    local _, fund = setup_fund(client, "000002")
    local body = { originFundId = fund.id,
      inboundCustodianTransfer = { amountMicroDollars = "5000000", partnerFundingTransferId = "dk-journal-1",
        sourcePartnerAccountIdentifier = "omnibus-account-00001",
        destinationPartnerAccountIdentifier = "derived-acct-000002", settledAtUtc = "2026-05-04T14:32:01.000Z" },
      grants = { { amountMicroDollars = "5000000", destinationOrgId = RED_CROSS } } }
    local s1, e1, m1 = client:submit_grant(body)
    assert.is_nil(e1)
    assert.equal("derived", m1.idempotency_key_source)
    assert.equal(client:derive_key("submit_grant", "dk-journal-1"), m1.idempotency_key)
    local s2 = assert(client:submit_grant(body))
    assert.equal(s1.id, s2.id)
  end)

  it("a given key wins (body or opts), and derive_keys = false restores random keys", function()
    local user, fund = setup_fund(client, "000003")
    local given = partner.uuid4()
    local body = { receivingFundId = fund.id, pledgedAmountMicroDollars = "1000000", partnerOperationId = "dk-3",
      idempotencyKey = given }
    local _, _, m = client:record_cash_donation(body, { user_id = user.id })
    assert.equal("given", m.idempotency_key_source)
    assert.equal(given, m.idempotency_key)
    local k2 = partner.uuid4()
    _, _, m = client:record_cash_donation({ receivingFundId = fund.id, pledgedAmountMicroDollars = "1000000",
      partnerOperationId = "dk-4" }, { user_id = user.id, idempotency_key = k2 })
    assert.equal("given", m.idempotency_key_source)
    assert.equal(k2, m.idempotency_key)
    local rnd = partner.new({ api_key = "sandbox-key", base_url = srv.url, derive_keys = false })
    local r1, _, m1 = rnd:record_cash_donation({ receivingFundId = fund.id, pledgedAmountMicroDollars = "1000000",
      partnerOperationId = "dk-5" }, { user_id = user.id })
    assert.truthy(r1)
    assert.equal("random", m1.idempotency_key_source)
    assert.not_equal(client:derive_key("record_cash_donation", "dk-5"), m1.idempotency_key)
    rnd:close()
    -- Reads carry no key and no source.
    local _, _, mr = client:get_fund(fund.id)
    assert.is_nil(mr.idempotency_key_source)
  end)

  it("a reused partnerOperationId with another amount is a clear conflict, and nothing is created", function()
    local user, fund = setup_fund(client, "000004")
    assert(client:record_cash_donation({ receivingFundId = fund.id, pledgedAmountMicroDollars = "2000000",
      partnerOperationId = "dk-conflict" }, { user_id = user.id }))
    local before = count(state().pledges)
    local r, e, m = client:record_cash_donation({ receivingFundId = fund.id, pledgedAmountMicroDollars = "3000000",
      partnerOperationId = "dk-conflict" }, { user_id = user.id })
    assert.is_nil(r)
    assert.equal("http", e.kind)
    assert.equal(409, e.status)
    assert.is_true(e.conflict)
    assert.equal("partnerOperationId", e.field)
    assert.matches('partnerOperationId "dk%-conflict" was already used for a different payload', tostring(e))
    assert.matches("nothing was created", tostring(e))
    assert.equal(1, m.attempts)
    assert.equal(before, count(state().pledges))
    assert.equal("2000000", assert(client:get_fund(fund.id)).usdcBalance)
  end)
end)

describe("examples run twice record their money once", function()
  -- The examples run as a user runs them: lua5.4 with the 5.4 build, whatever
  -- interpreter runs this spec. The exit status comes through the output
  -- (LuaJIT's io.popen close does not report it).
  local function run_example(path, url)
    local cmd = string.format("LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./build/lua5.4/?.so;;' " ..
      "%s %s %s 2>&1; echo EXIT=$?", server.LUA, path, url)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    return out:match("EXIT=0%s*$") ~= nil, out
  end

  it("examples/stock_donation.lua", function()
    local s = assert(server.start())
    finally(s.stop)
    local ok1, out1 = run_example("examples/stock_donation.lua", s.url)
    assert.is_true(ok1, out1)
    local ok2, out2 = run_example("examples/stock_donation.lua", s.url)
    assert.is_true(ok2, out2)
    local _, st = s.control("GET", "/__sandbox/state")
    assert.equal(1, count(st.users))
    assert.equal(1, count(st.funds))
    assert.equal(1, count(st.pledges))
    -- The balance printed on the second run is the first run's: one donation.
    assert.matches("fund balance%s+15075%.00%s+USD", out2)
  end)

  it("examples/journey.lua", function()
    local s = assert(server.start())
    finally(s.stop)
    for _ = 1, 2 do
      local ok, out = run_example("examples/journey.lua", s.url)
      assert.is_true(ok, out)
    end
    local _, st = s.control("GET", "/__sandbox/state")
    assert.equal(1, count(st.users))
    assert.equal(1, count(st.funds))
    assert.equal(1, count(st.pledges))
    assert.equal(1, count(st.submissions))
    assert.equal(1, count(st.reports))
  end)
end)
