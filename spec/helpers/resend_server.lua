-- A raw loopback HTTP/1.1 server (luasocket, its own process) that answers
-- the first request on each connection and drops the second one: it reads
-- it whole, then closes the connection without a byte of answer. That is
-- what a server that processed a request and then lost the connection looks
-- like to a client that reused it, and what makes libcurl resend a request on
-- its own (a dropped cancel still cancels). Every request it reads is appended to a log file, so a spec counts
-- what the server really received.
--
--   local srv = assert(require("spec.helpers.resend_server").start { first_status = 503 })
--   srv.url, srv.received() -> { {method=, path=, key=, conn=, n=, dropped=}, ... }, srv.stop()
--
-- Answers: the very first request of the run gets first_status (default 200)
-- with keep-alive; a cancel (POST .../cancel) is answered 200 the first time
-- per id and 400 "Grant is Cancelled" after, as the API does; other POSTs
-- 201, GETs 200, with a small JSON body.
local util = require "spec.helpers.util"
local socket = require "socket"

local M = {}

M.LUA = os.getenv("SANDBOX_LUA") or "lua5.4"

local q = util.q

local SERVER = [==[
local socket = require "socket"
local first_status, logpath = tonumber(arg[1]), arg[2]
local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
io.stdout:write("http://127.0.0.1:", port, "\n")
io.stdout:flush()

local function log(line)
  local f = assert(io.open(logpath, "a"))
  f:write(line, "\n")
  f:close()
end

local function read_request(c)
  local line, err = c:receive("*l")
  if not line then return nil, err end
  local headers = {}
  while true do
    local h = c:receive("*l")
    if not h then return nil end
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  local n = tonumber(headers["content-length"] or "0")
  local body = n > 0 and c:receive(n) or ""
  local method, target = line:match("^(%S+) (%S+)")
  return { method = method, target = target, headers = headers, body = body or "" }
end

local function answer(c, status, body)
  local reason = ({ [200] = "OK", [201] = "Created", [400] = "Bad Request", [503] = "Service Unavailable" })[status]
  c:send("HTTP/1.1 " .. status .. " " .. (reason or "Status") .. "\r\nContent-Type: application/json\r\n" ..
    "Content-Length: " .. #body .. "\r\nConnection: keep-alive\r\n\r\n" .. body)
end

local total, conns, cancelled = 0, {}, {}
local clients, nconn = {}, 0
while true do
  local readable = socket.select({ server, table.unpack(clients) }, nil, 60)
  if #readable == 0 then break end -- idle for a minute: the spec is gone
  for _, s in ipairs(readable) do
    if s == server then
      local c = server:accept()
      if c then
        c:settimeout(5)
        nconn = nconn + 1
        conns[c] = { id = nconn, n = 0 }
        clients[#clients + 1] = c
      end
    else
      local req = read_request(s)
      local st = conns[s]
      local drop = false
      if req then
        st.n = st.n + 1
        total = total + 1
        local key = req.body:match('"idempotencyKey":"([^"]+)"') or "-"
        drop = st.n >= 2
        -- A dropped request was processed; only its answer is lost.
        local cid = req.target:match("^/v1/transfers/async%-grants/([^/]+)/cancel$")
        if drop and cid then cancelled[cid] = true end
        log(string.format("%s %s %s conn=%d n=%d %s", req.method, req.target, key, st.id, st.n,
          drop and "dropped" or "answered"))
        if not drop then
          local id = req.target:match("^/v1/transfers/async%-grants/([^/]+)/cancel$")
          if total == 1 and first_status ~= 200 then
            answer(s, first_status, '{"statusCode":' .. first_status .. ',"message":"try again"}')
          elseif id and cancelled[id] then
            answer(s, 400, '{"statusCode":400,"message":"Grant is Cancelled","error":"Bad Request"}')
          elseif id then
            cancelled[id] = true
            answer(s, 200, '{"id":"' .. id .. '","status":"Cancelled"}')
          elseif req.method == "POST" then
            answer(s, 201, '{"id":"11111111-2222-4333-8444-555555555555"}')
          else
            answer(s, 200, '{"clientName":"resend server"}')
          end
        end
      end
      if not req or drop then
        s:close()
        conns[s] = nil
        for i, c in ipairs(clients) do if c == s then table.remove(clients, i) break end end
      end
    end
  end
end
]==]

-- start{ first_status = 503 } -> server { url, port, received(), count(pattern), stop() }
function M.start(opts)
  opts = opts or {}
  local script, logpath = os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "wb"))
  f:write(SERVER)
  f:close()
  local pipe = assert(io.popen("echo $$; exec " .. M.LUA .. " " .. q(script) .. " " ..
    tostring(opts.first_status or 200) .. " " .. q(logpath), "r"))
  local pid = tonumber(pipe:read("l"))
  local url = pipe:read("l")
  if not url then
    pipe:close()
    os.remove(script); os.remove(logpath)
    return nil, "resend server did not start"
  end
  local srv = { url = url, port = tonumber(url:match(":(%d+)$")), pid = pid }
  -- Every request read so far, in order.
  function srv.received()
    local out = {}
    local lf = io.open(logpath, "rb")
    if not lf then return out end
    for line in lf:lines() do
      local method, path, key, conn, n, what = line:match("^(%S+) (%S+) (%S+) conn=(%d+) n=(%d+) (%S+)$")
      out[#out + 1] = { method = method, path = path, key = key ~= "-" and key or nil, conn = tonumber(conn),
        n = tonumber(n), dropped = what == "dropped" }
    end
    lf:close()
    return out
  end
  -- How many requests for paths matching pattern (plain find) were read.
  function srv.count(pattern)
    local n = 0
    for _, r in ipairs(srv.received()) do
      if r.path:find(pattern, 1, true) then n = n + 1 end
    end
    return n
  end
  function srv.stop()
    if srv.stopped then return end
    srv.stopped = true
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    pipe:close()
    os.remove(script)
    os.remove(logpath)
  end
  setmetatable(srv, { __gc = function(s)
    if not s.stopped then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end })
  return srv
end

-- Waits until the server has logged n requests matching pattern (its log is
-- written after each read), or a second has passed.
function M.wait_count(srv, pattern, n)
  local deadline = socket.gettime() + 1
  while srv.count(pattern) < n and socket.gettime() < deadline do socket.sleep(0.01) end
  return srv.count(pattern)
end

return M
