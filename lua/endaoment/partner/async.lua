-- endaoment.partner.async: the asynchronous client, for hosts that run a
-- frame loop or their own event loop and must never block.
--
-- endaoment.partner mixes these methods into its client class when it
-- defines it (M.methods, M.twin, M.close). Every call gets an _async twin
-- that takes a callback as its last argument:
--
--   local h, err, meta = client:submit_grant_async(body, opts, function(result, err, meta) end)
--   client:poll(0)          -- never blocks: moves bytes, starts due retries, runs callbacks
--
-- or, for a host with its own event loop (libcurl's socket interface):
--
--   for _, c in ipairs(client:socket_changes()) do ... watch c.fd for c.want ... end
--   client:socket_action(fd, "r")   -- when fd is ready; client:socket_action() when timer_ms() is due
--
-- The twin runs the same planner as the blocking call (validation, encoding,
-- headers), the same retry policy (Client:_retry_wait), the same counting of
-- sends (Client:_count_sends) and the same result mapping (Client:_finish),
-- so a callback receives exactly what the blocking call would have returned.
-- Invalid input returns nil, err, meta at once: nothing is sent and the
-- callback is never called.
--
-- Transfers run on one libcurl multi handle per client (endaoment.partner.curl
-- multi, csrc/curl_multi.c), loaded on the first async call only: a client
-- used inside nginx never loads libcurl. No Lua runs inside libcurl: results,
-- sockets and timers are recorded in C, and callbacks run from poll, wait and
-- socket_action, each under xpcall.
local core = require "endaoment.partner.core"
local net = require "endaoment.partner.net"

local M = {}

local unpack = table.unpack or unpack
local traceback = debug.traceback

M.DEFAULT_MAX_CONNECTIONS = 16
M.MAX_CONNECTIONS = 512
-- timeout_ms() when transfers are in flight but libcurl has set no timer.
M.IDLE_POLL_MS = 1000

local wall_ms = net.now_ms

local function new_error(kind, message, extra)
  return core.error(kind, message, extra)
end

---------------------------------------------------------------------------
-- errors raised by callbacks
---------------------------------------------------------------------------

local function with_traceback(e)
  return traceback(type(e) == "string" and e or tostring(e), 2)
end

-- cb(a, b, c) under xpcall with a traceback: arguments straight through
-- where xpcall takes them (5.2+, LuaJIT), else through a closure (5.1).
local call_protected
if select(2, xpcall(function(x) return x end, with_traceback, true)) == true then
  call_protected = function(cb, a, b, c) return xpcall(cb, with_traceback, a, b, c) end
else
  call_protected = function(cb, a, b, c) return xpcall(function() return cb(a, b, c) end, with_traceback) end
end

local function default_on_error(err, info)
  io.stderr:write("endaoment.partner: error in the async callback of ", tostring(info.call), " (idempotency key ",
    tostring(info.idempotency_key), "): ", tostring(err), "\n")
end

-- Reports an error raised by a callback (or on_retry); never raises itself.
local function report(client, err, h, where)
  local info = { call = h and h.call, idempotency_key = h and h.idempotency_key, handle = h, where = where }
  local f = rawget(client, "on_error")
  if f then
    local ok, e2 = pcall(f, err, info)
    if ok then return end
    err = tostring(err) .. "\n(and on_error raised: " .. tostring(e2) .. ")"
  end
  pcall(default_on_error, err, info)
end

---------------------------------------------------------------------------
-- handles
---------------------------------------------------------------------------

-- state: "queued" (waiting for a connection slot), "running" (in the multi
-- handle), "waiting" (for a retry), "settling" (an attempt finished,
-- deciding), "ready" (result queued for its callback), "done" (callback
-- called) or "cancelled" (never called).
local Handle = {}
Handle.__index = Handle

local fill -- (st): queued requests take the free connection slots

function Handle:done()
  return self.state == "done" or self.state == "cancelled"
end

local function remove_timer(st, h)
  for i = 1, #st.timers do
    if st.timers[i] == h then table.remove(st.timers, i); return end
  end
end

-- Stops waiting for the request: its callback is never called. What was
-- already sent may have been processed by the API; send the same body again
-- (same idempotency key, h.idempotency_key) to learn the outcome.
function Handle:cancel()
  local st, s = self._st, self.state
  if s == "done" or s == "cancelled" then return false end
  self.state = "cancelled"
  st.npending = st.npending - 1
  self._cb, self._req = nil, nil
  if s == "running" then
    st.by_id[self._id] = nil
    st.nrunning = st.nrunning - 1
    if not st.closed then
      st.multi:cancel(self._id)
      fill(st)                   -- its slot goes to the next queued request
    end
  elseif s == "waiting" then
    remove_timer(st, self)
  end
  -- "queued": left in the queue, which skips it; "finished": out of the
  -- multi handle already, its outcome dropped here
  self._res, self._terr = nil, nil
  return true
end

Handle.__tostring = function(self)
  return string.format("endaoment.partner async %s (%s, attempt %d)", tostring(self.call), self.state,
    self._meta and self._meta.attempts or 0)
end

---------------------------------------------------------------------------
-- per-client state
---------------------------------------------------------------------------

local function async_state(self)
  local st = rawget(self, "_async")
  if st then return st end
  if rawget(self, "_async_closed") then return nil, "the client is closed" end
  local t = self.transport
  local tname = type(t) == "table" and tostring(t.name) or type(t)
  if tname ~= "curl" then
    return nil, "the async calls run on libcurl's multi interface, and this client's transport is '" ..
      tname .. "': create it with transport = 'curl' (or 'auto' outside nginx), or use the blocking calls"
  end
  -- Loaded here, on the first async call, never when the module loads.
  local ok, curl = pcall(require, "endaoment.partner.curl")
  if not ok or type(curl) ~= "table" or not curl.multi then
    return nil, "the libcurl module has no multi support (" .. tostring(ok and "old build" or curl) ..
      "): rebuild it with `make`"
  end
  local o = rawget(self, "_async_opts") or {}
  local multi, err = curl.multi {
    ca_file = o.ca_file,
    proxy = o.proxy,
    no_proxy = o.no_proxy,
    max_response_bytes = o.max_response_bytes,
    allow_http_loopback = true,
    max_connections = o.max_connections or M.DEFAULT_MAX_CONNECTIONS,
  }
  if not multi then return nil, "cannot create the libcurl multi handle: " .. tostring(err and err.message) end
  st = {
    multi = multi,
    max = o.max_connections or M.DEFAULT_MAX_CONNECTIONS,
    nrunning = 0,      -- handles in the multi handle
    by_id = {},        -- transfer id -> handle, while running
    -- Requests beyond max wait here, as Lua tables only: libcurl's request
    -- (URL, header list, body copy: about 4 KiB) is built when one starts,
    -- so a batch of thousands costs the memory of the ones in flight.
    queue = {}, qhead = 1, qtail = 0,
    fin = {}, nfin = 0, -- handles whose transfer finished, outcome not yet read
    last_progress = 0,
    timers = {},       -- handles waiting for a retry (h._due)
    ready = {},        -- { h, result, err, meta } queued for callbacks
    rhead = 1, rtail = 0,
    npending = 0,      -- handles neither done nor cancelled
    closed = false,
    client = self,
  }
  self._async = st
  return st
end

-- Puts one attempt of h in the multi handle; true, or nil and the
-- transport's error table. libcurl starts it at once (csrc/curl_multi.c).
local function add_attempt(self, st, h)
  h._req.max_sends = self:_send_budget(h._req, h._meta)
  local id, terr = st.multi:add(h._req)
  if not id then return nil, terr end
  h._attempt = h._attempt + 1
  h._id = id
  h.state = "running"
  st.nrunning = st.nrunning + 1
  st.by_id[id] = h
  return true
end

-- Starts one attempt of h now when a connection slot is free, else queues
-- it; true, or nil and the transport's error table. (A free slot means an
-- empty queue: every place that frees one, take_finished and cancel, fills
-- it from the queue at once.)
local function start_attempt(self, st, h)
  if st.nrunning < st.max then return add_attempt(self, st, h) end
  h.state = "queued"
  st.qtail = st.qtail + 1
  st.queue[st.qtail] = h
  return true
