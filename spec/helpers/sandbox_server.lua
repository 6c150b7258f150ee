-- Starts bin/endaoment-sandbox as a child process on a free loopback port
-- and stops it. Specs call stop() in a `finally` or teardown so no server
-- outlives its test.
local socket = require "socket"

local M = {}

M.LUA = os.getenv("SANDBOX_LUA") or "lua5.4"

local shell_quote = require("spec.helpers.util").q
M.shell_quote = shell_quote

-- start({ "--latency-ms", "200" }[, { lua = "lua5.1", nofile = 4096 }])
--   -> server { url, port, pid, stop(), kill(sig), alive() }
-- "--port 0" (a free port) unless args name a port. opts.nofile raises the
-- server's open-file limit (ulimit -n) first.
function M.start(args, opts)
  opts = opts or {}
  local parts = { opts.lua or M.LUA, "bin/endaoment-sandbox" }
  local has_port = false
  for _, a in ipairs(args or {}) do
    parts[#parts + 1] = shell_quote(a)
    if a == "--port" or a:match("^%-%-port=") then has_port = true end
  end
  if not has_port then parts[#parts + 1] = "--port 0" end
  local errlog = os.tmpname()
  local limit = opts.nofile and ("ulimit -n " .. math.floor(opts.nofile) .. " 2>/dev/null; ") or ""
  local cmd = "echo $$; " .. limit .. "exec " .. table.concat(parts, " ") .. " 2>" .. errlog
  local t0 = socket.gettime()
  -- io.popen's own shell execs the server, so $$ is the server's pid and
  -- no intermediate shell reports its death.
  local pipe = assert(io.popen(cmd, "r"))
  local pid = pipe:read("l")
  local url = pipe:read("l")
  if not url then
    pipe:close()
    local f = io.open(errlog); local err = f and f:read("a") or ""; if f then f:close() end
    os.remove(errlog)
    return nil, "sandbox did not start: " .. err
  end
  local srv = {
    url = url, pid = tonumber(pid), pipe = pipe, errlog = errlog,
    port = tonumber(url:match(":(%d+)$")), started_in = socket.gettime() - t0,
  }
  function srv.kill(sig)
    os.execute("kill -" .. (sig or "TERM") .. " " .. srv.pid .. " 2>/dev/null")
  end
  -- Whether the process still runs (a dead child stays a zombie until the
  -- pipe is closed, so ask ps for its state rather than kill -0).
  function srv.alive()
    local p = io.popen("ps -o stat= -p " .. srv.pid .. " 2>/dev/null")
    local st = p and p:read("*a") or ""
    if p then p:close() end
    return st:match("%S") ~= nil and not st:match("^%s*Z")
  end
  function srv.stop(sig)
    if srv.stopped then return end
    srv.stopped = true
    srv.kill(sig or "TERM")
    srv.pipe:close()
    os.remove(srv.errlog)
  end
  -- Test controls (see README): JSON in, decoded JSON out.
  function srv.control(method, path, body)
    local http = require "spec.helpers.rawhttp"
    local cjson = require "cjson"
    local res = assert(http.request(srv.url, method, path,
      body and { ["content-type"] = "application/json" } or {}, body and cjson.encode(body) or nil))
    return res.status, cjson.decode(res.body)
  end
  function srv.fault(f)
    local status, r = srv.control("POST", "/__sandbox/faults", f)
    assert(status == 201, "fault not queued: " .. tostring(r and r.message))
  end
  -- The request log, optionally for one path.
  function srv.logged(path)
    local _, r = srv.control("GET", "/__sandbox/requests" .. (path and ("?path=" .. path) or ""))
    return r.requests
  end
  -- A server a spec forgot to stop must not hang the run: Lua closing the
  -- orphaned pipe would wait for it forever. srv is finalized before its
  -- pipe (created after it), so the kill comes first (Lua 5.2+).
  setmetatable(srv, { __gc = function(s) if not s.stopped then s.kill("KILL") end end })
  function srv.stderr()
    local f = io.open(srv.errlog); if not f then return "" end
    local s = f:read("a"); f:close(); return s
  end
  return srv
end

return M
