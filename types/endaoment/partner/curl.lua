---@meta endaoment.partner.curl
-- Type definitions for lua-language-server (LuaCATS): csrc/curl*.c, the libcurl
-- transport (easy handle) and its multi interface (the async client).
-- Definitions only; nothing here runs.

---@class endaoment.partner.curl
---@field version string libcurl's version
local curl = {}

---@class endaoment.partner.curl.Options
---@field ca_file? string PEM file of trusted CAs (default: the system bundle)
---@field max_response_bytes? integer larger answers fail (kind "too_large")
---@field user_agent? string
---@field allow_http_loopback? boolean plain http to loopback addresses (the sandbox; never through a proxy)
---@field proxy? string proxy URL; "" for none; nil: libcurl reads https_proxy / all_proxy
---@field no_proxy? string hosts reached directly; nil: libcurl reads no_proxy
---@field max_connections? integer multi only: transfers at once (default 16)

---A transport: one reused easy handle (keep-alive) and a share handle.
---@param opts? endaoment.partner.curl.Options
---@return endaoment.partner.curl.Transport|nil transport
---@return endaoment.partner.TransportError|nil err
function curl.new(opts) end

---Blocks the calling thread for ms milliseconds (nanosleep); the blocking retries wait here.
---@param ms number
---@return nil
function curl.sleep_ms(ms) end

---A multi handle: many requests at once, driven by the caller.
---@param opts? endaoment.partner.curl.Options
---@return endaoment.partner.curl.Multi|nil multi
---@return endaoment.partner.TransportError|nil err
function curl.multi(opts) end

---@class endaoment.partner.curl.Transport
local Transport = {}

---Sends one request and waits for its answer.
---@param req endaoment.partner.TransportRequest
---@return endaoment.partner.TransportResponse|nil res
---@return endaoment.partner.TransportError|nil err
function Transport:request(req) end

---Frees the handles; idempotent (also on garbage collection).
function Transport:close() end

---@class endaoment.partner.curl.Multi
local Multi = {}

---Queues a request and, when one of max_connections is free, starts it at once (sends it on a
---kept-alive connection, or starts connecting); never blocks.
---@param req endaoment.partner.TransportRequest
---@return integer|nil id
---@return endaoment.partner.TransportError|nil err
function Multi:add(req) end

---Moves bytes on the sockets that are ready and runs libcurl's timer; never blocks.
---@return integer|nil n transfers added and not yet taken by next()
---@return endaoment.partner.TransportError|nil err
function Multi:perform() end

---One finished transfer: id, res; or id, nil, err; or nil when none has finished.
---@return integer|nil id
---@return endaoment.partner.TransportResponse|nil res
---@return endaoment.partner.TransportError|nil err
function Multi:next() end

---Blocks up to ms for socket activity (poll(2), no descriptor limit), then moves bytes.
---@param ms integer
---@return integer|nil n
---@return endaoment.partner.TransportError|nil err
function Multi:wait(ms) end

---libcurl's timer: 0 to call perform (or socket_action()) now, -1 when none is set.
---@return integer ms
function Multi:timeout() end

---The sockets libcurl watches now, whatever their number.
---@return { fd: integer, read: boolean, write: boolean }[]
function Multi:fds() end

---What changed since the last call (libcurl's socket callback, recorded in C).
---@return { fd: integer, want: "r"|"w"|"rw"|"remove" }[]
function Multi:socket_changes() end

---A socket is ready (events: "r", "w", "rw", "e"), or with no fd the timer is due.
---@param fd? integer
---@param events? string
---@return integer|nil n transfers added and not yet taken by next()
---@return endaoment.partner.TransportError|nil err
function Multi:socket_action(fd, events) end

---Cancels a queued, running or finished-but-not-taken transfer.
---@param id integer
---@return boolean cancelled
function Multi:cancel(id) end

---@return integer n transfers not yet taken
---@return integer running transfers inside libcurl
function Multi:count() end

---Frees everything; idempotent (also on garbage collection).
function Multi:close() end

return curl
