-- Random and mutated HTTP requests against the sandbox's HTTP/1.1 server
-- (lua/endaoment/sandbox/server.lua), over loopback, from a fixed seed.
--
--   lua5.4 fuzz/http_mutator.lua [--requests N] [--seconds S] [--seed X] [--verbose]
--
-- Starts `lua5.4 bin/endaoment-sandbox --port 0` (with a short idle timeout, a
-- small body limit and the test controls off, so that no request can queue a
-- fault that slows the others), then sends at most N requests, for at most S
-- seconds: valid requests of the partner API, the same mutated (bytes flipped,
-- inserted, deleted, duplicated; line endings changed; Content-Length wrong,
-- negative, huge, doubled or conflicting; chunked bodies; long lines and heads;
-- NULs; bad methods and versions; pipelined requests; deep JSON), and pure noise.
--
-- Properties, for every request: the server answers (bytes that start with
-- an HTTP/1.x status line) or closes the connection, within a deadline; at
-- the end the process is alive and a normal request is answered 200.
-- Internal errors the server logs ("dropped a connection after an internal
-- error") are counted and shown: the connection was closed, which the
-- property allows, but each is a bug worth a look.
--
-- Prints "http_mutator: N requests, A answered, C closed, E internal errors"
-- and exits 0 when every property held.
local socket = require "socket"

local opts = { requests = 2000, seconds = 30, seed = 20240515, verbose = false }
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--verbose" then opts.verbose = true
    elseif a == "--requests" or a == "--seconds" or a == "--seed" then
      opts[a:sub(3)] = assert(tonumber(arg[i + 1]), a .. " needs a number")
      i = i + 1
    else
      io.stderr:write("http_mutator: unknown argument ", a, "\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local DEADLINE = 5 -- seconds for one answer (the idle timeout below is 0.3 s)

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

---------------------------------------------------------------------------
-- the server
---------------------------------------------------------------------------

local errlog = os.tmpname()
local pipe = assert(io.popen("echo $$; exec lua5.4 bin/endaoment-sandbox --port 0 --idle-timeout-ms 300 " ..
  "--max-body 65536 --no-controls 2>" .. sh_quote(errlog), "r"))
local pid = tonumber(pipe:read("l"))
local url = pipe:read("l")
if not url then
  local f = io.open(errlog)
  io.stderr:write("http_mutator: the sandbox did not start: ", f and f:read("a") or "", "\n")
  os.exit(1)
end
local host, port = url:match("^http://([^:/]+):(%d+)")
port = tonumber(port)

local function alive()
  local p = io.popen("ps -o stat= -p " .. pid .. " 2>/dev/null")
  local st = p and p:read("a") or ""
  if p then p:close() end
  return st:match("%S") ~= nil and not st:match("^%s*Z")
end

local function stop()
  os.execute("kill -TERM " .. pid .. " 2>/dev/null")
  pipe:close()
end

---------------------------------------------------------------------------
-- one exchange
---------------------------------------------------------------------------

-- Whether buf holds a whole response (after any 1xx interim ones).
local function complete_response(buf)
  local pos = 1
  while true do
    local hs, he = buf:find("\r\n\r\n", pos, true)
    if not hs then return false end
    local head = buf:sub(pos, hs - 1)
    if not head:find("^HTTP/1%.%d 1%d%d") then
      local cl = tonumber(head:lower():match("\ncontent%-length:%s*(%d+)") or "0")
      return #buf >= he + cl
    end
    pos = he + 1
  end
end

-- Sends bytes on a fresh connection; half-closes unless keep_open. Returns
-- "answered", "closed" or "timeout", and what was read. With keep_open the
-- server may keep the connection alive after answering: a whole response
-- counts as the answer.
local function exchange(bytes, keep_open)
  local c = socket.tcp()
  c:settimeout(DEADLINE)
  local ok, err = c:connect(host, port)
  if not ok then c:close(); return "connect-failed", err end
  -- send in pieces: a server that answers early (431, 413) may reset us mid-way
  local sent, i = true, 1
  while i <= #bytes do
    local last, serr = c:send(bytes, i, math.min(#bytes, i + 65535))
    if not last then sent = false; break end
    i = last + 1
    if serr then sent = false; break end
  end
  if sent and not keep_open then c:shutdown("send") end
  local got, closed = "", false
  local deadline = socket.gettime() + DEADLINE
  c:settimeout(0.05)
  while socket.gettime() < deadline do
    local data, rerr, partial = c:receive(65536)
    got = got .. (data or partial or "")
    if rerr and rerr ~= "timeout" then closed = true; break end
    if keep_open and complete_response(got) then break end
  end
  c:close()
  if #got > 0 then return "answered", got end
  if closed then return "closed", got end
  return "timeout", got
end

---------------------------------------------------------------------------
-- requests
---------------------------------------------------------------------------

local KEY = "sandbox-key"
local UUID = "2b8108d8-30fc-4c62-9b93-07ee1f8b8455"

local function req(method, path, headers, body)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: " .. host .. ":" .. port }
  for _, h in ipairs(headers or {}) do lines[#lines + 1] = h end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

local USER = '{"partnerUserIdentifier":"user-0001-abcdefgh","firstName":"Ada","lastName":"Lovelace",' ..
  '"email":"ada@example.org","address":{"line1":"1 Main St","city":"New York","state":"NY","zip":"10001",' ..
  '"country":"USA"}}'
local FUND = '{"name":"Lovelace DAF","partnerAccountIdentifier":"acct-0001-abcdefgh","type":"Private"}'
local PLEDGE = '{"receivingFundId":"' .. UUID .. '","idempotencyKey":"' .. UUID .. '",' ..
  '"pledgedAmountMicroDollars":"125000000","partnerOperationId":"ledger-42"}'
local GRANT = '{"idempotencyKey":"' .. UUID .. '","originFundId":"' .. UUID .. '","inboundCustodianTransfer":' ..
  '{"amountMicroDollars":"1000000","partnerFundingTransferId":"t-1","sourcePartnerAccountIdentifier":' ..
  '"acct-0001-abcdefgh","destinationPartnerAccountIdentifier":"acct-0001-abcdefgh","settledAtUtc":' ..
  '"2026-05-04T14:32:01.000Z"},"grants":[{"amountMicroDollars":"1000000","destinationOrgId":"' .. UUID .. '"}]}'
local JSON = "Content-Type: application/json"
local AUTH = "x-api-key: " .. KEY

local VALID = {
  req("GET", "/v1/auth/whoami", { AUTH }),
  req("GET", "/v1/auth/whoami", { "Authorization: Bearer sandbox-token" }),
  req("POST", "/v1/auth/partner/users", { AUTH, JSON }, USER),
  req("POST", "/v1/funds/partner", { AUTH, JSON, "x-endaoment-user-id: user-0001-abcdefgh" }, FUND),
  req("POST", "/v1/donation-pledges/partner/cash-settled", { AUTH, JSON, "x-endaoment-user-id: " .. UUID }, PLEDGE),
  req("POST", "/v1/transfers/partner/grant-submissions", { AUTH, JSON }, GRANT),
  req("GET", "/v1/funds/" .. UUID, { AUTH }),
  req("GET", "/v2/orgs/search?searchTerm=food%20bank&count=5&offset=0", {}),
  req("GET", "/v1/orgs/ein/12-3456789", {}),
  req("GET", "/v1/activity/fund/" .. UUID .. "?count=100", { AUTH }),
  req("POST", "/v1/transfers/async-grants/" .. UUID .. "/cancel", { "Authorization: Bearer sandbox-token" }, ""),
  req("POST", "/v1/missing-org-reports/tech-platform", { AUTH, JSON }, '{"name":"Tiny Food Bank"}'),
  req("POST", "/v1/auth/partner/users", { AUTH, JSON, "Expect: 100-continue" }, USER),
  "GET /v1/auth/whoami HTTP/1.0\r\nx-api-key: " .. KEY .. "\r\n\r\n",
  "GET /v1/auth/whoami HTTP/1.0\r\nConnection: keep-alive\r\nx-api-key: " .. KEY .. "\r\n\r\n",
  req("GET", "/v1/auth/whoami", { AUTH }) .. req("GET", "/v1/auth/whoami", { AUTH, "Connection: close" }),
  "GET /v1/auth/whoami HTTP/1.1\nx-api-key: " .. KEY .. "\n\n",
  "\r\n\r\n" .. req("GET", "/", {}),
}

local function pick(t) return t[math.random(#t)] end

local function rand_bytes(n)
  local b = {}
  for i = 1, n do b[i] = string.char(math.random(0, 255)) end
  return table.concat(b)
end

local SPECIAL = { "\r\n", "\n", "\r", "\0", " ", "\t", ":", "/", "?", "%", "%00", "%zz", "..", "\255", "\195\169",
  "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "Content-Length: ", "Transfer-Encoding: chunked",
  "Content-Length: -1", "Content-Length: 99999999999999999999", "Content-Length: 1e3", "Connection: close",
  "Expect: 100-continue", "{", "}", "[", "]", "\"", "\\u0000", "null", "-0", "1e999", "x-api-key: " .. KEY }

local MUTATORS = {
  function(s) -- flip bytes
    local b = { s:byte(1, -1) }
    for _ = 1, math.random(1, 4) do
      local i = math.random(#b)
      b[i] = (b[i] ~ (1 << math.random(0, 7)))
    end
    local out = {}
    for i, x in ipairs(b) do out[i] = string.char(x) end
    return table.concat(out)
  end,
  function(s) -- insert noise or a special token
    local i = math.random(0, #s)
    local ins = math.random(2) == 1 and rand_bytes(math.random(1, 16)) or pick(SPECIAL)
    return s:sub(1, i) .. ins .. s:sub(i + 1)
  end,
  function(s) -- delete a range
    local i = math.random(1, #s)
    return s:sub(1, i - 1) .. s:sub(i + math.random(1, 32))
  end,
  function(s) -- duplicate a range
    local i = math.random(1, #s)
    local j = math.min(#s, i + math.random(1, 64))
    return s:sub(1, j) .. s:sub(i, j) .. s:sub(j + 1)
  end,
  function(s) -- line endings
    local r = pick({ "\n", "\r", "\r\r\n", "\n\r", "\r\n\r\n" })
    return (s:gsub("\r\n", function() if math.random(3) == 1 then return r end end))
  end,
  function(s) -- truncate
    return s:sub(1, math.random(0, #s))
  end,
  function(s) -- a wrong, doubled or conflicting Content-Length
    local v = pick({ "0", "1", "-5", "+5", " 5", "5 ", "0x10", "99999999999999999999", "65537", "3, 3", "abc", "" })
    if s:find("Content%-Length:") then
      if math.random(2) == 1 then return (s:gsub("Content%-Length: %d+", "Content-Length: " .. v, 1)) end
      return (s:gsub("(Content%-Length: %d+\r\n)", "%1Content-Length: " .. v .. "\r\n", 1))
    end
    return (s:gsub("\r\n", "\r\nContent-Length: " .. v .. "\r\n", 1))
  end,
  function(s) -- chunked body
    return (s:gsub("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1))
  end,
  function(s) -- a long header line, or a head past 64 KiB
    local n = pick({ 1000, 8192, 65536, 70000 })
    return (s:gsub("\r\n", "\r\nX-Long: " .. string.rep("a", n) .. "\r\n", 1))
  end,
  function(s) -- many headers
    local h = {}
    for i = 1, math.random(50, 3000) do h[i] = "X-H" .. i .. ": v" end
    return (s:gsub("\r\n", "\r\n" .. table.concat(h, "\r\n") .. "\r\n", 1))
  end,
  function(s) -- the method, the target, the version
    local m = pick({ "get", "G ET", "GET\0", "PATCH", "OPTIONS", "BREW", "", "GET GET", string.rep("A", 5000) })
    local t = pick({ "", "*", "/" .. string.rep("x", 9000), "http://example.org/v1/auth/whoami", "/%", "/%00",
      "/v1/funds/" .. string.rep("9", 400), "/v1/orgs/ein/%31%32", "/v2/orgs/search?count=-1&offset=1e9",
      "/v2/orgs/search?searchTerm=" .. string.rep("%", 100), "/v1/funds/../../etc/passwd", "/\255\254" })
    local v = pick({ "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.10", "HTTP/1", "http/1.1", "HTTP/9.9", "" })
    local line = s:match("^[^\r\n]*")
    local parts = {}
    for w in line:gmatch("%S+") do parts[#parts + 1] = w end
    local which = math.random(3)
    if which == 1 then parts[1] = m elseif which == 2 then parts[2] = t else parts[3] = v end
    return table.concat(parts, " ") .. s:sub(#line + 1)
  end,
  function(s) -- the JSON body
    local body = pick({ "{", "[", "null", "1", "\"x\"", "{\"a\":" .. string.rep("[", 5000), string.rep("[", 200000),
      '{"pledgedAmountMicroDollars":1e400}', '{"\\ud800":1}', '{"a":"\\u0000"}', "\255\254", "{}",
      '{"receivingFundId":null}', '{"grants":[' .. string.rep('{},', 60) .. '{}]}' })
    local head = s:match("^(.-\r\n\r\n)")
    if not head then return s .. body end
    head = head:gsub("Content%-Length: %d+\r\n", "")
    return head:gsub("\r\n\r\n$", "\r\nContent-Length: " .. #body .. "\r\n\r\n") .. body
  end,
  function(s) -- two requests in one write, the second one mutated
    return s .. pick(VALID):sub(1, math.random(1, 200))
  end,
  function(s) -- NULs and high bytes in header values
    return (s:gsub("(x%-api%-key: )", "%1\0\255", 1))
  end,
}

local function make_request(n)
  local r = math.random(100)
  if r <= 8 then return pick(VALID) end
  if r <= 15 then return rand_bytes(math.random(0, 300)) end
  if r <= 18 then return pick(VALID):sub(1, math.random(1, 40)) .. rand_bytes(math.random(1, 100)) end
  local s = pick(VALID)
  for _ = 1, math.random(1, 1 + n % 4) do s = pick(MUTATORS)(s) end
  return s
end

---------------------------------------------------------------------------
-- the run
---------------------------------------------------------------------------

math.randomseed(opts.seed)
local t0 = socket.gettime()
local counts = { answered = 0, closed = 0 }
local problems = {}
local n = 0
local prev
while n < opts.requests and socket.gettime() - t0 < opts.seconds do
  n = n + 1
  local bytes = make_request(n)
  local keep_open = math.random(10) == 1
  local how, got = exchange(bytes, keep_open)
  if how == "answered" then
    counts.answered = counts.answered + 1
    if not got:find("^HTTP/1%.[01] [1-5]%d%d ") then
      problems[#problems + 1] = ("request %d: the answer does not start with a status line: %q"):format(n,
        got:sub(1, 80))
    end
  elseif how == "closed" then
    counts.closed = counts.closed + 1
  else
    problems[#problems + 1] = ("request %d: %s (keep_open=%s): %q"):format(n, how, tostring(keep_open),
      bytes:sub(1, 200))
  end
  if opts.verbose then io.stderr:write(n, " ", how, " ", (got or ""):match("^[^\r\n]*") or "", "\n") end
  -- ps costs a few ms: ask every 50 requests, and whenever a connection could not be made
  if (n % 50 == 0 or how == "connect-failed") and not alive() then
    problems[#problems + 1] = ("the server died (noticed at request %d; the one before: %q)"):format(n,
      (prev or ""):sub(1, 200))
    break
  end
  prev = bytes
  if #problems >= 10 then break end
end

-- The server is still there and still serves.
local final_ok = alive()
if final_ok then
  local how, got = exchange(req("GET", "/v1/auth/whoami", { AUTH, "Connection: close" }))
  final_ok = how == "answered" and got:find("^HTTP/1%.1 200 ") ~= nil
  if not final_ok then
    problems[#problems + 1] = ("a normal request after the run: %s %q"):format(how, got:sub(1, 120))
  end
else
  problems[#problems + 1] = "the server is not running after the run"
end
stop()

local f = io.open(errlog)
local stderr_text = f and f:read("a") or ""
if f then f:close() end
os.remove(errlog)
local internal = 0
for line in stderr_text:gmatch("[^\n]+") do
  if line:find("internal error", 1, true) then
    internal = internal + 1
    if internal <= 5 then print("sandbox stderr: " .. line) end
  end
end

for _, p in ipairs(problems) do print("PROBLEM: " .. p) end
print(("http_mutator: %d requests in %.1f s, %d answered, %d closed, %d internal errors, seed %d"):format(n,
  socket.gettime() - t0, counts.answered, counts.closed, internal, opts.seed))
os.exit(#problems == 0 and 0 or 1)
