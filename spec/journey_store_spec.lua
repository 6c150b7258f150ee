-- Journeys kept in stores, batches through journey.run_many, and the advice
-- a failure gives: none of it may ever double money.
local partner = require "endaoment.partner"
local journey = require "endaoment.partner.journey"
local server = require "spec.helpers.sandbox_server"
local util = require "spec.helpers.util"
local count = util.count
local tmpfile = util.tmpfile
local rm_store = util.rm_store

local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"




local function plan(i)
  local id = string.format("%010d", i)
  return {
    user = { partnerUserIdentifier = "store-user-" .. id, firstName = "Ada", lastName = "Lovelace",
      email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
          state = "NY", zip = "10001", country = "USA" } },
    fund = { name = "Store DAF " .. i, partnerAccountIdentifier = "store-acct-" .. id },
    donations = {
      { kind = "cash", pledgedAmountMicroDollars = "3000000", partnerOperationId = "st-" .. i .. "-a" },
      { kind = "cash", pledgedAmountMicroDollars = "1000000", partnerOperationId = "st-" .. i .. "-b" },
    },
    grant = {
      inboundCustodianTransfer = { amountMicroDollars = "2000000", partnerFundingTransferId = "st-xfer-" .. i,
        sourcePartnerAccountIdentifier = "omnibus-account-00001",
        destinationPartnerAccountIdentifier = "store-acct-" .. id,
        settledAtUtc = "2026-05-04T14:32:01.000Z" },
      grants = { { amountMicroDollars = "2000000", destinationOrgId = RED_CROSS } },
    },
    missing_orgs = { { name = "Tiny Food Bank " .. i, ein = string.format("%09d", 100000000 + i) } },
  }
end

local function totals(srv)
  local _, st = srv.control("GET", "/__sandbox/state")
  return { users = count(st.users), funds = count(st.funds), pledges = count(st.pledges),
    submissions = count(st.submissions), reports = count(st.reports) }
end

