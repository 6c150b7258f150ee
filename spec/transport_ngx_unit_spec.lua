-- The nginx transports' logic without nginx: a stand-in ngx global and a
-- stand-in resty.http (Debian does not package lua-resty-http, so the
-- adapter is checked against the documented request_uri interface).
-- The real cosocket path runs inside nginx in spec/openresty_spec.lua.
describe("nginx transports (unit)", function()
  local saved_ngx, phase, fake_http, partner, tngx, cjson, fake_ngx

  local MODULES = { "endaoment.partner", "endaoment.partner.transport.ngx" }

  setup(function()
    cjson = require "cjson"
    saved_ngx = rawget(_G, "ngx")
    phase = "content"
    local slept = {}
    fake_ngx = {
      get_phase = function() return phase end,
      now = function() return os.time() end,
      update_time = function() end,
      sleep = function(s) slept[#slept + 1] = s end,
      socket = { tcp = function() error("no sockets in this unit spec") end },
      config = { ngx_lua_version = 10023 },
      slept = slept,
    }
    rawset(_G, "ngx", fake_ngx)
    fake_http = { calls = {}, answers = {}, _VERSION = "0.17.2" }
    function fake_http.new()
      local c = {}
      function c.set_timeouts(_, a, b, d) c.timeouts = { a, b, d } end
      function c.request_uri(_, uri, params)
        fake_http.calls[#fake_http.calls + 1] = { uri = uri, params = params, timeouts = c.timeouts }
        local a = table.remove(fake_http.answers, 1)
        if a.err then return nil, a.err end
        return a
      end
      return c
    end
    package.preload["resty.http"] = function() return fake_http end
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
    partner = require "endaoment.partner"
    tngx = require "endaoment.partner.transport.ngx"
  end)

  teardown(function()
    rawset(_G, "ngx", saved_ngx)
    package.preload["resty.http"] = nil
    package.loaded["resty.http"] = nil
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
  end)

  before_each(function()
    phase = "content"
    fake_http.calls, fake_http.answers = {}, {}
  end)

  it("parses URLs with ports, defaults and IPv6 literals", function()
    local u = tngx._parse_url("https://api.endaoment.org/v1/funds/partner")
    assert.same({ "https", "api.endaoment.org", 443, "/v1/funds/partner", "api.endaoment.org" },
      { u.scheme, u.host, u.port, u.path, u.host_header })
    u = tngx._parse_url("http://127.0.0.1:8787")
    assert.same({ 8787, "/", "127.0.0.1:8787" }, { u.port, u.path, u.host_header })
    u = tngx._parse_url("http://[::1]:9000/x?y=1")
    assert.same({ "::1", 9000, "/x?y=1", "[::1]:9000" }, { u.host, u.port, u.path, u.host_header })
    assert.is_nil(tngx._parse_url("ftp://x"))
  end)

  it("is what partner.new picks inside nginx, and it refuses ca_file", function()
    local c = partner.new({ api_key = "k", environment = "dev" })
    assert.equal("ngx", c.transport.name)
    local ok, msg = pcall(partner.new, { api_key = "k", environment = "dev", ca_file = "/x.pem" })
    assert.is_false(ok)
    assert.matches("lua_ssl_trusted_certificate", msg)
  end)

  for _, p in ipairs({ "init", "init_worker", "set", "log", "header_filter", "body_filter" }) do
    it("returns kind config in the " .. p .. " phase instead of blocking", function()
      phase = p
      local c = partner.new({ api_key = "k", environment = "dev" })
      local res, err, meta = c:whoami()
      assert.is_nil(res)
      assert.equal("config", err.kind)
      assert.matches(p .. " phase", err.message, 1, true)
      assert.matches("ngx.timer.at(0", err.message, 1, true)
      assert.equal(1, meta.attempts)
    end)
  end

  it("checks call options before the transport runs (a cosocket here would raise)", function()
    local c = partner.new({ api_key = "k", environment = "dev" })
    assert.equal("ngx", c.transport.name)
    for _, opts in ipairs({ { headers = { ["X-Bad\r\nName"] = "v" } }, { headers = { ["content-length"] = "1" } },
      { headers = { connection = "close" } }, { timeout_ms = 0 } }) do
      local res, err, meta = c:whoami(opts)
      assert.is_nil(res)
      assert.equal("invalid", err.kind)
      assert.matches("^opts%.", err.field)
      assert.equal(0, meta.attempts)
    end
    -- and the transport itself refuses what the libcurl one refuses, before any socket
    local _, err = c.transport:request({ method = "GET", url = "https://api.dev.endaoment.org/x",
      headers = { Host = "evil.example" } })
    assert.equal("config", err.kind)
    _, err = c.transport:request({ method = "GET", url = "http://10.0.0.1/x" })
    assert.equal("config", err.kind)
    assert.matches("https is required", err.message)
  end)

  it("refuses the proxy options: cosockets use no proxy", function()
    for _, o in ipairs({ { proxy = "http://127.0.0.1:3128" }, { no_proxy = "example.com" } }) do
      o.api_key, o.environment = "k", "dev"
      local ok, msg = pcall(partner.new, o)
      assert.is_false(ok)
      assert.matches("use no proxy", msg)
    end
  end)

  describe("transport = 'resty_http'", function()
    local function client(extra)
      local o = { api_key = "key-1234", environment = "dev", transport = "resty_http", retry_base_ms = 1 }
      for k, v in pairs(extra or {}) do o[k] = v end
      return partner.new(o)
    end

    it("sends through request_uri with verification and keep-alive, and maps the answer", function()
      fake_http.answers = { { status = 201, headers = { ["Content-Type"] = "application/json",
        ["X-Request-Id"] = "r-1" }, body = '{"id":"p-1"}' } }
      local c = client({ timeout_ms = 1234, connect_timeout_ms = 567 })
      assert.equal("resty_http", c.transport.name)
      local res, err, meta = c:record_cash_donation({ receivingFundId = partner.uuid4(),
        pledgedAmountMicroDollars = "5", partnerOperationId = "op" })
      assert.is_nil(err)
      assert.equal("p-1", res.id)
      assert.equal("r-1", meta.request_id)
      local call = fake_http.calls[1]
      assert.equal("https://api.dev.endaoment.org/v1/donation-pledges/partner/cash-settled", call.uri)
      assert.equal("POST", call.params.method)
      assert.is_true(call.params.ssl_verify)
      assert.is_number(call.params.keepalive_timeout)
      assert.equal("key-1234", call.params.headers["x-api-key"])
      assert.equal(meta.idempotency_key, cjson.decode(call.params.body).idempotencyKey)
      assert.same({ 567, 1234, 1234 }, call.timeouts)
    end)

    it("retries a timeout with the same body and sleeps with ngx.sleep", function()
      fake_http.answers = { { err = "timeout" }, { status = 200, headers = {}, body = "{}" } }
      local _, err, meta = client({ retry_base_ms = 100, random = function() return 0.5 end }):whoami()
      assert.is_nil(err)
      assert.equal(2, meta.attempts)
      assert.same({ 0.05 }, fake_ngx.slept)
    end)

    it("maps certificate failures to kind tls, without retrying", function()
      fake_http.answers = { { err = "handshake failed: certificate verify failed" } }
      local _, err, meta = client():whoami()
      assert.equal("tls", err.kind)
      assert.matches("lua_ssl_trusted_certificate", err.message)
      assert.equal(1, meta.attempts)
    end)

    it("refuses answers over max_response_bytes", function()
      fake_http.answers = { { status = 200, headers = {}, body = string.rep("x", 2000) } }
      local _, err = client({ max_response_bytes = 1000 }):whoami()
      assert.equal("network", err.kind)
      assert.is_true(err.too_large)
    end)
  end)
end)
