-- bench/journeys.lua: the journey runner at batch scale (`make bench`; bench/README.md, "Journeys").
--
--   lua5.4 bench/journeys.lua
--
-- Runs bin/endaoment-journey --batch against the sandbox (bin/endaoment-sandbox
-- --latency-ms) and prints, each against a reference computed or measured in
-- this run:
--   1. 1,000 journeys (6 requests each), 20 ms latency, one process with
--      --concurrency 32, SQLite store: wall time vs ideal ceil(N/32) x 6 x 20 ms;
--   2. the same with a PostgreSQL store and 4 processes x --concurrency 8
--      sharing one batch file (their claims divide it): wall time until all 4
--      have exited, vs the same ideal;
--   3. peak memory (VmHWM) of one worker for 1,000 vs 10,000 journeys;
--   4. whether the sandbox (one thread, luasocket) is the bottleneck: its CPU
--      time during each run, and its own ceiling through 32 connections.
-- Every run is checked: every worker exits 0 and the sandbox holds exactly N
-- users, funds, 2N pledges, N grant submissions and N reports.
--
-- Environment: JOURNEYS (1000), JOURNEYS_BIG (10000), JOURNEY_LATENCY_MS (20),
-- JOURNEY_MEM_LATENCY_MS (5: the memory runs), JOURNEY_REPS (3: runs of 1 and 2,
-- median shown), LUA (lua5.4: this script and the workers; Lua 5.1 compatible).
package.path = "./?.lua;" .. package.path -- spec/helpers
local socket = require "socket"
local cjson = require "cjson.safe"
local plans = require "spec.helpers.plans"
local sandbox_server = require "spec.helpers.sandbox_server"

local LUA = os.getenv("LUA") or "lua5.4"
local N = tonumber(os.getenv("JOURNEYS")) or 1000
local N_BIG = tonumber(os.getenv("JOURNEYS_BIG")) or 10000
local LATENCY = tonumber(os.getenv("JOURNEY_LATENCY_MS")) or 20
local MEM_LATENCY = tonumber(os.getenv("JOURNEY_MEM_LATENCY_MS")) or 5
local REPS = tonumber(os.getenv("JOURNEY_REPS")) or 3
local CONC = 32
local PROCS = 4
local PER_PROC = 8             -- PROCS x PER_PROC = CONC
local STEPS = 6                -- user, fund, 2 donations, grant, report
local TARGET = { ratio = 1.5, mem_kib = 1024 }
local RUN_LIMIT_S = 300        -- any one run
-- The sandbox is the environment, not the subject: always lua5.4 (SANDBOX_LUA overrides).

-- Raises: main's caller stops every server and worker, then exits 1.
local function die(msg)
  error("journeys.lua: " .. msg, 0)
end

local function now() return socket.gettime() end
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function commas(n)
  local s = string.format("%d", math.floor(n + 0.5))
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

