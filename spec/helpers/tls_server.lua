-- Test servers for spec/curl_transport_spec.lua, each a child process:
--   M.start_tls()  nginx on 127.0.0.1 and 127.0.0.2 with a certificate for
--                  localhost/127.0.0.1 signed by a CA generated now (openssl)
--   M.start_raw()  a tiny luasocket HTTP/1.1 server for what the sandbox
--                  does not do: chunked bodies, 1xx responses, repeated
--                  headers, huge header sections, redirects, request echo
-- Specs must call stop() (in a finally or after_each).
local util = require "spec.helpers.util"
local socket = require "socket"

local M = {}

M.LUA = os.getenv("SANDBOX_LUA") or "lua5.4"
M.NGINX = os.getenv("NGINX") or "nginx"

local sh = util.sh

local q = util.q

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local read = util.read_or_empty

local free_port = util.free_port

local function wait_listening(host, port, seconds)
  local deadline = socket.gettime() + seconds
  repeat
    local c = socket.tcp()
    c:settimeout(0.2)
    if c:connect(host, port) then c:close(); return true end
    c:close()
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return false
end

local function mktemp_dir()
  local ok, out = sh("mktemp -d /tmp/epartner-tls.XXXXXX")
  assert(ok, "mktemp failed: " .. out)
  return (out:gsub("%s+$", ""))
end

local CA_CONF = [[
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = endaoment-partner test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
]]

local SERVER_EXT = [[
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
]]

-- A CA and a server certificate for localhost and 127.0.0.1 (not 127.0.0.2).
function M.make_certs(dir)
  write(dir .. "/ca.cnf", CA_CONF)
  write(dir .. "/server.ext", SERVER_EXT)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local steps = {
    "openssl req -x509 " .. ec .. " -days 2 -config ca.cnf -keyout ca.key -out ca.pem",
    "openssl req -new " .. ec .. " -subj /CN=localhost -keyout server.key -out server.csr",
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 " ..
      "-extfile server.ext -out server.pem",
  }
  for _, cmd in ipairs(steps) do
    local ok, out = sh("cd " .. q(dir) .. " && " .. cmd)
    if not ok then return nil, cmd .. ": " .. out end
  end
  return { ca = dir .. "/ca.pem", cert = dir .. "/server.pem", key = dir .. "/server.key" }
end

local NGINX_CONF = [[
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events { worker_connections 256; }
http {
  log_format conns '$connection $connection_requests $server_protocol $request_method $uri $status';
  access_log {access_log};
  client_body_temp_path {dir}/tmp/body;
  proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi;
  uwsgi_temp_path {dir}/tmp/uwsgi;
  scgi_temp_path {dir}/tmp/scgi;
  server {
    listen 127.0.0.1:{port} ssl{http2};
    listen 127.0.0.2:{port} ssl{http2};
    server_name localhost;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    keepalive_timeout 60s;
    location / {
{location}
    }
  }
}
]]

local DEFAULT_LOCATION = [[
      default_type application/json;
      return 200 '{"ok":true}';]]