end

local function elapsed_since(t0)
  return math.floor((wall_ms() - t0) * 10 + 0.5) / 10
end

-- h's final outcome: queued for its callback, which runs later in this poll.
local function settle(self, st, h, res, terr)
  h._meta.elapsed_ms = elapsed_since(h._t0)
  local result, err, meta = self:_finish(res, terr, h._meta)
  h.state = "ready"
  st.rtail = st.rtail + 1
  st.ready[st.rtail] = { h, result, err, meta }
end

-- Queued requests take the free connection slots, in order.
function fill(st)
  local self = st.client
  while st.nrunning < st.max and st.qhead <= st.qtail and not st.closed do
    local h = st.queue[st.qhead]
    st.queue[st.qhead] = nil
    st.qhead = st.qhead + 1
    if h.state == "queued" then
      local ok, terr = add_attempt(self, st, h)
      if not ok then
        -- Refused before anything was sent; the callback gets the error.
        h.state = "settling"
        settle(self, st, h, nil, terr)
      end
    end
  end
  if st.qhead > st.qtail then st.qhead, st.qtail = 1, 0 end
end

-- An attempt of h finished: retry later (same req, same bytes, same key) or settle.
local function attempt_done(self, st, h, res, terr)
  h.state = "settling"
  if res and res.status >= 200 and res.status < 300 and (res.sends or 1) <= 1 then
    -- The common case: sent once, succeeded. Nothing to retry and no
    -- on_retry to run (so nothing to protect): counted and settled here.
    local meta = h._meta
    meta.attempts = (meta.attempts or 0) + 1
    settle(self, st, h, res, terr)
    return
  end
  local ok, wait = xpcall(function()
    local attempts = self:_count_sends(h._meta, res, terr)
    return self:_retry_wait(attempts, res, terr, h._req)
  end, with_traceback)
  if not ok then
    -- on_retry raised: reported, and the outcome so far is final.
    report(self, wait, h, "on_retry")
    wait = nil
  end
  if h.state ~= "settling" then return end                -- cancelled by on_retry
  if st.closed then h.state = "cancelled"; return end     -- closed by on_retry
  if wait then
    h.state = "waiting"
    h._due = wall_ms() + wait
    st.timers[#st.timers + 1] = h
  else
    settle(self, st, h, res, terr)
  end
end

local function next_due(st)
  local due
  for i = 1, #st.timers do
    local d = st.timers[i]._due
    if not due or d < due then due = d end
  end
  return due
end

-- One round: start due retries, let libcurl move bytes (drive(st.multi):
-- perform, or a socket action from the host's event loop), collect finished
-- transfers, then run the callbacks of everything settled. Results are taken
-- out of the queues before any callback runs, so a callback may call
-- poll/wait (or submit, cancel, close) without anything being delivered twice.
local function perform(multi) return multi:perform() end

-- Takes every finished transfer out of the multi handle, so its connection
-- slot is free again. The outcome waits on the handle (state "finished")
-- for step to decode, retry or settle.
local function take_finished(st)
  while not st.closed do
    local id, res, terr = st.multi:next()
    if not id then break end
    local h = st.by_id[id]
    if h then
      st.by_id[id] = nil
      st.nrunning = st.nrunning - 1
      h.state, h._res, h._terr = "finished", res, terr
      st.nfin = st.nfin + 1
      st.fin[st.nfin] = h
    end
  end
end

-- Inside a long run of _async calls, about once a millisecond while
-- requests wait for a slot: move bytes without blocking and give the freed
-- slots to the queue. No callback, on_retry or decoding runs here; they wait
-- for the next poll/wait/socket_action (timer_ms() says 0).
local PROGRESS_MS = 1

local function progress(st, now)
  st.last_progress = now
  local _, perr = st.multi:perform()
  if perr then st.perr = perr end -- reported by the next poll
  take_finished(st)
  fill(st)
end

local function step(self, st, drive, where)
  if #st.timers > 0 then
    local now = wall_ms()
    local i = 1
    while i <= #st.timers do
      local h = st.timers[i]
      if h._due <= now then
        table.remove(st.timers, i)
        local ok, terr = start_attempt(self, st, h)
        if not ok then
          h.state = "settling"
          settle(self, st, h, nil, terr)
        end
      else
        i = i + 1
      end
    end
  end

  local _, perr = (drive or perform)(st.multi)
  perr, st.perr = perr or st.perr, nil
  if perr then report(self, "libcurl: " .. tostring(perr.message), nil, where or "perform") end

  -- Every finished transfer first: its slot goes to a queued request, which
  -- leaves before any answer is decoded or retried.
  take_finished(st)
  fill(st)
  if st.nfin > 0 then
    local fin, nfin = st.fin, st.nfin
    st.fin, st.nfin = {}, 0 -- a poll from on_retry below starts a list of its own
    for i = 1, nfin do
      local h = fin[i]
      -- not if cancelled meanwhile (by an on_retry above); closed: cancelled
      if h.state == "finished" then
        local res, terr = h._res, h._terr
        h._res, h._terr = nil, nil
        if st.closed then
          h.state = "cancelled"
        else
          attempt_done(self, st, h, res, terr)
        end
      end
    end
  end

  local n = 0
  while st.rhead <= st.rtail and not st.closed do
    local item = st.ready[st.rhead]
    st.ready[st.rhead] = nil
    st.rhead = st.rhead + 1
    local h = item[1]
    if h.state == "ready" then
      h.state = "done"
      st.npending = st.npending - 1
      n = n + 1
      local cb = h._cb
      h._cb, h._req = nil, nil
      local ok, e = call_protected(cb, item[2], item[3], item[4])
      if not ok then report(self, e, h, "callback") end
    end
  end
  if st.rhead > st.rtail then st.rhead, st.rtail = 1, 0 end
  return n
end

local function close_state(self)
  rawset(self, "_async_closed", true)
  local st = rawget(self, "_async")
  if not st or st.closed then return end
  st.closed = true
  for _, h in pairs(st.by_id) do h.state = "cancelled" end
  for _, h in ipairs(st.timers) do h.state = "cancelled" end
  for i = st.qhead, st.qtail do
    local h = st.queue[i]
    if h.state == "queued" then h.state = "cancelled" end
  end
  for i = st.rhead, st.rtail do
    local item = st.ready[i]
    if item then item[1].state = "cancelled" end
  end
  st.by_id, st.timers, st.ready, st.rhead, st.rtail, st.npending = {}, {}, {}, 1, 0, 0
  for i = 1, st.nfin do
    local h = st.fin[i]
    if h.state == "finished" then h.state = "cancelled" end
  end
  st.queue, st.qhead, st.qtail, st.nrunning, st.fin, st.nfin = {}, 1, 0, 0, {}, 0
  st.multi:close()
end

---------------------------------------------------------------------------
-- public methods
---------------------------------------------------------------------------

local function submit(self, call, planner, ...)
  local n = select("#", ...)
  local cb = n > 0 and select(n, ...) or nil
  if type(cb) ~= "function" then
    return nil, new_error("invalid", call .. "_async: the last argument must be the callback " ..
      "function(result, err, meta)", { field = "callback" }), { attempts = 0 }
  end
  -- The planner gets every argument but the callback; the usual counts
  -- without a table.
  local req, perr, meta
  local a1, a2, a3 = ...
  if n == 1 then
    req, perr, meta = planner(self)
  elseif n == 2 then
    req, perr, meta = planner(self, a1)
  elseif n == 3 then
    req, perr, meta = planner(self, a1, a2)
  elseif n == 4 then
    req, perr, meta = planner(self, a1, a2, a3)
  else
    local args = { ... }
    req, perr, meta = planner(self, unpack(args, 1, n - 1))
  end
  if not req then return nil, perr, meta end
  meta = perr
  local st, why = async_state(self)
  if not st then return nil, new_error("config", why), meta end
  local h = setmetatable({
    call = call, idempotency_key = meta.idempotency_key, state = "new",
    _st = st, _req = req, _meta = meta, _cb = cb, _attempt = 0, _t0 = wall_ms(),
  }, Handle)
  local ok, terr = start_attempt(self, st, h)
  if not ok then
    -- Refused before anything was sent (a header or URL libcurl will not take).
    local _, err = self:_finish(nil, terr, meta)
    return nil, err, meta
  end
  st.npending = st.npending + 1
  if st.qhead <= st.qtail and h._t0 - st.last_progress >= PROGRESS_MS then progress(st, h._t0) end
  return h
end

local function check_ms(name, v, allow_nil)
  if v == nil and allow_nil then return end
  if type(v) ~= "number" or v ~= v or v < 0 then
    error("endaoment.partner: " .. name .. " takes a number of milliseconds >= 0", 3)
  end
end

-- Methods added to the client class.
local methods = {}

-- Runs what is ready without blocking (timeout_ms 0 or nil); with timeout_ms
-- > 0, as wait(timeout_ms). Returns how many callbacks ran.
function methods:poll(timeout_ms)
  check_ms("poll", timeout_ms, true)
  if timeout_ms and timeout_ms > 0 then return self:wait(timeout_ms) end
  local st = rawget(self, "_async")
  if not st or st.closed then return 0 end
  return step(self, st)
end

-- Blocks up to timeout_ms (nil: no limit) until at least one callback has
-- run, or nothing is pending. Returns how many callbacks ran.
function methods:wait(timeout_ms)
  check_ms("wait", timeout_ms, true)
  local st = rawget(self, "_async")
  if not st or st.closed then return 0 end
  local deadline = timeout_ms and (wall_ms() + timeout_ms)
  local n = step(self, st)
  while n == 0 and st.npending > 0 and not st.closed do
    local now = wall_ms()
    local t = deadline and (deadline - now) or M.IDLE_POLL_MS
    if t <= 0 then break end
    local due = next_due(st)
    if due then t = math.min(t, math.max(0, due - now)) end
    if st.rhead <= st.rtail or st.nfin > 0 then t = 0 end
    local _, werr = st.multi:wait(math.ceil(t))
    if werr then report(self, "libcurl: " .. tostring(werr.message), nil, "wait") end
    n = n + step(self, st)
  end
  return n
end

-- Requests neither completed (callback called) nor cancelled, including
-- those waiting for a retry.
function methods:pending()
  local st = rawget(self, "_async")
  return st and st.npending or 0
end

local FD_MT = { __index = { getfd = function(f) return f.fd end } }

-- The sockets to watch: { {fd=, read=, write=}, ... }; each entry also has
-- :getfd(), so the list can go straight to luasocket's socket.select. Every
-- socket libcurl watches, whatever its number.
function methods:fds()
  local st = rawget(self, "_async")
  if not st or st.closed then return {} end
  local list = st.multi:fds()
  if not list then return {} end
  for i = 1, #list do setmetatable(list[i], FD_MT) end
  return list
end

-- When the next thing is due in ms: 0 now; nil when only sockets can wake the client.
local function due_in(st)
  if st.rhead <= st.rtail or st.nfin > 0 then return 0 end
  local t = st.multi:timeout()
  local due = next_due(st)
  if due then
    local d = math.max(0, math.ceil(due - wall_ms()))
    t = (t < 0) and d or math.min(t, d)
  end
  if t < 0 then return nil end
  return t
end

-- How long (ms) the host may wait on fds() before calling poll(0): libcurl's
-- own timer and the next retry, whichever is first. 0: call poll(0) now.
-- -1: nothing is pending.
function methods:timeout_ms()
  local st = rawget(self, "_async")
  if not st or st.closed or st.npending == 0 then return -1 end
  return due_in(st) or M.IDLE_POLL_MS
end

---------------------------------------------------------------------------
-- libcurl's socket interface, for a host's own event loop
---------------------------------------------------------------------------

-- What changed since the last call, in order: { {fd=, want=}, ... } where
-- want is "r", "w" or "rw" (watch the socket for that, replacing what was
-- asked before) or "remove" (stop watching it: it may already be closed, and
-- its number may come back in a later entry as a new socket). Read it after
-- every call into the client: an _async call, socket_action, poll, wait,
-- cancel.
function methods:socket_changes()
  local st = rawget(self, "_async")
  if not st or st.closed then return {} end
  return st.multi:socket_changes()
end

-- Milliseconds until the host must call socket_action() with no socket
-- (libcurl's timer, a retry that is due, a result waiting for its callback):
-- 0 now; -1 when no timer is needed (sockets alone will wake the client).
function methods:timer_ms()
  local st = rawget(self, "_async")
  if not st or st.closed or st.npending == 0 then return -1 end
  return due_in(st) or -1
end

-- socket_action(fd, events): fd is ready for events ("r", "w", "rw"; "e"
-- for an error; other letters are ignored, so luv's event strings go
-- straight in). socket_action(): the timer is due. Moves bytes on that
-- socket only, starts due retries and runs the callbacks of what finished.
-- Returns how many callbacks ran. Never blocks.
function methods:socket_action(fd, events)
  if fd ~= nil and (type(fd) ~= "number" or fd < 0 or fd % 1 ~= 0) then
    error("endaoment.partner: socket_action takes a file descriptor (or nothing, when the timer is due)", 2)
  end
  if events ~= nil and type(events) ~= "string" then
    error("endaoment.partner: socket_action's events must be a string such as \"r\", \"w\" or \"rw\"", 2)
  end
  local st = rawget(self, "_async")
  if not st or st.closed then return 0 end
  return step(self, st, function(multi) return multi:socket_action(fd, events) end, "socket_action")
end

---------------------------------------------------------------------------
-- what endaoment.partner mixes into its client class
---------------------------------------------------------------------------

-- poll, wait, pending, fds, timeout_ms, socket_changes, timer_ms, socket_action.
M.methods = methods

-- The _async twin of a call: function(self, ..., callback) running planner.
function M.twin(name, planner)
  return function(self, ...) return submit(self, name, planner, ...) end
end

-- Client:close() calls this first: every async request is cancelled and the
-- multi handle freed; no callback runs afterwards, no async call starts.
M.close = close_state

return M