describe("journey stores", function()
  local srv, client
  before_each(function()
    srv = assert(server.start())
    client = partner.new({ api_key = "sandbox-key", base_url = srv.url, retry_base_ms = 10, retry_cap_ms = 20 })
  end)
  after_each(function()
    client:close()
    srv.stop()
  end)

  for _, kind in ipairs({ "file", "sqlite" }) do
    it(kind .. ": a plan run, its store deleted, the plan run again: nothing new is created", function()
      local path = tmpfile()
      finally(function() rm_store(path) end)
      local r1 = assert(journey.run(client, plan(1), { store = kind .. ":" .. path }))
      local before = totals(srv)
      assert.same({ users = 1, funds = 1, pledges = 2, submissions = 1, reports = 1 }, before)
      rm_store(path)
      local r2, err = journey.run(client, plan(1), { store = kind .. ":" .. path })
      assert.is_nil(err)
      assert.same(before, totals(srv))
      assert.equal(r1.grant.id, r2.grant.id)
      assert.equal(r1.donations[1].id, r2.donations[1].id)
      local outcomes = {}
      for _, s in ipairs(r2.steps) do outcomes[#outcomes + 1] = s.outcome end
      -- The report has no key (its schema is not public): the API answers a known EIN with the first one.
      assert.same({ "existing", "existing", "replayed", "replayed", "replayed", "existing" }, outcomes)
      -- With the store kept, the third run sends nothing at all.
      local n = #srv.logged()
      local r3 = assert(journey.run(client, plan(1), { store = kind .. ":" .. path }))
      for _, s in ipairs(r3.steps) do assert.equal("skipped", s.outcome) end
      assert.equal(n, #srv.logged())
    end)
  end

  it("runs without any store: derived keys alone keep a re-run exactly-once", function()
    assert(journey.run(client, plan(2)))
    assert(journey.run(client, plan(2)))
    assert.same({ users = 1, funds = 1, pledges = 2, submissions = 1, reports = 1 }, totals(srv))
  end)

  it("derive_keys = false: a random key is saved before its request leaves", function()
    local path = tmpfile()
    finally(function() rm_store(path) end)
    local rnd = partner.new({ api_key = "sandbox-key", base_url = srv.url, derive_keys = false })
    local seen = {}
    local r = assert(journey.run(rnd, plan(3), { store = "sqlite:" .. path, on_step = function(s)
      seen[s.id] = s.idempotency_key_source
    end }))
    rnd:close()
    assert.equal("random", seen["donations[1]"])
    assert.equal("random", seen.grant)
    -- The same store again: the saved keys are reused, nothing is created.
    local rnd2 = partner.new({ api_key = "sandbox-key", base_url = srv.url, derive_keys = false })
    local r2 = assert(journey.run(rnd2, plan(3), { store = "sqlite:" .. path }))
    rnd2:close()
    assert.equal(r.grant.id, r2.grant.id)
    assert.same({ users = 1, funds = 1, pledges = 2, submissions = 1, reports = 1 }, totals(srv))
    -- And the sandbox's log shows each pledge key was the one in the store.
    local keys = {}
    for _, req in ipairs(srv.logged("/v1/donation-pledges/partner/cash-settled")) do
      keys[req.idempotency_key or req.body and req.body.idempotencyKey or "?"] = true
    end
    assert.is_true(count(keys) <= 2)
  end)

  it("a 401 advises fixing the credentials, not the plan", function()
    local bad = partner.new({ api_key = "wrong-key", base_url = srv.url })
    local _, err = journey.run(bad, plan(4))
    bad:close()
    assert.equal(401, err.status)
    assert.matches("credentials", journey.advice(err))
    assert.not_matches("new state", journey.advice(err))
    assert.equal(0, totals(srv).users)
  end)

  it("a conflict on a reused partnerOperationId names it and creates nothing", function()
    assert(journey.run(client, plan(5)))
    local p = plan(6)
    p.donations[1].partnerOperationId = "st-5-a"   -- plan 5's ledger id, another user and amount
    p.donations[1].pledgedAmountMicroDollars = "7000000"
    local _, err = journey.run(client, p)
    assert.equal("donations[1]", err.step)
    assert.equal(409, err.status)
    assert.matches("partnerOperationId", journey.advice(err))
    assert.equal(2, totals(srv).pledges)
  end)
end)

describe("a journey moved to another URL", function()
  it("is refused with advice to point back or rebind, and rebind moves it between loopback URLs", function()
    local state, store = tmpfile(), tmpfile()
    local a = assert(server.start({ "--state", state }))
    local b
    finally(function()
      a.stop()
      if b then b.stop() end
      os.remove(state)
      rm_store(store)
    end)
    local ca = partner.new({ api_key = "sandbox-key", base_url = a.url })
    -- Make the grant's outcome unknown: the API answers 503 after recording it.
    a.fault({ path = "/v1/transfers/partner/grant-submissions", status = 503, after = true, count = 10 })
    local _, err = journey.run(ca, plan(7), { store = "sqlite:" .. store })
    ca:close()
    assert.equal("grant", err.step)
    assert.is_false(err.rejected)
    a.stop()
    b = assert(server.start({ "--state", state }))
    local cb = partner.new({ api_key = "sandbox-key", base_url = b.url })
    _, err = journey.run(cb, plan(7), { store = "sqlite:" .. store })
    assert.equal("config", err.kind)
    assert.matches("Point the client back at " .. a.url, err.message, 1, true)
    assert.matches("--rebind " .. b.url, err.message, 1, true)
    assert.matches("outcome unknown: grant", err.message, 1, true)
    assert.not_matches("new state file", err.message)
    assert.not_matches("use another", err.message)
    assert.equal(0, #b.logged("/v1/transfers/partner/grant-submissions"))
    -- Rebind to the new loopback URL of the same sandbox state: the grant is
    -- re-sent with its key and replayed, nothing doubles.
    local r = assert(journey.run(cb, plan(7), { store = "sqlite:" .. store, rebind = b.url }))
    assert.equal("replayed", r.steps[5].outcome)
    assert.same({ users = 1, funds = 1, pledges = 2, submissions = 1, reports = 1 }, totals(b))
    -- A rebind onto a non-loopback URL is refused before anything is sent.
    local cx = partner.new({ api_key = "sandbox-key", base_url = "https://api.example.invalid" })
    _, err = journey.run(cx, plan(7), { store = "sqlite:" .. store, rebind = "https://api.example.invalid" })
    assert.equal("config", err.kind)
    assert.equal("rebind", err.field)
    cx:close()
    cb:close()
  end)
end)

describe("journey.run_many", function()
  local srv, client
  before_each(function()
    srv = assert(server.start({ "--latency-ms", "5" }))
    client = partner.new({ api_key = "sandbox-key", base_url = srv.url, max_connections = 8 })
  end)
  after_each(function()
    client:close()
    srv.stop()
  end)

  it("runs a batch once, and a second run skips every journey", function()
    local path = tmpfile()
    finally(function() rm_store(path) end)
    local plans = {}
    for i = 1, 24 do plans[i] = plan(100 + i) end
    local results, progress = {}, 0
    local s = assert(journey.run_many(client, plans, { store = "sqlite:" .. path, concurrency = 8, total = 24,
      on_result = function(r) results[#results + 1] = r end,
      on_progress = function() progress = progress + 1 end }))
    assert.equal(24, s.total)
    assert.equal(24, s.done)
    assert.is_true(s.ok)
    assert.equal(24, #results)
    assert.is_true(progress >= 1)
    for _, r in ipairs(results) do
      assert.is_true(r.ok)
      assert.matches("^user:store%-user%-", r.journey_id)
      assert.truthy(r.grant_id)
    end
    assert.same({ users = 24, funds = 24, pledges = 48, submissions = 24, reports = 24 }, totals(srv))
    local n = #srv.logged()
    s = assert(journey.run_many(client, plans, { store = "sqlite:" .. path, concurrency = 8 }))
    assert.equal(24, s.skipped)
    assert.equal(n, #srv.logged())
  end)

  it("a journey finished by another worker is skipped from its document, without a claim", function()
    local path = tmpfile()
    finally(function() rm_store(path) end)
    assert(journey.run_many(client, { plan(250) }, { store = "sqlite:" .. path }))
    -- Another worker holds the claim: a finished journey is still skipped at once.
    local stores = require "endaoment.partner.store"
    local other = assert(stores.open("sqlite:" .. path))
    local held = assert(other:claim(journey.journey_id(plan(250))))
    finally(function() other:release(held); other:close(); rm_store(path) end)
    local n = #srv.logged()
    local results = {}
    local s = assert(journey.run_many(client, { plan(250) }, { store = "sqlite:" .. path,
      on_result = function(r) results[#results + 1] = r end }))
    assert.equal(1, s.skipped)
    assert.equal(0, s.busy_waits)
    assert.equal(n, #srv.logged())
    assert.truthy(results[1].grant_id)
    -- A changed plan is not skipped from the document: it needs the claim
    -- (found busy while the other worker holds it, then refused as changed).
    other:release(held)
    local changed = plan(250)
    changed.donations[1].pledgedAmountMicroDollars = "9000000"
    local s2 = assert(journey.run_many(client, { changed }, { store = "sqlite:" .. path }))
    assert.equal(0, s2.skipped)
    assert.equal(1, s2.failed + s2.rejected)
  end)

  it("the same journey twice in one batch runs once; the second finds it done", function()
    local path = tmpfile()
    finally(function() rm_store(path) end)
    local s = assert(journey.run_many(client, { plan(200), plan(200) }, { store = "sqlite:" .. path,
      concurrency = 4 }))
    assert.equal(1, s.done)
    assert.equal(1, s.skipped)
    assert.is_true(s.busy_waits >= 1)
    assert.same({ users = 1, funds = 1, pledges = 2, submissions = 1, reports = 1 }, totals(srv))
  end)

  it("reports each failure with what to do, and keeps going", function()
    local path = tmpfile()
    finally(function() rm_store(path) end)
    local bad = plan(301)
    bad.grant.grants[1].destinationOrgId = "5b6e6b8e-3f0a-4c47-9a51-0000000000ff"
    local invalid = plan(302)
    invalid.donations[1].pledgedAmountMicroDollars = "1.5"
    local results = {}
    local s = assert(journey.run_many(client, { plan(300), bad, invalid }, { store = "sqlite:" .. path,
      on_result = function(r) results[r.index] = r end }))
    assert.is_false(s.ok)
    assert.equal(1, s.done)
    assert.equal(1, s.rejected)
    assert.equal(1, s.invalid)
    assert.equal("rejected", results[2].outcome)
    assert.equal("grant", results[2].step)
    assert.matches("fix that step", results[2].advice)
    assert.equal("invalid", results[3].outcome)
    assert.matches("nothing was sent", results[3].advice)
  end)

  it("refuses a batch without a store that holds many journeys", function()
    local _, err = journey.run_many(client, { plan(400) }, {})
    assert.equal("config", err.kind)
    local path = tmpfile()
    _, err = journey.run_many(client, { plan(400) }, { store = "file:" .. path })
    assert.equal("config", err.kind)
    assert.matches("sqlite:PATH", err.message, 1, true)
    rm_store(path)
    assert.equal(0, #srv.logged())
  end)
end)
