-- endaoment.sandbox.server: the emulator served over HTTP/1.1 with luasocket
-- (keep-alive, many connections, one socket.select loop, no threads).
--
--   local server = require "endaoment.sandbox.server"
--   local srv = assert(server.new { port = 0, state = "sandbox.json" })
--   print(assert(srv:listen()))      -- http://127.0.0.1:PORT, once listening
--   srv:run()                        -- or call srv:step(timeout) from your own loop
--   srv:close()
--
-- It stays up under abuse: connections beyond what select() can watch are
-- answered 503 and closed, a request that goes silent half-way is closed
-- after idle_timeout_ms, a restart takes its port at once (SO_REUSEADDR is
-- set on a socket that exists before bind), and a state file is rewritten
-- atomically after every change. Runs on Lua 5.1-5.4 and LuaJIT.
local socket = require "socket"
local sandbox = require "endaoment.sandbox"
local faults = require "endaoment.sandbox.faults"

local M = {}

M.DEFAULTS = {
  host = "127.0.0.1",
  port = 8787,
  latency_ms = 0,            -- added to every API answer (not to the test controls)
  max_body = 1048576,        -- largest request body, bytes
  idle_timeout_ms = 10000,   -- silence allowed inside a request, or before its first byte
  max_connections = 1000,    -- served at once; more are answered 503 and closed
  backlog = 1024,
  controls = true,
}
M.MAX_HEAD = 64 * 1024
-- luasocket's select() raises an error for descriptors from FD_SETSIZE on:
-- no connection with such a descriptor is ever watched.
M.SELECT_LIMIT = 1024
-- The most connections served at once: under SELECT_LIMIT, with room for
-- the process's other descriptors.
M.MAX_CONNECTIONS = 1000
-- Between requests a keep-alive connection may idle longer than
-- idle_timeout_ms: above libcurl's 30 s CURLOPT_MAXAGE_CONN, so a client
-- never reuses a socket the sandbox is about to close (libcurl would
-- silently resend on it).
M.KEEPALIVE_TIMEOUT = 60
local DRAIN_TIMEOUT = 5       -- reading what a refused client still sends, so it gets our answer
local LINGER_TIMEOUT = 5      -- the same for connections refused with 503
local MAX_LINGERING = 4096
local LINGER_POLL = 0.05
local ACCEPT_BATCH = 64
local ACCEPT_PAUSE = 0.1      -- after accept() fails (out of descriptors): retry soon, do not spin

local EXTRA_STATUS_TEXT = { [408] = "Request Timeout", [505] = "HTTP Version Not Supported" }
local function status_text(status)
  return sandbox.STATUS_TEXT[status] or EXTRA_STATUS_TEXT[status] or "Status"
end

-- Loopback names and addresses: anything else is reachable by other machines.
function M.is_loopback(host)
  return host == "localhost" or host == "::1" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

---------------------------------------------------------------------------
-- state file: loaded at start, rewritten atomically after each change
---------------------------------------------------------------------------

-- Returns the content, or nil when the file does not exist, or nil, err.
local function read_file(path)
  local f, err, code = io.open(path, "rb")
  if not f then
    if code == 2 then return nil end          -- ENOENT: a fresh start
    return nil, err
  end
  local s = f:read("*a")
  f:close()
  return s
end