local function median(xs)
  local t = {}
  for i, v in ipairs(xs) do t[i] = v end
  table.sort(t)
  if #t == 0 then return nil end
  if #t % 2 == 1 then return t[(#t + 1) / 2] end
  return (t[#t / 2] + t[#t / 2 + 1]) / 2
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local CLK_TCK = tonumber((io.popen("getconf CLK_TCK 2>/dev/null"):read("*l"))) or 100

-- CPU seconds (user + system) of a live process; nil once it is gone.
local function cpu_s(pid)
  local s = read_file("/proc/" .. pid .. "/stat"):match("%) (.*)$")
  if not s then return nil end
  local f = {}
  for x in s:gmatch("%S+") do f[#f + 1] = x end
  -- after "(comm) ": state is field 1 here, utime 12, stime 13
  return (tonumber(f[12]) + tonumber(f[13])) / CLK_TCK
end

local function hwm_kib(pid)
  return tonumber(read_file("/proc/" .. pid .. "/status"):match("VmHWM:%s*(%d+)"))
end

-- Exited (a zombie until its pipe is closed) or gone.
local function exited(pid)
  local st = read_file("/proc/" .. pid .. "/stat"):match("%) (%a)")
  return st == nil or st == "Z"
end

local TMP = io.popen("mktemp -d /tmp/epartner-journeys.XXXXXX"):read("*l")
if not TMP or not TMP:match("^/tmp/epartner%-journeys%.%w+$") then die("mktemp failed") end

local servers, procs = {}, {}
local function cleanup()
  for _, p in ipairs(procs) do
    if not p.done then
      os.execute("kill -KILL " .. p.pid .. " 2>/dev/null")
      p.pipe:close()
      p.done = true
    end
  end
  for _, s in ipairs(servers) do pcall(s.stop) end
  os.execute("rm -rf " .. q(TMP))
end

---------------------------------------------------------------------------
-- workers
---------------------------------------------------------------------------

-- Starts one worker (the shell execs it: $$ is its pid); its stdout, the
-- --json summary, comes through the pipe.
local function worker(url, batch, store, conc)
  local n = #procs + 1
  local err = TMP .. "/w" .. n .. ".err"
  local cmd = "echo $$; exec env -u ENDAOMENT_ENV -u ENDAOMENT_BEARER_TOKEN ENDAOMENT_API_KEY=sandbox-key " ..
    "ENDAOMENT_BASE_URL=" .. q(url) .. " " .. LUA .. " bin/endaoment-journey --batch " .. q(batch) ..
    " --store " .. q(store) .. " --concurrency " .. conc .. " --quiet --json 2>" .. q(err)
  local pipe = assert(io.popen(cmd, "r"))
  local p = { pid = tonumber(pipe:read("*l")), pipe = pipe, err = err, n = n, hwm = 0, cpu = 0 }
  procs[n] = p
  return p
end

-- Polls the workers every 10 ms until all have exited (RUN_LIMIT_S at most):
-- each gets t_exit, and with sample its VmHWM and CPU seconds as last seen
-- alive (VmHWM is the kernel's high-water mark: the last sample is the peak).
local function wait_all(ws, t0, sample)
  while true do
    local left = 0
    for _, p in ipairs(ws) do
      if not p.t_exit then
        if exited(p.pid) then
          p.t_exit = now()
        else
          left = left + 1
          if sample then
            local h, c = hwm_kib(p.pid), cpu_s(p.pid)
            if h and c then p.hwm, p.cpu = math.max(p.hwm, h), c end
          end
        end
      end
    end
    if left == 0 then return end
    if now() - t0 > RUN_LIMIT_S then die("workers still running after " .. RUN_LIMIT_S .. " s") end
    socket.sleep(0.01)
  end
end

-- Reads an exited worker's output: its summary, or dies with its stderr.
local function finish(p)
  local out = p.pipe:read("*a")
  local _, how, code = p.pipe:close()
  p.done = true
  local summary = cjson.decode(out:match("([^\n]+)\n?$") or "")
  -- (Lua 5.1 and LuaJIT give no exit status for a pipe: the summary decides.)
  if (how ~= nil and (how ~= "exit" or code ~= 0)) or type(summary) ~= "table" or not summary.ok then
    die("worker " .. p.n .. " ended " .. tostring(how) .. " " .. tostring(code) .. ": " .. out ..
      read_file(p.err))
  end
  return summary
end

-- Every planned object exactly once (counts; the kill matrix spec checks ids).
-- The state of 10,000 journeys takes the sandbox seconds to encode: a long timeout.
local function check(srv, n)
  local http = require "socket.http"
  http.TIMEOUT = RUN_LIMIT_S
  local body, status = http.request(srv.url .. "/__sandbox/state")
  local st = body and cjson.decode(body)
  if status ~= 200 or type(st) ~= "table" then die("GET /__sandbox/state: " .. tostring(status)) end
  local function count(t) local c = 0 for _ in pairs(t or {}) do c = c + 1 end return c end
  local got = { count(st.users), count(st.funds), count(st.pledges), count(st.submissions), count(st.reports) }
  local want = { n, n, 2 * n, n, n }
  for i = 1, 5 do
    if got[i] ~= want[i] then
      die(string.format("the sandbox holds %d users, %d funds, %d pledges, %d submissions, %d reports; " ..
        "want %d, %d, %d, %d, %d", got[1], got[2], got[3], got[4], got[5], want[1], want[2], want[3], want[4],
        want[5]))
    end
  end
end

local CORES = tonumber((io.popen("nproc 2>/dev/null"):read("*l"))) or 1

-- CPU seconds of a PostgreSQL cluster: the postmaster and the session
-- processes it has reaped (cutime, cstime), so sample after they exit.
local function pg_cpu_s(pg)
  local pid = read_file(pg.dir .. "/data/postmaster.pid"):match("^(%d+)")
  local s = pid and read_file("/proc/" .. pid .. "/stat"):match("%) (.*)$")
  if not s then return 0 end
  local f = {}
  for x in s:gmatch("%S+") do f[#f + 1] = x end
  return (tonumber(f[12]) + tonumber(f[13]) + tonumber(f[14]) + tonumber(f[15])) / CLK_TCK
end

local function reset(srv)
  local status = srv.control("POST", "/__sandbox/reset")
  if status ~= 200 then die("sandbox reset: " .. tostring(status)) end
end

-- One batch through `count` workers of `conc` each; returns wall seconds,
-- the sandbox's CPU seconds meanwhile, and the summed summaries.
local function run(srv, batch, store, count, conc, n)
  reset(srv)
  local cpu0 = cpu_s(srv.pid)
  local t0 = now()
  local ws = {}
  for i = 1, count do ws[i] = worker(srv.url, batch, store, conc) end
  wait_all(ws, t0, false)
  local wall = 0
  local sum = { done = 0, skipped = 0, busy_waits = 0, first_exit = math.huge }
  for _, p in ipairs(ws) do
    local s = finish(p)
    sum.done, sum.skipped, sum.busy_waits = sum.done + s.done, sum.skipped + s.skipped, sum.busy_waits + s.busy_waits
    wall = math.max(wall, p.t_exit - t0)
    sum.first_exit = math.min(sum.first_exit, p.t_exit - t0)
  end
  local cpu = cpu_s(srv.pid) - cpu0
  if sum.done ~= n then die(string.format("%d journeys done, want %d", sum.done, n)) end
  check(srv, n)
  return wall, cpu, sum
end

-- One worker, its VmHWM and CPU sampled until it exits.
local function run_sampled(srv, batch, store, n)
  reset(srv)
  local t0 = now()
  local p = worker(srv.url, batch, store, CONC)
  wait_all({ p }, t0, true)
  local s = finish(p)
  if s.done ~= n then die(string.format("%d journeys done, want %d", s.done, n)) end
  check(srv, n)
  return p.hwm, p.cpu, p.t_exit - t0
end

---------------------------------------------------------------------------
-- the sandbox's own ceiling: provision_user through 32 connections (async client)
---------------------------------------------------------------------------

local function ceiling(srv, n)
  reset(srv)
  local partner = require "endaoment.partner"
  local client = partner.new { api_key = "sandbox-key", base_url = srv.url, max_connections = CONC,
    max_retries = 0 }
  local ok, failed, first = 0, 0, nil
  local function cb(res, err)
    if res then ok = ok + 1 else failed = failed + 1; first = first or err end
  end
  local cpu0 = cpu_s(srv.pid)
  local t0 = now()
  for i = 1, n do
    local h, err = client:provision_user_async({ partnerUserIdentifier = string.format("ceiling-user-%08d", i),
      firstName = "Ada", lastName = "Lovelace", email = "ada@example.com",
      address = { line1 = "1 Main St", city = "New York", state = "NY", zip = "10001", country = "USA" } }, nil, cb)
    if not h then die("provision_user_async refused: " .. tostring(err)) end
  end
  while ok + failed < n do
    client:wait(1000)
    if now() - t0 > RUN_LIMIT_S then die("ceiling: " .. ok .. " of " .. n .. " after " .. RUN_LIMIT_S .. " s") end
  end
  local wall = now() - t0
  local cpu = cpu_s(srv.pid) - cpu0
  client:close()
  if failed > 0 then die("ceiling: " .. failed .. " failed, first: " .. tostring(first)) end
  return wall, cpu
end

---------------------------------------------------------------------------
-- main
---------------------------------------------------------------------------

local function main()
  local batch = TMP .. "/batch.jsonl"
  plans.write(batch, N, { prefix = "bench", report_every = 1 })
  local big = TMP .. "/big.jsonl"
  plans.write(big, N_BIG, { prefix = "bench", report_every = 1 })
  local ideal = math.ceil(N / CONC) * STEPS * LATENCY / 1000
  local results = {}

  local srv = assert(sandbox_server.start({ "--latency-ms", tostring(LATENCY) }))
  servers[#servers + 1] = srv
  local db = 0
  local function sqlite()
    db = db + 1
    return "sqlite:" .. TMP .. "/j" .. db .. ".db"
  end

  -- 1. SQLite, one process x 32
  local walls, cpus = {}, {}
  for r = 1, REPS do walls[r], cpus[r] = run(srv, batch, sqlite(), 1, CONC, N) end
  local wall = median(walls)
  local sb_cpu = median(cpus)
  results.sqlite = wall / ideal
  local list = {}
  for i, w in ipairs(walls) do list[i] = string.format("%.2f", w) end
  print(string.format("journeys %s x %d requests, %d ms latency, SQLite, 1 process x %d: %.2f s vs ideal %.2f s = " ..
    "%.2f x ideal (target <= %.2f)  [median of %d: %s s]", commas(N), STEPS, LATENCY, CONC, wall, ideal,
    wall / ideal, TARGET.ratio, REPS, table.concat(list, ", ")))
  print(string.format("  sandbox CPU during the run: %.2f s of %.2f s (%.0f %% of one core): %s",
    sb_cpu, wall, 100 * sb_cpu / wall, sb_cpu / wall < 0.8 and "not the bottleneck" or "CLOSE TO ITS LIMIT"))

  -- 2. PostgreSQL, 4 processes x 8 on one batch file
  local okpg, pg = pcall(function() return require("spec.helpers.postgres").start() end)
  if not okpg then
    print("journeys, PostgreSQL: not available (" .. tostring(pg):match("^[^\n]*") .. ")")
  else
    servers[#servers + 1] = pg
    walls, cpus = {}, {}
    local last
    for r = 1, REPS do
      -- a fresh table for each run: a new database
      local dbname = "bench" .. r
      local okdb = os.execute(q(require("spec.helpers.postgres").bindir() .. "/createdb") ..
        " -h 127.0.0.1 -p " .. pg.port .. " -U postgres " .. dbname .. " >/dev/null 2>&1")
      if not okdb then die("createdb " .. dbname .. " failed") end
      local url = pg.url:gsub("/epartner$", "/" .. dbname)
      local pg0 = pg_cpu_s(pg)
      walls[r], cpus[r], last = run(srv, batch, url, PROCS, PER_PROC, N)
      socket.sleep(0.3) -- the server reaps its sessions' processes: their CPU time then counts
      last.pg_cpu = pg_cpu_s(pg) - pg0
    end
    wall, sb_cpu = median(walls), median(cpus)
    results.postgres = wall / ideal
    list = {}
    for i, w in ipairs(walls) do list[i] = string.format("%.2f", w) end
    print(string.format("journeys %s x %d requests, %d ms latency, PostgreSQL, %d processes x %d: %.2f s vs ideal " ..
      "%.2f s = %.2f x ideal (target <= %.2f)  [median of %d: %s s; until all %d exited]", commas(N), STEPS, LATENCY,
      PROCS, PER_PROC, wall, ideal, wall / ideal, TARGET.ratio, REPS, table.concat(list, ", "), PROCS))
    print(string.format("  sandbox CPU during the run: %.2f s of %.2f s (%.0f %% of one core): %s",
      sb_cpu, wall, 100 * sb_cpu / wall, sb_cpu / wall < 0.8 and "not the bottleneck" or "CLOSE TO ITS LIMIT"))
    print(string.format("  last run: first worker exited at %.2f s; %s claims found busy (deferred %d ms each), " ..
      "%s journeys found done by another worker", last.first_exit, commas(last.busy_waits), 100,
      commas(last.skipped)))
    print(string.format("  PostgreSQL CPU during the last run (server processes, all sessions): %.2f s; " ..
      "%d workers, the sandbox and PostgreSQL share %d CPU core(s)", last.pg_cpu, PROCS, CORES))
  end

  -- 4. the sandbox's own ceiling through 32 connections, at this latency and at none
  local creq = N * STEPS
  local cwall, ccpu = ceiling(srv, creq)
  local cideal = math.ceil(creq / CONC) * LATENCY / 1000
  print(string.format("  sandbox ceiling: %s provision_user through %d connections at %d ms: %.2f s vs ideal " ..
    "%.2f s = %.2f x; its CPU %.0f us per request = %s req/s on one core (the journeys need %s req/s at ideal)",
    commas(creq), CONC, LATENCY, cwall, cideal, cwall / cideal, 1e6 * ccpu / creq, commas(creq / ccpu),
    commas(N * STEPS / ideal)))
  srv.stop()

  -- 3. memory: one worker, 1,000 vs 10,000 journeys, at a lower latency (time only)
  srv = assert(sandbox_server.start({ "--latency-ms", tostring(MEM_LATENCY) }))
  servers[#servers + 1] = srv
  local small = TMP .. "/small.jsonl"
  plans.write(small, N, { prefix = "bench", report_every = 1 })
  local h1, c1, w1 = run_sampled(srv, small, sqlite(), N)
  local h2, c2, w2 = run_sampled(srv, big, sqlite(), N_BIG)
  results.mem = h2 - h1
  print(string.format("journeys memory: worker VmHWM %s KiB after %s journeys, %s KiB after %s: growth %+d KiB " ..
    "(target < %d KiB)  [%d ms latency, SQLite, 1 process x %d]", commas(h1), commas(N), commas(h2), commas(N_BIG),
    h2 - h1, TARGET.mem_kib, MEM_LATENCY, CONC))
  print(string.format("  worker CPU: %.2f s for %s journeys (%.2f ms each, %.0f s wall), " ..
    "%.2f s for %s (%.2f ms each, %.0f s wall)", c1, commas(N), 1000 * c1 / N, w1, c2, commas(N_BIG),
    1000 * c2 / N_BIG, w2))
  srv.stop()

  print()
  print("journeys summary:")
  local function line(name, ok, text)
    print(string.format("  %-38s %-5s %s", name, ok and "pass" or "MISS", text))
  end
  line(string.format("journeys %s, SQLite, 1 x %d", commas(N), CONC), results.sqlite <= TARGET.ratio,
    string.format("%.2f x ideal (<= %.2f)", results.sqlite, TARGET.ratio))
  if results.postgres then
    line(string.format("journeys %s, PostgreSQL, %d x %d", commas(N), PROCS, PER_PROC),
      results.postgres <= TARGET.ratio, string.format("%.2f x ideal (<= %.2f)", results.postgres, TARGET.ratio))
  else
    print(string.format("  %-38s %-5s %s", "journeys, PostgreSQL", "n/a", "PostgreSQL not available"))
  end
  line(string.format("worker VmHWM %s -> %s journeys", commas(N), commas(N_BIG)), results.mem < TARGET.mem_kib,
    string.format("%+d KiB (< %d KiB)", results.mem, TARGET.mem_kib))
end

local ok, err = xpcall(main, function(e)
  return tostring(e):match("^journeys%.lua: ") and e or debug.traceback(e)
end)
cleanup()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
