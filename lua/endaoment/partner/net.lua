-- endaoment.partner.net: the network rules every transport shares, written
-- once: which hosts are loopback (plain http is allowed to them only), which
-- caller headers are refused, how a base URL and a proxy URL are parsed, the
-- call-time limits, and the clock. endaoment.partner checks calls with them
-- before any transport runs; the nginx transport applies the same rules to
-- what reaches it, and the libcurl transport (csrc/curl_transfer.c) applies
-- the same loopback rule to the host as libcurl parsed it (spec/net_spec.lua
-- runs one table of cases through both).
local core = require "endaoment.partner.core"

local M = {}

-- Present only inside OpenResty.
local ngx = rawget(_G, "ngx")

-- The longest timeout a call may ask for (one day; the libcurl transport's limit too).
M.MAX_TIMEOUT_MS = 86400000

-- Headers the transport frames itself. A caller's copy could contradict it
-- (request smuggling) or break connection reuse: refused at call time as
-- kind "invalid", and refused by both transports (kind "config").
M.RESERVED_HEADERS = { host = true, ["content-length"] = true, ["transfer-encoding"] = true,
  connection = true }

-- One decimal octet, 0-255, without leading zeros (those read as octal to some parsers).
local function octet(s)
  if not s:match("^%d%d?%d?$") or (#s > 1 and s:sub(1, 1) == "0") then return nil end
  local n = tonumber(s)
  return n <= 255 and n or nil
end

-- The one loopback rule: "localhost" (any case), "::1" (bracketed or not),
-- or 127.a.b.c in dotted decimal with every part 0-255 and no leading
-- zeros. Anything else, "127.1", "127.999.0.1", "0x7f.0.0.1", is not.
function M.is_loopback_host(host)
  if type(host) ~= "string" then return false end
  local h = host:lower()
  if h == "localhost" or h == "::1" or h == "[::1]" then return true end
  local a, b, c, d = h:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return a ~= nil and octet(a) == 127 and octet(b) ~= nil and octet(c) ~= nil and octet(d) ~= nil
end

-- Parses a base URL strictly: scheme, host (name, IPv4 or [IPv6]), optional
-- port, optional path. No userinfo, no backslash, no whitespace, no query:
-- nothing may read "http://127.0.0.1@evil.example" as loopback. Returns
-- scheme, host (lower case, IPv6 in brackets) or nil.
function M.parse_base_url(url)
  if type(url) ~= "string" or url:find("[%s@\\%c]") or url:find("[?#]") then return nil end
  local scheme, rest = url:match("^(https?)://(.+)$")
  if not scheme then return nil end
  local host, tail = rest:match("^(%[[%x:%.]+%])(.*)$")
  if not host then host, tail = rest:match("^([%w%.%-]+)(.*)$") end
  if not host or host:find("^[%.%-]") or host:find("%.%.") then return nil end
  local port, path = tail:match("^:(%d+)(.*)$")
  if port then
    if tonumber(port) < 1 or tonumber(port) > 65535 then return nil end
  else
    path = tail
  end
  if path ~= "" and path:sub(1, 1) ~= "/" then return nil end
  return scheme, host:lower()
end

-- Why a proxy URL (or, list = true, a no-proxy list) is refused, or nil.
-- The same rules as the libcurl transport's.
M.PROXY_SCHEMES = { "http", "https", "socks4", "socks4a", "socks5", "socks5h" }
function M.proxy_problem(value, list)
  if #value > 2048 then return "is too long" end
  if list then
    return value:find("%c") and "contains a control character" or nil
  end
  if value:find("[%c%s]") then return "contains a space or a control character" end
  if value == "" then return nil end
  local scheme = value:match("^(%w+)://.")
  for _, s in ipairs(M.PROXY_SCHEMES) do
    if scheme and scheme:lower() == s then return nil end
  end
  return "must be a URL: http://, https://, socks4://, socks4a://, socks5:// or socks5h:// and a host"
end

-- Control bytes shown as \r, \n, \0 or \xNN, so a message stays one line.
local ESCAPES = { ["\r"] = "\\r", ["\n"] = "\\n", ["\t"] = "\\t", ["\0"] = "\\0" }
function M.printable(s)
  return (tostring(s):gsub("[%c\128-\255]", function(c)
    return ESCAPES[c] or string.format("\\x%02X", c:byte())
  end))
end

-- Why a caller header is refused, or nil: the name must be an RFC 9110
-- token and not one the transport frames, the value a string without
-- CR, LF, NUL or another control character (TAB allowed).
function M.header_problem(name, value)
  if type(name) ~= "string" then return "header names must be strings" end
  if not core.header_name_ok(name) then return "is not a valid header name (an RFC 9110 token)" end
  if M.RESERVED_HEADERS[name:lower()] then
    return "is set by the transport and cannot be given"
  end
  if type(value) ~= "string" then return "must be a string" end
  local ok, msg = core.header_value_ok(value)
  if not ok then return "is not a valid header value: " .. tostring(msg) end
  return nil
end

-- Milliseconds on a wall clock with sub-second resolution where one is
-- available (nginx's, or luasocket's); the retry timers and elapsed_ms use it.
if ngx and ngx.now then
  function M.now_ms() ngx.update_time(); return ngx.now() * 1000 end
else
  local ok, socket = pcall(require, "socket")
  if ok and type(socket) == "table" and socket.gettime then
    function M.now_ms() return socket.gettime() * 1000 end
  else
    function M.now_ms() return os.time() * 1000 end
  end
end

return M
