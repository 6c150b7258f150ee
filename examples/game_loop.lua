-- A game's frame loop that submits 100 grants without ever blocking a frame.
--
-- Run it from anywhere, with the SDK on the package paths (in a checkout: make, then
-- eval "$(make -s env)"; or installed with LuaRocks); it needs luasocket (lua-socket):
--
--   lua5.4 examples/game_loop.lua                          (starts its own sandbox)
--   lua5.4 examples/game_loop.lua http://127.0.0.1:8787    (a sandbox you started first:
--                                                           bin/endaoment-sandbox --port 8787)
--
-- The loop runs at 60 fps: each frame calls client:poll(0) once (which never
-- blocks: it moves bytes, starts due retries and runs finished callbacks),
-- then "renders" for a few milliseconds, then sleeps until the next frame.
-- The grants go out 10 per frame over the first 10 frames. It prints the
-- worst frame time (submits + poll + render, and the SDK's part of it) and the
-- total time; exit code 0 when all 100 grants were accepted and no frame took
-- 16 ms or more, 1 otherwise, 2 when it could not start (the message says why).

local partner = require "endaoment.partner"
local socket = require "socket"

local FRAME_MS = 1000 / 60
local RENDER_MS = 4          -- simulated drawing work per frame
local GRANTS = 100
local PER_FRAME = 10
local BUDGET_MS = 16
local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"

local function now_ms() return socket.gettime() * 1000 end

local function fail(msg, code)
  io.stderr:write("game_loop: ", msg, "\n")
  os.exit(code or 2)
end

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Where a module's file is on package.path (package.searchpath is 5.2+).
local function find_module(name)
  local fname = name:gsub("%.", "/")
  for template in package.path:gmatch("[^;]+") do
    local file = template:gsub("%?", fname)
    local f = io.open(file)
    if f then f:close(); return file end
  end
end

-- The endaoment-sandbox of the SDK this script loads: a checkout's bin/, run with
-- the interpreter running this script (the lowest index of arg); otherwise the
-- one LuaRocks installed on PATH.
local function sandbox_command()
  local file = find_module("endaoment.partner")
  local root = file and file:match("^(.*)/lua/endaoment/partner%.lua$")
  local script = root and (root .. "/bin/endaoment-sandbox")
  local f = script and io.open(script)
  if f then
    f:close()
    local i, interp = -1, "lua5.4"
    while arg and arg[i] ~= nil do interp = arg[i]; i = i - 1 end
    return q(interp) .. " " .. q(script)
  end
  return "endaoment-sandbox"
end

-- The sandbox: the URL given, or one started here on a free port. If it cannot
-- start, say why (its own stderr) and stop: never a silent exit.
local base_url, sandbox_pid, sandbox_pipe = arg[1], nil, nil
if not base_url then
  local errfile = os.tmpname()
  local cmd = sandbox_command()
  sandbox_pipe = assert(io.popen("echo $$; exec " .. cmd .. " --port 0 2>" .. q(errfile), "r"))
  sandbox_pid = sandbox_pipe:read("*l")
  base_url = sandbox_pipe:read("*l")
  local ef = io.open(errfile)
  local why = ef and ef:read("*a") or ""
  if ef then ef:close() end
  os.remove(errfile)
  if not base_url then
    sandbox_pipe:close()
    fail("the sandbox did not start (" .. cmd .. " --port 0)" ..
      (why:find("%S") and (":\n  " .. why:gsub("%s+$", ""):gsub("\n", "\n  ")) or "") ..
      "\nstart one yourself (bin/endaoment-sandbox --port 8787) and pass its URL: " ..
      "lua5.4 examples/game_loop.lua http://127.0.0.1:8787")
  end
end
local function stop_sandbox()
  if sandbox_pid then
    os.execute("kill " .. sandbox_pid .. " 2>/dev/null")
    sandbox_pipe:close()
    sandbox_pid = nil
  end
end

local client = partner.new { api_key = "sandbox-key", base_url = base_url }

-- Set-up before the game starts (blocking calls are fine here): a user and a fund.
local stamp = string.format("%d%04d", os.time(), math.random(0, 9999))
local user = assert(client:provision_user {
  partnerUserIdentifier = "game-player-" .. stamp, firstName = "Ada", lastName = "Lovelace",
  email = "ada@example.com", address = { line1 = "1 Main St", city = "New York",
      state = "NY", zip = "10001", country = "USA" },
})
local acct = "game-account-" .. stamp
local fund = assert(client:create_fund({ name = "Charity Event DAF", partnerAccountIdentifier = acct },
  { user_id = user.id }))

local function grant(i)
  return {
    originFundId = fund.id,
    inboundCustodianTransfer = { amountMicroDollars = "5000000",
      partnerFundingTransferId = "event-" .. stamp .. "-" .. i,
      sourcePartnerAccountIdentifier = "studio-omnibus-00001", destinationPartnerAccountIdentifier = acct,
      settledAtUtc = "2026-05-04T14:32:01.000Z" },
    grants = { { amountMicroDollars = "5000000", destinationOrgId = RED_CROSS } },
  }
end

local accepted, failed, submitted = 0, 0, 0
local function on_grant(result, err, meta)
  if result then
    accepted = accepted + 1
  else
    failed = failed + 1
    -- Its key is derived from partnerFundingTransferId: resend the same body later and it can never
    -- run twice.
    io.stderr:write("grant failed: ", tostring(err), " (key ", tostring(meta.idempotency_key), ")\n")
  end
end

local function render()
  local t0 = now_ms()
  local x = 0
  while now_ms() - t0 < RENDER_MS do x = x + 1 end
  return x
end

local worst, worst_sdk, frames = 0, 0, 0
local t_start = now_ms()
while (submitted < GRANTS or client:pending() > 0) and now_ms() - t_start < 30000 do
  local frame_start = now_ms()
  for _ = 1, PER_FRAME do
    if submitted >= GRANTS then break end
    submitted = submitted + 1
    assert(client:submit_grant_async(grant(submitted), nil, on_grant))
  end
  client:poll(0)
  local sdk_ms = now_ms() - frame_start
  render()
  local frame_ms = now_ms() - frame_start
  if frame_ms > worst then worst = frame_ms end
  if sdk_ms > worst_sdk then worst_sdk = sdk_ms end
  frames = frames + 1
  local rest = FRAME_MS - (now_ms() - frame_start)
  if rest > 0 then socket.sleep(rest / 1000) end
end
local total = now_ms() - t_start

client:close()
stop_sandbox()

print(string.format("%d grants submitted: %d accepted, %d failed", GRANTS, accepted, failed))
print(string.format("%d frames, worst frame: %.2f ms (budget %d ms; submits + poll(0): %.2f ms), total: %.0f ms",
  frames, worst, BUDGET_MS, worst_sdk, total))
if accepted ~= GRANTS then
  io.stderr:write("game_loop: ", GRANTS - accepted, " grants were not accepted (see the messages above)\n")
  os.exit(1)
end
if worst >= BUDGET_MS then
  io.stderr:write(string.format("game_loop: over the frame budget: the worst frame took %.2f ms\n", worst))
  os.exit(1)
end
os.exit(0)
