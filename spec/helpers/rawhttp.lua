-- A deliberately small HTTP/1.1 client on raw luasocket, so specs control
-- every byte: keep-alive on one socket, half-sent requests, reading exactly
-- what the server wrote (or did not write).
local socket = require "socket"

local M = {}

function M.connect(url, timeout)
  local host, port = url:match("^http://([^:/]+):(%d+)")
  local s = assert(socket.tcp())
  s:settimeout(timeout or 5)
  assert(s:connect(host, tonumber(port)))
  return s
end

function M.format(method, path, headers, body)
  local lines = { method .. " " .. path .. " HTTP/1.1", "host: 127.0.0.1" }
  headers = headers or {}
  if body and not headers["content-length"] then headers["content-length"] = tostring(#body) end
  for k, v in pairs(headers) do lines[#lines + 1] = k .. ": " .. v end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

-- Reads one response. Returns { status, headers, body } or nil, err, raw.
function M.read(s)
  local raw = {}
  local line, err = s:receive("*l")
  if not line then return nil, err, "" end
  raw[#raw + 1] = line
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  local headers = {}
  while true do
    line, err = s:receive("*l")
    if not line then return nil, err, table.concat(raw, "\n") end
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  if (headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) then
    local parts = {}
    while true do
      local size = s:receive("*l")
      local n = size and tonumber(size:match("^%x+"), 16)
      if not n then return nil, "malformed chunk", table.concat(parts) end
      if n == 0 then s:receive("*l"); break end
      parts[#parts + 1] = s:receive(n)
      s:receive("*l")
    end
    return { status = status, headers = headers, body = table.concat(parts) }
  end
  local n = tonumber(headers["content-length"] or "0")
  local body, berr, partial = s:receive(n)
  if not body then return nil, berr, partial end
  return { status = status, headers = headers, body = body }
end

-- One request on a fresh (or given) connection.
function M.request(url, method, path, headers, body, sock)
  local s = sock or M.connect(url)
  assert(s:send(M.format(method, path, headers, body)))
  local res, err, partial = M.read(s)
  if not sock then s:close() end
  return res, err, partial
end

return M
