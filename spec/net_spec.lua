-- The rules every transport shares (endaoment.partner.net, endaoment.partner.retry),
-- written once: the loopback rule agrees case for case between Lua (partner.new,
-- the nginx transport, journeys) and the libcurl transport's C check; the
-- caller-header rule and the retryability table are the same for both transports.
local net = require "endaoment.partner.net"
local retry = require "endaoment.partner.retry"
local partner = require "endaoment.partner"

-- host as written in a URL -> loopback?
local CASES = {
  { "127.0.0.1", true }, { "127.1.2.3", true }, { "127.0.0.255", true }, { "127.255.255.254", true },
  { "localhost", true }, { "LocalHost", true }, { "[::1]", true },
  { "127.999.0.1", false }, { "127.0.0.256", false }, { "127.00.0.1", false }, { "127.1", false },
  { "0x7f.0.0.1", false }, { "2130706433", false }, { "0177.0.0.1", false }, { "128.0.0.1", false },
  { "10.0.0.1", false }, { "[0:0::1]", false }, { "[::2]", false }, { "localhost.", false },
  { "127.0.0.1.example.com", false }, { "localhost.example.com", false }, { "example.com", false },
}

describe("the loopback rule", function()
  it("is one rule in Lua", function()
    for _, c in ipairs(CASES) do
      local host = c[1]:gsub("^%[(.*)%]$", "%1")
      assert.equal(c[2], net.is_loopback_host(host), c[1])
      assert.equal(c[2], net.is_loopback_host(c[1]:lower()), c[1])
    end
  end)

  it("decides which base_url may be plain http", function()
    for _, c in ipairs(CASES) do
      local ok = pcall(partner.new, { api_key = "k", base_url = "http://" .. c[1] .. ":8787",
        transport = { request = function() end } })
      assert.equal(c[2], ok, c[1])
    end
  end)

  it("is the same rule in the libcurl transport's C check, case for case", function()
    local curl = require "endaoment.partner.curl"
    local t = curl.new({ allow_http_loopback = true })
    finally(function() t:close() end)
    for _, c in ipairs(CASES) do
      -- Port 1: a loopback host is contacted (connection refused), any other refused before connecting.
      local _, err = t:request({ url = "http://" .. c[1] .. ":1/v1/auth/whoami", timeout_ms = 3000,
        connect_timeout_ms = 1000 })
      local refused = err.kind == "config" and err.message:find("https is required", 1, true) ~= nil
      assert.equal(not c[2], refused, c[1] .. ": " .. err.message)
    end
  end)

  it("is the nginx transport's too", function()
    -- The checks it runs before any cosocket (a stand-in ngx would fail a connect).
    local saved = rawget(_G, "ngx")
    package.loaded["endaoment.partner.transport.ngx"] = nil
    rawset(_G, "ngx", { get_phase = function() return "content" end, socket = {}, config = {} })
    local ok, tngx = pcall(require, "endaoment.partner.transport.ngx")
    rawset(_G, "ngx", saved)
    package.loaded["endaoment.partner.transport.ngx"] = nil
    assert(ok, tngx)
    for _, c in ipairs(CASES) do
      local url, err = tngx._check_request({ url = "http://" .. c[1] .. ":1/x" })
      assert.equal(c[2], url ~= nil, c[1] .. ": " .. tostring(err and err.message))
    end
  end)
end)

describe("caller headers", function()
  it("are refused by the same rule in both transports: host, content-length, transfer-encoding, connection", function()
    local curl = require "endaoment.partner.curl"
    local t = curl.new({})
    finally(function() t:close() end)
    local saved = rawget(_G, "ngx")
    package.loaded["endaoment.partner.transport.ngx"] = nil
    rawset(_G, "ngx", { get_phase = function() return "content" end, socket = {}, config = {} })
    local tngx = require "endaoment.partner.transport.ngx"
    rawset(_G, "ngx", saved)
    package.loaded["endaoment.partner.transport.ngx"] = nil
    for _, name in ipairs({ "Host", "content-length", "Transfer-Encoding", "CONNECTION", "bad name",
      "x-bad\r\nname" }) do
      local req = { method = "POST", url = "http://127.0.0.1:1/x", body = "{}", headers = { [name] = "1" } }
      local _, cerr = t:request(req)
      assert.equal("config", cerr.kind, name)
      local url, nerr = tngx._check_request(req)
      assert.is_nil(url, name)
      assert.equal("config", nerr.kind, name)
      assert.is_string(net.header_problem(name, "1"), name)
    end
    assert.is_nil(net.header_problem("x-fine", "a\tb"))
  end)
end)

describe("the retryability table", function()
  it("decides by kind for both transports, and a custom transport may say so itself", function()
    assert.is_true(retry.failure_retryable({ kind = "network" }))
    assert.is_true(retry.failure_retryable({ kind = "timeout" }))
    for _, kind in ipairs({ "tls", "too_large", "config", "oom", "unknown" }) do
      assert.is_false(retry.failure_retryable({ kind = kind }), kind)
    end
    assert.is_false(retry.failure_retryable({ kind = "network", retryable = false }))
    assert.is_true(retry.failure_retryable({ kind = "weird", retryable = true }))
    assert.is_false(retry.failure_retryable(nil))
  end)
end)
