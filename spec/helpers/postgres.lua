-- A throwaway PostgreSQL cluster for the store specs: initdb into a fresh
-- temp dir, trust auth, listening only on 127.0.0.1 on a free port, its unix
-- socket in that dir; never the system cluster (which Debian's package may
-- have created and started on 5432: it is left alone).
--
--   local pg = require("spec.helpers.postgres").start()   -- raises, with the server log, on failure
--   pg.url   -- "postgres://postgres@127.0.0.1:PORT/epartner"
--   pg.stop()   -- idempotent: pg_ctl stop -m immediate, then the temp dir is removed
--
-- stop also runs when the handle is collected or the Lua state closes, and a
-- watchdog shell stops the server if this process dies without either (kill -9).
-- As root (the specs run as root) the server runs as the "postgres" user
-- through runuser, since initdb and postgres refuse to run as root.
local util = require "spec.helpers.util"
local socket = require "socket"

local M = {}

M.START_SECONDS = 30

local q = util.q

local sh = util.sh

local read = util.read_or_empty

local function my_pid()
  return tonumber(read("/proc/self/stat"):match("^(%d+)"))
end

local free_port = util.free_port

-- The directory with initdb and pg_ctl: $PG_BINDIR, else the newest of
-- /usr/lib/postgresql/*/bin (Debian), else pg_config --bindir, else PATH.
function M.bindir()
  local env = os.getenv("PG_BINDIR")
  if env and env ~= "" then return env end
  local ok, out = sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null")
  if ok then
    local best, best_v
    for dir in out:gmatch("[^\n]+") do
      local v = tonumber(dir:match("/usr/lib/postgresql/([%d.]+)/bin$"))
      if v and (not best_v or v > best_v) and read(dir .. "/initdb") ~= "" then best, best_v = dir, v end
    end
    if best then return best end
  end
  local ok2, out2 = sh("pg_config --bindir")
  out2 = out2:gsub("%s+$", "")
  if ok2 and out2 ~= "" and read(out2 .. "/initdb") ~= "" then return out2 end
  local ok3, out3 = sh("command -v initdb")
  if ok3 then return (out3:gsub("%s+$", ""):gsub("/initdb$", "")) end
  error("PostgreSQL's initdb was not found: install the postgresql package (scripts/deps.sh), or set PG_BINDIR")
end

local function as_owner(root, cmd)
  if root then return "runuser -u postgres -- " .. cmd end
  return cmd
end

-- Starts a cluster; returns { url, port, dir, stop }. Raises when it cannot.
function M.start()
  local bin = M.bindir()
  local _, uid = sh("id -u")
  local root = uid:match("^0%s*$") ~= nil
  if root and not sh("id -u postgres") then
    error("running as root, but there is no 'postgres' user to run the server as (install the postgresql package)")
  end
  local ok, dir = sh("mktemp -d /tmp/epartner-pg.XXXXXX")
  dir = dir:gsub("%s+$", "")
  assert(ok and dir:match("^/tmp/epartner%-pg%.%w+$"), "mktemp failed: " .. dir)
  if root then assert(sh("chown postgres " .. q(dir)), "cannot chown " .. dir .. " to postgres") end

  local server = { dir = dir, stopped = false }
  local data, log = dir .. "/data", dir .. "/server.log"

  function server.stop()
    if server.stopped then return end
    server.stopped = true
    if read(data .. "/postmaster.pid") ~= "" then
      sh(as_owner(root, "timeout 20 " .. q(bin .. "/pg_ctl") .. " stop -m immediate -D " .. q(data)))
    end
    sh("rm -rf " .. q(dir))
  end

  -- The safety nets: collection / state close, and a watchdog for kill -9.
  local newproxy = rawget(_G, "newproxy")
  if newproxy then
    server._gc = newproxy(true)
    getmetatable(server._gc).__gc = function() server.stop() end
  else
    server._gc = setmetatable({}, { __gc = function() server.stop() end })
  end
  sh("nohup sh -c " .. q("while kill -0 " .. my_pid() .. " 2>/dev/null && [ -d " .. q(dir) .. " ]; do sleep 1; " ..
    "done; if [ -d " .. q(dir) .. " ]; then " .. as_owner(root, q(bin .. "/pg_ctl") .. " stop -m immediate -D " ..
    q(data)) .. "; rm -rf " .. q(dir) .. "; fi") .. " >/dev/null 2>&1 &")

  local function fail(what, out)
    local text = what .. "\n" .. tostring(out or "") .. "\n--- server log ---\n" .. read(log)
    server.stop()
    error(text, 0)
  end

  local okinit, out = sh(as_owner(root, "timeout 60 " .. q(bin .. "/initdb") .. " -D " .. q(data) ..
    " -A trust -U postgres -E UTF8 --locale=C --no-sync"))
  if not okinit then fail("initdb failed", out) end

  -- A port picked free can be taken before the server binds it: a few tries.
  for _ = 1, 3 do
    local port = free_port()
    local opts = "-c listen_addresses=127.0.0.1 -c port=" .. port .. " -c unix_socket_directories=" .. dir ..
      " -c max_connections=50"
    local okstart, sout = sh(as_owner(root, "timeout " .. (M.START_SECONDS + 10) .. " " .. q(bin .. "/pg_ctl") ..
      " -D " .. q(data) .. " -l " .. q(log) .. " -w -t " .. M.START_SECONDS .. " -o " .. q(opts) .. " start"))
    if okstart then
      local okdb, dout = sh("timeout 30 " .. q(bin .. "/createdb") .. " -h 127.0.0.1 -p " .. port ..
        " -U postgres epartner")
      if not okdb then fail("createdb failed", dout) end
      server.port = port
      server.url = "postgres://postgres@127.0.0.1:" .. port .. "/epartner"
      return server
    end
    if not read(log):find("could not bind", 1, true) and not read(log):find("in use", 1, true) then
      fail("PostgreSQL did not start within " .. M.START_SECONDS .. " s", sout)
    end
    sh(as_owner(root, "timeout 20 " .. q(bin .. "/pg_ctl") .. " stop -m immediate -D " .. q(data)))
    socket.sleep(0.1)
  end
  fail("PostgreSQL could not bind a free port")
end

M.free_port = free_port

return M
