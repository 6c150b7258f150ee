-- The asynchronous client (endaoment.partner.async on csrc/curl_multi.c)
-- over real HTTP against the sandbox: completion, cancel, retries without
-- blocking, errors in callbacks, poll(0) never blocking, parallel transfers,
-- max_connections, re-entrant poll, close with transfers in flight, and
-- driving the client from socket.select with fds()/timeout_ms().
local partner = require "endaoment.partner"
local curl = require "endaoment.partner.curl"
local cjson = require "cjson"
local socket = require "socket"
local server = require "spec.helpers.sandbox_server"

local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"
local KEY = "sandbox-key"
local GRANTS = "/v1/transfers/partner/grant-submissions"
local CASH = "/v1/donation-pledges/partner/cash-settled"

-- valgrind runs this file ~30x slower: time limits that prove "does not
-- block" stay far below the delays they are measured against.
local SLOW = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) ~= nil
local function limit_ms(fast, slow) return SLOW and slow or fast end

local srv, client, seq

-- poll(0) durations: every one must be far below the server's delay (it never
-- waits for an answer), and 95 % of them under 5 ms. Not all of them: on a
-- loaded machine the scheduler may pause any call for a few ms.
local function assert_fast_polls(times, what)
  table.sort(times)
  local p95, worst = times[math.max(1, math.ceil(#times * 0.95))], times[#times]
  local msg = string.format("%s: %d polls, p95 %.2f ms, worst %.2f ms", what, #times, p95, worst)
  assert.is_true(p95 < limit_ms(5, 100), msg)
  assert.is_true(worst < limit_ms(100, 300), msg)
  return p95, worst
end

local function now_ms() return socket.gettime() * 1000 end

local function ident(prefix)
  seq = (seq or 0) + 1
  return string.format("%s-%06d-%08d", prefix, seq, math.random(0, 99999999))
end

local function new_client(extra, url)
  local o = { api_key = KEY, base_url = url or srv.url, bearer_token = "sandbox-token",
    retry_base_ms = 20, retry_cap_ms = 100, timeout_ms = 5000 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return partner.new(o)
end

local function user_body()
  return { partnerUserIdentifier = ident("async-user"), firstName = "Ada", lastName = "Lovelace",
    email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
        state = "NY", zip = "10001", country = "USA" } }
end

local function setup_fund(c)
  c = c or client
  local user = assert(c:provision_user(user_body()))
  local acct = ident("async-acct")
  local fund = assert(c:create_fund({ name = "Async DAF", partnerAccountIdentifier = acct }, { user_id = user.id }))
  return user, fund, acct
end

local function grant_body(fund, acct)
  return {
    originFundId = fund.id,
    inboundCustodianTransfer = { amountMicroDollars = "50000000", partnerFundingTransferId = ident("journal"),
      sourcePartnerAccountIdentifier = "brokerage-omnibus-0001", destinationPartnerAccountIdentifier = acct,
      settledAtUtc = "2026-05-04T14:32:01.000Z" },
    grants = { { amountMicroDollars = "20000000", destinationOrgId = RED_CROSS } },
  }
end

local function keys_of(path)
  local out = {}
  for _, r in ipairs(srv.logged(path)) do out[#out + 1] = cjson.decode(r.body).idempotencyKey end
  return out
end

-- Waits (blocking) until pred() or limit_s seconds; returns pred().
local function run_until(c, pred, limit_s)
  local deadline = socket.gettime() + (limit_s or 10)
  while not pred() and socket.gettime() < deadline do c:wait(50) end
  return pred()
end

local with_finalizer_inside = require("spec.helpers.gc").with_finalizer_inside

-- A callback that records its calls.
local function recorder()
  local calls = {}
  local cb = function(result, err, meta) calls[#calls + 1] = { result = result, err = err, meta = meta } end
  return cb, calls
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t or {}) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
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
  srv.control("DELETE", "/__sandbox/faults")
  srv.control("DELETE", "/__sandbox/requests")
end)

describe("async calls", function()
  it("complete through poll, with exactly what the blocking call returns", function()
    local _, fund, acct = setup_fund()
    local cb, calls = recorder()
    local h, err = client:submit_grant_async(grant_body(fund, acct), nil, cb)
    assert.is_nil(err)
    assert.is_false(h:done())
    assert.is_true(partner.is_uuid(h.idempotency_key))
    assert.equal(1, client:pending())
    assert.is_true(run_until(client, function() return #calls > 0 end))
    assert.equal(1, #calls)
    assert.is_true(h:done())
    assert.equal(0, client:pending())
    local c = calls[1]
    assert.is_nil(c.err)
    assert.equal("Accepted", c.result.status)
    assert.equal(201, c.meta.status)
    assert.equal(1, c.meta.attempts)
    assert.equal(h.idempotency_key, c.meta.idempotency_key)
    assert.is_number(c.meta.elapsed_ms)
    assert.is_string(c.meta.request_id)

    -- the blocking twin: same result keys, same meta keys
    local res, berr, bmeta = client:submit_grant(grant_body(fund, acct))
    assert.is_nil(berr)
    assert.same(sorted_keys(res), sorted_keys(c.result))
    assert.same(sorted_keys(bmeta), sorted_keys(c.meta))
    assert.same(sorted_keys(res.grants[1]), sorted_keys(c.result.grants[1]))
  end)

  it("gives reads and errors the blocking shapes too", function()
    local cb, calls = recorder()
    assert(client:find_org_by_ein_async("530196605", cb))
    assert(client:get_fund_async(partner.uuid4(), nil, cb))          -- 404
    assert(client:whoami_async(cb))                                 -- opts may be left out
    assert(client:request_async("GET", "/v1/auth/whoami", cb))
    assert.is_true(run_until(client, function() return #calls == 4 end))
    local org, nf, me, raw
    for _, c in ipairs(calls) do
      if c.result and c.result.id == RED_CROSS then org = c
      elseif c.err then nf = c
      elseif c.result and c.result.clientName then if me then raw = c else me = c end end
    end
    assert.same(client:find_org_by_ein("530196605"), org.result)
    local _, berr, bmeta = client:get_fund(partner.uuid4())
    assert.equal("http", nf.err.kind)
    assert.equal(404, nf.err.status)
    assert.equal(getmetatable(berr), getmetatable(nf.err))
    assert.same(sorted_keys(berr), sorted_keys(nf.err))
    assert.same(sorted_keys(bmeta), sorted_keys(nf.meta))
    assert.equal("Sandbox Partner", me.result.clientName)
    assert.equal("Sandbox Partner", raw.result.clientName)
  end)

  it("refuses invalid input at once: nil, err, meta; nothing sent; no callback", function()
    local called = false
    local h, err, meta = client:submit_grant_async({ originFundId = partner.uuid4(), grants = {} }, nil,
      function() called = true end)
    assert.is_nil(h)
    assert.equal("invalid", err.kind)
    assert.equal(0, meta.attempts)
    h, err = client:create_fund_async({ name = "F", partnerAccountIdentifier = ident("acct") },
      { user_id = "not-a-uuid" }, function() called = true end)
    assert.is_nil(h)
    assert.equal("opts.user_id", err.field)
    -- the callback must be the last argument
    h, err = client:whoami_async({})
    assert.is_nil(h)
    assert.equal("invalid", err.kind)
    assert.equal("callback", err.field)
    -- a header libcurl would not send: refused before anything leaves
    h, err = client:whoami_async({ headers = { ["bad header"] = "x" } }, function() called = true end)
    assert.is_nil(h)
    assert.is_table(err)
    client:wait(100)
    assert.is_false(called)
    assert.equal(0, client:pending())
    assert.same({}, srv.logged())
  end)

  it("cancel: the callback is never called, done() is true, nothing is pending", function()
    srv.fault({ path = "/v1/auth/whoami", delayMs = 400 })
    local called = false
    local h = assert(client:whoami_async(function() called = true end))
    client:poll(0)                                   -- the request leaves
    assert.is_true(h:cancel())
    assert.is_false(h:cancel())                      -- once
    assert.is_true(h:done())
    assert.equal(0, client:pending())
    local t0 = now_ms()
    while now_ms() - t0 < 600 do client:poll(0); socket.sleep(0.01) end
    assert.is_false(called)
    -- a handle cancelled right after its call (sent already: cancel stops
    -- the wait, not the request), and one whose result is already in
    local cb, calls = recorder()
    local a = assert(client:whoami_async(cb))
    assert.is_true(a:cancel())
    local b, cancel_in_cb
    b = assert(client:whoami_async(function(...)
      cb(...)
      cancel_in_cb = b:cancel()                      -- a finished request cannot be cancelled
    end))
    assert.is_true(run_until(client, function() return #calls == 1 end))
    client:wait(100)
    assert.equal(1, #calls)
    assert.is_false(cancel_in_cb)
    assert.is_true(b:done())
  end)

  it("cancel during a retry wait: no further attempt, no callback", function()
    srv.fault({ path = "/v1/auth/whoami", status = 503, retryAfter = "1" })
    local called = false
    local c = new_client({ max_retries = 2 })
    finally(function() c:close() end)
    local h = assert(c:whoami_async(function() called = true end))
    assert.is_true(run_until(c, function() return #srv.logged("/v1/auth/whoami") == 1 end))
    c:poll(0)
    assert.equal(1, c:pending())                      -- waiting for its retry
    assert.is_true(c:timeout_ms() > 500)              -- the Retry-After timer
    assert.is_true(h:cancel())
    assert.equal(-1, c:timeout_ms())
    local t0 = now_ms()
    while now_ms() - t0 < 1300 do c:poll(0); socket.sleep(0.02) end
    assert.is_false(called)
    assert.equal(1, #srv.logged("/v1/auth/whoami"))
  end)
end)

describe("async retries", function()
  it("after 503s: same key on every attempt, one pledge, and poll(0) never waits", function()
    local user, fund = setup_fund()
    srv.fault({ path = CASH, status = 503, count = 2 })
    local c = new_client({ retry_base_ms = 200, retry_cap_ms = 400, random = function() return 1 end })
    finally(function() c:close() end)
    local retries = {}
    c.on_retry = function(info) retries[#retries + 1] = info end
    local cb, calls = recorder()
    local h = assert(c:record_cash_donation_async({ receivingFundId = fund.id, pledgedAmountMicroDollars = "7000000",
      partnerOperationId = "async-retry-503" }, { user_id = user.id }, cb))
    local times = {}
    local deadline = now_ms() + 5000
    while #calls == 0 and now_ms() < deadline do
      local t0 = now_ms()
      c:poll(0)
      times[#times + 1] = now_ms() - t0
      socket.sleep(0.002)
    end
    assert.equal(1, #calls)
    assert.is_nil(calls[1].err)
    assert.equal(3, calls[1].meta.attempts)
    assert.is_true(calls[1].meta.elapsed_ms >= 550)   -- 200 + 400 ms of backoff, waited in the loop
    assert_fast_polls(times, "poll(0) during retry waits")
    assert.equal(2, #retries)
    local keys = keys_of(CASH)
    assert.equal(3, #keys)
    assert.equal(keys[1], keys[2]); assert.equal(keys[2], keys[3])
    assert.equal(h.idempotency_key, keys[1])
    assert.equal("7000000", assert(client:get_fund(fund.id)).usdcBalance)
  end)

  it("after a dropped connection once the server committed: one grant", function()
    local _, fund, acct = setup_fund()
    srv.fault({ path = GRANTS, drop = true, after = true })
    local c = new_client()
    finally(function() c:close() end)
    local cb, calls = recorder()
    assert(c:submit_grant_async(grant_body(fund, acct), cb))
    assert.is_true(run_until(c, function() return #calls == 1 end))
    assert.is_nil(calls[1].err)
    assert.equal(2, calls[1].meta.attempts)
    assert.equal(200, calls[1].meta.status)          -- the replay of the committed first attempt
    local keys = keys_of(GRANTS)
    assert.equal(2, #keys)
    assert.equal(keys[1], keys[2])
    assert.equal(1, #assert(client:list_fund_grants(fund.id)))
  end)

  it("reports a timeout as kind timeout, like the blocking call", function()
    srv.fault({ path = "/v1/auth/whoami", delayMs = 1500 })
    local c = new_client({ timeout_ms = 300, max_retries = 0 })
    finally(function() c:close() end)
    local cb, calls = recorder()
    assert(c:whoami_async(cb))
    assert.is_true(run_until(c, function() return #calls == 1 end))
    assert.equal("timeout", calls[1].err.kind)
    assert.is_true(calls[1].err.retryable)
    assert.equal(1, calls[1].meta.attempts)
  end)

  it("an error in on_retry is reported and the outcome so far is delivered", function()
    srv.fault({ path = "/v1/auth/whoami", status = 503 })
    local reported = {}
    local c = new_client({ on_retry = function() error("on_retry broke") end,
      on_error = function(e, info) reported[#reported + 1] = { e = e, info = info } end })
    finally(function() c:close() end)
    local cb, calls = recorder()
    assert(c:whoami_async(cb))
    assert.is_true(run_until(c, function() return #calls == 1 end))
    assert.equal(503, calls[1].err.status)
    assert.equal(1, calls[1].meta.attempts)
    assert.equal(1, #reported)
    assert.matches("on_retry broke", reported[1].e)
    assert.equal("on_retry", reported[1].info.where)
  end)
end)

describe("callbacks", function()
  it("an error in a callback goes to on_error with a traceback; the client carries on", function()
    local reported = {}
    local c = new_client({ on_error = function(e, info) reported[#reported + 1] = { e = e, info = info } end })
    finally(function() c:close() end)
    local cb, calls = recorder()
    local h = assert(c:whoami_async(function() error("boom in callback") end))
    assert(c:whoami_async(cb))
    assert.is_true(run_until(c, function() return #calls == 1 and #reported == 1 end))
    assert.matches("boom in callback", reported[1].e)
    assert.matches("traceback", reported[1].e)
    assert.equal("whoami", reported[1].info.call)
    assert.equal(h, reported[1].info.handle)
    assert.is_true(h:done())
    -- still usable, with nothing left over
    assert(c:whoami_async(cb))
    assert.is_true(run_until(c, function() return #calls == 2 end))
    assert.equal(0, c:pending())
  end)

  it("without on_error, writes the error to stderr; a failing on_error is survived", function()
    local written = {}
    local real = io.stderr
    rawset(io, "stderr", { write = function(_, ...) for _, s in ipairs({ ... }) do written[#written + 1] = s end end })
    local ok, perr = pcall(function()
      local cb, calls = recorder()
      assert(client:whoami_async(function() error("to stderr") end))
      local c2 = new_client({ on_error = function() error("on_error broke too") end })
      assert(c2:whoami_async(function() error("second") end))
      assert(c2:whoami_async(cb))
      run_until(client, function() return client:pending() == 0 end)
      run_until(c2, function() return #calls == 1 end)
      c2:close()
    end)
    rawset(io, "stderr", real)
    assert(ok, perr)
    local text = table.concat(written)
    assert.matches("to stderr", text)
    assert.matches("on_error broke too", text)
  end)

  it("poll and wait may be called from a callback: each callback runs once", function()
    local c = new_client()
    finally(function() c:close() end)
    local count, inner = {}, 0
    local function cb(result)
      assert.is_table(result)
      count[#count + 1] = true
      inner = inner + c:poll(0) + c:wait(20)
    end
    local hs = {}
    for i = 1, 8 do hs[i] = assert(c:whoami_async(cb)) end
    assert.is_true(run_until(c, function() return c:pending() == 0 end))
    c:wait(50)
    assert.equal(8, #count)
    for i = 1, 8 do assert.is_true(hs[i]:done()) end
    -- submitting from a callback works too
    local chained = false
    assert(c:whoami_async(function()
      assert(c:whoami_async(function() chained = true end))
    end))
    assert.is_true(run_until(c, function() return chained end))
  end)

  it("close() from a callback: no other callback runs", function()
    local c = new_client()
    local ran = 0
    local hs = {}
    for i = 1, 4 do hs[i] = assert(c:whoami_async(function() ran = ran + 1; c:close() end)) end
    local deadline = now_ms() + 3000
    while ran == 0 and now_ms() < deadline do c:wait(50) end
    c:wait(100)
    assert.equal(1, ran)
    assert.equal(0, c:pending())
    for i = 1, 4 do assert.is_true(hs[i]:done()) end
  end)
end)

describe("poll(0)", function()
  it("returns at once while the server takes 500 ms to answer", function()
    srv.fault({ path = "/v1/auth/whoami", delayMs = 500, count = 3 })
    local cb, calls = recorder()
    for _ = 1, 3 do assert(client:whoami_async(cb)) end
    local times = {}
    local t_start = now_ms()
    while #calls < 3 and now_ms() - t_start < 5000 do
      local t0 = now_ms()
      client:poll(0)
      times[#times + 1] = now_ms() - t0
      socket.sleep(0.001)
    end
    assert.equal(3, #calls)
    assert.is_true(now_ms() - t_start >= 450)
    assert.is_true(#times > 20)
    assert_fast_polls(times, "poll(0) while the server delays 500 ms")
    assert.equal(0, client:poll(0))                  -- nothing left: 0 callbacks
  end)
end)

describe("with 200 ms of server latency", function()
  local slow

  setup(function() slow = assert(server.start({ "--latency-ms", "200" })) end)
  teardown(function() slow.stop() end)

  it("runs many requests in parallel", function()
    local c = new_client({ max_connections = 20 }, slow.url)
    finally(function() c:close() end)
    local cb, calls = recorder()
    local t0 = now_ms()
    for _ = 1, 20 do assert(c:whoami_async(cb)) end
    assert.is_true(run_until(c, function() return #calls == 20 end, 20))
    local took = now_ms() - t0
    for _, call in ipairs(calls) do assert.is_nil(call.err) end
    -- sequentially this is 20 x 200 ms = 4 s
    assert.is_true(took < limit_ms(1200, 3000), "20 requests took " .. took .. " ms")
  end)

  it("respects max_connections", function()
    local c = new_client({ max_connections = 2 }, slow.url)
    finally(function() c:close() end)
    local cb, calls = recorder()
    local t0 = now_ms()
    for _ = 1, 6 do assert(c:whoami_async(cb)) end
    local most = 0
    while #calls < 6 and now_ms() - t0 < 20000 do
      c:wait(20)
      local _, running = c._async.multi:count()
      most = math.max(most, running)
    end
    local took = now_ms() - t0
    assert.equal(6, #calls)
    assert.equal(2, most)
    assert.is_true(took >= 3 * 200 - 20, "6 requests over 2 connections took only " .. took .. " ms")
  end)

  it("close() with transfers in flight: no callbacks afterwards, nothing pending", function()
    local c = new_client({}, slow.url)
    local called = 0
    local hs = {}
    for i = 1, 5 do hs[i] = assert(c:whoami_async(function() called = called + 1 end)) end
    c:poll(0)
    c:close()
    c:close()                                        -- idempotent
    assert.equal(0, c:pending())
    assert.equal(0, c:poll(0))
    assert.equal(0, c:wait(300))
    assert.equal(-1, c:timeout_ms())
    assert.same({}, c:fds())
    assert.equal(0, called)
    for i = 1, 5 do assert.is_true(hs[i]:done()); assert.is_false(hs[i]:cancel()) end
    local h, err = c:whoami_async(function() called = called + 1 end)
    assert.is_nil(h)
    assert.equal("config", err.kind)
    assert.matches("closed", err.message)
  end)

  it("can be driven by socket.select with fds() and timeout_ms()", function()
    local c = new_client({}, slow.url)
    finally(function() c:close() end)
    local cb, calls = recorder()
    for _ = 1, 4 do assert(c:whoami_async(cb)) end
    local rounds, saw_fd = 0, false
    local deadline = now_ms() + 10000
    while c:pending() > 0 and now_ms() < deadline do
      local readers, writers = {}, {}
      for _, f in ipairs(c:fds()) do
        assert.is_number(f.fd)
        saw_fd = true
        if f.read then readers[#readers + 1] = f end
        if f.write then writers[#writers + 1] = f end
      end
      local t = c:timeout_ms()
      assert.is_true(t >= 0)
      socket.select(readers, writers, t / 1000)
      c:poll(0)
      rounds = rounds + 1
    end
    assert.equal(4, #calls)
    assert.is_true(saw_fd)
    assert.is_true(rounds < 200, "busy loop: " .. rounds .. " rounds")
    assert.equal(-1, c:timeout_ms())
  end)

  -- Requests the server has received (it logs on arrival, answers 200 ms later).
  local function arrived() return #slow.logged("/v1/auth/whoami") end

  -- n requests to completion: n kept-alive connections, as a client in use has.
  local function warm(c, n)
    local cb, calls = recorder()
    for _ = 1, n do assert(c:whoami_async(cb)) end
    assert.is_true(run_until(c, function() return #calls == n end))
  end

  it("sends a request inside its _async call when a slot is free; the rest wait in Lua, not in libcurl", function()
    local c = new_client({ max_connections = 2 }, slow.url)
    finally(function() c:close() end)
    warm(c, 2)
    local before = arrived()
    local cb, calls = recorder()
    local hs = {}
    for i = 1, 6 do hs[i] = assert(c:whoami_async(cb)) end
    -- libcurl holds the two that run and nothing else (no URL, header list
    -- or body copy for the four that wait)
    local in_multi, running = c._async.multi:count()
    assert.equal(2, in_multi)
    assert.equal(2, running)
    assert.equal("running", hs[2].state)
    assert.equal("queued", hs[3].state)
    -- on the kept-alive connections they left without any poll (a new
    -- connection is started there, and connected by the next poll)
    local deadline = now_ms() + 2000
    while arrived() - before < 2 and now_ms() < deadline do socket.sleep(0.01) end
    assert.equal(2, arrived() - before)
    assert.equal(0, #calls)
    assert.is_true(run_until(c, function() return #calls == 6 end, 20))
    assert.equal(6, arrived() - before)
    for _, call in ipairs(calls) do assert.is_nil(call.err) end
    assert.equal(0, c:pending())
  end)

  it("moves bytes during a long run of _async calls, and leaves the outcome to the next poll", function()
    local c = new_client({ max_connections = 1 }, slow.url)
    finally(function() c:close() end)
    warm(c, 1)
    local before = arrived()
    local cb, calls = recorder()
    local first = assert(c:whoami_async(cb))
    socket.sleep(0.3)                                  -- its answer is in, unread
    local second = assert(c:whoami_async(cb))          -- queued: the one slot looks taken
    -- the second call read the first answer and sent the second request
    local deadline = now_ms() + 2000
    while arrived() - before < 2 and now_ms() < deadline do socket.sleep(0.01) end
    assert.equal(2, arrived() - before)
    assert.equal("running", second.state)
    -- no callback ran inside the call; the outcome is due at once
    assert.equal(0, #calls)
    assert.is_false(first:done())
    assert.equal(0, c:timer_ms())
    assert.equal(0, c:timeout_ms())
    assert.equal(1, c:poll(0))
    assert.equal(1, #calls)
    assert.is_nil(calls[1].err)
    assert.is_true(first:done())
    assert.is_true(run_until(c, function() return #calls == 2 end))
    -- an outcome read that way can still be cancelled: its callback never runs
    local third = assert(c:whoami_async(cb))
    socket.sleep(0.3)
    assert(c:whoami_async(cb))
    assert.equal("finished", third.state)
    assert.is_true(third:cancel())
    assert.is_true(run_until(c, function() return c:pending() == 0 end))
    assert.equal(3, #calls)
    assert.equal(4, arrived() - before)
  end)

  it("runs no on_retry inside an _async call: a 503 read on the way is retried from the next poll", function()
    local retries = 0
    local c = new_client({ max_connections = 1, on_retry = function() retries = retries + 1 end }, slow.url)
    finally(function() c:close() end)
    warm(c, 1)
    local before = arrived()
    slow.fault({ path = "/v1/auth/whoami", status = 503 })
    local cb, calls = recorder()
    local first = assert(c:whoami_async(cb))
    socket.sleep(0.3)                                  -- its 503 is in, unread
    assert(c:whoami_async(cb))                         -- reads it on the way
    assert.equal("finished", first.state)
    assert.equal(0, retries)
    assert.equal(0, #calls)
    c:poll(0)                                          -- the policy runs here
    assert.equal(1, retries)
    assert.is_true(run_until(c, function() return #calls == 2 end))
    for _, call in ipairs(calls) do assert.is_nil(call.err) end
    local attempts = { calls[1].meta.attempts, calls[2].meta.attempts }
    table.sort(attempts)
    assert.same({ 1, 2 }, attempts)                   -- the 503, then its retry
    assert.equal(3, arrived() - before)
  end)

  it("cancels a queued request before it is sent, and close() cancels the queue", function()
    local c = new_client({ max_connections = 1 }, slow.url)
    local before = arrived()
    local cb, calls = recorder()
    local a = assert(c:whoami_async(cb))
    local b = assert(c:whoami_async(cb))
    local d = assert(c:whoami_async(cb))
    assert.equal("queued", b.state)
    assert.is_true(b:cancel())
    assert.is_true(b:done())
    assert.equal(2, c:pending())
    assert.is_true(run_until(c, function() return #calls == 2 end))
    assert.is_true(a:done() and d:done())
    assert.equal(2, arrived() - before)               -- b never left
    -- close with one running and two queued: no callback, nothing pending
    local hs = {}
    for i = 1, 3 do hs[i] = assert(c:whoami_async(cb)) end
    assert.equal("queued", hs[3].state)
    c:close()
    for i = 1, 3 do assert.is_true(hs[i]:done()) end
    assert.equal(0, c:pending())
    assert.equal(0, c:wait(300))
    assert.equal(2, #calls)
    -- the running one had left (on the kept-alive connection), the queued never
    local deadline = now_ms() + 2000
    while arrived() - before < 3 and now_ms() < deadline do socket.sleep(0.01) end
    socket.sleep(0.1)
    assert.equal(3, arrived() - before)
  end)
end)

describe("partner.new options for async", function()
  it("checks max_connections and on_error, reporting the caller's line", function()
    -- (not tail calls: those leave no caller line to report)
    local ok, msg = pcall(function()
      local c = partner.new({ api_key = KEY, base_url = srv.url, max_connections = 0 })
      return c
    end)
    assert.is_false(ok)
    assert.matches("async_spec.lua:%d+: endaoment.partner.new: option max_connections", msg)
    for _, bad in ipairs({ 1.5, 513, -1 }) do
      assert.has_error(function() partner.new({ api_key = KEY, base_url = srv.url, max_connections = bad }) end)
    end
    ok, msg = pcall(function()
      local c = partner.new({ api_key = KEY, base_url = srv.url, on_error = "x" })
      return c
    end)
    assert.is_false(ok)
    assert.matches("async_spec.lua:%d+: endaoment.partner.new: option on_error must be a function", msg)
    ok, msg = pcall(function()
      local c = partner.new({ api_key = KEY, base_url = srv.url, timout_ms = 1 })
      return c
    end)
    assert.is_false(ok)
    assert.matches("async_spec.lua:%d+: endaoment.partner.new: unknown option 'timout_ms'", msg)
  end)

  it("refuses async calls on a transport other than libcurl, and loads libcurl only for async", function()
    local t = { name = "custom", request = function() return { status = 200, headers = {}, body = "{}" } end }
    local c = partner.new({ api_key = KEY, base_url = srv.url, transport = t })
    local h, err = c:whoami_async(function() end)
    assert.is_nil(h)
    assert.equal("config", err.kind)
    assert.matches("libcurl", err.message)
    -- in a fresh interpreter: requiring the facade and an async refusal load no libcurl
    local interp = type(jit) == "table" and "luajit" or "lua5.4"
    local code = [[
      local p = require "endaoment.partner"
      local c = p.new{ api_key = "k", base_url = "http://127.0.0.1:1",
        transport = { name = "x", request = function() end } }
      assert(not c:whoami_async(function() end))
      io.write(package.loaded["endaoment.partner.curl"] and "loaded" or "not loaded")]]
    local f = assert(io.popen(interp .. " -e " .. server.shell_quote(code) .. " 2>&1"))
    local out = f:read("*a")
    f:close()
    assert.equal("not loaded", out)
  end)
end)

describe("curl.multi (C)", function()
  it("reuses connections and reports transfers by id", function()
    local m = curl.multi({ max_connections = 4 })
    finally(function() m:close() end)
    local function run(req)
      local id = assert(m:add(req))
      local deadline = now_ms() + 5000
      while now_ms() < deadline do
        m:perform()
        local got, res, err = m:next()
        if got then
          assert.equal(id, got)
          return res, err
        end
        m:wait(50)
      end
      error("no answer")
    end
    local req = { url = srv.url .. "/v1/auth/whoami", headers = { ["x-api-key"] = KEY } }
    local r1 = assert(run(req))
    local r2 = assert(run(req))
    assert.equal(200, r1.status)
    assert.is_false(r1.reused)
    assert.is_true(r2.reused)
    assert.equal(0, (m:count()))
    assert.matches("open", tostring(m))
  end)

  it("refuses bad requests without sending, cancels by id, and closes idempotently", function()
    local m = curl.multi()
    local res, err = m:add({ url = "ftp://127.0.0.1/" })
    assert.is_nil(res)
    assert.equal("config", err.kind)
    res, err = m:add({ url = srv.url .. "/", headers = { ["x\r\n"] = "y" } })
    assert.is_nil(res)
    assert.equal("config", err.kind)
    assert.has_error(function() m:add("http://127.0.0.1/") end)
    assert.has_error(function() curl.multi({ max_connections = 0 }) end)
    assert.has_error(function() curl.multi({ max_connections = "4" }) end)
    local id = assert(m:add({ url = srv.url .. "/v1/auth/whoami" }))
    assert.equal(1, (m:count()))
    assert.is_true(m:cancel(id))
    assert.is_false(m:cancel(id))
    assert.equal(0, (m:count()))
    assert.is_nil(m:next())
    assert.same({}, srv.logged())
    -- left in flight, then closed (valgrind checks nothing leaks)
    assert(m:add({ url = srv.url .. "/v1/auth/whoami" }))
    m:perform()
    m:close()
    m:close()
    assert.matches("closed", tostring(m))
    res, err = m:add({ url = srv.url .. "/" })
    assert.is_nil(res)
    assert.equal("config", err.kind)
    assert.equal(0, select("#", m:next()))
    assert.same({}, m:fds())
    assert.equal(-1, m:timeout())
  end)

  it("refuses a request whose table closes the multi handle while it is read; keeps nothing", function()
    local m = curl.multi()
    local req = setmetatable({}, { __index = function(_, k)
      if k == "url" then
        m:close()
        return srv.url .. "/v1/auth/whoami"
      end
    end })
    local id, err = m:add(req)
    assert.is_nil(id)
    assert.equal("config", err.kind)
    assert.equal("multi handle is closed", err.message)
    assert.equal(0, (m:count()))
    assert.same({}, srv.logged())
  end)

  -- Finalizers run inside allocations, such as those of pushing next()'s
  -- result; one that closes the handle, cancels or takes results must not
  -- free the result being pushed.
  for _, action in ipairs({ "close", "cancel", "next" }) do
    it("next() returns a whole result when a finalizer calls " .. action .. "() meanwhile", function()
      local req = { url = srv.url .. "/v1/auth/whoami", headers = { ["x-api-key"] = KEY } }
      for _ = 1, 2 do
        local m = curl.multi()
        finally(function() m:close() end)
        local first, second = assert(m:add(req)), assert(m:add(req))
        local deadline = now_ms() + 5000
        repeat
          m:perform()
          local _, running = m:count()
          if running > 0 then m:wait(20) end
        until running == 0 or now_ms() > deadline
        local ran, inner = 0, {}
        local r = with_finalizer_inside(function()
          ran = ran + 1
          if action == "close" then m:close()
          elseif action == "cancel" then m:cancel(first); m:cancel(second)
          else inner[#inner + 1] = { m:next() } end
        end, function() return m:next() end)
        local id, res, err = r[1], r[2], r[3]
        assert.is_true(ran > 0, "no finalizer ran while the result was pushed")
        assert.is_nil(err, err and err.message)
        assert.is_true(id == first or id == second)
        assert.equal(200, res.status)
        assert.equal("Sandbox Partner", cjson.decode(res.body).clientName)
        if action == "close" then
          assert.matches("closed", tostring(m))
          assert.equal(0, select("#", m:next()))
        elseif action == "cancel" then
          assert.equal(0, (m:count()))
          assert.is_nil(m:next())
        else
          -- the finalizers took the other result, whole, then found none
          assert.equal(first + second - id, inner[1][1])
          assert.equal(200, inner[1][2].status)
          for i = 2, #inner do assert.is_nil(inner[i][1]) end
          assert.equal(0, (m:count()))
        end
        m:close()
      end
    end)
  end

  it("frees multi handles with transfers in flight when they are only garbage collected", function()
    for _ = 1, 3 do
      local m = curl.multi()
      for _ = 1, 3 do assert(m:add({ url = srv.url .. "/v1/auth/whoami" })) end
      m:perform()
    end
    collectgarbage()
    collectgarbage()
  end)
end)

describe("examples/game_loop.lua", function()
  -- Frame times are wall-clock: on a loaded machine (other suites running) the
  -- scheduler alone can stretch one frame past 16 ms, so up to three runs get
  -- a chance (every run must still get all 100 grants accepted).
  it("submits 100 grants at 60 fps with every frame under 16 ms", function()
    local interp = type(jit) == "table" and "luajit" or "lua5.4"
    local outs, ok = {}, false
    for _ = 1, 3 do
      local f = assert(io.popen(interp .. " examples/game_loop.lua " .. srv.url .. " 2>&1; echo \"exit=$?\""))
      local out = f:read("*a")
      f:close()
      outs[#outs + 1] = out
      assert.matches("100 grants submitted: 100 accepted, 0 failed", out, 1, true)
      local worst = tonumber(out:match("worst frame: ([%d%.]+) ms"))
      assert.is_number(worst, out)
      assert.is_number(tonumber(out:match("submits %+ poll%(0%): ([%d%.]+) ms")), out)
      if worst < 16 and out:find("exit=0", 1, true) then ok = true; break end
    end
    assert.is_true(ok, table.concat(outs, "\n"))
  end)
end)
