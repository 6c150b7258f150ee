-- endaoment.partner: client for Endaoment's tech-platform partner API.
--
-- The C core (endaoment.partner.core) validates and encodes request bodies
-- and makes error objects; a transport (libcurl by default, nginx cosockets
-- or your own) moves bytes; this module holds the public API, the retry
-- policy and response decoding. Bad options to new() raise; bad data and
-- every runtime failure return nil, err, meta.
local core = require "endaoment.partner.core"
local retry = require "endaoment.partner.retry"
local net = require "endaoment.partner.net"
-- The *_async twins and the event-loop methods, mixed into Client below
-- (libcurl itself is loaded on the first async call only).
local async = require "endaoment.partner.async"

local M = {}

-- Present only inside OpenResty; read through _G so plain Lua needs no global.
local ngx = rawget(_G, "ngx")

M.VERSION = core.version
M._VERSION = core.version
M.null = core.null
M.array_mt = core.array_mt
M.Error = core.Error

-- No default: production must be named, never reached by accident.
M.ENVIRONMENTS = {
  production = "https://api.endaoment.org",
  staging = "https://api.staging.endaoment.org",
  dev = "https://api.dev.endaoment.org",
}

M.uuid4 = core.uuid4
M.is_uuid = core.is_uuid
M.partner_identifier = core.partner_identifier
M.dollars_to_micro = core.dollars_to_micro
M.micro_to_dollars = core.micro_to_dollars

-- The journey's operations: method, path, and how the call authenticates.
-- auth: "key" (x-api-key), "key_or_bearer", "bearer", "none".
-- Every operation, its fields and rules come from the one contract,
-- endaoment.partner.schema: method, path, auth ("key" = x-api-key,
-- "key_or_bearer", "bearer", "none"), acting user, keyed writes and the
-- natural id a key is derived from (docs/derived-keys.md).
local schema = require "endaoment.partner.schema"
local OPS = schema.operations
M.OPERATIONS = OPS
M.schema = schema
M.DEFAULT_KEY_NAMESPACE = core.DEFAULT_KEY_NAMESPACE

-- The documented response enums, as constants: partner.GRANT_SUBMISSION_STATUS.Accepted == "Accepted".
M.enums = schema.enums
for name, values in pairs(schema.enums) do
  local t = {}
  for _, v in ipairs(values) do t[v] = v end
  M[name:upper()] = t
end

-- JSON null in an answer (core.null == cjson.null, a lightuserdata) is truthy in Lua:
-- test fields that may be null with partner.is_null(v).
function M.is_null(v)
  return v == core.null
end

-- The options of a call given none: read-only, so that no code path can
-- leave something in it for the next call.
local EMPTY = setmetatable({}, { __newindex = function() error("endaoment.partner: EMPTY is read-only", 2) end })

