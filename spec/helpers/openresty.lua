-- Runs Debian's nginx with lua-nginx-module (libnginx-mod-http-lua) as a
-- child process, with a config generated per test run: its own prefix in a
-- temp dir, loopback ports picked free, this checkout's Lua modules and its
-- LuaJIT build on the package paths. stop() returns nil and the log if the
-- error log has any [error], [alert], [crit] or [emerg] line: it never raises,
-- so cleanup after it still runs (assert its result once everything is down).
local util = require "spec.helpers.util"
local socket = require "socket"

local M = {}

M.NGINX = os.getenv("NGINX") or "nginx"
M.MODULES = os.getenv("NGINX_MODULES") or "/usr/lib/nginx/modules"

local q = util.q

local sh = util.sh

local read = util.read_or_empty

M.free_port = util.free_port

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
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
load_module {modules}/ndk_http_module.so;
load_module {modules}/ngx_http_lua_module.so;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path {dir}/tmp/body;
  proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi;
  uwsgi_temp_path {dir}/tmp/uwsgi;
  scgi_temp_path {dir}/tmp/scgi;
  lua_package_path "{root}/lua/?.lua;{root}/lua/?/init.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;;";
  lua_package_cpath "{root}/build/luajit/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
  # The client reports socket errors itself, as values.
  lua_socket_log_errors off;
{http}
}
]]

-- Launches nginx on a complete config (text with {port1}.. placeholders) in
-- its own temp prefix. env: extra environment variables for nginx.
local function launch(conf_template, nports, env)
  local ok, dir = sh("mktemp -d /tmp/epartner-nginx.XXXXXX")
  if not ok then return nil, dir end
  dir = dir:gsub("%s+$", "")
  os.execute("mkdir -p " .. q(dir .. "/tmp") .. " " .. q(dir .. "/logs"))
  local envs = {}
  for k, v in pairs(env or {}) do envs[#envs + 1] = k .. "=" .. q(v) end
  local last = "nginx did not start"
  for _ = 1, 3 do   -- a probed free port can be taken before nginx binds it
    local ports = {}
    for i = 1, nports or 1 do ports[i] = M.free_port() end
    local conf = conf_template:gsub("{port(%d)}", function(i) return tostring(ports[tonumber(i)]) end)
    conf = conf:gsub("{dir}", function() return dir end)
    local f = assert(io.open(dir .. "/nginx.conf", "wb"))
    f:write(conf)
    f:close()
    os.remove(dir .. "/error.log")
    local pipe = assert(io.popen("echo $$; exec env " .. table.concat(envs, " ") .. " " .. M.NGINX ..
      " -p " .. q(dir) .. " -c " .. q(dir .. "/nginx.conf") .. " -e " .. q(dir .. "/error.log") ..
      " -g 'daemon off;' >" .. q(dir .. "/stdout.log") .. " 2>&1", "r"))
    local pid = tonumber(pipe:read("*l"))
    if listening(ports[1], 5) then
      local srv = { ports = ports, dir = dir, pid = pid }
      function srv.url(i) return "http://127.0.0.1:" .. ports[i or 1] end
      function srv.error_log() return read(dir .. "/error.log") .. read(dir .. "/logs/error.log") end
      function srv.stop()
        if srv.stopped then return true end
        srv.stopped = true
        os.execute("kill -QUIT " .. pid .. " 2>/dev/null")
        pipe:close()
        local log = srv.error_log()
        os.execute("rm -rf " .. q(dir))
        for _, level in ipairs({ "error", "alert", "crit", "emerg" }) do
          if log:find("%[" .. level .. "%]") then
            return nil, "nginx error log has [" .. level .. "] lines:\n" .. log
          end
        end
        return true
      end
      return srv
    end
    os.execute("kill -TERM " .. tostring(pid) .. " 2>/dev/null")
    pipe:close()
    last = "nginx did not start: " .. read(dir .. "/error.log") .. read(dir .. "/stdout.log")
  end
  os.execute("rm -rf " .. q(dir))
  return nil, last
end

local function have_luajit_build()
  if not io.open("build/luajit/endaoment/partner/core.so") then
    return nil, "build/luajit is missing: run make build LUA=luajit BUILD=build/luajit"
  end
  return true
end

-- start{ http = "<http-block text with {port1}, {port2}, {dir}>", ports = 2 }
-- -> server { ports = {..}, url(i), dir, stop(), error_log() } or nil, err
function M.start(opts)
  local ok, err = have_luajit_build()
  if not ok then return nil, err end
  local root = os.getenv("PWD") or "."
  local conf = CONF:gsub("{http}", function() return opts.http end)
  conf = conf:gsub("{(%a+)}", { root = root, modules = M.MODULES })
  return launch(conf, opts.ports, opts.env)
end

-- start_conf(text, env): a complete nginx.conf (an example users copy);
-- "{port1}" placeholders are replaced by free ports.
function M.start_conf(text, nports, env)
  local ok, err = have_luajit_build()
  if not ok then return nil, err end
  return launch(text, nports, env)
end

return M
