-- The async client on libcurl's socket interface: a host's event loop learns
-- which sockets to watch and when to call back (socket_changes, timer_ms,
-- socket_action), with no limit at descriptor 1024; examples/luv_loop.lua
-- drives 200 requests from luv (Debian lua-luv) with no poll loop.
local partner = require "endaoment.partner"
local curl = require "endaoment.partner.curl"
local socket = require "socket"
local server = require "spec.helpers.sandbox_server"

local KEY = "sandbox-key"
local q = server.shell_quote

-- In the child: poll() and wait() raise, so a run that succeeds never used them.
local NO_POLL = [[
local p = require "endaoment.partner"
local new = p.new
p.new = function(o)
  local c = new(o)
  c.poll = function() error("poll called") end
  c.wait = function() error("wait called") end
  return c
end
]]
-- Descriptors 3..1102 taken first: every socket libcurl opens is numbered above 1024.
local HOLD_FDS = "HOLD = {} for i = 1, 1100 do HOLD[i] = assert(io.open('/dev/null')) end "

-- Runs lua5.4 with -e code and a script, in a shell with ulimit -n 4096.
local function run(code, script_and_args)
  local cmd = "ulimit -n 4096 && lua5.4 -e " .. q(code) .. " " .. script_and_args .. " 2>&1; echo \"exit=$?\""
  local f = assert(io.popen("bash -c " .. q(cmd)))
  local out = f:read("*a")
  f:close()
  return out
end

describe("examples/luv_loop.lua", function()
  local srv
  lazy_setup(function() srv = assert(server.start()) end)
  lazy_teardown(function() srv.stop() end)

  it("records 200 donations from luv's loop, with no poll loop", function()
    local out = run(NO_POLL, "examples/luv_loop.lua " .. srv.url)
    assert.matches("200 donations: 200 recorded, 0 failed; fund balance 200000000 (want 200000000)", out, 1, true)
    assert.matches("exit=0", out, 1, true)
    local most = tonumber(out:match("sockets watched at most: (%d+)"))
    assert.is_true(most >= 1 and most <= 16, out)    -- max_connections = 16
  end)

  it("watches sockets numbered above 1024", function()
    local out = run(HOLD_FDS .. NO_POLL, "examples/luv_loop.lua " .. srv.url)
    assert.matches("200 recorded, 0 failed", out, 1, true)
    assert.matches("exit=0", out, 1, true)
    local highest = tonumber(out:match("highest socket fd: (%d+)"))
    assert.is_true(highest > 1024, out)
  end)
end)

