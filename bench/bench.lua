-- bench/bench.lua: the Lua side of `make bench` (bench/run.sh drives it).
--
--   lua bench/bench.lua freeport                     a free 127.0.0.1 port
--   lua bench/bench.lua canned                       the canned GrantSubmission answer (JSON)
--   lua bench/bench.lua prepare BODY_FILE            writes the bytes the SDK posts; prints its user agent
--   lua bench/bench.lua seq URL SECONDS MAX WARMUP   client:submit_grant, sequential
--   lua bench/bench.lua socket URL SECONDS MAX WARMUP  socket.http + cjson, sequential
--   lua bench/bench.lua async URL N CONNS WARMUP     N submit_grant_async through CONNS connections
--   lua bench/bench.lua encode SECONDS               core.prepare of 50 grants vs cjson.encode
--   lua bench/bench.lua memory URL N1 N2             VmRSS after N1 and after N2 requests
--   lua bench/bench.lua report RESULTS_FILE WHAT     prints one figure (or the summary) from results
--
-- Measurements print key=value lines; `report` formats them. Every loop is
-- bounded by a count and by a time.
local API_KEY = "bench-key-000000000000"
local PATH = "/v1/transfers/partner/grant-submissions"

local unpack = table.unpack or unpack -- luacheck: ignore

local function die(msg)
  io.stderr:write("bench.lua: ", msg, "\n")
  os.exit(1)
end

local function now_s()
  return require("socket").gettime()
end

local function median(xs)
  local t = {}
  for i, v in ipairs(xs) do t[i] = v end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

-- A deterministic id (UUID v4 shape) so that every run posts bodies of the same size.
local function fake_uuid(i)
  return string.format("%08x-0000-4000-8000-%012x", 0x5eed0000 + i, i)
end

-- The grant submission every sequential figure posts: one grant.
-- n grants for the encoding figure.
local function grant_body(n)
  local grants = {}
  for i = 1, n do
    grants[i] = {
      amountMicroDollars = "1000000",
      destinationOrgId = fake_uuid(1000 + i),
      specialInstructions = "In memory of grant " .. i,
    }
  end
  return {
    originFundId = fake_uuid(1),
    inboundCustodianTransfer = {
      amountMicroDollars = tostring(n * 1000000),
      partnerFundingTransferId = "journal-000001",
      sourcePartnerAccountIdentifier = "omnibus-account-00001",
      destinationPartnerAccountIdentifier = "example-account-00001",
      settledAtUtc = "2026-05-04T14:32:01.000Z",
    },
    grants = grants,
  }
end

local function canned_json()
  local cjson = require "cjson"
  local sub = {
    id = fake_uuid(7), partnerId = fake_uuid(8), originFundId = fake_uuid(1), status = "Accepted",
    inboundCustodianTransfer = {
      amountMicroDollars = "1000000", status = "ReportedSettled",
      partnerFundingTransferId = "journal-000001",
      sourcePartnerAccountIdentifier = "omnibus-account-00001",
      destinationPartnerAccountIdentifier = "example-account-00001",
      settledAtUtc = "2026-05-04T14:32:01.000Z",
    },
    grants = { {
      asyncGrantTransferId = fake_uuid(9), amountMicroDollars = "1000000", hideMyInfoFromOrg = false,
      destinationOrgId = fake_uuid(1001), destinationSubprojectId = cjson.null,
      specialInstructions = "In memory of grant 1",
    } },
  }
  return cjson.encode(sub)
end

local function new_client(url, extra)
  local partner = require "endaoment.partner"
  local opts = { api_key = API_KEY, base_url = url }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return partner.new(opts)
end

-- CPU µs per call of fn over a slice of `seconds`, calling it `batch` times
-- between clock reads.
local function cpu_us(fn, seconds, batch)
  local t0 = os.clock()
  local t1, n = t0, 0
  while t1 - t0 < seconds do
    for _ = 1, batch do fn() end
    n = n + batch
    t1 = os.clock()
  end
  return (t1 - t0) / n * 1e6
end

local function rss_kib()
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)%s*kB"))
end

