-- The async client driven by luv (libuv's Lua binding), through libcurl's
-- socket interface: no poll loop, no timeouts guessed. libuv watches exactly
-- the sockets libcurl asks for and wakes the client when one is ready or
-- libcurl's timer is due; any number of sockets, numbered as high as the
-- process allows (no 1024 limit).
--
-- Run it from anywhere, with the SDK on the package paths (in a checkout: make, then
-- eval "$(make -s env)"; or installed with LuaRocks); it needs luv (Debian: lua-luv):
--
--   lua5.4 examples/luv_loop.lua                          (starts its own sandbox)
--   lua5.4 examples/luv_loop.lua http://127.0.0.1:8787    (a sandbox you started first)
--
-- It records 200 cash donations into one fund (a user and the fund are made
-- first, also through the loop), then reads the fund back: its balance must
-- be the sum. Exit code 0 when every donation was recorded and the balance
-- matches, 1 otherwise, 2 when it could not start.
--
-- The bridge is sync() below, and it is all a host needs: after every call
-- into the client, apply client:socket_changes() (start, change or stop a
-- poll handle per socket) and client:timer_ms() (one timer); when a socket
-- is ready call client:socket_action(fd, events), when the timer fires
-- client:socket_action(). Callbacks run inside socket_action.

local uv = require "luv"
local partner = require "endaoment.partner"

local DONATIONS = 200
local AMOUNT = "1000000" -- 1 USD in micro-dollars

local function fail(msg, code)
  io.stderr:write("luv_loop: ", msg, "\n")
  os.exit(code or 2)
end

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The endaoment-sandbox of the SDK this script loads (a checkout's bin/, run
-- with this interpreter), or the one LuaRocks installed on PATH.
local function sandbox_command()
  local fname = "endaoment/partner"
  for template in package.path:gmatch("[^;]+") do
    local file = template:gsub("%?", fname)
    local root = file:match("^(.*)/lua/endaoment/partner%.lua$")
    local f = root and io.open(root .. "/bin/endaoment-sandbox")
    if f then
      f:close()
      local i, interp = -1, "lua5.4"
      while arg and arg[i] ~= nil do interp = arg[i]; i = i - 1 end
      return q(interp) .. " " .. q(root .. "/bin/endaoment-sandbox")
    end
  end
  return "endaoment-sandbox"
end

local base_url, sandbox_pid, sandbox_pipe = arg[1], nil, nil
if not base_url then
  local cmd = sandbox_command()
  sandbox_pipe = assert(io.popen("echo $$; exec " .. cmd .. " --port 0", "r"))
  sandbox_pid = sandbox_pipe:read("*l")
  base_url = sandbox_pipe:read("*l")
  if not base_url then
    sandbox_pipe:close()
    fail("the sandbox did not start (" .. cmd .. " --port 0); start one and pass its URL: " ..
      "lua5.4 examples/luv_loop.lua http://127.0.0.1:8787")
  end
end

local client = partner.new { api_key = "sandbox-key", base_url = base_url, max_connections = 16 }

---------------------------------------------------------------------------
-- the bridge: libcurl's sockets and timer as luv handles
---------------------------------------------------------------------------

local polls = {}            -- fd -> luv poll handle
local timer = uv.new_timer()
local closed = false
local watching, most_watched, highest_fd = 0, 0, -1

local sync

local function on_ready(fd)
  return function(err, events)
    client:socket_action(fd, err and "e" or events)
    sync()
  end
end

function sync()
  if closed then return end
  for _, c in ipairs(client:socket_changes()) do
    local p = polls[c.fd]
    if c.want == "remove" then
      -- The socket may be closed already: stop watching it (its number may come back as a new socket).
      if p then
        p:stop()
        p:close()
        polls[c.fd] = nil
        watching = watching - 1
      end
    else
      if not p then
        p = uv.new_socket_poll(c.fd)
        polls[c.fd] = p
        watching = watching + 1
        if watching > most_watched then most_watched = watching end
        if c.fd > highest_fd then highest_fd = c.fd end
      end
      p:start(c.want, on_ready(c.fd))
    end
  end
  local ms = client:timer_ms()
  timer:stop()
  if ms >= 0 then
    timer:start(ms, 0, function()
      client:socket_action()
      sync()
    end)
  end
end

local function shutdown()
  closed = true
  client:close()
  for fd, p in pairs(polls) do
    p:stop()
    p:close()
    polls[fd] = nil
  end
  timer:stop()
  timer:close()
end

---------------------------------------------------------------------------
-- the work: a user, a fund, 200 donations, the fund read back
---------------------------------------------------------------------------

local stamp = string.format("%d%04d", os.time(), math.random(0, 9999))
local recorded, failed, balance, problem = 0, 0, nil, nil
local t0 = uv.hrtime()

local function check(h, err)
  if not h then problem = tostring(err) end
  return h
end

local function read_back(fund)
  check(client:get_fund_async(fund.id, function(f, err)
    if f then balance = f.usdcBalance else problem = tostring(err) end
    shutdown()
  end))
end

local function donate(user, fund)
  local pending = DONATIONS
  for i = 1, DONATIONS do
    check(client:record_cash_donation_async({ receivingFundId = fund.id, pledgedAmountMicroDollars = AMOUNT,
      partnerOperationId = "luv-" .. stamp .. "-" .. i }, { user_id = user.id }, function(res, err)
        if res then recorded = recorded + 1 else failed = failed + 1; io.stderr:write(tostring(err), "\n") end
        pending = pending - 1
        if pending == 0 then read_back(fund) end
      end))
  end
end

check(client:provision_user_async({ partnerUserIdentifier = "luv-player-" .. stamp, firstName = "Ada",
  lastName = "Lovelace", email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
    state = "NY", zip = "10001", country = "USA" } }, function(user, err)
  if not user then problem = tostring(err); return shutdown() end
  check(client:create_fund_async({ name = "Luv DAF", partnerAccountIdentifier = "luv-account-" .. stamp },
    { user_id = user.id }, function(fund, ferr)
      if not fund then problem = tostring(ferr); return shutdown() end
      donate(user, fund)
    end))
end))
sync()
if problem then shutdown() end

uv.run("default")

if sandbox_pid then
  os.execute("kill " .. sandbox_pid .. " 2>/dev/null")
  sandbox_pipe:close()
end

local want = tostring(DONATIONS * tonumber(AMOUNT))
print(string.format("%d donations: %d recorded, %d failed; fund balance %s (want %s)", DONATIONS, recorded, failed,
  tostring(balance), want))
print(string.format("sockets watched at most: %d, highest socket fd: %d; %.0f ms", most_watched, highest_fd,
  (uv.hrtime() - t0) / 1e6))
if problem then fail(problem, 1) end
if recorded ~= DONATIONS or balance ~= want then os.exit(1) end
os.exit(0)
