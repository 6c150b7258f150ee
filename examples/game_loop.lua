-- A game's frame loop that submits 100 grants without ever blocking a frame.
--
--   lua5.4 examples/game_loop.lua                        (starts its own sandbox)
--   lua5.4 examples/game_loop.lua http://127.0.0.1:8787  (a sandbox you started)
--
-- The loop runs at 60 fps: each frame calls client:poll(0) once (which never
-- blocks: it moves bytes, starts due retries and runs finished callbacks),
-- then "renders" for a few milliseconds, then sleeps until the next frame.
-- The grants go out 10 per frame over the first 10 frames. It prints the
-- worst frame time (submits + poll + render, and the SDK's part of it) and the
-- total time; exit code 0 when all 100 grants were accepted and no frame took
-- 16 ms or more.
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]*$") or "."
do
  if io.open(root .. "/lua/endaoment/partner.lua") then
    package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
    local build = type(jit) == "table" and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
    package.cpath = root .. "/build/" .. build .. "/?.so;" .. package.cpath
  end
end

local partner = require "endaoment.partner"
local socket = require "socket"

local FRAME_MS = 1000 / 60
local RENDER_MS = 4          -- simulated drawing work per frame
local GRANTS = 100
local PER_FRAME = 10
local BUDGET_MS = 16
local RED_CROSS = "5b6e6b8e-3f0a-4c47-9a51-000000000001"

local function now_ms() return socket.gettime() * 1000 end

-- The sandbox: the URL given, or one started here on a free port.
local base_url, sandbox_pid, sandbox_pipe = arg[1], nil, nil
if not base_url then
  local cmd = "echo $$; exec lua5.4 " .. root .. "/bin/endaoment-sandbox --port 0 2>/dev/null"
  sandbox_pipe = assert(io.popen(cmd, "r"))
  sandbox_pid = sandbox_pipe:read("*l")
  base_url = sandbox_pipe:read("*l")
  if not base_url then io.stderr:write("game_loop: the sandbox did not start\n"); os.exit(2) end
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
  email = "ada@example.com", address = { line1 = "1 Main St", city = "New York", country = "USA" },
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
os.exit((accepted == GRANTS and worst < BUDGET_MS) and 0 or 1)
