-- Proxies and HTTP/2, against real servers on loopback: Debian's tinyproxy
-- (spec/helpers/proxy_server.lua) in front of the TLS test server, and nginx
-- with http2 and the test CA (spec/helpers/tls_server.lua) in front of the
-- sandbox.
local partner = require "endaoment.partner"
local socket = require "socket"
local cjson = require "cjson"
local testsrv = require "spec.helpers.tls_server"
local proxies = require "spec.helpers.proxy_server"
local sandbox = require "spec.helpers.sandbox_server"

local KEY = "sandbox-key"
-- valgrind runs this file much slower: a time limit stays below what it disproves.
local SLOW = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) ~= nil
local INTERP = type(jit) == "table" and "luajit" or "lua5.4"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs code in a fresh interpreter with env (a table of variables, "" to unset):
-- libcurl reads the proxy variables from the process environment.
local function run_child(env, code)
  local parts = { "env" }
  for _, k in ipairs({ "https_proxy", "HTTPS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY", "no_proxy",
    "NO_PROXY" }) do
    parts[#parts + 1] = "-u " .. k
  end
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. q(v) end
  local f = assert(io.popen(table.concat(parts, " ") .. " " .. INTERP .. " -e " .. q(code) .. " 2>&1"))
  local out = f:read("*a")
  f:close()
  return out
end

local function count(list, value)
  local n = 0
  for _, v in ipairs(list) do if v == value then n = n + 1 end end
  return n
end

describe("through a proxy (tinyproxy)", function()
  local tls, proxy, target

  lazy_setup(function()
    local err
    tls, err = testsrv.start_tls()
    assert(tls, "TLS test server: " .. tostring(err))
    proxy, err = proxies.start()
    assert(proxy, err)
    target = "127.0.0.1:" .. tls.port
  end)
  lazy_teardown(function()
    if proxy then proxy.stop() end
    if tls then tls.stop() end
  end)

  it("the proxy option: https goes through a CONNECT tunnel, blocking and async", function()
    local before = count(proxy.connects(), target)
    local c = partner.new({ api_key = KEY, base_url = tls.url, ca_file = tls.ca_file, proxy = proxy.url })
    finally(function() c:close() end)
    local res, err, meta = c:whoami()
    assert.is_nil(err, err and tostring(err))
    assert.is_true(res.ok)
    assert.equal("1.1", meta.http_version)
    assert.equal(before + 1, count(proxy.connects(), target), proxy.log())
    assert(c:whoami())                               -- the tunnel is kept alive and reused
    assert.equal(before + 1, count(proxy.connects(), target))
    local got
    assert(c:whoami_async(function(r, e) got = { r, e } end))
    local deadline = socket.gettime() + 10
    while not got and socket.gettime() < deadline do c:wait(50) end
    assert.is_nil(got[2], got[2] and tostring(got[2]))
    assert.equal(before + 2, count(proxy.connects(), target))   -- the multi handle's own tunnel
  end)

  it("no_proxy (option) sends those hosts direct; proxy = '' ignores the environment", function()
    local before = #proxy.requests()
    local c = partner.new({ api_key = KEY, base_url = tls.url, ca_file = tls.ca_file, proxy = proxy.url,
      no_proxy = "127.0.0.1" })
    finally(function() c:close() end)
    assert(c:whoami())
    assert.equal(before, #proxy.requests())
    local out = run_child({ https_proxy = proxy.url }, string.format([[
      local c = require("endaoment.partner").new{ api_key = %q, base_url = %q, ca_file = %q, proxy = "" }
      local res, err = c:whoami()
      io.write(res and "ok" or tostring(err))]], KEY, tls.url, tls.ca_file))
    assert.equal("ok", out)
    assert.equal(before, #proxy.requests())
  end)

  it("the environment, as libcurl reads it: https_proxy, HTTPS_PROXY, all_proxy; no_proxy", function()
    local code = string.format([[
      local c = require("endaoment.partner").new{ api_key = %q, base_url = %q, ca_file = %q }
      local res, err = c:whoami()
      io.write(res and "ok" or tostring(err))]], KEY, tls.url, tls.ca_file)
    for _, var in ipairs({ "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY" }) do
      local before = count(proxy.connects(), target)
      assert.equal("ok", run_child({ [var] = proxy.url }, code), var)
      assert.equal(before + 1, count(proxy.connects(), target), var)
    end
    for _, var in ipairs({ "no_proxy", "NO_PROXY" }) do
      local before = #proxy.requests()
      assert.equal("ok", run_child({ https_proxy = proxy.url, [var] = "localhost,127.0.0.1" }, code), var)
      assert.equal(before, #proxy.requests(), var)
    end
    -- http_proxy is for plain http only: an https call does not use it.
    local before = #proxy.requests()
    assert.equal("ok", run_child({ http_proxy = proxy.url }, code))
    assert.equal(before, #proxy.requests())
  end)

  it("never proxies plain http to loopback (the sandbox), whatever the environment says", function()
    local sb = assert(sandbox.start())
    local c
    -- busted keeps one finally per test: stop and close both in it.
    finally(function() if c then c:close() end sb.stop() end)
    local before = #proxy.requests()
    local out = run_child({ http_proxy = proxy.url, https_proxy = proxy.url, all_proxy = proxy.url }, string.format([[
      local c = require("endaoment.partner").new{ api_key = %q, base_url = %q }
      local res, err = c:whoami()
      local got
      c:whoami_async(function(r, e) got = r and "ok" or tostring(e) end)
      while not got do c:wait(100) end
      io.write(res and "ok" or tostring(err), " ", got)]], KEY, sb.url))
    assert.equal("ok ok", out)
    assert.equal(before, #proxy.requests())
    c = partner.new({ api_key = KEY, base_url = sb.url, proxy = proxy.url })
    assert(c:whoami())
    assert.equal(before, #proxy.requests())
  end)

  it("refuses a proxy it cannot use, when the client is made", function()
    for _, bad in ipairs({ "ftp://127.0.0.1:21", "127.0.0.1:3128", "http://a b", "http://x\r\n" }) do
      local ok, msg = pcall(partner.new, { api_key = KEY, environment = "dev", proxy = bad })
      assert.is_false(ok, bad)
      assert.matches("option proxy", msg)
    end
    local ok, msg = pcall(partner.new, { api_key = KEY, environment = "dev", no_proxy = "a\nb" })
    assert.is_false(ok)
    assert.matches("option no_proxy", msg)
    ok, msg = pcall(partner.new, { api_key = KEY, environment = "dev", proxy = proxy.url,
      transport = { request = function() end } })
    assert.is_false(ok)
    assert.matches("libcurl transport only", msg)
  end)
end)

describe("HTTP/2 (nginx http2 over TLS, ALPN)", function()
  local slow, h2

  lazy_setup(function()
    local err
    slow = assert(sandbox.start({ "--latency-ms", "200" }))
    h2, err = testsrv.start_tls({ http2 = true, upstream = slow.url })
    assert(h2, "TLS test server: " .. tostring(err))
  end)
  lazy_teardown(function()
    if h2 then h2.stop() end
    if slow then slow.stop() end
  end)

  -- nginx logs a request once it is over, which may be just after the client has its answer.
  local function log_lines(n)
    local deadline = socket.gettime() + 5
    local log = h2.access_log()
    while #log < n and socket.gettime() < deadline do
      socket.sleep(0.02)
      log = h2.access_log()
    end
    return log
  end

  local function client(extra)
    local o = { api_key = KEY, base_url = h2.url, ca_file = h2.ca_file }
    for k, v in pairs(extra or {}) do o[k] = v end
    return partner.new(o)
  end

  it("a call reports HTTP/2 in meta.http_version, and keeps its connection alive", function()
    local c = client()
    finally(function() c:close() end)
    local n0 = #h2.access_log()
    local res, err, meta = c:whoami()
    assert.is_nil(err, err and tostring(err))
    assert.equal("Sandbox Partner", res.clientName)
    assert.equal("2", meta.http_version)
    local _, err2, meta2 = c:whoami()
    assert.is_nil(err2)
    assert.equal("2", meta2.http_version)
    local log = log_lines(n0 + 2)
    local a, b = log[n0 + 1], log[n0 + 2]
    assert.equal("HTTP/2.0", b.protocol)
    assert.equal(a.conn, b.conn)                     -- the same connection, reused
  end)

  it("the async client multiplexes 20 requests on one connection, then reuses it", function()
    local c = client({ max_connections = 20 })
    finally(function() c:close() end)
    local function batch()
      local results = {}
      local t0 = socket.gettime()
      for i = 1, 20 do
        assert(c:whoami_async(function(r, e, m) results[i] = { r, e, m } end))
      end
      local deadline = t0 + 20
      while c:pending() > 0 and socket.gettime() < deadline do c:wait(50) end
      for i = 1, 20 do
        assert.is_nil(results[i][2], results[i][2] and tostring(results[i][2]))
        assert.equal("2", results[i][3].http_version)
        assert.equal(1, results[i][3].attempts)      -- sends are counted on HTTP/2 streams too
      end
      return (socket.gettime() - t0) * 1000
    end
    local n0 = #h2.access_log()
    local took = batch()
    local log = log_lines(n0 + 20)
    local conns = {}
    for i = n0 + 1, #log do conns[log[i].conn] = true; assert.equal("HTTP/2.0", log[i].protocol) end
    assert.equal(20, #log - n0)
    local first = next(conns)
    assert.is_nil(next(conns, first), "20 requests over more than one connection: " ..
      cjson.encode((function() local l = {} for k in pairs(conns) do l[#l + 1] = k end return l end)()))
    -- 200 ms each upstream: one after another on one connection would take 4 s
    assert.is_true(took < (SLOW and 3500 or 2000), "20 multiplexed requests took " .. took .. " ms")
    batch()
    log = log_lines(n0 + 40)
    for i = n0 + 21, n0 + 40 do
      assert.equal(first, log[i].conn)               -- the next batch reuses the same connection
    end
  end)

  it("reports HTTP/1.1 from a server without http2", function()
    local tls = assert(testsrv.start_tls())
    local c
    finally(function() if c then c:close() end tls.stop() end)
    c = partner.new({ api_key = KEY, base_url = tls.url, ca_file = tls.ca_file })
    local _, err, meta = c:whoami()
    assert.is_nil(err)
    assert.equal("1.1", meta.http_version)
  end)
end)