-- Runs fn() `warmup` times, then until `seconds` have passed or `max` calls.
local function rate(fn, seconds, max, warmup)
  for _ = 1, warmup do fn() end
  local t0 = now_s()
  local t1, n = t0, 0
  while n < max and t1 - t0 < seconds do
    fn()
    n = n + 1
    t1 = now_s()
  end
  return n, t1 - t0
end

local cmd = {}

function cmd.freeport()
  local socket = require "socket"
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  print(port)
end

function cmd.canned()
  io.write(canned_json())
end

-- The bytes client:submit_grant posts for grant_body(1) (with a fixed
-- idempotency key, which is the only part that differs between calls).
function cmd.prepare(file)
  local core = require "endaoment.partner.core"
  local json = assert(core.prepare("submit_grant", grant_body(1), { idempotency_key = fake_uuid(2) }))
  local f = assert(io.open(file, "wb"))
  f:write(json)
  f:close()
  local client = new_client("http://127.0.0.1:1")
  print(client.user_agent)
  client:close()
end

function cmd.seq(url, seconds, max, warmup)
  local client = new_client(url)
  local body = grant_body(1)
  local function one()
    local res, err = client:submit_grant(body)
    if not res then die("submit_grant failed: " .. tostring(err)) end
  end
  local n, dt = rate(one, tonumber(seconds), tonumber(max), tonumber(warmup))
  client:close()
  print(string.format("requests=%d seconds=%.6f rate=%.1f", n, dt, n / dt))
end

-- The transfer alone: the client's transport posting one request planned
-- once (the same bytes and headers submit_grant sends), no planning, no
-- decoding: libcurl plus the C binding.
function cmd.transport(url, seconds, max, warmup)
  local partner = require "endaoment.partner"
  local client = new_client(url)
  local req = assert(partner._PLANNERS.submit_grant(client, grant_body(1)))
  local t = client.transport
  local function one()
    local res, err = t:request(req)
    if not res or res.status ~= 201 then die("transport: " .. tostring(err or res.status)) end
  end
  local n, dt = rate(one, tonumber(seconds), tonumber(max), tonumber(warmup))
  client:close()
  print(string.format("requests=%d seconds=%.6f rate=%.1f", n, dt, n / dt))
end

