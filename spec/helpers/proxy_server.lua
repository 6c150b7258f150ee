-- Debian's tinyproxy on loopback, on a free port, as a child process with its
-- own config and log file in a temp dir (scripts/deps.sh installs it).
--   local proxy = assert(require("spec.helpers.proxy_server").start())
--   proxy.url, proxy.connects() -> { "127.0.0.1:8443", ... }, proxy.log(), proxy.stop()
local util = require "spec.helpers.util"
local socket = require "socket"

local M = {}

M.TINYPROXY = os.getenv("TINYPROXY") or "tinyproxy"

local q = util.q

local sh = util.sh

local read = util.read_or_empty

local free_port = util.free_port

local function listening(port, seconds)
  local deadline = socket.gettime() + seconds
  repeat
    local c = socket.tcp()
    c:settimeout(0.2)
    if c:connect("127.0.0.1", port) then c:close(); return true end
    c:close()
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return false
end

local CONF = [[
Port %d
Listen 127.0.0.1
Timeout 30
LogFile "%s/tinyproxy.log"
LogLevel Info
PidFile "%s/tinyproxy.pid"
MaxClients 64
Allow 127.0.0.1
]]

-- start() -> proxy { url, port, dir, log(), connects(), stop() } or nil, err
function M.start()
  if not sh("command -v " .. q(M.TINYPROXY)) then
    return nil, "tinyproxy is not installed (scripts/deps.sh installs it)"
  end
  local ok, dir = sh("mktemp -d /tmp/epartner-proxy.XXXXXX")
  if not ok then return nil, dir end
  dir = dir:gsub("%s+$", "")
  -- tinyproxy may drop to another user: let it write its log here whoever it runs as.
  os.execute("chmod 777 " .. q(dir))
  local last = "tinyproxy did not start"
  for _ = 1, 3 do -- a probed free port can be taken before tinyproxy binds it
    local port = free_port()
    local f = assert(io.open(dir .. "/tinyproxy.conf", "wb"))
    f:write(string.format(CONF, port, dir, dir))
    f:close()
    local pipe = assert(io.popen("echo $$; exec " .. M.TINYPROXY .. " -d -c " .. q(dir .. "/tinyproxy.conf") ..
      " >" .. q(dir .. "/stdout.log") .. " 2>&1", "r"))
    local pid = tonumber(pipe:read("*l"))
    if listening(port, 5) then
      local proxy = { url = "http://127.0.0.1:" .. port, port = port, dir = dir, pid = pid }
      function proxy.log() return read(dir .. "/tinyproxy.log") end
      -- The CONNECT targets tinyproxy logged, in order ("host:port").
      function proxy.connects()
        local out = {}
        for target in proxy.log():gmatch("Request %(file descriptor %d+%): CONNECT (%S+) HTTP/1%.%d") do
          out[#out + 1] = target
        end
        return out
      end
      -- Every request line tinyproxy logged (CONNECT and plain GET/POST alike).
      function proxy.requests()
        local out = {}
        for line in proxy.log():gmatch("Request %(file descriptor %d+%): ([^\n]+)") do out[#out + 1] = line end
        return out
      end
      function proxy.stop()
        if proxy.stopped then return end
        proxy.stopped = true
        os.execute("kill -TERM " .. pid .. " 2>/dev/null")
        pipe:close()
        os.execute("rm -rf " .. q(dir))
      end
      return proxy
    end
    os.execute("kill -TERM " .. tostring(pid) .. " 2>/dev/null")
    pipe:close()
    last = "tinyproxy did not start: " .. read(dir .. "/stdout.log") .. read(dir .. "/tinyproxy.log")
  end
  os.execute("rm -rf " .. q(dir))
  return nil, last
end

return M
