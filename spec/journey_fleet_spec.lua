-- The fleet kill matrix: bin/endaoment-journey workers sharing one batch and
-- one store (PostgreSQL, SQLite), killed with SIGKILL at random moments and
-- restarted, against one sandbox with latency, so kills land while requests
-- are in flight. Whatever the kills hit, the API must end up holding every
-- planned user, fund, pledge, grant and report exactly once, with the right
-- amounts. Then: a lost store, bad input, an unreachable database, --report.
--
-- Bounded: 6-10 kills per matrix, 50-400 ms apart; every wait has a
-- deadline. The RNG seed is printed with the figures and in every failure
-- message; FLEET_SEED=N reruns one. PostgreSQL is a throwaway cluster
-- (spec/helpers/postgres.lua): if it cannot start, the test fails.
local server = require "spec.helpers.sandbox_server"
local pghelper = require "spec.helpers.postgres"
local plans = require "spec.helpers.plans"
local cjson = require "cjson.safe"
local socket = require "socket"

local LUA = "lua5.4"
local LUA_PATH = "./lua/?.lua;./lua/?/init.lua;./?.lua;;"
local LUA_CPATH = "./build/lua5.4/?.so;;"
local LATENCY_MS = 20
local WAIT_SECONDS = 90       -- for the workers to finish once the kills are over
local CLI_SECONDS = 120       -- any single CLI run

local BASE_SEED = tonumber(os.getenv("FLEET_SEED")) or (os.time() % 1000000)

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function now() return socket.gettime() end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  assert(f:close())
end

local function mkdtemp()
  local dir = sh("mktemp -d /tmp/epartner-fleet.XXXXXX"):gsub("%s+$", "")
  assert(dir:match("^/tmp/epartner%-fleet%.%w+$"), dir)
  return dir
end

local function count(t)
  local n = 0
  for _ in pairs(t or {}) do n = n + 1 end
  return n
end

-- The environment of every CLI run: this tree, the sandbox, nothing inherited
-- that could point it elsewhere.
local function cli_env(url)
  return "env -u ENDAOMENT_ENV -u ENDAOMENT_BEARER_TOKEN LUA_PATH=" .. q(LUA_PATH) .. " LUA_CPATH=" ..
    q(LUA_CPATH) .. " ENDAOMENT_API_KEY=sandbox-key ENDAOMENT_BASE_URL=" .. q(url) .. " "
end

local function cli_cmd(url, args)
  return cli_env(url) .. LUA .. " bin/endaoment-journey " .. args
end

-- Runs the CLI to completion (bounded): exit code, stdout, stderr.
local function cli(dir, url, args)
  local out, err = dir .. "/cli.out", dir .. "/cli.err"
  local _, how, code = os.execute("timeout -s KILL " .. CLI_SECONDS .. " " .. cli_cmd(url, args) ..
    " >" .. q(out) .. " 2>" .. q(err))
  if how ~= "exit" then code = -1 end
  return code, read_file(out), read_file(err)
end

-- One background process with a known pid (the shell execs it, so $$ is its
-- pid): exited() polls without reaping, reap() collects the exit status,
-- kill() is idempotent.
local function proc_state(pid)
  local s = read_file("/proc/" .. pid .. "/stat")
  if s == "" then return nil end
  return s:match("%) (%a)")
end

local function spawn(cmd, out, err)
  local pipe = assert(io.popen("echo $$; exec " .. cmd .. " >" .. q(out) .. " 2>" .. q(err), "r"))
  local p = { pid = tonumber(pipe:read("l")), pipe = pipe, out = out, err = err, t0 = now() }
  assert(p.pid, "could not start: " .. cmd)
  function p.exited()
    if p.how then return true end
    local st = proc_state(p.pid)
    return st == nil or st == "Z"
  end
  function p.reap()
    if not p.how then
      local _, how, code = pipe:close()
      p.how, p.code = how, code
    end
    return p.how, p.code
  end
  function p.kill(sig)
    if not p.how then os.execute("kill -" .. (sig or "KILL") .. " " .. p.pid .. " 2>/dev/null") end
    return p.reap()
  end
  return p