-- CPU time per call of the parts of submit_grant that are not the transfer
-- (os.clock, `reps` alternating slices of `seconds`, medians): prepare
-- (the derived key + core.prepare, what the planner calls), decode
-- (core.decode of the canned answer, what the client decodes answers with;
-- cjson.decode of it too, for reference), and the whole call over a transport
-- that hands back the canned answer at once (no I/O): planner, retry
-- bookkeeping, result mapping, meta.
function cmd.breakdown(seconds, reps)
  local core = require "endaoment.partner.core"
  local cjson = require "cjson"
  seconds, reps = tonumber(seconds), tonumber(reps or 7)
  local client = new_client("http://127.0.0.1:1")
  local body = grant_body(1)
  local answer = canned_json()
  local headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#answer),
    connection = "keep-alive", server = "nginx", date = "Wed, 02 Dec 2026 12:00:00 GMT" }
  client.transport:close()
  client.transport = { name = "canned", request = function()
    return { status = 201, body = answer, headers = headers, sends = 1, reused = true, elapsed_ms = 0.05,
      http_version = "1.1" }
  end }
  local nid = body.inboundCustodianTransfer.partnerFundingTransferId
  local popts = { strict = false }
  local parts = {
    prepare = function()
      popts.idempotency_key = core.derive_key(client.key_namespace, "submit_grant", nid)
      if not core.prepare("submit_grant", body, popts) then die("prepare refused the body") end
    end,
    decode = function() if not core.decode(answer) then die("core.decode failed") end end,
    cjson_decode = function() if not cjson.decode(answer) then die("cjson.decode failed") end end,
    call = function()
      local res, err = client:submit_grant(body)
      if not res then die("canned submit_grant failed: " .. tostring(err)) end
    end,
  }
  local order = { "prepare", "decode", "cjson_decode", "call" }
  local function slice(fn) return cpu_us(fn, seconds, 100) end
  for _, k in ipairs(order) do for _ = 1, 500 do parts[k]() end end
  local got = {}
  for _ = 1, reps do
    for _, k in ipairs(order) do
      got[k] = got[k] or {}
      got[k][#got[k] + 1] = slice(parts[k])
    end
  end
  print(string.format("prepare_us=%.3f decode_us=%.3f cjson_decode_us=%.3f call_us=%.3f reps=%d",
    median(got.prepare), median(got.decode), median(got.cjson_decode), median(got.call), reps))
end

-- What a Lua user writes today without the SDK: socket.http (one TCP
-- connection per request; it has no keep-alive) and cjson.
function cmd.socket(url, seconds, max, warmup)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local cjson = require "cjson"
  local body = grant_body(1)
  body.idempotencyKey = fake_uuid(2)
  local target = url .. PATH
  local function one()
    local json = cjson.encode(body)
    local out = {}
    local ok, code = http.request {
      url = target, method = "POST",
      headers = {
        ["content-type"] = "application/json", accept = "application/json",
        ["content-length"] = tostring(#json), ["x-api-key"] = API_KEY,
      },
      source = ltn12.source.string(json),
      sink = ltn12.sink.table(out),
    }
    if not ok or code ~= 201 then die("socket.http failed: " .. tostring(code)) end
    local res = cjson.decode(table.concat(out))
    if type(res) ~= "table" then die("socket.http: bad answer") end
  end
  local n, dt = rate(one, tonumber(seconds), tonumber(max), tonumber(warmup))
  print(string.format("requests=%d seconds=%.6f rate=%.1f", n, dt, n / dt))
end

-- N grant submissions at once through the async client (issue 6, part 1):
-- submit all, then wait until every callback has run. Wall time from the
-- first submit to the last completion. A warm-up batch first opens the
-- connections, as a long-lived client would have them.
function cmd.async(url, n, conns, warmup)
  n, conns, warmup = tonumber(n), tonumber(conns), tonumber(warmup)
  local ok, client = pcall(new_client, url, { max_connections = conns })
  if not ok or type(client) ~= "table" or client.submit_grant_async == nil then
    if ok and type(client) == "table" then client:close() end
    print("available=0")
    return
  end
  local body = grant_body(1)
  local done, failed, first_err = 0, 0, nil
  local function cb(res, err)
    done = done + 1
    if not res then
      failed = failed + 1
      first_err = first_err or tostring(err)
    end
  end
  local function batch(count, limit_s)
    done, failed = 0, 0
    local t0 = now_s()
    for _ = 1, count do
      local h, err = client:submit_grant_async(body, nil, cb)
      if not h then die("submit_grant_async refused: " .. tostring(err)) end
    end
    while done < count do
      if now_s() - t0 > limit_s then die("async: " .. done .. " of " .. count .. " done after " .. limit_s .. " s") end
      client:wait(1000)
    end
    local dt = now_s() - t0
    if failed > 0 then die("async: " .. failed .. " failed, first: " .. tostring(first_err)) end
    return dt
  end
  if warmup > 0 then batch(warmup, 30) end
  local dt = batch(n, 60)
  if client.pending and client:pending() ~= 0 then die("async: pending() is not 0 after all callbacks") end
  client:close()
  print(string.format("available=1 requests=%d wall_ms=%.3f", n, dt * 1000))
end

-- Validate + encode a 50-grant submission vs cjson.encode of the same table
-- (CPU time, os.clock). The body has no idempotencyKey, as a user's would,
-- so prepare also generates one (a UUID v4) each time, as submit_grant does.
-- REPS alternating slices of `seconds` each; noise only ever slows a slice
-- down, so the best slice of each is reported (and the median for context).
function cmd.encode(seconds, reps)
  local core = require "endaoment.partner.core"
  local cjson = require "cjson"
  seconds, reps = tonumber(seconds), tonumber(reps or 9)
  local body = grant_body(50)
  local function bench(fn) return cpu_us(fn, seconds, 50) end
  local function prep()
    local json = core.prepare("submit_grant", body)
    if not json then die("prepare refused the 50-grant body") end
  end
  local function enc() cjson.encode(body) end
  for _ = 1, 200 do prep(); enc() end
  local p, c, ratio = {}, {}, {}
  for r = 1, reps do -- alternate, so that drift hits both alike
    p[r] = bench(prep)
    c[r] = bench(enc)
    ratio[r] = p[r] / c[r] -- each pair's own ratio: a slow moment hits both of its slices
  end
  print(string.format("prepare_us=%.3f cjson_us=%.3f prepare_med_us=%.3f cjson_med_us=%.3f ratio_med=%.4f " ..
    "reps=%d prepare_bytes=%d cjson_bytes=%d", math.min(unpack(p)), math.min(unpack(c)), median(p), median(c),
    median(ratio), reps, #core.prepare("submit_grant", body), #cjson.encode(body)))
end

-- Resident memory of the blocking client: after n1 requests, then after n2
-- in all; a full collection before each reading.
function cmd.memory(url, n1, n2)
  n1, n2 = tonumber(n1), tonumber(n2)
  local client = new_client(url)
  local body = grant_body(1)
  local t0 = now_s()
  local function run(k)
    for _ = 1, k do
      local res, err = client:submit_grant(body)
      if not res then die("submit_grant failed: " .. tostring(err)) end
    end
    if now_s() - t0 > 300 then die("memory: over 300 s") end
  end
  run(n1)
  collectgarbage("collect"); collectgarbage("collect")
  local rss1, heap1 = rss_kib(), collectgarbage("count")
  run(n2 - n1)
  collectgarbage("collect"); collectgarbage("collect")
  local rss2, heap2 = rss_kib(), collectgarbage("count")
  client:close()
  print(string.format("n1=%d n2=%d rss1_kib=%d rss2_kib=%d heap1_kib=%.1f heap2_kib=%.1f seconds=%.1f",
    n1, n2, rss1, rss2, heap1, heap2, now_s() - t0))
end

---------------------------------------------------------------------------
-- report
---------------------------------------------------------------------------

local function commas(x)
  local s = tostring(math.floor(x + 0.5))
  local sign, digits = s:match("^(-?)(%d+)$")
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. digits
end

-- results file: lines "name key=value key=value ..."; the same name may repeat (repetitions).
local function load_results(file)
  local r = {}
  for line in io.lines(file) do
    local name, rest = line:match("^(%S+)%s*(.*)$")
    if name then
      local kv = {}
      for k, v in rest:gmatch("([%w_]+)=(%S+)") do kv[k] = tonumber(v) or v end
      r[name] = r[name] or {}
      table.insert(r[name], kv)
    end
  end
  return r
end

local function col(rows, key)
  local t = {}
  for _, row in ipairs(rows or {}) do
    if row[key] ~= nil then t[#t + 1] = row[key] end
  end
  return t
end

-- The targets of issue 13 (bench/README.md).
local TARGET = { seq = 0.80, seq_us = 10, async = 1.20, encode = 1.30, memory_kib = 1024, stable_pct = 5 }

local figure = {}

function figure.machine(r)
  local m = r.machine and r.machine[1] or {}
  local cpu = (m.cpu or "?"):gsub("_", " ")
  local detail = {}
  if m.vendor then detail[#detail + 1] = tostring(m.vendor) end
  if m.family then detail[#detail + 1] = "family " .. m.family .. " model " .. tostring(m.model) ..
    " stepping " .. tostring(m.stepping) end
  if m.mhz then detail[#detail + 1] = string.format("%.0f MHz", m.mhz) end
  print(string.format("machine: %s x %s (%s); Linux %s; libcurl %s; %s; nginx %s", m.nproc or "?", cpu,
    table.concat(detail, ", "), m.kernel or "?", m.curl or "?", (m.lua or "?"):gsub("_", " "), m.nginx or "?"))
  print("  pinning: " .. ((m.pinned == "yes") and "servers on CPU 0, clients on CPU 1 (taskset)" or
    "none (taskset missing, or one CPU): client and servers share the CPUs"))
end

function figure.ceiling(r)
  local w = median(col(r.wrk1, "rate"))
  if w then
    print(string.format("server ceiling: wrk, 1 connection, same request: %s req/s (median of %d)",
      commas(w), #col(r.wrk1, "rate")))
  end
end

-- Rows of alternating repetitions split into two halves (odd, even): the
-- same figure measured twice in one run, to show how far it can be trusted.
local function halves(rows, key)
  local a, b = {}, {}
  for i, row in ipairs(rows or {}) do
    if row[key] ~= nil then
      if i % 2 == 1 then a[#a + 1] = row[key] else b[#b + 1] = row[key] end
    end
  end
  return a, b
end

-- Repetition i's SDK rate over its own raw rate (measured a second apart):
-- the machine's drift, which moves both, cancels out of each ratio.
local function by_rep(rows)
  local t = {}
  for i, row in ipairs(rows or {}) do t[row.rep or i] = row end
  return t
end

local function rep_ratios(r)
  local out, raw = {}, by_rep(r.raw)
  for i, row in ipairs(r.seq or {}) do
    local rw = raw[row.rep or i]
    if rw and row.rate and rw.rate then out[#out + 1] = { ratio = row.rate / rw.rate } end
  end
  return out
end

local function seq_figures(r)
  local sdk, raw = median(col(r.seq, "rate")), median(col(r.raw, "rate"))
  local ratios = rep_ratios(r)
  local f = { sdk = sdk, raw = raw, ratio = median(col(ratios, "ratio")), sdk_us = 1e6 / sdk, raw_us = 1e6 / raw }
  -- The overhead at the median ratio, on the median raw time.
  f.overhead_us = f.raw_us / f.ratio - f.raw_us
  local ha, hb = halves(ratios, "ratio")
  if #ha > 0 and #hb > 0 then
    f.ratio_a, f.ratio_b = median(ha), median(hb)
    f.spread_pct = 100 * math.abs(f.ratio_a - f.ratio_b) / math.max(f.ratio_a, f.ratio_b)
  end
  -- The C binding: each repetition's transport time over its own raw time.
  local binding, raw_rows = {}, by_rep(r.raw)
  for i, row in ipairs(r.transport or {}) do
    local rw = raw_rows[row.rep or i]
    if rw and row.rate and rw.rate then binding[#binding + 1] = 1e6 / row.rate - 1e6 / rw.rate end
  end
  if #binding > 0 then f.transfer_us = f.raw_us + median(binding) end
  -- Raw libcurl with a new easy handle per request, likewise against its own raw time.
  local fresh = {}
  for i, row in ipairs(r.raw_fresh or {}) do
    local rw = raw_rows[row.rep or i]
    if rw and row.rate and rw.rate then fresh[#fresh + 1] = 1e6 / row.rate - 1e6 / rw.rate end
  end
  if #fresh > 0 then f.fresh_us = f.raw_us + median(fresh) end
  -- One process's three figures belong together (the machine drifts between
  -- processes): the process whose whole call is the median one.
  local b = r.breakdown
  if b and #b > 0 then
    local rows = {}
    for i, row in ipairs(b) do rows[i] = row end
    table.sort(rows, function(x, y) return x.call_us < y.call_us end)
    local row = rows[math.floor((#rows + 1) / 2)]
    f.prepare_us, f.decode_us, f.call_us = row.prepare_us, row.decode_us, row.call_us
    f.cjson_decode_us = row.cjson_decode_us
  end
  return f
end

function figure.seq(r)
  local f = seq_figures(r)
  local reps = #col(r.seq, "rate")
  print(string.format("sequential submit_grant: %s req/s vs raw libcurl %s req/s: %.3f (target >= %.2f); " ..
    "the SDK adds %.1f us per call (target <= %d us)  [%d alternating repetitions of %s s; the ratio is the " ..
    "median of each repetition's own]", commas(f.sdk), commas(f.raw), f.ratio, TARGET.seq, f.overhead_us,
    TARGET.seq_us, reps, tostring(r.seq[1].seconds_asked or "?")))
  print(string.format("  per request: submit_grant %.1f us, raw libcurl %.1f us", f.sdk_us, f.raw_us))
  if f.transfer_us and f.prepare_us then
    local rest = f.call_us - f.prepare_us - f.decode_us
    print(string.format("  breakdown: transfer %.1f us (raw libcurl %.1f + the C binding %.1f), prepare %.1f us " ..
      "(derived key + validate + encode), decode %.1f us (core.decode; cjson.decode takes %s us), the rest " ..
      "%.1f us (planner, retry bookkeeping, result, meta); not attributed %+.1f us (cache and scheduling: the " ..
      "parts are measured apart)",
      f.transfer_us, f.raw_us, f.transfer_us - f.raw_us, f.prepare_us, f.decode_us,
      f.cjson_decode_us and string.format("%.1f", f.cjson_decode_us) or "?", rest,
      f.sdk_us - f.transfer_us - f.call_us))
    print(string.format("  the floor (raw libcurl + prepare + decode): %.1f us = %.2f of raw; above it: %.1f us",
      f.raw_us + f.prepare_us + f.decode_us, f.raw_us / (f.raw_us + f.prepare_us + f.decode_us),
      f.sdk_us - f.raw_us - f.prepare_us - f.decode_us))
    if f.fresh_us then
      local floor = f.fresh_us + f.prepare_us + f.decode_us
      print(string.format("  raw libcurl with a new easy handle per request (libcurl %s must not carry a second " ..
        "transfer on one: curl issue 11101; new handle, options, URL parse, header list): %.1f us = raw + %.1f us",
        tostring(r.machine and r.machine[1] and r.machine[1].curl or "?"), f.fresh_us, f.fresh_us - f.raw_us))
      print(string.format("  the floor on this libcurl (that + prepare + decode): %.1f us = %.2f of raw, %.1f us " ..
        "over raw; the SDK is %.1f us above it", floor, f.raw_us / floor, floor - f.raw_us, f.sdk_us - floor))
    end
  end
  if f.spread_pct then
    print(string.format("  stability: odd repetitions %.3f, even %.3f: %.1f %% apart (%s %d %%)", f.ratio_a,
      f.ratio_b, f.spread_pct, f.spread_pct <= TARGET.stable_pct and "within" or "NOT within", TARGET.stable_pct))
  end
end

function figure.socket(r)
  local sdk, sock = median(col(r.seq, "rate")), median(col(r.socket, "rate"))
  print(string.format("sequential submit_grant vs socket.http + cjson: %s req/s vs %s req/s = %.2f" ..
    "  [median of %d]", commas(sdk), commas(sock), sdk / sock, #col(r.socket, "rate")))
end

local function async_figures(r)
  local rows = r.async or {}
  if #rows == 0 or rows[1].available == 0 or rows[#rows].failed then return nil end
  local f = { ms = median(col(rows, "wall_ms")), lat = rows[1].latency_ms or 10, n = rows[1].requests,
    conns = rows[1].conns or 50, runs = col(rows, "wall_ms") }
  f.ideal = f.n / f.conns * f.lat
  f.ratio = f.ms / f.ideal
  local raw = r.raw_multi and median(col(r.raw_multi, "wall_ms"))
  if raw then f.raw_ms = raw end
  return f
end

function figure.async(r)
  local rows = r.async or {}
  local f = async_figures(r)
  if #rows == 0 or rows[1].available == 0 then
    print("async: not available yet")
  elseif not f then
    print("async: FAILED (the async client raised or returned an error; see above)")
  else
    print(string.format("async %s submissions, %d connections, %d ms latency: %.0f ms vs ideal %.0f ms = " ..
      "%.2f x ideal (target <= %.2f); %.1f us per request over the ideal  [median of %d, after a 100-request " ..
      "warm-up]", commas(f.n), f.conns, f.lat, f.ms, f.ideal, f.ratio, TARGET.async,
      (f.ms - f.ideal) * 1000 / f.n, #f.runs))
    local runs = {}
    for i, v in ipairs(f.runs) do runs[i] = string.format("%.0f", v) end
    print("  runs: " .. table.concat(runs, ", ") .. " ms")
    if f.raw_ms then
      print(string.format("  raw libcurl multi, same requests and connections: %.0f ms = %.2f x ideal; the SDK " ..
        "adds %.1f us per request (submit, plan, callback)  [median of %d]", f.raw_ms, f.raw_ms / f.ideal,
        (f.ms - f.raw_ms) * 1000 / f.n, #col(r.raw_multi, "wall_ms")))
    end
  end
  local w = median(col(r.wrk50, "rate"))
  if w then
    print(string.format("  server check: wrk, %d connections, same server: %s req/s = %.0f ms per %s",
      f and f.conns or 50, commas(w), (f and f.n or 1000) / w * 1000, commas(f and f.n or 1000)))
  end
end

-- The median of the pairs' own ratios, as for the sequential figure (older results: of the medians).
local function encode_ratio(e)
  return e.ratio_med or e.prepare_med_us / e.cjson_med_us
end

function figure.encode(r)
  local e = r.encode and r.encode[1]
  local ratio = encode_ratio(e)
  print(string.format("validate + encode 50 grants (core.prepare): %.1f us vs cjson.encode %.1f us = %.2f x cjson" ..
    " (target <= %.2f); %.1f us more per call  [CPU time, %d alternating pairs of slices; the ratio is the " ..
    "median of each pair's own]", e.prepare_med_us, e.cjson_med_us, ratio, TARGET.encode,
    e.prepare_med_us - e.cjson_med_us, e.reps))
  print(string.format("  best slices: %.1f us vs %.1f us = %.2f; %s vs %s bytes (prepare adds the idempotencyKey)",
    e.prepare_us, e.cjson_us, e.prepare_us / e.cjson_us, commas(e.prepare_bytes), commas(e.cjson_bytes)))
end

function figure.memory(r)
  local m = r.memory and r.memory[1]
  local growth = m.rss2_kib - m.rss1_kib
  print(string.format("memory: VmRSS after %s requests %s KiB, after %s %s KiB: growth %+d KiB (target < %d KiB)" ..
    "  [Lua heap %+.1f KiB; %.1f s]", commas(m.n1), commas(m.rss1_kib), commas(m.n2), commas(m.rss2_kib), growth,
    TARGET.memory_kib, m.heap2_kib - m.heap1_kib, m.seconds))
end

function figure.summary(r)
  local function line(name, ok, text)
    print(string.format("  %-34s %-5s %s", name, ok and "pass" or "MISS", text))
  end
  print("summary:")
  local f = seq_figures(r)
  line("sequential vs raw libcurl", f.ratio >= TARGET.seq, string.format("%.3f (>= %.2f)", f.ratio, TARGET.seq))
  line("sequential SDK overhead", f.overhead_us <= TARGET.seq_us,
    string.format("%.1f us per call (<= %d us)", f.overhead_us, TARGET.seq_us))
  if f.spread_pct then
    line("sequential, two halves of one run", f.spread_pct <= TARGET.stable_pct,
      string.format("%.1f %% apart (<= %d %%)", f.spread_pct, TARGET.stable_pct))
  end
  local sock = median(col(r.socket, "rate"))
  print(string.format("  %-34s %-5s %.2f x faster", "sequential vs socket.http + cjson", "info", f.sdk / sock))
  local rows = r.async or {}
  local a = async_figures(r)
  if #rows == 0 or rows[1].available == 0 then
    print(string.format("  %-34s %-5s %s", "async 1,000 x 10 ms / 50 conns", "n/a", "async client not available yet"))
  elseif not a then
    line("async 1,000 x 10 ms / 50 conns", false, "failed")
  else
    line("async 1,000 x 10 ms / 50 conns", a.ratio <= TARGET.async,
      string.format("%.2f x ideal (<= %.2f)", a.ratio, TARGET.async))
  end
  local e = r.encode[1]
  local er = encode_ratio(e)
  line("validate + encode vs cjson", er <= TARGET.encode, string.format("%.2f x (<= %.2f)", er, TARGET.encode))
  local m = r.memory[1]
  local growth = m.rss2_kib - m.rss1_kib
  line("memory growth 1k -> 100k requests", growth < TARGET.memory_kib,
    string.format("%+d KiB (< %d KiB)", growth, TARGET.memory_kib))
end

function cmd.report(file, what)
  local f = figure[what] or die("unknown figure " .. tostring(what))
  f(load_results(file))
end

local name = arg[1]
if not cmd[name] then die("unknown command " .. tostring(name)) end
cmd[name](unpack(arg, 2))