describe("the socket interface", function()
  local srv
  lazy_setup(function() srv = assert(server.start({ "--latency-ms", "50" })) end)
  lazy_teardown(function() srv.stop() end)

  -- A minimal event loop on luasocket's select (descriptors below 1024 here).
  local function drive(c, limit_s, watch)
    watch = watch or {}
    local deadline = socket.gettime() + (limit_s or 10)
    local rounds = 0
    while c:pending() > 0 and socket.gettime() < deadline do
      for _, ch in ipairs(c:socket_changes()) do
        assert.is_number(ch.fd)
        if ch.want == "remove" then watch[ch.fd] = nil else watch[ch.fd] = ch.want end
      end
      local r, w = {}, {}
      for fd, want in pairs(watch) do
        local h = { getfd = function() return fd end, fd = fd }
        if want:find("r") then r[#r + 1] = h end
        if want:find("w") then w[#w + 1] = h end
      end
      local t = c:timer_ms()
      local rr, ww = socket.select(r, w, t >= 0 and t / 1000 or 1)
      local ready = {}
      for _, h in ipairs(rr) do ready[h.fd] = (ready[h.fd] or "") .. "r" end
      for _, h in ipairs(ww) do ready[h.fd] = (ready[h.fd] or "") .. "w" end
      local any = false
      for fd, ev in pairs(ready) do any = true; c:socket_action(fd, ev) end
      if not any then c:socket_action() end
      rounds = rounds + 1
    end
    return rounds, watch
  end

  it("tells a host what to watch and when, and runs the callbacks from socket_action", function()
    local c = partner.new({ api_key = KEY, base_url = srv.url, retry_base_ms = 1, retry_cap_ms = 5 })
    finally(function() c:close() end)
    assert.same({}, c:socket_changes())
    assert.equal(-1, c:timer_ms())
    local done = 0
    for _ = 1, 5 do assert(c:whoami_async(function(r, e) assert(r, e and tostring(e)); done = done + 1 end)) end
    -- The transfers started inside the _async calls: libcurl already
    -- watches their sockets and has a timer (its timeouts) for them.
    local started = {}
    for _, ch in ipairs(c:socket_changes()) do
      if ch.want == "remove" then started[ch.fd] = nil else started[ch.fd] = ch.want end
    end
    assert.is_not_nil(next(started), "no socket to watch right after the _async calls")
    assert.is_true(c:timer_ms() >= 0)
    assert.equal(0, done)                            -- callbacks run only from the loop
    local rounds, watch = drive(c, nil, started)
    assert.equal(5, done)
    assert.is_true(rounds < 200, "busy loop: " .. rounds .. " rounds")
    assert.equal(-1, c:timer_ms())
    -- kept-alive connections may stay watched; the changes say so, and close() ends them all
    for fd in pairs(watch) do assert.is_true(fd >= 0) end
    -- a retry wait is a timer too
    srv.fault({ path = "/v1/auth/whoami", status = 503 })
    local got
    assert(c:whoami_async(function(r, e, m) got = { r, e, m } end))
    drive(c)
    assert.is_nil(got[2])
    assert.equal(2, got[3].attempts)
  end)

  it("reports a socket libcurl stops using as remove, and validates its arguments", function()
    local m = curl.multi({})
    local c = partner.new({ api_key = KEY, base_url = srv.url })
    finally(function() m:close(); c:close() end)
    assert(m:add({ url = srv.url .. "/v1/auth/whoami", headers = { ["x-api-key"] = KEY }, retry_safe = false }))
    local seen, removed, result = {}, {}, nil
    local deadline = socket.gettime() + 10
    while socket.gettime() < deadline and not (result and next(removed)) do
      m:wait(20)
      for _, ch in ipairs(m:socket_changes()) do
        if ch.want == "remove" then removed[ch.fd] = true else seen[ch.fd] = ch.want end
      end
      local id, res = m:next()
      if id then result = res end
    end
    assert.equal(200, result.status)
    local fd = next(removed)
    assert.is_not_nil(fd, "no remove for the closed connection (retry_safe = false forbids its reuse)")
    assert.is_not_nil(seen[fd])
    assert.same({}, m:fds())
    assert.has_error(function() c:socket_action("3") end)
    assert.has_error(function() c:socket_action(3, 4) end)
    assert.equal(0, c:socket_action(3, "r"))         -- nothing started yet: nothing to do
  end)

  it("lists watched sockets in fds() whatever their number (poll(2), no FD_SETSIZE)", function()
    local code = HOLD_FDS .. string.format([[
      local c = require("endaoment.partner").new{ api_key = %q, base_url = %q }
      local done, highest = false, -1
      assert(c:whoami_async(function(r, e) done = assert(r, e and tostring(e)) and true end))
      local t0 = os.time()
      while not done and os.time() - t0 < 10 do
        c:poll(0)
        for _, f in ipairs(c:fds()) do if f.fd > highest then highest = f.fd end end
        c:wait(20)
      end
      io.write(done and "done" or "not done", " ", highest)]], KEY, srv.url)
    local out = run(code, "")
    local highest = tonumber(out:match("^done (%-?%d+)"))
    assert.is_number(highest, out)
    assert.is_true(highest > 1024, out)
  end)
end)
