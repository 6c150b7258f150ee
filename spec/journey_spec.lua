-- endaoment.partner.journey and bin/endaoment-journey against the sandbox.
local partner = require "endaoment.partner"
local journey = require "endaoment.partner.journey"
local cjson = require "cjson"
local socket = require "socket"
local server = require "spec.helpers.sandbox_server"
local util = require "spec.helpers.util"
local count = util.count
local tmpfile = util.tmpfile
local read_file = util.read_file

local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"
local srv, client

local function control(...) return srv.control(...) end
local function logged(path) return srv.logged(path) end


local function plan()
  return {
    user = { partnerUserIdentifier = "journey-user-0000001", firstName = "Ada", lastName = "Lovelace",
      email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
          state = "NY", zip = "10001", country = "USA" } },
    fund = { name = "Journey DAF", partnerAccountIdentifier = "journey-account-00001", type = "Private" },
    donations = {
      { kind = "cash", pledgedAmountMicroDollars = "125000000", partnerOperationId = "j-cash-1" },
      { kind = "stock", donationValueMicroDollars = "1507500000", partnerOperationId = "j-stock-1",
        stockPledgeData = { ticker = "AAPL", shares = 10 } },
    },
    grant = {
      inboundCustodianTransfer = { amountMicroDollars = "125000000", partnerFundingTransferId = "j-journal-1",
        sourcePartnerAccountIdentifier = "journey-omnibus-00001",
        destinationPartnerAccountIdentifier = "journey-account-00001", settledAtUtc = "2026-05-04T14:32:01.000Z" },
      grants = { { amountMicroDollars = "100000000", destinationOrgId = RED_CROSS } },
    },
    missing_orgs = { { name = "Tiny Food Bank", ein = "12-3456789" } },
  }
end



setup(function()
  srv = assert(server.start())
  client = partner.new({ api_key = "sandbox-key", base_url = srv.url, retry_base_ms = 20, retry_cap_ms = 50 })
end)

teardown(function()
  client:close()
  srv.stop()
end)

before_each(function()
  control("POST", "/__sandbox/reset")
end)

