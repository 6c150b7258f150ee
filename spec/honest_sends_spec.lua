-- Honest sends. libcurl sends a request again by itself when a reused
-- keep-alive connection turns out dead. Against a raw server that answers the
-- first request on a connection and drops the second (it reads it, then
-- closes without an answer; spec/helpers/resend_server.lua), what the server
-- received is compared with what the client reports:
--   - a write that must not be resent (cancel_async_grant) reaches it once;
--   - for everything else meta.attempts equals the number of requests the
--     server received, and on_retry hears of each resend;
--   - max_retries = 0 means one send, libcurl's own included;
-- in the blocking and the async client alike.
local partner = require "endaoment.partner"
local curl = require "endaoment.partner.curl"
local socket = require "socket"
local resend = require "spec.helpers.resend_server"

local GRANT = "5b6e6b8e-3f0a-4c47-9a51-000000000001"
local USER = "6c7f7c9f-4a1b-4d58-8b62-000000000002"
local FUND = "7d808d00-5b2c-4e69-9c73-000000000003"
local CANCEL = "/v1/transfers/async-grants/" .. GRANT .. "/cancel"
local CASH = "/v1/donation-pledges/partner/cash-settled"

local function new_client(url, extra)
  local o = { api_key = "sandbox-key", bearer_token = "sandbox-token", base_url = url, timeout_ms = 5000,
    random = function() return 0 end }
  for k, v in pairs(extra or {}) do o[k] = v end
  return partner.new(o)
end

local function cash_body()
  return { receivingFundId = FUND, pledgedAmountMicroDollars = "1000000", partnerOperationId = "honest-op-1" }
end

-- Runs an async call to completion: returns result, err, meta.
local function await(c, method, ...)
  local got
  local args = { ... }
  args[#args + 1] = function(r, e, m) got = { r, e, m } end
  local h, err = c[method](c, (table.unpack or unpack)(args))
  assert(h, err and tostring(err))
  local deadline = socket.gettime() + 10
  while not got and socket.gettime() < deadline do c:wait(50) end
  assert(got, method .. " never completed")
  return got[1], got[2], got[3]
end

-- The two ways of running a call: blocking, and its _async twin driven by wait().
local MODES = {
  blocking = function(c, method, ...) return c[method](c, ...) end,
  async = function(c, method, ...) return await(c, method .. "_async", ...) end,
}

for mode, call in pairs(MODES) do
  describe("honest sends (" .. mode .. ")", function()
    local srv

    after_each(function() if srv then srv.stop() end end)

    it("a cancel goes on a fresh connection: the server receives exactly one", function()
      srv = assert(resend.start())
      local c = new_client(srv.url)
      finally(function() c:close() end)
      assert(call(c, "whoami"))                      -- leaves a kept-alive connection behind
      local res, err, meta = call(c, "cancel_async_grant", GRANT)
      assert.is_nil(err, err and tostring(err))
      assert.equal("Cancelled", res.status)
      assert.equal(1, meta.attempts)
      assert.equal(1, resend.wait_count(srv, CANCEL, 1))
      local got = srv.received()
      assert.equal(2, #got)                          -- the whoami and one cancel, nothing dropped
      assert.is_false(got[2].dropped)
      assert.are_not.equal(got[1].conn, got[2].conn) -- the cancel did not reuse the whoami's connection
    end)

    it("a keyed write: meta.attempts equals what the server received, on_retry hears each", function()
      srv = assert(resend.start({ first_status = 503 }))
      local seen = {}
      local c = new_client(srv.url, { on_retry = function(info) seen[#seen + 1] = info end })
      finally(function() c:close() end)
      -- 503 on a new connection; our retry reuses it and is dropped; libcurl resends it on a new one.
      local res, err, meta = call(c, "record_cash_donation", cash_body(), { user_id = USER })
      assert.is_nil(err, err and tostring(err))
      assert.is_string(res.id)
      local got = srv.received()
      assert.equal(3, #got)
      assert.equal(#got, meta.attempts)
      assert.same({ false, true, false }, { got[1].dropped, got[2].dropped, got[3].dropped })
      for _, r in ipairs(got) do assert.equal(meta.idempotency_key, r.key) end   -- one key throughout
      assert.equal(2, #seen)
      assert.same({ 1, 503, false }, { seen[1].attempt, seen[1].status, seen[1].resent == true })
      assert.same({ 2, 0, true }, { seen[2].attempt, seen[2].wait_ms, seen[2].resent })
      assert.equal("network", seen[2].err.kind)
      assert.equal(partner.Error, getmetatable(seen[2].err))
    end)

    it("a read: meta.attempts counts libcurl's resend too", function()
      srv = assert(resend.start())
      local c = new_client(srv.url)
      finally(function() c:close() end)
      local _, err1, meta1 = call(c, "whoami")
      assert.is_nil(err1)
      assert.equal(1, meta1.attempts)
      local _, err2, meta2 = call(c, "whoami")
      assert.is_nil(err2)
      assert.equal(3, #srv.received())
      assert.equal(2, meta2.attempts)
    end)

    it("max_retries = 0 sends once: libcurl's resend is refused, the outcome reported unknown", function()
      srv = assert(resend.start())
      local c = new_client(srv.url, { max_retries = 0 })
      finally(function() c:close() end)
      assert(call(c, "whoami"))
      local _, err, meta = call(c, "record_cash_donation", cash_body(), { user_id = USER })
      assert.equal("network", err.kind)
      assert.is_true(err.retryable)                  -- resend the same body (same key) to learn the outcome
      assert.matches("not sent again", err.message)
      assert.equal(1, meta.attempts)
      assert.equal(1, srv.count(CASH))
    end)
  end)
end

describe("honest sends in the libcurl transport (C)", function()
  local srv
  after_each(function() if srv then srv.stop() end end)

  it("counts each send in res.sends, refuses sends past max_sends, and never resends retry_safe = false", function()
    srv = assert(resend.start())
    local t = curl.new({})
    finally(function() t:close() end)
    local url = srv.url .. "/v1/auth/whoami"
    local res = assert(t:request({ url = url }))
    assert.same({ 1, false, "1.1" }, { res.sends, res.reused, res.http_version })
    res = assert(t:request({ url = url }))          -- reused, dropped, resent on a new connection
    assert.equal(2, res.sends)
    assert.equal(3, #srv.received())
    local _, err = t:request({ url = url, max_sends = 1 })   -- reused, dropped, not resent
    assert.equal("network", err.kind)
    assert.equal(42, err.curl_code)
    assert.equal(1, err.sends)
    assert.equal(4, #srv.received())
    assert(t:request({ url = url }))               -- a new connection, kept alive
    res = assert(t:request({ method = "POST", url = srv.url .. CANCEL, body = "", retry_safe = false }))
    assert.same({ 200, 1, false }, { res.status, res.sends, res.reused })
    local got = srv.received()
    assert.equal(6, #got)
    assert.is_false(got[6].dropped)                  -- a fresh connection, so nothing to drop
    assert.are_not.equal(got[5].conn, got[6].conn)
  end)
end)