-- An upstream (the sandbox) behind nginx, over plain http on loopback.
local PROXY_LOCATION = [[
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";]]

-- start_tls([opts]) -> server { port, url, ca_file, dir, stop(), error_log(), access_log() }
-- opts.http2: offer HTTP/2 through ALPN ("listen ... ssl http2"); opts.upstream: a URL
-- every request is passed to (else every path answers {"ok":true}); the access log has one
-- line per request: "$connection $connection_requests $server_protocol $request_method $uri $status".
function M.start_tls(opts)
  opts = opts or {}
  for _, tool in ipairs({ M.NGINX, "openssl" }) do
    if not sh("command -v " .. q(tool)) then return nil, tool .. " is not installed" end
  end
  local dir = mktemp_dir()
  local certs, err = M.make_certs(dir)
  if not certs then
    sh("rm -rf " .. q(dir))
    return nil, err
  end
  os.execute("mkdir -p " .. q(dir .. "/tmp"))
  local last = "nginx did not start"
  for _ = 1, 3 do -- the free port can be taken between our probe and nginx's bind
    local port = free_port()
    local location = opts.upstream and PROXY_LOCATION:gsub("{upstream}", function() return opts.upstream end)
      or DEFAULT_LOCATION
    local vars = { dir = dir, port = tostring(port), cert = certs.cert, key = certs.key,
      http2 = opts.http2 and " http2" or "", access_log = dir .. "/access.log conns", location = location }
    write(dir .. "/nginx.conf", (NGINX_CONF:gsub("{([%w_]+)}", function(k) return vars[k] end)))
    os.remove(dir .. "/error.log")
    local cmd = "echo $$; exec " .. M.NGINX .. " -p " .. q(dir) .. " -c " .. q(dir .. "/nginx.conf") ..
      " -e " .. q(dir .. "/error.log") .. " >" .. q(dir .. "/stdout.log") .. " 2>&1"
    local pipe = assert(io.popen(cmd, "r"))
    local pid = tonumber(pipe:read("l"))
    if wait_listening("127.0.0.1", port, 5) and wait_listening("127.0.0.2", port, 1) then
      local srv = { port = port, url = "https://127.0.0.1:" .. port, ca_file = certs.ca, dir = dir, pid = pid }
      function srv.error_log() return read(dir .. "/error.log") end
      -- { {conn=, n=, protocol=, method=, uri=, status=}, ... } (nginx writes a line as a request ends)
      function srv.access_log()
        local out = {}
        for line in read(dir .. "/access.log"):gmatch("[^\n]+") do
          local conn, n, proto, method, uri, status = line:match("^(%d+) (%d+) (%S+) (%S+) (%S+) (%d+)$")
          if conn then
            out[#out + 1] = { conn = tonumber(conn), n = tonumber(n), protocol = proto, method = method, uri = uri,
              status = tonumber(status) }
          end
        end
        return out
      end
      function srv.stop()
        if srv.stopped then return end
        srv.stopped = true
        os.execute("kill -TERM " .. pid .. " 2>/dev/null")
        pipe:close() -- waits for nginx to exit
        local log = srv.error_log()
        sh("rm -rf " .. q(dir))
        -- A crash or misconfiguration must fail the spec that used the server.
        assert(not log:find("%[alert%]") and not log:find("%[emerg%]"), "nginx error log:\n" .. log)
      end
      return srv
    end
    os.execute("kill -TERM " .. tostring(pid) .. " 2>/dev/null")
    pipe:close()
    last = "nginx did not start: " .. read(dir .. "/error.log") .. read(dir .. "/stdout.log")
  end
  sh("rm -rf " .. q(dir))
  return nil, last
end

-- The raw server runs as its own process: the transport blocks in
-- curl_easy_perform, so an in-process server could never answer.
local RAW_SERVER = [==[
local socket = require "socket"
local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
io.stdout:write("http://127.0.0.1:", port, "\n")
io.stdout:flush()

local function read_request(c)
  local line, err = c:receive("*l")
  if not line then return nil, err end
  local head = { line }
  local headers = {}
  while true do
    local h = c:receive("*l")
    if not h then return nil end
    if h == "" then break end
    head[#head + 1] = h
    local k, v = h:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  local n = tonumber(headers["content-length"] or "0")
  local body = n > 0 and c:receive(n) or ""
  local method, target = line:match("^(%S+) (%S+)")
  return { method = method, target = target, head = table.concat(head, "\n"), headers = headers, body = body }
end

local function send(c, status, headers, body)
  local out = { "HTTP/1.1 " .. status .. "\r\n" }
  for _, h in ipairs(headers) do out[#out + 1] = h .. "\r\n" end
  out[#out + 1] = "\r\n"
  c:send(table.concat(out) .. (body or ""))
end

local function handle(c, req)
  local t = req.target
  local n = tonumber(t:match("^/chunked/(%d+)$"))
  if n then
    send(c, "200 OK", { "Content-Type: text/plain", "Transfer-Encoding: chunked" })
    local left = n
    while left > 0 do
      local k = math.min(left, 4096)
      c:send(string.format("%x\r\n", k) .. string.rep("x", k) .. "\r\n")
      left = left - k
    end
    c:send("0\r\n\r\n")
  elseif t == "/interim" then
    c:send("HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n")
    send(c, "200 OK", { "Content-Type: text/plain", "X-Dup: a", "X-DUP: b", "X-Folded: one",
      "\ttwo", "X-Spaces:   padded   ", "Content-Length: 2" }, "ok")
  elseif t == "/bigheaders" then
    local hs = { "Content-Length: 2" }
    for i = 1, 80 do hs[#hs + 1] = "X-Filler-" .. i .. ": " .. string.rep("h", 1000) end
    send(c, "200 OK", hs, "ok")
  elseif t == "/redirect" then
    send(c, "302 Found", { "Location: /echo", "Content-Length: 0" })
  elseif t == "/nolength" then
    send(c, "200 OK", { "Content-Type: text/plain", "Connection: close" }, string.rep("y", 5000))
    return false
  else -- echo the request head; the body only by its length
    local body = req.head .. "\n\nbody-length: " .. #req.body
    send(c, "200 OK", { "Content-Type: text/plain", "Content-Length: " .. #body }, body)
  end
  return (req.headers["connection"] or ""):lower() ~= "close"
end

local clients = {}
while true do
  local readable = socket.select({ server, table.unpack(clients) }, nil, 60)
  if #readable == 0 then break end -- idle for a minute: the spec is gone
  for _, s in ipairs(readable) do
    if s == server then
      local c = server:accept()
      if c then c:settimeout(5); clients[#clients + 1] = c end
    else
      local req = read_request(s)
      local keep = req and handle(s, req)
      if not keep then
        s:close()
        for i, c in ipairs(clients) do if c == s then table.remove(clients, i) break end end
      end
    end
  end
end
]==]

-- start_raw() -> server { url, port, stop() }
function M.start_raw()
  local path = os.tmpname()
  write(path, RAW_SERVER)
  local pipe = assert(io.popen("echo $$; exec " .. M.LUA .. " " .. q(path), "r"))
  local pid = tonumber(pipe:read("l"))
  local url = pipe:read("l")
  if not url then
    pipe:close()
    os.remove(path)
    return nil, "raw server did not start"
  end
  local srv = { url = url, port = tonumber(url:match(":(%d+)$")), pid = pid }
  function srv.stop()
    if srv.stopped then return end
    srv.stopped = true
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    pipe:close()
    os.remove(path)
  end
  return srv
end

return M