describe("journey.run", function()
  it("runs the five steps and wires each id into the next", function()
    local seen = {}
    local result, err = journey.run(client, plan(), { on_step = function(s) seen[#seen + 1] = s end })
    assert.is_nil(err)
    assert.equal(6, #seen)
    local names = {}
    for i, s in ipairs(seen) do names[i] = s.n .. ":" .. s.name .. ":" .. s.outcome end
    assert.same({ "1:provision_user:created", "2:create_fund:created", "3:record_cash_donation:created",
      "4:record_stock_donation:created", "5:submit_grant:created", "6:report_missing_org:created" }, names)
    for _, s in ipairs(seen) do assert.equal(6, s.total) end
    local user, fund = result.user, result.fund
    -- user id -> acting user of the fund and the pledges
    assert.equal(user.id, logged("/v1/funds/partner")[1].headers["x-endaoment-user-id"])
    assert.equal(user.id, logged("/v1/donation-pledges/partner/cash-settled")[1].headers["x-endaoment-user-id"])
    -- fund id -> receivingFundId and originFundId; fund account -> destination account
    local pledge = cjson.decode(logged("/v1/donation-pledges/partner/stock-settled")[1].body)
    assert.equal(fund.id, pledge.receivingFundId)
    local sub = cjson.decode(logged("/v1/transfers/partner/grant-submissions")[1].body)
    assert.equal(fund.id, sub.originFundId)
    assert.equal("journey-account-00001", sub.inboundCustodianTransfer.destinationPartnerAccountIdentifier)
    assert.equal("Accepted", result.grant.status)
    assert.equal(2, #result.donations)
    assert.equal(1, #result.missing_orgs)
    assert.equal("1632500000", assert(client:get_fund(fund.id)).usdcBalance)
  end)

  it("validates the whole plan first: a bad plan sends nothing and names the field", function()
    local p = plan()
    p.donations[2].donationValueMicroDollars = "15.5"
    local result, err = journey.run(client, p)
    assert.is_nil(result)
    assert.equal("invalid", err.kind)
    assert.equal("donations[2].donationValueMicroDollars", err.field)
    assert.equal(0, #logged())
    p = plan()
    p.donations[1].kind = "bitcoin"
    result, err = journey.run(client, p)
    assert.is_nil(result)
    assert.equal("donations[1].kind", err.field)
    p = plan()
    p.fund = nil
    result, err = journey.run(client, p)
    assert.is_nil(result)
    assert.equal("donations[1].receivingFundId", err.field)
    p = plan()
    p.donations = { p.donations[1], nil, p.donations[2] }
    result, err = journey.run(client, p)
    assert.is_nil(result)
    assert.equal("donations", err.field)
    p = plan()
    p.colour = "red"
    result, err = journey.run(client, p)
    assert.is_nil(result)
    assert.equal("colour", err.field)
    assert.equal(0, #logged())
  end)

  it("skips absent parts", function()
    local result, err = journey.run(client, { missing_orgs = { { name = "Only A Report", ein = "98-7654321" } } })
    assert.is_nil(err)
    assert.equal(1, #result.steps)
    assert.equal(1, #logged())
  end)

  it("resumes from the state file: finished steps are not sent again", function()
    local state = tmpfile()
    finally(function() os.remove(state) end)
    assert(journey.run(client, plan(), { state_file = state }))
    local sent = #logged()
    local result = assert(journey.run(client, plan(), { state_file = state }))
    assert.equal(sent, #logged())
    for _, s in ipairs(result.steps) do assert.equal("skipped", s.outcome) end
    assert.is_string(result.fund.id)
  end)

  it("re-sends an unfinished step with its saved key after a failure", function()
    local state = tmpfile()
    finally(function() os.remove(state) end)
    control("POST", "/__sandbox/faults", { path = "/v1/transfers/partner/grant-submissions", status = 500,
      after = true, count = 3 })
    local result, err = journey.run(client, plan(), { state_file = state })
    assert.is_nil(result)
    assert.equal("grant", err.step)
    local saved = cjson.decode(read_file(state))
    assert.equal("sent", saved.steps.grant.status)
    local key = saved.steps.grant.idempotencyKey
    result = assert(journey.run(client, plan(), { state_file = state }))
    assert.equal("Accepted", result.grant.status)
    for _, r in ipairs(logged("/v1/transfers/partner/grant-submissions")) do
      assert.equal(key, cjson.decode(r.body).idempotencyKey)
    end
    local _, st = control("GET", "/__sandbox/state")
    assert.equal(1, count(st.submissions))
  end)

  it("refuses a state file from another plan, or a changed unfinished step", function()
    local state = tmpfile()
    finally(function() os.remove(state) end)
    assert(journey.run(client, plan(), { state_file = state }))
    local other = plan()
    other.user.partnerUserIdentifier = "another-user-0000001"
    local _, err = journey.run(client, other, { state_file = state })
    assert.equal("config", err.kind)
    assert.matches("another journey", err.message)
    local changed = plan()
    changed.donations[1].pledgedAmountMicroDollars = "999"
    _, err = journey.run(client, changed, { state_file = state })
    assert.equal("config", err.kind)
    assert.matches("donations%[1%] is already done", err.message)
  end)

  it("refuses to change a step whose outcome is unknown, and never suggests a new state file", function()
    local state = tmpfile()
    finally(function() os.remove(state) end)
    control("POST", "/__sandbox/faults", { path = "/v1/transfers/partner/grant-submissions", status = 503,
      after = true, count = 3 })
    local _, err = journey.run(client, plan(), { state_file = state })
    assert.equal("grant", err.step)
    assert.is_false(err.rejected)
    local changed = plan()
    changed.grant.grants[1].amountMicroDollars = "1"
    _, err = journey.run(client, changed, { state_file = state })
    assert.equal("config", err.kind)
    assert.matches("outcome is unknown", err.message)
    assert.matches("duplicates", err.message)
  end)

  it("lets a step the API refused be corrected, without sending any other step twice", function()
    local state = tmpfile()
    finally(function() os.remove(state) end)
    local bad = plan()
    bad.grant.grants[1].destinationOrgId = "5b6e6b8e-3f0a-4c47-9a51-0000000000ff"   -- unknown org: 400
    local result, err = journey.run(client, bad, { state_file = state })
    assert.is_nil(result)
    assert.equal("grant", err.step)
    assert.equal(400, err.status)
    assert.is_true(err.rejected)
    assert.equal("rejected", cjson.decode(read_file(state)).steps.grant.status)
    result = assert(journey.run(client, plan(), { state_file = state }))
    assert.equal("Accepted", result.grant.status)
    local outcomes = {}
    for _, s in ipairs(result.steps) do outcomes[s.id] = s.outcome end
    assert.equal("skipped", outcomes["donations[1]"])
    assert.equal("created", outcomes.grant)
    local _, st = control("GET", "/__sandbox/state")
    assert.equal(2, count(st.pledges))
    assert.equal(1, count(st.submissions))
    assert.equal("1632500000", assert(client:get_fund(result.fund.id)).usdcBalance)
  end)

  it("refuses a state file it cannot read instead of starting afresh", function()
    local dir = tmpfile()
    os.execute("mkdir -p " .. dir)
    finally(function() os.execute("rm -rf " .. dir) end)
    local _, err = journey.run(client, plan(), { state_file = dir })
    assert.equal("config", err.kind)
    assert.matches("cannot read", err.message)
    assert.matches(dir, err.message, 1, true)
    assert.equal(0, #logged())
  end)

  it("allows one run per state file at a time", function()
    local state = tmpfile()
    -- Another process holds the run's lock, as a concurrent run would.
    local flag = state .. ".hold"
    assert(io.open(flag, "w")):close()
    -- It holds the lock while the flag file exists.
    local code = string.format('package.cpath = "./build/lua5.4/?.so;" .. package.cpath ' ..
      'local l = assert(require("endaoment.partner.fs").lock(%q)) ' ..
      'while true do local f = io.open(%q) if not f then break end f:close() os.execute("sleep 0.05") end ' ..
      'l:unlock()', state .. ".lock", flag)
    local holder = io.popen("exec lua5.4 -e " .. server.shell_quote(code), "r")
    finally(function()
      os.remove(flag)
      holder:close()
      os.remove(state)
      os.remove(state .. ".lock")
    end)
    -- wait until the holder has the lock
    local deadline = socket.gettime() + 5
    local ok
    repeat
      local fs = require "endaoment.partner.fs"
      local l = fs.lock(state .. ".lock")
      ok = l == nil
      if l then l:unlock() socket.sleep(0.02) end
    until ok or socket.gettime() > deadline
    assert.is_true(ok, "the holder never took the lock")
    local _, err = journey.run(client, plan(), { state_file = state })
    assert.equal("busy", err.kind)
    assert.matches("another run is using", err.message)
    assert.equal(0, #logged())
  end)

  it("refuses a corrupt state file and leaves it untouched", function()
    local state = tmpfile()
    finally(function() os.remove(state) end)
    local f = assert(io.open(state, "wb"))
    f:write('{"format":"endaoment-journey/1","steps":')
    f:close()
    local _, err = journey.run(client, plan(), { state_file = state })
    assert.equal("config", err.kind)
    assert.matches("corrupt", err.message)
    assert.equal('{"format":"endaoment-journey/1","steps":', read_file(state))
    assert.equal(0, #logged())
  end)
end)

describe("bin/endaoment-journey", function()
  local plan_file
  before_each(function()
    plan_file = tmpfile() .. ".json"
    local f = assert(io.open(plan_file, "wb"))
    f:write(cjson.encode(plan()))
    f:close()
  end)
  after_each(function()
    os.remove(plan_file)
    os.remove(plan_file .. ".state.json")
  end)

  local function env()
    return "ENDAOMENT_API_KEY=sandbox-key ENDAOMENT_BASE_URL=" .. srv.url .. " "
  end

  it("prints one line per step and a summary, and exits 0", function()
    local p = io.popen(env() .. "lua5.4 bin/endaoment-journey " .. plan_file .. " 2>&1; echo EXIT=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("step 1/6 user%s+created", out)
    assert.matches("step 5/6 grant%s+created", out)
    assert.matches("step 6/6 missing_orgs%[1%]%s+created", out)
    assert.matches("journey complete: 6 steps", out)
    assert.matches("EXIT=0", out)
  end)

  it("prints JSON with --json and exits 1 on a failed step", function()
    local p = io.popen(env() .. "lua5.4 bin/endaoment-journey --json --no-state " .. plan_file .. " 2>/dev/null")
    local doc = cjson.decode(p:read("*a"))
    p:close()
    assert.is_true(doc.ok)
    assert.is_string(doc.results.fund.id)
    control("POST", "/__sandbox/faults", { path = "/v1/funds/partner", status = 403 })
    p = io.popen(env() .. "lua5.4 bin/endaoment-journey --no-state " .. plan_file .. " 2>&1; echo EXIT=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("failed", out)
    assert.matches("EXIT=1", out)
  end)

  it("starts the sandbox itself when no target is configured", function()
    local p = io.popen("env -u ENDAOMENT_BASE_URL -u ENDAOMENT_ENV -u ENDAOMENT_API_KEY " ..
      "lua5.4 bin/endaoment-journey examples/plan.json 2>&1; echo EXIT=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("embedded sandbox at http://127%.0%.0%.1:%d+", out)
    assert.matches("journey complete", out)
    assert.matches("EXIT=0", out)
  end)

  it("refuses ENDAOMENT_ENV and ENDAOMENT_BASE_URL together", function()
    local p = io.popen("ENDAOMENT_ENV=production ENDAOMENT_BASE_URL=" .. srv.url ..
      " ENDAOMENT_API_KEY=k lua5.4 bin/endaoment-journey " .. plan_file .. " 2>&1; echo EXIT=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("both ENDAOMENT_ENV and ENDAOMENT_BASE_URL", out)
    assert.matches("EXIT=2", out)
    assert.equal(0, #logged())
  end)

  it("never reaches production unless it is named", function()
    local p = io.popen("env -u ENDAOMENT_BASE_URL -u ENDAOMENT_ENV ENDAOMENT_API_KEY=live-key " ..
      "lua5.4 bin/endaoment-journey " .. plan_file .. " 2>&1; echo EXIT=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("name the environment", out)
    assert.matches("EXIT=2", out)
  end)

  -- Crash safety, for real: kill -9 the journey after a step's request reached
  -- the sandbox and before its answer was saved, then resume.
  describe("killed mid-step and resumed", function()
    local paths = {
      "/v1/auth/partner/users", "/v1/funds/partner", "/v1/donation-pledges/partner/cash-settled",
      "/v1/donation-pledges/partner/stock-settled", "/v1/transfers/partner/grant-submissions",
      "/v1/missing-org-reports/tech-platform",
    }
    for _, path in ipairs(paths) do
      it("at " .. path .. ": exactly one of everything", function()
        local state = plan_file .. ".state.json"
        -- The sandbox commits the request, then holds the answer back.
        control("POST", "/__sandbox/faults", { path = path, delayMs = 5000 })
        local p = io.popen("echo $$; " .. env() .. "exec lua5.4 bin/endaoment-journey --quiet --state " ..
          state .. " " .. plan_file .. " >/dev/null 2>&1")
        local pid = p:read("*l")
        local deadline = socket.gettime() + 10
        while #logged(path) == 0 and socket.gettime() < deadline do socket.sleep(0.02) end
        assert.equal(1, #logged(path), "the request never reached the sandbox")
        os.execute("kill -KILL " .. pid)
        p:close()
        control("DELETE", "/__sandbox/faults")
        local r = io.popen(env() .. "lua5.4 bin/endaoment-journey --state " .. state .. " " .. plan_file ..
          " 2>&1; echo EXIT=$?")
        local out = r:read("*a")
        r:close()
        assert.matches("EXIT=0", out)
        local _, st = control("GET", "/__sandbox/state")
        assert.equal(1, count(st.users))
        assert.equal(1, count(st.funds))
        assert.equal(2, count(st.pledges))
        assert.equal(1, count(st.submissions))
        assert.equal(1, count(st.reports))
        local _, fundlist = control("GET", "/__sandbox/state")
        local fund_id = next(fundlist.funds)
        assert.equal("1632500000", st.funds[fund_id].usdcBalance)
      end)
    end
  end)
end)

describe("journey saves and durability", function()
  -- A table store (docs/stores.md) that keeps documents in memory and notes
  -- each save's info and what the document said of every step.
  local function memory_store()
    local docs, saves = {}, {}
    local store = { name = "memory", multi = true, saves = saves }
    function store.claim(_, id) return { journey_id = id } end
    function store.load(_, c) return docs[c.journey_id] or false end
    function store.save(_, c, text, info)
      docs[c.journey_id] = text
      local st = cjson.decode(text)
      local sent, keys = {}, {}
      for id, rec in pairs(st.steps) do
        if rec.status == "sent" then sent[#sent + 1] = id end
        keys[id] = rec.idempotencyKey
      end
      saves[#saves + 1] = { durable = info.durable, sent = sent, keys = keys }
      return true
    end
    function store.release() end
    function store.close() end
    return store
  end

  it("flushes a random key before its request and marks outcome-only saves as losable", function()
    local c = partner.new({ api_key = "sandbox-key", base_url = srv.url, derive_keys = false })
    local store = memory_store()
    local result, err = journey.run(c, plan(), { store = store })
    assert(result, tostring(err))
    c:close()
    local durable, lazy = 0, 0
    for _, sv in ipairs(store.saves) do
      if sv.durable == true then
        durable = durable + 1
        -- a durable save is one that holds a step in flight with its random key
        assert.equal(1, #sv.sent)
        assert.is_string(sv.keys[sv.sent[1]])
      else
        assert.is_false(sv.durable)
        assert.equal(0, #sv.sent)
        lazy = lazy + 1
      end
    end
    -- 3 keyed steps (2 donations, the grant) get random keys; 6 steps record an outcome
    assert.equal(3, durable)
    assert.equal(6, lazy)
    -- every random key was on disk before its request: the sandbox saw exactly those keys
    for _, sv in ipairs(store.saves) do
      if sv.durable then
        local key = sv.keys[sv.sent[1]]
        local hits = 0
        for _, r in ipairs(logged()) do
          if r.headers and (r.body or ""):find(key, 1, true) then hits = hits + 1 end
        end
        assert.equal(1, hits, "key " .. key .. " sent once after its save")
      end
    end
  end)

  it("with derived keys, no save needs a flush before a request", function()
    local store = memory_store()
    local result, err = journey.run(client, plan(), { store = store })
    assert(result, tostring(err))
    for _, sv in ipairs(store.saves) do assert.is_false(sv.durable) end
    assert.equal(6, #store.saves)
  end)
end)

describe("journey.batch_file", function()
  local plans_h = require "spec.helpers.plans"
  local dir
  before_each(function()
    dir = assert(io.popen("mktemp -d")):read("*l")
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  -- A batch of n plans with blank lines between some: line numbers of plan i.
  local function write(path, n)
    local list = plans_h.list(n, { prefix = "bf" })
    local f = assert(io.open(path, "wb"))
    local want, line = {}, 0
    for i, p in ipairs(list) do
      if i % 5 == 0 then f:write("\n   \n"); line = line + 2 end
      f:write(cjson.encode(p), "\n")
      line = line + 1
      want[journey.journey_id(p)] = line
    end
    f:close()
    return want
  end

  local function drain(iter)
    local seen, order = {}, {}
    while true do
      local p, e, line = iter()
      if p == nil then break end
      assert(p, tostring(e))
      local id = journey.journey_id(p)
      assert.is_nil(seen[id], "read twice: " .. id)
      seen[id] = line
      order[#order + 1] = line
    end
    return seen, order
  end

  it("gives every plan once with its line number, in line order or spread in blocks", function()
    local path = dir .. "/b.jsonl"
    local want = write(path, 100)
    local iter, n = assert(journey.batch_file(path, { order = "file" }))
    assert.equal(100, n)
    local seen, order = drain(iter)
    assert.same(want, seen)
    for i = 2, #order do assert.is_true(order[i] > order[i - 1]) end

    -- spread, blocks of 1: two opens (two workers) get two different orders of the same plans
    local it1 = assert(journey.batch_file(path, { block = 1 }))
    local it2 = assert(journey.batch_file(path, { block = 1 }))
    local s1, o1 = drain(it1)
    local s2, o2 = drain(it2)
    assert.same(want, s1)
    assert.same(want, s2)
    assert.are_not.same(o1, o2)
    assert.are_not.same(order, o1)

    -- spread in blocks of 16: each block keeps its lines together and in order
    local s3, o3 = drain(assert(journey.batch_file(path)))
    assert.same(want, s3)
    local runs = 1
    for i = 2, #o3 do if o3[i] < o3[i - 1] then runs = runs + 1 end end
    assert.is_true(runs <= math.ceil(100 / 16), "blocks were split: " .. runs .. " runs")
  end)

  it("refuses a file with bad lines, naming each line, before giving any plan", function()
    local path = dir .. "/bad.jsonl"
    local f = assert(io.open(path, "wb"))
    local good = cjson.encode(plans_h.list(1, { prefix = "bf" })[1])
    f:write(good, "\n", "{not json\n", "\n", '{"user": 3}\n', good, "\n")
    f:close()
    local iter, err = journey.batch_file(path)
    assert.is_nil(iter)
    assert.equal("invalid", err.kind)
    assert.equal(2, err.bad)
    assert.matches("bad%.jsonl:2: not a JSON object", err.lines[1])
    assert.matches("bad%.jsonl:4: ", err.lines[2])
    assert.matches("nothing was sent", err.message)
    local none, oerr = journey.batch_file(dir .. "/missing.jsonl")
    assert.is_nil(none)
    assert.matches("cannot read batch file", oerr.message)
    assert.has_error(function() journey.batch_file(path, { order = "random" }) end)
    assert.has_error(function() journey.batch_file(path, { block = 0 }) end)
  end)

  it("reports a line that changed after the check as unreadable, not as a plan", function()
    local path = dir .. "/b.jsonl"
    write(path, 3)
    local iter = assert(journey.batch_file(path, { order = "file" }))
    local f = assert(io.open(path, "r+b"))
    f:write("X") -- the first line is no JSON any more
    f:close()
    local p, e, line = iter()
    assert.is_false(p)
    assert.equal("invalid", e.kind)
    assert.matches("b%.jsonl:1: .*changed after it was checked", e.message)
    assert.equal(1, line)
    assert.is_table((iter()))
  end)
end)