-- A kill at any instant leaves either the old or the new file: the new
-- content is complete in a temporary file before rename replaces the old.
local function write_atomic(path, data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  if ok then ok, werr = f:flush() end
  f:close()
  if not ok then os.remove(tmp); return nil, werr end
  return os.rename(tmp, path)
end

---------------------------------------------------------------------------
-- server object
---------------------------------------------------------------------------

local Server = {}
Server.__index = Server

local function list_or_nil(t)
  if type(t) == "table" and #t == 0 then return nil end
  return t
end

-- new(opts) -> server, or nil, err (a state file that cannot be loaded).
-- opts: the DEFAULTS above, plus api_keys, bearer_tokens (lists), rules
-- ("all" or "documented") and forbid_unknown (for sandbox.new), state
-- (path), log (function(line), called for each request), emulator (use
-- this emulator instead of a new one).
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Server)
  for k, v in pairs(M.DEFAULTS) do
    if opts[k] == nil then self[k] = v else self[k] = opts[k] end
  end
  self.controls = opts.controls ~= false
  self.state_path = opts.state
  self.log = opts.log
  self.emu = opts.emulator or sandbox.new {
    api_keys = list_or_nil(opts.api_keys), bearer_tokens = list_or_nil(opts.bearer_tokens),
    controls = self.controls, now = socket.gettime, rules = opts.rules, forbid_unknown = opts.forbid_unknown,
  }
  self.conns, self.nconns = {}, 0
  self.lingering, self.linger_polled = {}, 0
  self.accept_paused_until = 0
  if self.state_path then
    local text, err = read_file(self.state_path)
    if err then return nil, "refusing to start: cannot read " .. self.state_path .. ": " .. tostring(err) end
    if text then
      local ok, lerr = self.emu:load_state(text)
      if not ok then
        return nil, "refusing to start: " .. self.state_path .. " is " .. tostring(lerr) .. " (left untouched)"
      end
    end
    self.saved_rev = self.emu:revision()
  end
  return self
end

function Server:_log(...)
  if self.log then self.log(table.concat({ ... }, " ")) end
end

-- Writes the state file if the state changed since the last write.
function Server:persist()
  if not self.state_path or self.emu:revision() == self.saved_rev then return true end
  local ok, err = write_atomic(self.state_path, self.emu:encode_state())
  if not ok then
    io.stderr:write("endaoment-sandbox: cannot write state file: ", tostring(err), "\n")
    return nil, err
  end
  self.saved_rev = self.emu:revision()
  return true
end

-- listen() -> url, or nil, err. Binds and listens; the URL names the port
-- actually bound (port 0 picks a free one).
function Server:listen()
  if self.master then return self.url end
  -- tcp4()/tcp6() create the descriptor at once (socket.tcp() waits for
  -- bind), so SO_REUSEADDR really is set before bind: a restart after a
  -- kill takes the port although the old connections linger in the kernel.
  local master, err = (self.host:find(":", 1, true) and socket.tcp6 or socket.tcp4)()
  if not master then return nil, "cannot create a socket: " .. tostring(err) end
  local ok
  ok, err = master:setoption("reuseaddr", true)
  if ok then ok, err = master:bind(self.host, self.port) end
  if ok then ok, err = master:listen(self.backlog) end
  if ok and master:getfd() >= M.SELECT_LIMIT then ok, err = nil, "too many descriptors already open" end
  if not ok then
    master:close()
    return nil, "cannot listen on " .. self.host .. ":" .. tostring(self.port) .. ": " .. tostring(err)
  end
  master:settimeout(0)
  local host, port = master:getsockname()
  self.master = master
  self.bound_port = math.floor(tonumber(port))
  self.url = "http://" .. (host:find(":", 1, true) and ("[" .. host .. "]") or host) .. ":" .. self.bound_port
  return self.url
end

---------------------------------------------------------------------------
-- answers
---------------------------------------------------------------------------

local function error_body(status, message)
  return string.format('{"statusCode":%d,"message":"%s","error":"%s"}', status, message, status_text(status))
end