end

-- Everything a test starts, stopped in its one finally (busted keeps one).
local function resources()
  local r = { procs = {}, servers = {}, dirs = {} }
  function r.cleanup()
    for _, p in ipairs(r.procs) do pcall(p.kill, "KILL") end
    for _, s in ipairs(r.servers) do pcall(s.stop) end
    for _, d in ipairs(r.dirs) do os.execute("rm -rf " .. q(d)) end
  end
  function r.dir()
    local d = mkdtemp()
    r.dirs[#r.dirs + 1] = d
    return d
  end
  function r.sandbox(args)
    local srv = assert(server.start(args))
    r.servers[#r.servers + 1] = srv
    return srv
  end
  function r.postgres()
    local pg = pghelper.start() -- raises, with the server log, when it cannot start
    r.servers[#r.servers + 1] = pg
    return pg
  end
  function r.spawn(cmd, out, err)
    local p = spawn(cmd, out, err)
    r.procs[#r.procs + 1] = p
    return p
  end
  return r
end

---------------------------------------------------------------------------
-- what the sandbox holds
---------------------------------------------------------------------------

local function sandbox_state(srv)
  local status, st = srv.control("GET", "/__sandbox/state")
  assert(status == 200, "GET /__sandbox/state: " .. tostring(status))
  return st
end

local function list_problems(problems)
  local shown = {}
  for i = 1, math.min(#problems, 25) do shown[i] = "  " .. problems[i] end
  if #problems > 25 then shown[#shown + 1] = "  ... and " .. (#problems - 25) .. " more" end
  return table.concat(shown, "\n")
end

-- Compares the sandbox's state with what the plans say, exactly: every
-- planned object once, nothing else, amounts and wiring right.
-- Returns a list of problems (empty when all is well) and the totals.
local function check_state(st, want)
  local problems = {}
  local function bad(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end

  local users_by_pid, user_id_of = {}, {}
  for id, u in pairs(st.users or {}) do
    local pid = u.partnerUserIdentifier
    users_by_pid[pid] = (users_by_pid[pid] or 0) + 1
    user_id_of[pid] = id
    if not want.users[pid] then bad("unplanned user %s", tostring(pid)) end
  end
  for pid in pairs(want.users) do
    if users_by_pid[pid] ~= 1 then bad("user %s exists %d times", pid, users_by_pid[pid] or 0) end
  end

  local funds_by_acct, fund_of = {}, {}
  for id, f in pairs(st.funds or {}) do
    local acct = f.partnerAccountIdentifier
    funds_by_acct[acct] = (funds_by_acct[acct] or 0) + 1
    fund_of[acct] = f
    if not want.funds[acct] then
      bad("unplanned fund %s", tostring(acct))
    else
      if f.userId ~= user_id_of[want.fund_user[acct]] then bad("fund %s belongs to another user", acct) end
      if f.usdcBalance ~= want.funds[acct] then
        bad("fund %s balance %s, its donations sum to %s", acct, tostring(f.usdcBalance), want.funds[acct])
      end
      if f.lifetimeDonationsUsdc ~= want.funds[acct] then
        bad("fund %s lifetime donations %s, want %s", acct, tostring(f.lifetimeDonationsUsdc), want.funds[acct])
      end
      if f.totalGrantedUsdc ~= want.fund_granted[acct] or f.grantCount ~= 1 then
        bad("fund %s granted %s in %s grants, want %s in 1", acct, tostring(f.totalGrantedUsdc),
          tostring(f.grantCount), want.fund_granted[acct])
      end
    end
    f.id = f.id or id
  end
  for acct in pairs(want.funds) do
    if funds_by_acct[acct] ~= 1 then bad("fund %s exists %d times", acct, funds_by_acct[acct] or 0) end
  end

  -- pledges: the multiset of partnerOperationIds must be exactly the planned set
  local ops = {}
  for _, p in pairs(st.pledges or {}) do
    local op = p.partnerOperationId
    ops[op] = (ops[op] or 0) + 1
    if not want.pledges[op] then
      bad("unplanned pledge %s", tostring(op))
    else
      if p.amountMicroDollars ~= want.pledges[op] then
        bad("pledge %s amount %s, planned %s", op, tostring(p.amountMicroDollars), want.pledges[op])
      end
      local f = fund_of[want.pledge_fund[op]]
      if not f or p.fundId ~= f.id then bad("pledge %s is on the wrong fund", op) end
    end
  end
  for op in pairs(want.pledges) do
    if ops[op] ~= 1 then bad("pledge %s recorded %d times", op, ops[op] or 0) end
  end

  local xfers = {}
  for _, s in pairs(st.submissions or {}) do
    local x = s.inboundCustodianTransfer and s.inboundCustodianTransfer.partnerFundingTransferId
    xfers[x] = (xfers[x] or 0) + 1
    if not want.grants[x] then
      bad("unplanned grant submission %s", tostring(x))
    else
      local f = fund_of[want.grant_fund[x]]
      if not f or s.originFundId ~= f.id then bad("grant %s is from the wrong fund", x) end
      if s.inboundCustodianTransfer.amountMicroDollars ~= want.grants[x] then
        bad("grant %s amount %s, planned %s", x, tostring(s.inboundCustodianTransfer.amountMicroDollars),
          want.grants[x])
      end
    end
  end
  for x in pairs(want.grants) do
    if xfers[x] ~= 1 then bad("grant %s submitted %d times", x, xfers[x] or 0) end
  end

  local eins = {}
  for _, r in pairs(st.reports or {}) do
    eins[r.ein] = (eins[r.ein] or 0) + 1
    if not want.reports[r.ein] then bad("unplanned report for EIN %s", tostring(r.ein)) end
  end
  for ein in pairs(want.reports) do
    if eins[ein] ~= 1 then bad("report for EIN %s filed %d times", ein, eins[ein] or 0) end
  end

  local totals = { users = count(st.users), funds = count(st.funds), pledges = count(st.pledges),
    submissions = count(st.submissions), reports = count(st.reports) }
  return problems, totals
end

-- "2026-11-21T10:15:02.123Z" -> seconds since the epoch (UTC, no os.time:
-- it reads local time).
local function epoch(iso)
  local y, mo, d, h, mi, s, ms = iso:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.(%d+)Z$")
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s) + tonumber(ms) / 1000
end

-- The operation a logged request performs, the same on every resend.
local function op_of(entry)
  local body = cjson.decode(entry.body or "") or {}
  if entry.path == "/v1/auth/partner/users" then return "user " .. tostring(body.partnerUserIdentifier) end
  if entry.path == "/v1/funds/partner" then return "fund " .. tostring(body.partnerAccountIdentifier) end
  local h = entry.headers or {}
  local key = body.idempotencyKey or h["idempotency-key"] or h["x-idempotency-key"]
  if key then return entry.path .. " " .. tostring(key) end
  if body.ein then return entry.path .. " ein " .. tostring(body.ein) end
  return entry.path .. " " .. tostring(entry.body)
end

-- Reads the request log against the kill times: a request sent again later
-- lost its outcome (no answer, or an answer never saved) to a kill between
-- the two sends. Returns { requests, ops (distinct operations), resent,
-- unexplained (resends with no kill in between), in_flight (kills that cost
-- at least one outcome) }; each kill gets .lost.
local function analyse_log(log, kills)
  local by_op, order = {}, {}
  local a = { requests = #log, ops = 0, resent = 0, unexplained = {}, in_flight = 0 }
  for _, e in ipairs(log) do
    local op = op_of(e)
    if not by_op[op] then by_op[op] = {}; order[#order + 1] = op end
    local list = by_op[op]
    list[#list + 1] = epoch(e.time)
  end
  a.ops = #order
  for _, k in ipairs(kills) do k.lost = 0 end
  for _, op in ipairs(order) do
    local times = by_op[op]
    for i = 2, #times do
      a.resent = a.resent + 1
      -- The sender died after sending (the sandbox may read a dead worker's
      -- request from its socket a little later: 50 ms of slack) and before
      -- the resend: most likely the first kill after the first send.
      local cause, any
      for _, k in ipairs(kills) do
        if k.t <= times[i] + 0.005 then
          if not cause and k.t >= times[i - 1] - 0.05 then cause = k end
          if k.t >= times[i - 1] - 1.0 then any = k end
        end
      end
      cause = cause or any
      if cause then cause.lost = cause.lost + 1 else a.unexplained[#a.unexplained + 1] = op end
    end
  end
  for _, k in ipairs(kills) do if k.lost > 0 then a.in_flight = a.in_flight + 1 end end
  return a
end

---------------------------------------------------------------------------
-- the kill matrix
---------------------------------------------------------------------------

-- o: res, srv, store (spec), workers, n_plans, prefix, seed, name.
local function kill_matrix(o)
  local seed = o.seed
  local function why(msg) return string.format("%s [%s, seed %d; rerun with FLEET_SEED=%d]", msg, o.name, seed,
    BASE_SEED) end
  math.randomseed(seed)
  local dir = o.res.dir()
  local file = dir .. "/batch.jsonl"
  local list = plans.write(file, o.n_plans, { prefix = o.prefix })
  local want = plans.expected(list)
  local cmd = cli_cmd(o.srv.url, "--batch " .. q(file) .. " --store " .. q(o.store) .. " --concurrency 8 --quiet")
  local t_start = now()

  local live, all = {}, {}
  local function start(slot)
    local n = #all + 1
    local p = o.res.spawn(cmd, dir .. "/w" .. n .. ".out", dir .. "/w" .. n .. ".err")
    p.n, p.slot = n, slot
    all[n], live[slot] = p, p
  end
  local function worker_logs()
    local out = {}
    for _, p in ipairs(all) do
      local e = read_file(p.err) .. read_file(p.out)
      if e ~= "" then out[#out + 1] = "worker " .. p.n .. " (" .. tostring(p.how) .. " " .. tostring(p.code) ..
        "): " .. e:sub(1, 600) end
    end
    return table.concat(out, "\n")
  end
  for s = 1, o.workers do start(s) end

  -- The kills: at random moments, each victim restarted at once with the same command.
  local planned = math.random(6, 10)
  local kills, early = {}, false
  for _ = 1, planned do
    socket.sleep(math.random(50, 400) / 1000)
    for _, p in ipairs(live) do
      if p.exited() then early = true end -- a worker ended on its own: the batch is through
    end
    if early then break end
    local slot = math.random(o.workers)
    local victim = live[slot]
    local t = now()
    local how, code = victim.kill("KILL")
    if how == "signal" then
      kills[#kills + 1] = { t = t, worker = victim.n, age_ms = math.floor((t - victim.t0) * 1000) }
    else
      -- it had just finished: it never saw the signal, and must have succeeded
      assert(how == "exit" and code == 0, why("worker " .. victim.n .. " ended " .. tostring(how) .. " " ..
        tostring(code) .. "\n" .. worker_logs()))
      early = true
    end
    start(slot)
    if early then break end
  end
  local t_kills = now()

  -- Every worker finishes on its own, within the deadline, and says all is well.
  local deadline = now() + WAIT_SECONDS
  for _, p in ipairs(live) do
    while not p.exited() and now() < deadline do socket.sleep(0.05) end
    if not p.exited() then
      error(why("worker " .. p.n .. " still running " .. WAIT_SECONDS .. " s after the kills\n" .. worker_logs()))
    end
    local how, code = p.reap()
    assert(how == "exit" and code == 0, why("worker " .. p.n .. " ended " .. tostring(how) .. " " ..
      tostring(code) .. "\n" .. worker_logs()))
  end
  local t_done = now()

  -- One final worker: everything is already done.
  local code, out, err = cli(dir, o.srv.url, "--batch " .. q(file) .. " --store " .. q(o.store) ..
    " --concurrency 8 --json")
  assert(code == 0, why("final worker exited " .. tostring(code) .. ": " .. err .. out))
  local summary = cjson.decode(out:match("([^\n]+)\n?$") or "")
  assert(type(summary) == "table", why("final worker printed no JSON summary: " .. out))
  assert(summary.ok == true and summary.failed == 0 and summary.invalid == 0 and summary.rejected == 0,
    why("final worker's summary: " .. out))
  assert(summary.total == o.n_plans and summary.skipped == o.n_plans,
    why("final worker found work left: " .. out))

  -- The API holds every planned object exactly once.
  local problems, totals = check_state(sandbox_state(o.srv), want)
  local a = analyse_log(o.srv.logged(), kills)
  local kill_list = {}
  for i, k in ipairs(kills) do
    kill_list[i] = string.format("w%d@%dms:%d", k.worker, k.age_ms, k.lost)
  end
  local figures = string.format(
    "fleet %s: seed %d, %d journeys, %d workers x 8, %d kills (%d planned%s; %d landed with requests in flight: " ..
    "%d outcomes lost and re-sent) [%s]; %d requests for %d operations (planned %d); " ..
    "totals: %d users, %d funds, %d pledges, %d submissions, %d reports; kills over in %.1f s, " ..
    "all done in %.1f s",
    o.name, seed, o.n_plans, o.workers, #kills, planned, early and ", batch finished first" or "", a.in_flight,
    a.resent, table.concat(kill_list, " "), a.requests, a.ops, plans.requests(list),
    totals.users, totals.funds, totals.pledges, totals.submissions, totals.reports,
    t_kills - t_start, t_done - t_start)
  io.stdout:write("\n", figures, "\n")
  io.stdout:flush()
  assert(#problems == 0, why(#problems .. " problem(s) in the sandbox's state:\n" .. list_problems(problems) ..
    "\n" .. figures))
  assert.equal(want.n_users, totals.users)
  assert.equal(want.n_funds, totals.funds)
  assert.equal(want.n_pledges, totals.pledges)
  assert.equal(want.n_grants, totals.submissions)
  assert.equal(want.n_reports, totals.reports)
  -- Every planned operation reached the API, and no other one.
  assert.equal(plans.requests(list), a.ops, why("operations in the request log"))
  -- A request sent twice without a kill in between would mean two workers ran one journey.
  assert(#a.unexplained == 0, why("re-sent without a kill in between: " ..
    table.concat(a.unexplained, ", ", 1, math.min(10, #a.unexplained))))
  -- The matrix means something only if most kills found work to interrupt.
  assert(#kills >= 4, why("only " .. #kills .. " kills landed before the batch finished: " .. figures))
  return a, kills
end

describe("journey fleet", function()
  local res
  before_each(function() res = resources() end)

  it("a. PostgreSQL store, 3 workers killed at random: every object exactly once", function()
    finally(function() res.cleanup() end)
    local pg = res.postgres()
    local srv = res.sandbox({ "--latency-ms", tostring(LATENCY_MS) })
    kill_matrix({ res = res, srv = srv, store = pg.url, workers = 3, n_plans = 400, prefix = "pg",
      seed = BASE_SEED, name = "postgres" })
  end)

  it("b. SQLite store, 2 workers killed at random: every object exactly once", function()
    finally(function() res.cleanup() end)
    local srv = res.sandbox({ "--latency-ms", tostring(LATENCY_MS) })
    local dir = res.dir()
    kill_matrix({ res = res, srv = srv, store = "sqlite:" .. dir .. "/journeys.db", workers = 2, n_plans = 300,
      prefix = "sq", seed = BASE_SEED + 1, name = "sqlite" })
  end)

  it("c. a deleted store: the batch run again creates nothing", function()
    finally(function() res.cleanup() end)
    local srv = res.sandbox()
    local dir = res.dir()
    local file = dir .. "/batch.jsonl"
    local list = plans.write(file, 20, { prefix = "lost" })
    local db = dir .. "/journeys.db"
    local args = "--batch " .. q(file) .. " --store " .. q("sqlite:" .. db) .. " --concurrency 8"
    local code, out, err = cli(dir, srv.url, args)
    assert.equal(0, code, err .. out)
    local before = sandbox_state(srv)
    local problems, totals = check_state(before, plans.expected(list))
    assert(#problems == 0, list_problems(problems))
    local n_log = #srv.logged()
    assert.equal(plans.requests(list), n_log)

    for _, suffix in ipairs({ "", "-wal", "-shm", ".claims" }) do os.remove(db .. suffix) end
    assert.equal("", read_file(db))
    code, out, err = cli(dir, srv.url, args .. " --report " .. q(dir .. "/report.jsonl"))
    assert.equal(0, code, err .. out)
    assert.matches("20 journeys: 20 done, 0 already done, 0 failed", out, 1, true)

    -- Every step went out again, the same operation under the same key
    -- (a user or fund by its partner identifier), and created nothing.
    local log = srv.logged()
    assert.equal(2 * n_log, #log)
    local first, second = {}, {}
    for i = 1, n_log do first[#first + 1] = op_of(log[i]) end
    for i = n_log + 1, #log do
      second[#second + 1] = op_of(log[i])
      assert(log[i].status == 200 or log[i].status == 201, log[i].path .. " answered " .. tostring(log[i].status))
    end
    table.sort(first)
    table.sort(second)
    assert.same(first, second)
    local after = sandbox_state(srv)
    local problems2, totals2 = check_state(after, plans.expected(list))
    assert(#problems2 == 0, list_problems(problems2))
    assert.same(totals, totals2)
    for id, f in pairs(before.funds) do
      assert.equal(f.usdcBalance, after.funds[id].usdcBalance)
      assert.equal(f.totalGrantedUsdc, after.funds[id].totalGrantedUsdc)
    end
    -- ... and the ids the second run reports are the ones the first run created.
    for line in io.lines(dir .. "/report.jsonl") do
      local r = assert(cjson.decode(line))
      assert.equal("done", r.outcome)
      assert.is_table(before.users[r.user_id])
      assert.is_table(before.funds[r.fund_id])
      assert.is_table(before.submissions[r.grant_id])
    end
  end)

  it("d. bad input sends nothing; an unreachable database is a config error that keeps its password", function()
    finally(function() res.cleanup() end)
    local srv = res.sandbox()
    local dir = res.dir()
    local file = dir .. "/bad.jsonl"
    local list = plans.list(5, { prefix = "bad" })
    local lines = {}
    for i, p in ipairs(list) do lines[i] = plans.encode(p) end
    lines[3] = lines[3]:sub(1, 40)                                              -- malformed JSON
    lines[5] = lines[5]:gsub('"pledgedAmountMicroDollars":"(%d+)"', '"pledgedAmountMicroDollars":%1.5', 1) -- a float
    assert.matches("MicroDollars\":%d+%.5", lines[5])
    write_file(file, table.concat(lines, "\n") .. "\n")

    local code, out, err = cli(dir, srv.url, "--batch " .. q(file) .. " --store " .. q("sqlite:" .. dir .. "/j.db"))
    assert.equal(2, code, err .. out)
    assert.matches(file .. ":3:", err, 1, true)
    assert.matches(file .. ":5:", err, 1, true)
    for _, n in ipairs({ 1, 2, 4 }) do assert.not_matches(file .. ":" .. n .. ":", err, 1, true) end
    assert.matches("nothing was sent", err, 1, true)
    assert.same({}, srv.logged())

    -- A database nobody listens on: the password never appears, in any output.
    local good = dir .. "/good.jsonl"
    plans.write(good, 3, { prefix = "good" })
    local port = pghelper.free_port()
    local url = "postgres://app:s3cret-pw@127.0.0.1:" .. port .. "/db"
    code, out, err = cli(dir, srv.url, "--batch " .. q(good) .. " --store " .. q(url))
    local all = out .. err
    assert.equal(2, code, all)
    assert.matches("nothing was sent", err, 1, true)
    assert.matches("postgres://app:***@127.0.0.1:" .. port .. "/db", err, 1, true)
    assert.matches("config", err, 1, true)
    assert.matches("cannot open store", err, 1, true)
    assert(not all:find("s3cret-pw", 1, true), "the password leaked:\n" .. all)
    assert.same({}, srv.logged())
  end)

  it("e. --report: one line per journey; a re-run skips them all; a refused grant exits 1 with advice", function()
    finally(function() res.cleanup() end)
    local srv = res.sandbox()
    local dir = res.dir()
    local file = dir .. "/batch.jsonl"
    local list = plans.list(12, { prefix = "rep" })
    -- blank lines do not count as plans, but line numbers count them
    local text = {}
    for i, p in ipairs(list) do
      text[#text + 1] = plans.encode(p)
      if i == 4 then text[#text + 1] = "" end
    end
    write_file(file, table.concat(text, "\n") .. "\n")
    local function line_of(i) return i <= 4 and i or i + 1 end
    local store = q("sqlite:" .. dir .. "/j.db")
    local report = dir .. "/report.jsonl"
    local function read_report()
      local out = {}
      for l in io.lines(report) do out[#out + 1] = assert(cjson.decode(l), l) end
      table.sort(out, function(a, b) return a.line < b.line end)
      return out
    end

    local code, out, err = cli(dir, srv.url, "--batch " .. q(file) .. " --store " .. store .. " --report " .. q(report))
    assert.equal(0, code, err .. out)
    local st = sandbox_state(srv)
    local rows = read_report()
    assert.equal(#list, #rows)
    for i, r in ipairs(rows) do
      local p = list[i]
      assert.equal(line_of(i), r.line)
      assert.equal("done", r.outcome)
      assert.equal("user:" .. p.user.partnerUserIdentifier, r.journey_id)
      assert.equal(p.user.partnerUserIdentifier, st.users[r.user_id].partnerUserIdentifier)
      assert.equal(p.fund.partnerAccountIdentifier, st.funds[r.fund_id].partnerAccountIdentifier)
      assert.equal(2, #r.donation_ids)
      for k, did in ipairs(r.donation_ids) do
        assert.equal(p.donations[k].partnerOperationId, st.pledges[did].partnerOperationId)
      end
      assert.equal(p.grant.inboundCustodianTransfer.partnerFundingTransferId,
        st.submissions[r.grant_id].inboundCustodianTransfer.partnerFundingTransferId)
      assert.is_nil(r.error_kind)
    end

    local n_log = #srv.logged()
    code, out, err = cli(dir, srv.url, "--batch " .. q(file) .. " --store " .. store .. " --report " .. q(report))
    assert.equal(0, code, err .. out)
    rows = read_report()
    assert.equal(#list, #rows)
    for i, r in ipairs(rows) do
      assert.equal(line_of(i), r.line)
      assert.equal("skipped", r.outcome)
    end
    assert.equal(n_log, #srv.logged()) -- skipped: nothing sent

    -- A grant the API refuses: exit 1, the line says so and what to do.
    local refused = dir .. "/refused.jsonl"
    local rlist = plans.list(3, { prefix = "ref" })
    rlist[2].grant.grants[1].destinationOrgId = plans.UNKNOWN_ORG
    plans.write(refused, rlist)
    code, out, err = cli(dir, srv.url, "--batch " .. q(refused) .. " --store " .. store .. " --report " .. q(report))
    assert.equal(1, code, err .. out)
    rows = read_report()
    assert.equal(3, #rows)
    assert.equal("done", rows[1].outcome)
    assert.equal("done", rows[3].outcome)
    local r = rows[2]
    assert.equal(2, r.line)
    assert.equal("rejected", r.outcome)
    assert.equal("http", r.error_kind)
    assert.equal("grant", r.step)
    assert.matches("not a known organization", r.error, 1, true)
    assert.is_string(r.advice)
    assert.matches("fix that step in the plan", r.advice, 1, true)
    assert.is_string(r.user_id)
    assert.is_string(r.fund_id)
    assert.equal(2, #r.donation_ids)
    assert.matches(refused .. ":2 ", err, 1, true)
    assert.matches("what to do:", err, 1, true)
  end)
end)
