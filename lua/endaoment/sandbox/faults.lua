-- What a host puts on the wire for one emulator answer. The emulator decides
-- the answer (an injected status, Retry-After, a malformed body are already
-- in status, headers and body) and hands back a transport `fault` table
-- ({ drop, truncate, delay_ms }); this module turns both, with the host's
-- added latency, into one plan. bin/endaoment-sandbox (server.lua) and nginx
-- (ngx.lua) both follow the plan, so they cannot drift apart. Pure Lua, no
-- I/O.
local M = {}

M.CONTROL_PREFIX = "/__sandbox/"

-- Test controls (and the dashboard, /__sandbox without its slash too) are
-- answered at once: latency is for the API only.
function M.is_control(path)
  if type(path) ~= "string" then return false end
  local n = #M.CONTROL_PREFIX
  local after = path:sub(n, n)
  return path:sub(1, n - 1) == "/__sandbox" and (after == "/" or after == "" or after == "?")
end

local function whole(n)
  n = tonumber(n) or 0
  if n ~= n or n < 0 then return 0 end
  return math.floor(n)
end

-- plan(path, status, headers, body, fault, latency_ms) -> plan:
--   delay_ms        wait this long before answering (latency + the fault's delay)
--   drop            close the connection without sending a byte
--   status, headers, body
--                   the answer (body complete)
--   content_length  the Content-Length to announce: #body, always
--   send_bytes      how many body bytes to send: fewer than content_length
--                   for a truncated answer
--   close           close the connection after sending (a truncated answer)
--   fault           the emulator's fault table, or nil
function M.plan(path, status, headers, body, fault, latency_ms)
  body = body or ""
  local p = {
    status = status, headers = headers or {}, body = body, fault = fault,
    delay_ms = (M.is_control(path) and 0 or whole(latency_ms)) + whole(fault and fault.delay_ms),
    drop = fault ~= nil and fault.drop == true,
    content_length = #body, send_bytes = #body, close = false,
  }
  if fault and fault.truncate and not p.drop then
    p.send_bytes = math.floor(#body / 2)
    p.close = true
  end
  return p
end

-- The body bytes the plan sends.
function M.sent_body(p)
  if p.send_bytes >= #p.body then return p.body end
  return p.body:sub(1, p.send_bytes)
end

return M
