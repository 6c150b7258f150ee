-- Transport over nginx cosockets (OpenResty / lua-nginx-module), so a call
-- yields to nginx's event loop instead of blocking the worker. libcurl is
-- never loaded here: its blocking perform would stall every request the
-- worker serves, and its OpenSSL can clash with nginx's.
--
-- The object holds no socket between requests (connections rest in nginx's
-- keep-alive pool), so one client at module level is safe to share.
--
-- Cosockets connect directly: no proxy is used (https_proxy and the like are
-- not read), and partner.new refuses the proxy options with this transport.
-- The rules every transport shares come from endaoment.partner.net (plain
-- http to loopback only, the caller headers refused) and
-- endaoment.partner.retry (which failures are retried: this transport
-- reports kinds, never its own verdict).
local net = require "endaoment.partner.net"

local ngx = rawget(_G, "ngx")

local M = {}

-- Phases where ngx.socket.tcp works (lua-nginx-module's documentation).
M.COSOCKET_PHASES = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

M.KEEPALIVE_MS = 25000   -- below common server idle timeouts (the sandbox's is 60 s)
M.POOL_SIZE = 32
local MAX_HEADER_BYTES = 64 * 1024

local T = {}
T.__index = T

local function fail(kind, message)
  return nil, { kind = kind, message = message }
end

local function phase_error()
  local phase = ngx.get_phase()
  if M.COSOCKET_PHASES[phase] then return nil end
  return "nginx cosockets are not available in the " .. phase .. " phase, and a blocking call would " ..
    "stall the worker: make the call from ngx.timer.at(0, function() ... end) or from a " ..
    "rewrite, access or content handler"
end
M.phase_error = phase_error

local function parse_url(url)
  local scheme, rest = url:match("^(https?)://(.*)$")
  if not scheme then return nil end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then return nil end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if path == "" then path = "/" end
  local host_header
  if (port == 80 and scheme == "http") or (port == 443 and scheme == "https") then
    host_header = authority:match("^(%[[^%]]+%])") or host
  else
    host_header = authority:find("^%[") and authority or (host .. ":" .. port)
  end
  return { scheme = scheme, host = host, port = port, path = path, host_header = host_header }
end
M._parse_url = parse_url

function M.new(cfg)
  if not ngx or not ngx.socket then
    return nil, "the ngx transport needs OpenResty / lua-nginx-module"
  end
  if cfg.ca_file then
    return nil, "ca_file cannot be applied per connection under nginx; set lua_ssl_trusted_certificate " ..
      "in nginx.conf instead"
  end
  return setmetatable({
    name = "ngx",
    version = "ngx_lua/" .. tostring(ngx.config and ngx.config.ngx_lua_version or "?"),
    max_response_bytes = cfg.max_response_bytes or 8 * 1024 * 1024,
    last_reused_times = nil,
  }, T)
end

-- The readers below take recv(pattern), a receive bounded by the request's
-- deadline: a server that trickles bytes cannot stretch a request past
-- timeout_ms, however many reads the answer takes.

-- Reads the status line and headers; skips 1xx interim answers.
local function read_head(recv)
  local total = 0
  while true do
    local line, err = recv("*l")
    if not line then return nil, err, total end
    total = total + #line
    local version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
    if not status then return nil, "malformed status line", total end
    status = tonumber(status)
    local headers = {}
    while true do
      local h, herr = recv("*l")
      if not h then return nil, herr, total end
      total = total + #h
      if total > MAX_HEADER_BYTES then return nil, "header section too large", total end
      if h == "" then break end
      local k, v = h:match("^([^:]+):%s*(.-)%s*$")
      if k then
        k = k:lower()
        headers[k] = headers[k] and (headers[k] .. ", " .. v) or v
      end
    end
    if status >= 200 or status < 100 then
      return { status = status, version = version, headers = headers }
    end
  end
end

local function read_chunked(recv, cap)
  local parts, size = {}, 0
  while true do
    local line, err = recv("*l")
    if not line then return nil, err end
    local n = tonumber(line:match("^%s*(%x+)"), 16)
    if not n then return nil, "malformed chunk size" end
    if n == 0 then
      repeat
        line, err = recv("*l")               -- trailers, then the empty line
        if not line then return nil, err end
      until line == ""
      return table.concat(parts)
    end
    size = size + n
    if size > cap then return nil, "too_large" end
    local data, derr = recv(n)
    if not data then return nil, derr end
    parts[#parts + 1] = data
    local crlf, cerr = recv(2)
    if crlf ~= "\r\n" then return nil, cerr or "malformed chunk" end
  end
end

local function read_to_close(recv, cap)
  local parts, size = {}, 0
  while true do
    local data, err, partial = recv(8192)
    data = data or partial
    if data and #data > 0 then
      size = size + #data
      if size > cap then return nil, "too_large" end
      parts[#parts + 1] = data
    end
    if err == "closed" then return table.concat(parts) end
    if err then return nil, err end
  end
end

local function io_error(err, what, url)
  if err == "timeout" then
    return fail("timeout", what .. " timed out (" .. url.host .. ":" .. url.port .. ")")
  end
  return fail("network", what .. " failed with " .. url.host .. ":" .. url.port .. ": " .. tostring(err))
end

-- What the libcurl transport refuses before sending, refused the same way:
-- a URL it cannot parse, plain http to a host that is not loopback, a
-- header that breaks the shared rule. Returns the parsed URL, or nil, err.
local function check_request(req)
  local url = parse_url(req.url or "")
  if not url then return fail("config", "cannot parse URL " .. net.printable(req.url)) end
  if url.scheme == "http" and not net.is_loopback_host(url.host) then
    return fail("config", "https is required: refusing plain http to " .. net.printable(url.host) ..
      " (plain http is only allowed to loopback: 127.0.0.0/8, localhost, ::1)")
  end
  for k, v in pairs(req.headers or {}) do
    local why = net.header_problem(k, v)
    if why then return fail("config", "header " .. net.printable(k) .. " " .. why) end
  end
  return url
end
M._check_request = check_request

function T:request(req)
  local perr = phase_error()
  if perr then return fail("config", perr) end
  local url, uerr = check_request(req)
  if not url then return nil, uerr end

  local lines = { (req.method or "GET") .. " " .. url.path .. " HTTP/1.1", "host: " .. url.host_header }
  for k, v in pairs(req.headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  local body = req.body
  if body or (req.method ~= "GET" and req.method ~= "HEAD") then
    lines[#lines + 1] = "content-length: " .. #(body or "")
  end
  lines[#lines + 1] = "connection: keep-alive"
  local wire = table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")

  local timeout = req.timeout_ms or 30000
  local connect_timeout = math.min(req.connect_timeout_ms or 10000, timeout)
  local deadline = ngx.now() * 1000 + timeout
  local function remaining()
    ngx.update_time()
    return math.max(1, math.floor(deadline - ngx.now() * 1000))
  end

  local tls = url.scheme == "https"
  -- Connections are pooled per host, port and TLS settings, never across them.
  local pool = url.scheme .. ":" .. url.host .. ":" .. url.port .. (tls and ":verify" or "")
  local sock = ngx.socket.tcp()
  sock:settimeouts(connect_timeout, remaining(), remaining())
  -- nginx's resolver does not read /etc/hosts; localhost needs no lookup.
  local addr = url.host == "localhost" and "127.0.0.1" or url.host
  local ok, err = sock:connect(addr, url.port, { pool = pool, pool_size = M.POOL_SIZE })
  if not ok then
    if tostring(err):find("no resolver defined", 1, true) then
      return fail("config", "nginx cannot resolve " .. url.host .. ": add a resolver directive to nginx.conf " ..
        "(for example: resolver 1.1.1.1 8.8.8.8 valid=300s ipv6=off;)")
    end
    return io_error(err, "connect", url)
  end
  local reused = sock:getreusedtimes() or 0
  self.last_reused_times = reused
  if tls and reused == 0 then
    sock:settimeouts(connect_timeout, remaining(), remaining())
    local sess, serr = sock:sslhandshake(nil, url.host, true)
    if not sess then
      sock:close()
      if serr == "timeout" then return io_error(serr, "TLS handshake", url) end
      local hint = "make sure nginx trusts the CA that signed " .. url.host .. "'s certificate " ..
        "(lua_ssl_trusted_certificate, with lua_ssl_verify_depth) and that the certificate names " .. url.host
      return fail("tls", "TLS verification with " .. url.host .. " failed: " .. tostring(serr) .. "; " .. hint)
    end
  end

  local function recv(pattern)
    ngx.update_time()
    if ngx.now() * 1000 >= deadline then return nil, "timeout" end
    sock:settimeouts(connect_timeout, remaining(), remaining())
    return sock:receive(pattern)
  end

  sock:settimeouts(connect_timeout, remaining(), remaining())
  local sent, serr = sock:send(wire)
  if not sent then
    sock:close()
    return io_error(serr, "sending the request", url)
  end
  local head, herr = read_head(recv)
  if not head then
    sock:close()
    if herr == "closed" then
      return fail("network", "the server closed the connection without an answer (" .. url.host .. ":" ..
        url.port .. ")")
    end
    return io_error(herr, "reading the answer", url)
  end

  local cap = self.max_response_bytes
  local h = head.headers
  local rbody, berr
  local te = h["transfer-encoding"]
  local cl = h["content-length"]
  if req.method == "HEAD" or head.status == 204 or head.status == 304 then
    rbody = ""
  elseif te and te:lower():find("chunked", 1, true) then
    rbody, berr = read_chunked(recv, cap)
  elseif cl then
    local n = tonumber(cl)
    if not n or n < 0 then
      sock:close()
      return fail("network", "invalid Content-Length from " .. url.host)
    end
    if n > cap then
      sock:close()
      return fail("too_large", "answer of " .. n .. " bytes exceeds max_response_bytes (" .. cap .. ")")
    end
    local data, rerr, partial = recv(n)
    if not data then
      sock:close()
      if rerr == "closed" then
        return fail("network", string.format("transfer closed with %d bytes remaining to read",
          n - #(partial or "")))
      end
      return io_error(rerr, "reading the answer body", url)
    end
    rbody = data
  else
    rbody, berr = read_to_close(recv, cap)
    h.connection = "close"
  end
  if not rbody then
    sock:close()
    if berr == "too_large" then
      return fail("too_large", "answer exceeds max_response_bytes (" .. cap .. ")")
    end
    if berr == "closed" then
      return fail("network", "the connection closed in the middle of a chunked answer")
    end
    return io_error(berr, "reading the answer body", url)
  end

  local conn = (h.connection or ""):lower()
  if conn:find("close", 1, true) or (head.version == "1.0" and not conn:find("keep-alive", 1, true)) then
    sock:close()
  else
    sock:setkeepalive(M.KEEPALIVE_MS, M.POOL_SIZE)
  end
  return { status = head.status, headers = h, body = rbody, reused = reused > 0, http_version = head.version,
    sends = 1 }
end

function T.sleep(_, ms)
  if ms > 0 then ngx.sleep(ms / 1000) end
end

function T.close() end

---------------------------------------------------------------------------
-- lua-resty-http, when installed: partner.new{ transport = "resty_http" }
---------------------------------------------------------------------------

local R = {}
R.__index = R

function M.new_resty_http(cfg)
  if cfg.ca_file then
    return nil, "ca_file cannot be applied per connection under nginx; set lua_ssl_trusted_certificate " ..
      "in nginx.conf instead"
  end
  local ok, http = pcall(require, "resty.http")
  if not ok then
    return nil, "transport 'resty_http' needs lua-resty-http (resty.http): " .. tostring(http)
  end
  return setmetatable({ http = http, name = "resty_http", version = "lua-resty-http/" ..
    tostring(http._VERSION or "?"), max_response_bytes = cfg.max_response_bytes or 8 * 1024 * 1024 }, R)
end

function R:request(req)
  local perr = phase_error()
  if perr then return fail("config", perr) end
  local url, uerr = check_request(req)
  if not url then return nil, uerr end
  local httpc = self.http.new()
  httpc:set_timeouts(req.connect_timeout_ms or 10000, req.timeout_ms or 30000, req.timeout_ms or 30000)
  local res, err = httpc:request_uri(req.url, {
    method = req.method, body = req.body, headers = req.headers,
    ssl_verify = true, keepalive_timeout = M.KEEPALIVE_MS, keepalive_pool = M.POOL_SIZE,
  })
  if not res then
    err = tostring(err)
    if err:find("timeout", 1, true) then return fail("timeout", "request to " .. url.host .. " timed out") end
    if err:find("certificate", 1, true) or err:find("handshake", 1, true) then
      return fail("tls", "TLS verification with " .. url.host .. " failed: " .. err ..
        "; set lua_ssl_trusted_certificate to the CA that signed its certificate")
    end
    return fail("network", "request to " .. url.host .. " failed: " .. err)
  end
  local body = res.body or ""
  if #body > self.max_response_bytes then
    return fail("too_large", "answer exceeds max_response_bytes (" .. self.max_response_bytes .. ")")
  end
  local headers = {}
  for k, v in pairs(res.headers or {}) do
    headers[k:lower()] = type(v) == "table" and table.concat(v, ", ") or v
  end
  return { status = res.status, headers = headers, body = body }
end

R.sleep = T.sleep
R.close = T.close

return M