local function build_head(status, headers, length, keep)
  local out = { string.format("HTTP/1.1 %d %s\r\n", status, status_text(status)) }
  local h = {}
  for k, v in pairs(headers) do h[k] = v end
  h["content-length"] = tostring(length)
  h["connection"] = keep and "keep-alive" or "close"
  h["server"] = "endaoment-sandbox/" .. sandbox.VERSION
  for k, v in pairs(h) do out[#out + 1] = k .. ": " .. tostring(v) .. "\r\n" end
  out[#out + 1] = "\r\n"
  return table.concat(out)
end

local JSON_TYPE = { ["content-type"] = "application/json; charset=utf-8" }

local function busy_answer(limit)
  local body = error_body(503, "the sandbox is serving " .. limit .. " connections, its most; retry shortly")
  return build_head(503, { ["content-type"] = JSON_TYPE["content-type"], ["retry-after"] = "1" }, #body, false)
    .. body
end

-- Queues bytes to send; `at` is when they may start to go out.
local function queue(c, out, keep, at)
  c.out, c.sent, c.keep, c.ready_at, c.state = out, 0, keep, at or 0, "respond"
end

-- An error of the transport itself (not of the API): the connection closes
-- after it, reading what the client still sends so it gets the answer
-- rather than a reset.
local function error_reply(c, status, message)
  local body = error_body(status, message)
  queue(c, build_head(status, JSON_TYPE, #body, false) .. body, false)
  c.drain = true
end

---------------------------------------------------------------------------
-- request parsing
---------------------------------------------------------------------------

-- Parses one request head from c.buf. Lines may end in CRLF or a bare LF
-- (RFC 9112 section 2.2); a bare CR elsewhere is refused. Returns the
-- request, or nil (incomplete, or an error answer was queued).
local function parse_head(c)
  -- Blank lines before a request line are ignored (a CRLF after a body).
  while c.buf:find("^\r?\n") do c.buf = c.buf:gsub("^\r?\n", "", 1) end
  local s, e = c.buf:find("\r?\n\r?\n")
  if not s or s > M.MAX_HEAD then
    if #c.buf > M.MAX_HEAD then error_reply(c, 431, "request header section too large") end
    return nil
  end
  local head = c.buf:sub(1, s - 1)
  c.buf = c.buf:sub(e + 1)
  if head:find("\r[^\n]") or head:find("\r$") then
    error_reply(c, 400, "bare CR in the request head")
    return nil
  end
  local lines = {}
  for line in (head .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = (line:gsub("\r$", "")) end
  local method, target, major, minor = lines[1]:match("^(%u+) (%S+) HTTP/(%d)%.(%d)$")
  if not method then
    error_reply(c, 400, "malformed request line")
    return nil
  end
  local version = major .. "." .. minor
  if version ~= "1.1" and version ~= "1.0" then
    error_reply(c, 505, "HTTP/" .. version .. " is not supported; use HTTP/1.1")
    return nil
  end
  local headers = {}
  for i = 2, #lines do
    local k, v = lines[i]:match("^([!#$%%&'*+.^_`|~%w-]+):%s*(.-)%s*$")
    if not k then
      error_reply(c, 400, "malformed header line")
      return nil
    end
    k = k:lower()
    if k == "content-length" and headers[k] and headers[k] ~= v then
      error_reply(c, 400, "conflicting Content-Length headers")
      return nil
    end
    headers[k] = headers[k] and k ~= "content-length" and (headers[k] .. ", " .. v) or v
  end
  return { method = method, target = target, version = version, headers = headers }
end

local function want_keepalive(req)
  local conn = (req.headers["connection"] or ""):lower()
  if req.version == "1.0" then return conn:find("keep%-alive") ~= nil end
  return conn:find("close") == nil
end

---------------------------------------------------------------------------
-- connections
---------------------------------------------------------------------------

function Server:_close(c)
  if self.conns[c.sock] then
    self.conns[c.sock] = nil
    self.nconns = self.nconns - 1
  end
  c.sock:close()
end

function Server:_dispatch(c, req, body)
  local t0 = socket.gettime()
  local status, headers, rbody, fault = self.emu:handle(req.method, req.target, req.headers, body)
  -- The request log shows the latency a client meets, ours included.
  if self.latency_ms > 0 and self.emu.add_latency then self.emu:add_latency(self.latency_ms) end
  self:persist()
  c.served = c.served + 1
  local plan = faults.plan(req.target, status, headers, rbody, fault, self.latency_ms)
  local at = t0 + plan.delay_ms / 1000
  self:_log(req.method, req.target, tostring(status), fault and "fault" or "")
  if plan.drop then
    queue(c, "", false, at)
    c.drop = true
    return
  end
  local keep = want_keepalive(req) and not c.eof
  queue(c, build_head(plan.status, plan.headers, plan.content_length, keep) .. faults.sent_body(plan),
    keep and not plan.close, at)
end

-- Advances a connection's parser as far as its buffer allows.
function Server:_advance(c)
  while c.state == "head" or c.state == "body" do
    if c.state == "head" then
      local req = parse_head(c)
      if not req then return end
      c.req = req
      local cl = req.headers["content-length"]
      if req.headers["transfer-encoding"] then
        error_reply(c, 411, "chunked request bodies are not supported; send Content-Length")
        return
      end
      if cl and not cl:match("^%d+$") then
        error_reply(c, 400, "invalid Content-Length")
        return
      end
      cl = tonumber(cl or "0")
      if cl > self.max_body then
        error_reply(c, 413, "request body larger than " .. self.max_body .. " bytes")
        return
      end
      if cl > 0 and (req.headers["expect"] or ""):lower() == "100-continue" then
        c.sock:send("HTTP/1.1 100 Continue\r\n\r\n")
      end
      c.need = cl
      c.state = "body"
    else
      if #c.buf < c.need then return end
      local body = c.buf:sub(1, c.need)
      c.buf = c.buf:sub(c.need + 1)
      self:_dispatch(c, c.req, body)
      return
    end
  end
end

function Server:_on_readable(c, now)
  local data, err, partial = c.sock:receive(65536)
  data = data or partial
  if data and #data > 0 then
    c.last = now
    if c.state ~= "drain" then c.buf = c.buf .. data end
  end
  if err == "closed" then
    if c.state == "drain" then self:_close(c); return end
    -- The client may have half-closed after a complete request: answer it,
    -- then close.
    c.eof = true
  end
  if c.state == "head" or c.state == "body" then self:_advance(c) end
  if c.eof and c.state ~= "respond" then self:_close(c) end
end

function Server:_on_writable(c, now)
  if c.drop then self:_close(c); return end
  local last, err, partial = c.sock:send(c.out, c.sent + 1)
  last = last or partial
  if last and last > c.sent then c.sent, c.last = last, now end
  if err and err ~= "timeout" then self:_close(c); return end
  if c.sent < #c.out then return end
  c.last = now
  if c.drain and not c.eof then
    -- Keep reading (and discarding) what the client still sends so it gets
    -- our answer instead of a reset, then close.
    c.state, c.drain_until, c.out = "drain", now + DRAIN_TIMEOUT, nil
    c.sock:shutdown("send")
    return
  end
  if not c.keep or c.eof then self:_close(c); return end
  c.state, c.out, c.req = "head", nil, nil
  self:_advance(c)
end

-- When a connection must be looked at again, and what happens then.
function Server:_deadline(c, now)
  local idle = self.idle_timeout_ms / 1000
  if c.state == "drain" then return c.drain_until end
  if c.state == "respond" then
    if c.ready_at > now then return c.ready_at end
    return math.max(c.last, c.ready_at) + idle            -- a client that stopped reading
  end
  if c.state == "head" and c.buf == "" and c.served > 0 then
    return c.last + M.KEEPALIVE_TIMEOUT                   -- idle between requests
  end
  return c.last + idle                                    -- before, or in the middle of, a request
end

function Server:_expire(now)
  local late = {}
  for _, c in pairs(self.conns) do
    if now >= self:_deadline(c, now) and not (c.state == "respond" and c.ready_at > now) then
      late[#late + 1] = c
    end
  end
  for _, c in ipairs(late) do
    if (c.state == "head" and c.buf ~= "") or c.state == "body" then
      -- Silent in the middle of a request: say why, then close.
      local body = error_body(408, "no data for " .. self.idle_timeout_ms .. " ms in the middle of a request")
      c.sock:send(build_head(408, JSON_TYPE, #body, false) .. body)
      self:_log("closed a connection silent mid-request")
    end
    self:_close(c)
  end
end

-- Answers a connection the loop cannot watch with 503 at once, and keeps
-- it a while, reading without select(), so the client reads the answer
-- rather than a reset.
function Server:_refuse(s, now)
  s:send(busy_answer(self.max_connections))
  s:shutdown("send")
  if #self.lingering >= MAX_LINGERING then s:close(); return end
  self.lingering[#self.lingering + 1] = { sock = s, till = now + LINGER_TIMEOUT }
end

function Server:_poll_lingering(now)
  if #self.lingering == 0 or now - self.linger_polled < LINGER_POLL then return end
  self.linger_polled = now
  local keep = {}
  for _, l in ipairs(self.lingering) do
    local done = now >= l.till
    while not done do
      local _, err = l.sock:receive(65536)
      if err == "timeout" then break end
      done = err ~= nil                                 -- closed (or failed)
    end
    if done then l.sock:close() else keep[#keep + 1] = l end
  end
  self.lingering = keep
end

function Server:_accept(now)
  for _ = 1, ACCEPT_BATCH do
    local s, err = self.master:accept()
    if not s then
      if err ~= "timeout" then
        -- Out of descriptors, most likely: the waiting clients stay in the
        -- backlog; try again shortly instead of spinning on a readable socket.
        self.accept_paused_until = now + ACCEPT_PAUSE
        self:_log("accept failed: " .. tostring(err))
      end
      return
    end
    s:settimeout(0)
    if self.nconns >= self.max_connections or s:getfd() >= M.SELECT_LIMIT then
      self:_refuse(s, now)
    else
      s:setoption("tcp-nodelay", true)
      self.conns[s] = { sock = s, buf = "", state = "head", last = now, served = 0 }
      self.nconns = self.nconns + 1
    end
  end
end

-- A failure in one connection's handling closes that connection, never
-- the server. An interrupt (SIGINT) still stops it.
function Server:_guard(fn, c, now)
  local ok, err = pcall(fn, self, c, now)
  if ok then return end
  if tostring(err):find("interrupted", 1, true) then error(err, 0) end
  io.stderr:write("endaoment-sandbox: dropped a connection after an internal error: ", tostring(err), "\n")
  pcall(self._close, self, c)
end

-- step(timeout) runs one round of the loop: waits at most `timeout` s
-- (default 1) for sockets, then serves what is ready.
function Server:step(timeout)
  local now = socket.gettime()
  local wait = timeout or 1
  local rset, wset = {}, {}
  if now >= self.accept_paused_until then
    rset[1] = self.master
  else
    wait = math.min(wait, self.accept_paused_until - now)
  end
  for sock, c in pairs(self.conns) do
    if c.state == "respond" then
      if c.ready_at <= now then wset[#wset + 1] = sock end
    else
      rset[#rset + 1] = sock
    end
    wait = math.min(wait, self:_deadline(c, now) - now)
  end
  if #self.lingering > 0 then wait = math.min(wait, LINGER_POLL) end
  local readable, writable = socket.select(rset, wset, math.max(wait, 0))
  now = socket.gettime()
  for _, sock in ipairs(readable or {}) do
    if sock == self.master then
      self:_accept(now)
    elseif self.conns[sock] then
      self:_guard(self._on_readable, self.conns[sock], now)
    end
  end
  for _, sock in ipairs(writable or {}) do
    if self.conns[sock] then self:_guard(self._on_writable, self.conns[sock], now) end
  end
  self:_expire(now)
  self:_poll_lingering(now)
end

-- run() serves until stop() is called (from a handler of yours) or an
-- error (an interrupt) escapes; listens first if listen() was not called.
function Server:run()
  if not self.master then assert(self:listen()) end
  self.running = true
  while self.running do self:step(1) end
end

function Server:stop()
  self.running = false
end

-- Open connections: served (watched by select) and refused (lingering).
function Server:connections()
  return self.nconns, #self.lingering
end

-- close(): writes the state file if needed and closes every socket.
function Server:close()
  self:persist()
  for sock in pairs(self.conns) do sock:close() end
  for _, l in ipairs(self.lingering) do l.sock:close() end
  self.conns, self.nconns, self.lingering = {}, 0, {}
  if self.master then self.master:close(); self.master = nil end
end

return M