-- The longest natural id a key is derived from (the core's bound).
local MAX_NATURAL_ID = 1024
-- "inboundCustodianTransfer.partnerFundingTransferId": made once, not per call.
local NATURAL_FIELD = {}
for op, spec in pairs(OPS) do
  if spec.natural then NATURAL_FIELD[op] = table.concat(spec.natural, ".") end
end
-- The natural id of a body for op, and its field, or nil (absent, not a
-- usable string). The rule is core.derive_natural's, the planner's one call
-- for the key; the key it derives on the way is dropped here.
local function natural_id(op, body)
  local path = OPS[op] and OPS[op].natural
  if not path then return nil end
  local _, v = core.derive_natural(core.DEFAULT_KEY_NAMESPACE, op, body, path[1], path[2])
  if not v then return nil end
  return v, NATURAL_FIELD[op]
end
M._natural_id = natural_id

local function new_error(kind, message, extra)
  return core.error(kind, message, extra)
end

function M.validate(op, body, opts)
  if not (OPS[op] and OPS[op].body) then
    return nil, new_error("invalid", "unknown operation " .. tostring(op) .. " (or one without a body)",
      { field = "operation" })
  end
  return core.validate(op, body, opts)
end

---------------------------------------------------------------------------
-- options
---------------------------------------------------------------------------

local OPTION_TYPES = {
  api_key = "string", environment = "string", base_url = "string", bearer_token = "string",
  timeout_ms = "number", connect_timeout_ms = "number", max_retries = "number",
  retry_base_ms = "number", retry_cap_ms = "number", retry_after_cap_ms = "number",
  max_response_bytes = "number", strict = "boolean", ca_file = "string", proxy = "string", no_proxy = "string",
  transport = "any", user_agent = "string", random = "function", on_retry = "function",
  max_connections = "number", on_error = "function", key_namespace = "string", derive_keys = "boolean",
}

local parse_base_url = net.parse_base_url
local is_loopback_host = net.is_loopback_host

-- Every option of partner.new, checked in one place. Returns nil, or the
-- message of the first problem (partner.new raises it at its caller).
local function check_options(opts)
  if type(opts) ~= "table" then return "options must be a table" end
  for k, v in pairs(opts) do
    local want = OPTION_TYPES[k]
    if not want then return "unknown option '" .. tostring(k) .. "'" end
    if want ~= "any" and type(v) ~= want then
      return string.format("option %s must be a %s", k, want)
    end
  end
  local function whole(name, lo, hi)
    local v = opts[name]
    if v ~= nil and (v ~= v or v == math.huge or v ~= math.floor(v) or v < lo or (hi and v > hi)) then
      return "option " .. name .. " must be a whole number from " .. lo .. (hi and (" to " .. hi) or " up")
    end
  end
  local why = whole("timeout_ms", 1, net.MAX_TIMEOUT_MS) or whole("connect_timeout_ms", 1, net.MAX_TIMEOUT_MS) or
    whole("max_retries", 0) or whole("retry_base_ms", 0) or whole("retry_cap_ms", 0) or
    whole("retry_after_cap_ms", 0) or whole("max_response_bytes", 1, 1073741824) or
    whole("max_connections", 1, async.MAX_CONNECTIONS)
  if why then return why end
  for _, name in ipairs({ "api_key", "bearer_token" }) do
    local v = opts[name]
    if v ~= nil then
      local ok, msg = core.header_value_ok(v)
      if not ok or v == "" then
        return "option " .. name .. " is not a valid header value: " .. (msg or "empty")
      end
    end
  end
  if opts.user_agent ~= nil then
    local ok, msg = core.header_value_ok(opts.user_agent)
    if not ok then return "option user_agent is not a valid header value: " .. tostring(msg) end
  end
  for _, name in ipairs({ "proxy", "no_proxy" }) do
    local problem = opts[name] ~= nil and net.proxy_problem(opts[name], name == "no_proxy")
    if problem then return "option " .. name .. " " .. problem end
  end
  if opts.key_namespace ~= nil and not core.is_uuid(opts.key_namespace) then
    return "option key_namespace must be a UUID string (got '" .. opts.key_namespace .. "')"
  end
  if not opts.api_key and not opts.bearer_token then
    return "api_key is required (or bearer_token for OAuth-only use)"
  end
  if opts.environment and opts.base_url then
    return "give environment or base_url, not both"
  end
  if opts.environment then
    if not M.ENVIRONMENTS[opts.environment] then
      return "environment must be one of production, staging, dev (got '" .. opts.environment .. "')"
    end
  elseif opts.base_url then
    local scheme, host = parse_base_url(opts.base_url)
    if not scheme then
      return "base_url must be scheme://host[:port][/path], with no user info, query or spaces (got '" ..
        opts.base_url .. "')"
    end
    if scheme == "http" and not is_loopback_host(host) then
      return "base_url must be https:// (plain http only to a loopback address such as the sandbox: " ..
        "localhost, 127.0.0.0/8, [::1])"
    end
  else
    return "environment ('production', 'staging' or 'dev') or base_url is required; there is no default, " ..
      "so that nothing reaches production by accident"
  end
  return nil
end

---------------------------------------------------------------------------
-- client
---------------------------------------------------------------------------

local Client = {}
Client.__index = Client
-- poll, wait, pending, fds, timeout_ms and the socket interface (socket_changes,
-- socket_action, timer_ms): endaoment.partner.async's methods, mixed in here.
for name, fn in pairs(async.methods) do Client[name] = fn end

local function redact(key)
  if not key then return "none" end
  return "..." .. key:sub(-4)
end

Client.__tostring = function(self)
  return string.format("endaoment.partner client (%s, api key %s)", self.base_url, redact(self.api_key))
end

local function lua_version()
  if type(jit) == "table" and jit.version then return jit.version end
  return _VERSION
end

-- The transport for the options: a table, or one of ours. Returns it, or
-- nil and the message of what is wrong with the choice.
local function pick_transport(cfg, choice)
  if type(choice) == "table" then
    if type(choice.request) ~= "function" then
      return nil, "transport must have a request(req) method"
    end
    return choice
  end
  if choice ~= nil and choice ~= "auto" and choice ~= "curl" and choice ~= "ngx" and choice ~= "resty_http" then
    return nil, "transport must be 'auto', 'curl', 'ngx', 'resty_http' or a table"
  end
  if choice == "resty_http" then
    return require("endaoment.partner.transport.ngx").new_resty_http(cfg)
  end
  -- Inside nginx, auto never picks libcurl: it would block the worker.
  if choice == "ngx" or ((choice == nil or choice == "auto") and type(ngx) == "table" and ngx.get_phase) then
    return require("endaoment.partner.transport.ngx").new(cfg)
  end
  local tcurl = require "endaoment.partner.transport.curl"
  local t, err = tcurl.new(cfg)
  if not t then
    return nil, "the libcurl transport cannot load (" .. tostring(err) ..
      "); build it with `make`, or pass transport = <your transport>"
  end
  return t
end

-- Every error of new() is raised here, pointing at new()'s caller.
local function new_failed(message)
  error("endaoment.partner.new: " .. message, 3)
end

function M.new(opts)
  local why = check_options(opts)
  if why then new_failed(why) end
  local self = setmetatable({}, Client)
  self.api_key = opts.api_key
  self.bearer_token = opts.bearer_token
  self.environment = opts.environment
  self.base_url = (opts.base_url or M.ENVIRONMENTS[opts.environment]):gsub("/+$", "")
  -- Named apart from the async client's timeout_ms() method.
  self.request_timeout_ms = opts.timeout_ms or 30000
  self.connect_timeout_ms = opts.connect_timeout_ms or 10000
  self.strict = opts.strict == true
  self.random = opts.random
  self.key_namespace = (opts.key_namespace or core.DEFAULT_KEY_NAMESPACE):lower()
  self.derive_keys = opts.derive_keys ~= false
  self.on_retry = opts.on_retry
  self.on_error = opts.on_error
  self.retry = {
    max_retries = opts.max_retries or retry.DEFAULTS.max_retries,
    retry_base_ms = opts.retry_base_ms or retry.DEFAULTS.retry_base_ms,
    retry_cap_ms = opts.retry_cap_ms or retry.DEFAULTS.retry_cap_ms,
    retry_after_cap_ms = opts.retry_after_cap_ms or retry.DEFAULTS.retry_after_cap_ms,
  }
  local cfg = {
    ca_file = opts.ca_file, proxy = opts.proxy, no_proxy = opts.no_proxy,
    max_response_bytes = opts.max_response_bytes or 8 * 1024 * 1024,
    timeout_ms = self.request_timeout_ms, connect_timeout_ms = self.connect_timeout_ms,
  }
  -- What the async client's libcurl multi handle is made with, on the first async call.
  self._async_opts = { max_connections = opts.max_connections, ca_file = opts.ca_file, proxy = opts.proxy,
    no_proxy = opts.no_proxy, max_response_bytes = opts.max_response_bytes }
  local transport, terr = pick_transport(cfg, opts.transport)
  if not transport then new_failed(terr) end
  self.transport = transport
  local tname = transport.name
  if (opts.proxy or opts.no_proxy) and tname ~= "curl" then
    -- A proxy the transport would ignore must not look applied.
    if transport.close then transport:close() end
    new_failed("proxy and no_proxy apply to the libcurl transport only (this client's is '" ..
      tostring(tname or "custom") .. "'" .. ((tname == "ngx" or tname == "resty_http") and
      ": nginx cosockets connect directly and use no proxy" or "") .. ")")
  end
  if opts.ca_file ~= nil and tname == "curl" then
    -- Found now, not at the first call, which may be hours into a batch.
    local f = io.open(opts.ca_file, "rb")
    if not f then
      transport:close()
      new_failed("ca_file " .. opts.ca_file .. " cannot be read")
    end
    f:close()
  end
  local tv = transport.version or (tname or "custom")
  -- Sent by every call as its user-agent header (see Client:_headers).
  self.user_agent = opts.user_agent or string.format("endaoment-partner-lua/%s (%s; %s)", M.VERSION,
    lua_version(), tv)
  return self
end

-- The idempotency key the client derives for op from natural_id (the
-- partner's own ledger id): the same on every run, machine and language.
function Client:derive_key(op, id)
  if type(op) ~= "string" or not op:match("^[a-z0-9_]+$") then
    return nil, new_error("invalid", "derive_key: op must be an operation name such as " ..
      "\"record_cash_donation\"", { field = "op" })
  end
  if type(id) ~= "string" or id == "" or #id > MAX_NATURAL_ID or id:find("%z") then
    return nil, new_error("invalid", "derive_key: natural_id must be a non-empty string of at most " ..
      MAX_NATURAL_ID .. " bytes without NUL", { field = "natural_id" })
  end
  return core.derive_key(self.key_namespace, op, id)
end

-- Also cancels every async request and frees the multi handle: no
-- callback runs after it. Idempotent.
function Client:close()
  async.close(self)
  if self.transport and self.transport.close then self.transport:close() end
end
Client.__close = Client.close

---------------------------------------------------------------------------
-- request execution
---------------------------------------------------------------------------

local MAX_ERROR_BODY = 2048

local wall_ms = net.now_ms
M._wall_ms = wall_ms

-- Validation messages start with the field path ("grants.2.amountMicroDollars
-- must be ..."); class-validator's a.0.b becomes a[1].b, as Lua users index.
local function first_field(messages)
  local m = messages[1]
  if type(m) ~= "string" then return nil end
  local f = m:match("^([a-z][%w_]*[%w_%.]*) ")
  if f then
    f = f:gsub("%.(%d+)", function(i) return "[" .. (tonumber(i) + 1) .. "]" end)
  end
  return f
end

-- A 409 on a key derived from the partner's own id means that id was used
-- before for a different payload: say which, in the partner's terms.
function M._natural_conflict(e, field, value)
  e.message = string.format("%s %q was already used for a different payload (the idempotency key " ..
    "is derived from it); nothing was created by this request. If this is the same operation, it is " ..
    "already recorded: send the original payload unchanged to read the first answer. If it is a " ..
    "different operation, give it its own %s. (API: %s)", field, value, field, e.message)
  e.field = field
  e.conflict = true
  return e
end

local function http_error(res, decoded)
  local messages, text, field
  if type(decoded) == "table" then
    if type(decoded.message) == "table" then
      messages = decoded.message
      field = first_field(messages)
      local parts = {}
      for i, m in ipairs(messages) do parts[i] = tostring(m) end
      text = table.concat(parts, "; ")
    elseif type(decoded.message) == "string" then
      messages = { decoded.message }
      text = decoded.message
    end
  end
  local reason = type(decoded) == "table" and type(decoded.error) == "string" and decoded.error or nil
  local body = res.body or ""
  if #body > MAX_ERROR_BODY then body = body:sub(1, MAX_ERROR_BODY) .. "...(truncated)" end
  -- tostring(err) appends "[HTTP <status>]"; the message carries the reason.
  local message = (reason or ("HTTP " .. res.status)) .. (text and (": " .. text) or "")
  return new_error("http", message, {
    status = res.status, messages = messages, field = field,
    retryable = retry.RETRYABLE_STATUS[res.status] == true, body = body,
    request_id = res.headers and res.headers["x-request-id"] or nil,
  })
end

-- A transport failure as the caller sees it: a partner.Error whose
-- retryable comes from the one table (endaoment.partner.retry). "too_large"
-- and "unknown" are reported as kind network (err.too_large marks the
-- first; the second is never retried).
local function transport_error(terr)
  local kind = terr and terr.kind or "network"
  if kind == "too_large" or kind == "unknown" then kind = "network" end
  return new_error(kind, terr and terr.message or "transport failed", {
    retryable = retry.failure_retryable(terr), curl_code = terr and terr.curl_code,
    too_large = terr and terr.kind == "too_large" or nil,
  })
end

-- One finished exchange (or transport failure) -> result, err, meta.
local function finish(_, res, terr, meta)
  if not res then
    return nil, transport_error(terr), meta
  end
  meta.status = res.status
  meta.headers = res.headers
  meta.http_version = res.http_version
  meta.request_id = res.headers and res.headers["x-request-id"] or nil
  local decoded, derr
  local body = res.body or ""
  local first = body:byte(1)
  -- (a JSON object or array, the usual answer, needs no whitespace scan)
  if first ~= 123 and first ~= 91 and not body:find("%S") then
    -- Every documented answer has a JSON body; an empty 2xx would look like
    -- success without the id a later step needs. 204 means no body by design.
    if res.status == 204 or res.status >= 300 then decoded = {} else derr = "empty body" end
  else
    -- The core's decoder: lua-cjson's values, tables made at their size (csrc/core_decode.c).
    decoded, derr = core.decode(body)
  end
  if res.status >= 200 and res.status < 300 then
    if decoded == nil then
      local snippet = #body > 200 and (body:sub(1, 200) .. "...") or body
      return nil, new_error("decode", "the server answered HTTP " .. res.status ..
        " with a body that is not JSON (" .. tostring(derr) .. ")", {
          status = res.status, body = snippet, retryable = false, request_id = meta.request_id,
        }), meta
    end
    return decoded, nil, meta
  end
  local e = http_error(res, decoded)
  if res.status == 409 and meta.idempotency_key_source == "derived" and meta.natural_id then
    M._natural_conflict(e, meta.natural_id.field, meta.natural_id.value)
  end
  return nil, e, meta
end

-- finish, send_budget and count_sends are local functions with Client
-- methods as aliases (the async client calls those): the blocking loop
-- below calls them without a lookup through the client's metatable.
Client._finish = finish

-- How many more times a request may go on the wire: the first send and
-- max_retries more, libcurl's own resends included; once for a write that
-- must not be resent. Set on req before every exchange (req.max_sends), so
-- the libcurl transport refuses a resend past it.
local function send_budget(self, req, meta)
  if req.retry_safe == false then return 1 end
  local n = self.retry.max_retries + 1 - (meta.attempts or 0)
  return n > 1 and n or 1
end
Client._send_budget = send_budget

-- After one exchange: counts in meta.attempts every time it put the request
-- on the wire (res.sends / err.sends: libcurl resends a request by itself
-- when a reused keep-alive connection turns out dead; an exchange that
-- could not connect counts once too), and tells on_retry of each of
-- libcurl's resends, after the fact (no Lua runs inside libcurl). Returns
-- meta.attempts.
local function count_sends(self, meta, res, terr)
  local before = meta.attempts or 0
  local n = (res and res.sends) or (terr and terr.sends)
  if type(n) ~= "number" or n < 1 then n = 1 end
  meta.attempts = before + n
  if n > 1 and self.on_retry then
    for i = 1, n - 1 do
      self.on_retry({ attempt = before + i, wait_ms = 0, resent = true,
        err = new_error("network", "the reused connection closed before an answer: libcurl sent the " ..
          "request again at once, on a new connection", { retryable = true }) })
    end
  end
  return meta.attempts
end
Client._count_sends = count_sends

-- After attempt n: ms to wait before the next, or nil to stop. Shared by
-- the blocking loop below and the async client. A write without an
-- idempotency guarantee (req.retry_safe == false) is retried only on 429,
-- an answer that says the request was not processed.
function Client:_retry_wait(attempt, res, terr, req)
  if req and req.retry_safe == false and not (res and res.status == 429) then return nil end
  local wait = retry.decide(attempt, self.retry, res, terr, self.random)
  if wait and self.on_retry then
    -- A real partner.Error, as every other error the caller sees.
    self.on_retry({ attempt = attempt, wait_ms = wait, status = res and res.status,
      err = terr and transport_error(terr) })
  end
  return wait
end

-- Sends req with the retry policy, blocking (or yielding, under nginx).
local function send(self, req, meta)
  local t0 = wall_ms()
  local res, terr
  while true do
    req.max_sends = send_budget(self, req, meta)
    res, terr = self.transport:request(req)
    local attempts = count_sends(self, meta, res, terr)
    -- (a success is never retried: no policy to consult)
    if res and res.status >= 200 and res.status < 300 then break end
    local wait = self:_retry_wait(attempts, res, terr, req)
    if not wait then break end
    if self.transport.sleep then self.transport:sleep(wait) end
  end
  meta.elapsed_ms = math.floor((wall_ms() - t0) * 10 + 0.5) / 10
  return finish(self, res, terr, meta)
end

-- The headers of a call without per-call credentials or headers are the
-- same every time: made once per kind and reused (read-only: a planner that
-- adds to them copies first). Keyed on the credentials, which a caller may
-- replace on the client (a refreshed token).
local function cached_headers(self, auth, has_body)
  local cache = self._hcache
  if not cache then
    cache = { [true] = {}, [false] = {} }
    self._hcache = cache
  end
  local c = cache[has_body][auth]
  if c and c.api_key == self.api_key and c.bearer == self.bearer_token and c.ua == self.user_agent then
    return c.h
  end
  local h, herr = self:_headers(auth, EMPTY, has_body)
  if not h then return nil, herr end
  cache[has_body][auth] = { h = h, api_key = self.api_key, bearer = self.bearer_token, ua = self.user_agent }
  return h
end

function Client:_headers(auth, opts, has_body)
  local h = { ["user-agent"] = self.user_agent, accept = "application/json" }
  if has_body then h["content-type"] = "application/json" end
  local bearer = opts.bearer_token or self.bearer_token
  if auth == "key" then
    if not self.api_key then return nil, "this call needs an api_key" end
    h["x-api-key"] = self.api_key
  elseif auth == "bearer" then
    if not bearer then return nil, "this call needs a Bearer token: pass bearer_token to new() or in opts" end
    h.authorization = "Bearer " .. bearer
  elseif auth == "key_or_bearer" then
    if opts.bearer_token or (not self.api_key and bearer) then
      h.authorization = "Bearer " .. bearer
    elseif self.api_key then
      h["x-api-key"] = self.api_key
    else
      return nil, "this call needs an api_key or a Bearer token"
    end
  end
  return h
end

local CALL_OPTS = { user_id = "string", bearer_token = "string", idempotency_key = "string",
  timeout_ms = "number", headers = "table" }

-- spec: the operation (nil for request()), whose contract says which
-- options apply: an option that would be silently ignored is refused.
local function check_call_opts(opts, spec, op)
  for k, v in pairs(opts) do
    local want = CALL_OPTS[k]
    if not want then
      return new_error("invalid", "unknown call option '" .. tostring(k) .. "'", { field = "opts." .. tostring(k) })
    end
    if type(v) ~= want then
      return new_error("invalid", "opts." .. k .. " must be a " .. want, { field = "opts." .. k })
    end
  end
  if spec then
    local why
    if opts.user_id and not spec.acting_user then
      why = "user_id: " .. op .. " has no acting user"
    elseif opts.bearer_token and (spec.auth == "key" or spec.auth == "none") then
      why = "bearer_token: " .. op .. (spec.auth == "none" and " needs no credential" or " takes the api_key only")
    elseif opts.idempotency_key and not spec.keyed then
      why = "idempotency_key: " .. op .. " takes no idempotency key"
    end
    if why then
      local name = why:match("^([%w_]+)")
      return new_error("invalid", "opts." .. why .. ", so the option would be ignored; remove it",
        { field = "opts." .. name })
    end
  end
  if opts.user_id and not core.is_uuid(opts.user_id) then
    return new_error("invalid", "opts.user_id must be the user's Endaoment UUID (the id returned by " ..
      "provision_user)", { field = "opts.user_id" })
  end
  if opts.bearer_token ~= nil then
    local ok, msg = core.header_value_ok(opts.bearer_token)
    if not ok then
      return new_error("invalid", "opts.bearer_token is not a valid header value: " .. tostring(msg),
        { field = "opts.bearer_token" })
    end
  end
  if opts.timeout_ms ~= nil then
    local t = opts.timeout_ms
    if t ~= t or t ~= math.floor(t) or t < 1 or t > net.MAX_TIMEOUT_MS then -- NaN, fractions, out of range
      return new_error("invalid", "opts.timeout_ms must be a whole number of milliseconds from 1 to " ..
        net.MAX_TIMEOUT_MS, { field = "opts.timeout_ms" })
    end
  end
  if opts.headers then
    -- The same rule for every transport, before any of them runs.
    for k, v in pairs(opts.headers) do
      local why = net.header_problem(k, v)
      if why then
        local field = "opts.headers." .. tostring(k)
        return new_error("invalid", net.printable(field) .. " " .. why, { field = field })
      end
    end
  end
  return nil
end

-- Planners: each public call validates and builds its request here, then
-- runs it blocking (Client[name]) or asynchronously (Client[name .. "_async"],
-- see endaoment.partner.async). Returns req, meta or nil, err, meta. They are
-- made from schema.operations: a body, path parameters, a query, or none.
local PLANNERS = {}
M._PLANNERS = PLANNERS

local function request_for(self, method, path, headers, body, opts)
  return { method = method, url = self.base_url .. path, headers = headers, body = body,
    timeout_ms = opts.timeout_ms or self.request_timeout_ms, connect_timeout_ms = self.connect_timeout_ms }
end

local function invalid(field, message)
  return nil, new_error("invalid", message, { field = field }), { attempts = 0 }
end

-- Path parameters by type: the value, ready for the path, or nil, message.
local PARAM = {
  uuid = function(v)
    if type(v) == "string" and core.is_uuid(v) then return v:lower() end
    return nil, "must be a UUID string"
  end,
  -- The core's rule, the one the schema's EIN fields are checked with.
  ein = function(v)
    if type(v) == "string" and core.is_ein(v) then return v end
    return nil, "must be 9 digits, with or without a hyphen after the second"
  end,
}

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- The query string of a paged or searched read, checked against the schema.
local function build_query(op, spec, q)
  if q == nil then q = {} end
  if type(q) ~= "table" then return nil, "query", "the query must be a table" end
  local parts = {}
  for k in pairs(q) do
    if not (spec.query and spec.query[k]) then
      local known = {}
      for name in pairs(spec.query or {}) do known[#known + 1] = name end
      table.sort(known)
      return nil, "query." .. tostring(k), "query." .. tostring(k) .. " is not a parameter of " .. op ..
        " (" .. (#known > 0 and table.concat(known, ", ") or "none") .. ")"
    end
  end
  local names = {}
  for name in pairs(spec.query or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local rule, v = spec.query[name], q[name]
    local field = "query." .. name
    if v == nil then
      if rule.required then return nil, field, field .. " is required" end
    elseif rule[1] == "string" then
      if type(v) ~= "string" or v == "" then return nil, field, field .. " must be a non-empty string" end
      if not core.utf8_len(v) then return nil, field, field .. " must be valid UTF-8" end
      parts[#parts + 1] = name .. "=" .. urlencode(v)
    else -- count, offset: whole numbers
      local lo = rule[1] == "count" and 1 or 0
      if type(v) ~= "number" or v % 1 ~= 0 or v < lo or (rule.max and v > rule.max) then
        return nil, field, string.format("%s must be a whole number from %d%s", field, lo,
          rule.max and (" to " .. rule.max) or " up")
      end
      parts[#parts + 1] = string.format("%s=%d", name, v)
    end
  end
  return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

-- core.prepare's options, filled in per call: prepare reads them at once
-- and nothing runs in between, so one table serves every call.
local PREPARE_OPTS = {}

-- A call's meta with room for every field it gets (the nil fields size the
-- table and add no key), so filling it in never rehashes it.
local function new_meta()
  return { attempts = 0, idempotency_key = nil, idempotency_key_source = nil, natural_id = nil,
    warnings = nil, status = nil, headers = nil, http_version = nil, request_id = nil, elapsed_ms = nil }
end

local function plan_body(op, spec)
  -- The natural id's path, as arguments of core.derive_natural (the rule
  -- natural_id above uses too; it derives the key in the same call).
  local n1, n2 = spec.natural and spec.natural[1], spec.natural and spec.natural[2]
  local nfield = NATURAL_FIELD[op]
  return function(self, body, opts)
    local plain = opts == nil or next(opts) == nil -- the common call: no options to check or apply
    opts = opts or EMPTY
    local meta = new_meta()
    if not plain then
      local oerr = check_call_opts(opts, spec, op)
      if oerr then return nil, oerr, meta end
    end
    local key, source = opts.idempotency_key, nil
    if spec.keyed then
      if key ~= nil or (type(body) == "table" and rawget(body, "idempotencyKey") ~= nil) then
        source = "given"
      else
        local nid
        if n1 and self.derive_keys then
          key, nid = core.derive_natural(self.key_namespace, op, body, n1, n2)
        end
        if key then
          source = "derived"
          meta.natural_id = { field = nfield, value = nid }
        else
          source = "random"
        end
      end
    end
    PREPARE_OPTS.strict, PREPARE_OPTS.idempotency_key = self.strict, key
    local json, info = core.prepare(op, body, PREPARE_OPTS)
    PREPARE_OPTS.idempotency_key = nil
    if not json then return nil, info, meta end
    meta.idempotency_key = info.idempotency_key
    meta.idempotency_key_source = source
    meta.warnings = info.warnings
    local headers, herr
    if plain then
      headers, herr = cached_headers(self, spec.auth, true)
    else
      headers, herr = self:_headers(spec.auth, opts, true)
    end
    if not headers then return nil, new_error("config", herr), meta end
    if not plain then
      if spec.acting_user and opts.user_id then
        headers["x-endaoment-user-id"] = opts.user_id:lower()
      end
      for k, v in pairs(opts.headers or EMPTY) do headers[k:lower()] = v end
    end
    local req = request_for(self, spec.method, spec.path, headers, json, opts)
    -- Not idempotent by contract: a resend after a lost answer could act twice.
    if spec.retry == "429" then req.retry_safe = false end
    return req, meta
  end
end

-- Reads and body-less writes: path parameters in order, then the query
-- (when the operation has one), then opts.
local function plan_path(op, spec)
  local pnames = {}
  for name in spec.path:gmatch("{(%w+)}") do pnames[#pnames + 1] = name end
  local has_query = spec.query ~= nil
  return function(self, ...)
    local args = { ... }
    local n = #pnames
    local q = has_query and args[n + 1] or nil
    local opts = args[n + (has_query and 2 or 1)] or {}
    local meta = { attempts = 0 }
    local path = spec.path
    for i, name in ipairs(pnames) do
      local v, why = PARAM[spec.params[name]](args[i])
      if not v then return invalid(name, name .. " " .. why) end
      path = path:gsub("{" .. name .. "}", v)
    end
    if has_query then
      local qs, field, why = build_query(op, spec, q)
      if not qs then return invalid(field, why) end
      path = path .. qs
    end
    if type(opts) ~= "table" then return invalid("opts", "opts must be a table") end
    local oerr = check_call_opts(opts, spec, op)
    if oerr then return nil, oerr, meta end
    local headers, herr = self:_headers(spec.auth, opts, false)
    if not headers then return nil, new_error("config", herr), meta end
    for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v end
    local req = request_for(self, spec.method, path, headers, spec.method ~= "GET" and "" or nil, opts)
    if spec.retry == "429" then req.retry_safe = false end
    return req, meta
  end
end

for _, op in ipairs(schema.OPERATION_ORDER) do
  local spec = OPS[op]
  PLANNERS[op] = spec.body and plan_body(op, spec) or plan_path(op, spec)
end

-- Escape hatch for endpoints not wrapped yet. body: a table (encoded by the
-- core's generic encoder), a JSON string, or nil. opts.auth picks the
-- credential: "key" (default), "bearer", "key_or_bearer", "none".
function PLANNERS.request(self, method, path, body, opts)
  opts = opts or {}
  local meta = { attempts = 0 }
  if type(method) ~= "string" or not method:match("^%u+$") then
    return nil, new_error("invalid", "method must be an upper-case HTTP method", { field = "method" }), meta
  end
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" or path:find("[%c%s]") then
    return nil, new_error("invalid", "path must start with / and contain no spaces or control characters",
      { field = "path" }), meta
  end
  local auth = opts.auth or "key"
  if opts.idempotent ~= nil and type(opts.idempotent) ~= "boolean" then
    return nil, new_error("invalid", "opts.idempotent must be a boolean", { field = "opts.idempotent" }), meta
  end
  local copts = {}
  for k, v in pairs(opts) do if k ~= "auth" and k ~= "idempotent" then copts[k] = v end end
  local oerr = check_call_opts(copts)
  if oerr then return nil, oerr, meta end
  local json
  if type(body) == "table" then
    local e
    json, e = core.encode(body)
    if not json then return nil, e, meta end
  elseif type(body) == "string" or body == nil then
    json = body
  else
    return nil, new_error("invalid", "body must be a table, a JSON string or nil", { field = "body" }), meta
  end
  local headers, herr = self:_headers(auth, copts, json ~= nil)
  if not headers then return nil, new_error("config", herr), meta end
  if copts.user_id then headers["x-endaoment-user-id"] = copts.user_id:lower() end
  for k, v in pairs(copts.headers or {}) do headers[k:lower()] = v end
  local req = request_for(self, method, path, headers, json, copts)
  -- An endpoint we do not know may not be idempotent: retry a write only when
  -- the caller says it is, or its body carries an idempotencyKey.
  if method ~= "GET" and method ~= "HEAD" and opts.idempotent ~= true and
     not (type(body) == "table" and body.idempotencyKey ~= nil) then
    req.retry_safe = false
  end
  return req, meta
end

for name, planner in pairs(PLANNERS) do
  Client[name] = function(self, ...)
    local req, meta_or_err, meta = planner(self, ...)
    if not req then return nil, meta_or_err, meta end
    return send(self, req, meta_or_err)
  end
  -- The twin: the same planner, run on libcurl's multi interface (endaoment.partner.async).
  Client[name .. "_async"] = async.twin(name, planner)
end

-- Pages through a list (schema operations with paged = true) by count and
-- offset until a short page:
--   local orgs = client:each("search_orgs", { searchTerm = "food" })
--   for org in orgs do print(org.name) end
--   if orgs.err then error(tostring(orgs.err)) end
-- Path parameters come first (client:each("fund_activity", fund_id, query)).
-- A failed page ends the loop and leaves the error in .err (and .meta).
local Pager = {}
Pager.__index = Pager

function Client:each(op, ...)
  local spec = OPS[op]
  local pager = setmetatable({ pages = 0, count = 0, buf = {}, i = 1 }, Pager)
  if not spec or not spec.paged then
    local names = {}
    for _, name in ipairs(schema.OPERATION_ORDER) do if OPS[name].paged then names[#names + 1] = name end end
    pager.err = new_error("invalid", "each: " .. tostring(op) .. " is not a list that pages (" ..
      table.concat(names, ", ") .. ")", { field = "op" })
    pager.done = true
    return pager
  end
  local nparams = 0
  for _ in spec.path:gmatch("{%w+}") do nparams = nparams + 1 end
  local args = { ... }
  local query = {}
  for k, v in pairs(args[nparams + 1] or {}) do query[k] = v end
  local size = query.count or math.min(schema.DEFAULT_PAGE_COUNT, spec.query.count.max or schema.DEFAULT_PAGE_COUNT)
  query.count = size
  query.offset = query.offset or 0
  pager.client, pager.op, pager.query, pager.size = self, op, query, size
  pager.params, pager.nparams, pager.opts = args, nparams, args[nparams + 2]
  pager.buf, pager.i = {}, 1
  return pager
end

function Pager:__call()
  while true do
    if self.i <= #self.buf then
      local item = self.buf[self.i]
      self.i = self.i + 1
      self.count = self.count + 1
      return item
    end
    if self.done then return nil end
    local call = {}
    for i = 1, self.nparams do call[i] = self.params[i] end
    call[self.nparams + 1] = self.query
    call[self.nparams + 2] = self.opts
    local page, err, meta = self.client[self.op](self.client, (table.unpack or unpack)(call, 1, self.nparams + 2))
    self.meta = meta
    if not page then
      self.err, self.done = err, true
      return nil
    end
    if type(page) ~= "table" then
      self.err = new_error("decode", self.op .. " answered something other than a list", { field = self.op })
      self.done = true
      return nil
    end
    self.pages = self.pages + 1
    self.buf, self.i = page, 1
    if #page < self.size then self.done = true end
    self.query.offset = self.query.offset + #page
  end
end


return M
