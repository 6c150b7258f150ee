-- endaoment.partner.curl (csrc/curl*.c) over real sockets: the sandbox
-- server, a raw luasocket server (chunked bodies, 1xx, repeated headers) and
-- nginx with a CA generated for the test (spec/helpers/tls_server.lua).
local socket = require "socket"
local cjson = require "cjson"
local curl = require "endaoment.partner.curl"
local retry = require "endaoment.partner.retry"
local server = require "spec.helpers.sandbox_server"
local http = require "spec.helpers.rawhttp"
local testsrv = require "spec.helpers.tls_server"

local KEY = "sandbox-key"
local UA = "endaoment-partner-lua/spec"

local function api_headers(extra)
  local h = { ["x-api-key"] = KEY, ["content-type"] = "application/json" }
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local function user_json(id)
  return cjson.encode({ partnerUserIdentifier = id, firstName = "Ada", lastName = "Lovelace",
    email = "ada@example.com", address = { line1 = "1 Main St", city = "NYC",
        state = "NY", zip = "10001", country = "USA" } })
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local with_finalizer_inside = require("spec.helpers.gc").with_finalizer_inside

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

-- The transport reports a kind; whether it is retried is the one table's
-- verdict (endaoment.partner.retry), not the transport's.
local function assert_error(res, err, kind, retryable)
  assert.is_nil(res)
  assert.is_table(err)
  assert.equal(kind, err.kind, err.message)
  assert.is_nil(err.retryable)
  assert.equal(retryable, retry.failure_retryable(err))
  assert.is_string(err.message)
end

describe("endaoment.partner.curl", function()
  it("reports the libcurl version", function()
    assert.matches("^%d+%.%d+%.%d+", curl.version)
  end)

  it("raises on option types that are programming errors", function()
    assert.has_error(function() curl.new({ max_response_bytes = 0 }) end)
    assert.has_error(function() curl.new({ max_response_bytes = "big" }) end)
    assert.has_error(function() curl.new({ max_response_bytes = 1.5 }) end)
    assert.has_error(function() curl.new({ ca_file = 42 }) end)
    assert.has_error(function() curl.new({ allow_http_loopback = "yes" }) end)
    assert.has_error(function() curl.new({ user_agent = "x\r\nX-Injected: 1" }) end)
    assert.has_error(function() curl.new(7) end)
  end)

  describe("against the sandbox server", function()
    local srv, t

    local function url(path) return srv.url .. path end

    local function fault(f)
      local res = http.request(srv.url, "POST", "/__sandbox/faults", { ["content-type"] = "application/json" },
        cjson.encode(f))
      assert.equal(201, res.status)
    end

    local function logged(path)
      local res = http.request(srv.url, "GET", "/__sandbox/requests" .. (path and ("?path=" .. path) or ""), {})
      return cjson.decode(res.body).requests
    end

    before_each(function()
      srv = assert(server.start())
      t = assert(curl.new({ user_agent = UA }))
    end)
    after_each(function()
      t:close()
      srv.stop()
    end)

    it("does a GET round trip with lowercased headers", function()
      local res, err = t:request({ method = "GET", url = url("/v1/auth/whoami"), headers = { ["X-Api-Key"] = KEY },
        timeout_ms = 5000, connect_timeout_ms = 1000 })
      assert.is_nil(err)
      assert.equal(200, res.status)
      assert.matches("^application/json", res.headers["content-type"])
      assert.equal(tostring(#res.body), res.headers["content-length"])
      for name in pairs(res.headers) do assert.equal(name:lower(), name) end
      assert.equal("Sandbox Partner", cjson.decode(res.body).clientName)
      assert.is_false(res.reused)
      assert.is_number(res.elapsed_ms)
    end)

    it("does a POST round trip and sends only the headers it was given", function()
      local res, err = t:request({ method = "POST", url = url("/v1/auth/partner/users"), headers = api_headers(),
        body = user_json("curl-user-0000000001"), timeout_ms = 5000 })
      assert.is_nil(err)
      assert.equal(201, res.status)
      assert.is_string(cjson.decode(res.body).id)
      local entry = logged("/v1/auth/partner/users")[1]
      assert.equal("POST", entry.method)
      assert.equal(user_json("curl-user-0000000001"), entry.body)
      assert.equal("application/json", entry.headers["content-type"])
      assert.equal(UA, entry.headers["user-agent"])
      assert.is_nil(entry.headers["expect"])
      assert.is_nil(entry.headers["accept"]) -- no libcurl default "*/*"
    end)

    it("sends the accept header when the caller gives it", function()
      assert(t:request({ url = url("/v1/auth/whoami"),
        headers = { ["x-api-key"] = KEY, accept = "application/json" } }))
      assert.equal("application/json", logged("/v1/auth/whoami")[1].headers["accept"])
    end)

    it("sends other methods with their body", function()
      local res = assert(t:request({ method = "PATCH", url = url("/v1/funds/nope"), headers = api_headers(),
        body = '{"a":1}' }))
      assert.equal(404, res.status)
      local entry = logged("/v1/funds/nope")[1]
      assert.equal("PATCH", entry.method)
      assert.equal('{"a":1}', entry.body)
      res = assert(t:request({ method = "DELETE", url = url("/v1/funds/gone"), headers = api_headers() }))
      assert.equal(404, res.status)
      assert.equal("DELETE", logged("/v1/funds/gone")[1].method)
    end)

    it("keeps the connection alive across requests", function()
      local reused = {}
      for i = 1, 3 do
        local res = assert(t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } }))
        assert.equal(200, res.status)
        reused[i] = res.reused
      end
      assert.same({ false, true, true }, reused)
    end)

    it("returns an HTTP error status as a response, with its headers", function()
      fault({ path = "/v1/auth/whoami", status = 503, retryAfter = "1" })
      local res, err = t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } })
      assert.is_nil(err)
      assert.equal(503, res.status)
      assert.equal("1", res.headers["retry-after"])
    end)

    it("leaves a malformed JSON body to the JSON layer", function()
      fault({ path = "/v1/auth/whoami", malformed = true })
      local res = assert(t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } }))
      assert.equal(200, res.status)
      assert.is_false((pcall(cjson.decode, res.body)))
    end)

    it("reports a dropped connection as a retryable network error", function()
      fault({ path = "/v1/auth/whoami", drop = true })
      local res, err = t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } })
      assert_error(res, err, "network", true)
      assert.equal(52, err.curl_code)
      -- the transport recovers on a fresh connection
      res = assert(t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } }))
      assert.equal(200, res.status)
    end)

    it("reports a body shorter than its Content-Length as an error, never a success", function()
      fault({ path = "/v1/auth/whoami", truncate = true })
      local res, err = t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } })
      assert_error(res, err, "network", true)
      assert.equal(18, err.curl_code)
    end)

    it("times out after timeout_ms and recovers on the next request", function()
      fault({ path = "/v1/auth/whoami", delayMs = 2000 })
      local t0 = socket.gettime()
      local res, err = t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY },
        timeout_ms = 500 })
      local took = (socket.gettime() - t0) * 1000
      assert_error(res, err, "timeout", true)
      assert.equal(28, err.curl_code)
      assert.matches("timed out", err.message)
      assert.is_true(took >= 450 and took < 1500, "took " .. took .. " ms")
      assert.is_true(err.elapsed_ms >= 450 and err.elapsed_ms < 1500, "elapsed_ms " .. err.elapsed_ms)
      res = assert(t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } }))
      assert.equal("Sandbox Partner", cjson.decode(res.body).clientName)
    end)

    it("reports a refused connection as a retryable network error", function()
      local res, err = t:request({ url = "http://127.0.0.1:" .. free_port() .. "/v1/auth/whoami" })
      assert_error(res, err, "network", true)
      assert.equal(7, err.curl_code)
    end)

    it("refuses plain http to a non-loopback host without connecting", function()
      local t0 = socket.gettime()
      local res, err = t:request({ url = "http://example.com/v1/auth/whoami", headers = { ["x-api-key"] = KEY } })
      assert_error(res, err, "config", false)
      assert.matches("https is required", err.message)
      assert.is_nil(err.curl_code)
      assert.is_true(socket.gettime() - t0 < 0.05)
      for _, u in ipairs({ "http://10.0.0.1/", "http://127.0.0.1.example.com/", "http://[::2]/",
        "http://localhost.example.com/" }) do
        res, err = t:request({ url = u })
        assert_error(res, err, "config", false)
        assert.matches("https is required", err.message)
      end
    end)

    it("refuses plain http to loopback when allow_http_loopback is false, and sends nothing", function()
      local strict = curl.new({ allow_http_loopback = false })
      finally(function() strict:close() end)
      local res, err = strict:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } })
      assert_error(res, err, "config", false)
      assert.matches("https is required", err.message)
      assert.same({}, logged())
    end)

    it("remembers the URLs it checked, never mixing them up, and never a refused one", function()
      -- More URLs than the transport keeps parsed (4), in turn: every request
      -- must reach its own path, whether its parse was kept or not.
      local paths = {}
      for i = 1, 6 do paths[i] = "/nowhere/" .. i end
      paths[7] = "/v1/auth/whoami"
      local sent = {}
      for round = 1, 3 do
        for i = 1, #paths do
          local p = paths[(i + round) % #paths + 1]
          local base = (i % 2 == 0) and ("http://localhost:" .. srv.port) or srv.url
          local res = assert(t:request({ url = base .. p, headers = { ["x-api-key"] = KEY } }))
          assert.equal(p == "/v1/auth/whoami" and 200 or 404, res.status, p)
          sent[#sent + 1] = p
        end
        -- A URL refused once is refused every time: only accepted ones are kept.
        for _ = 1, 2 do
          local res, err = t:request({ url = "http://example.com/v1/auth/whoami" })
          assert_error(res, err, "config", false)
          assert.matches("https is required", err.message)
        end
      end
      local got = {}
      for i, entry in ipairs(logged()) do got[i] = entry.path end
      assert.same(sent, got)
    end)

    it("allows plain http to localhost", function()
      local res = assert(t:request({ url = "http://localhost:" .. srv.port .. "/v1/auth/whoami",
        headers = { ["x-api-key"] = KEY } }))
      assert.equal(200, res.status)
    end)

    it("rejects header injection before sending anything", function()
      local bad = {
        { ["x-api-key"] = KEY, ["idempotency-key"] = "abc\r\nX-Injected: 1" },
        { ["x-api-key"] = KEY .. "\n" },
        { ["x-api-key"] = KEY, ["x-nul"] = "a\0b" },
        { ["x-api-key"] = KEY, ["x-del"] = "a\127b" },
        { ["x-api-key"] = KEY, ["bad name"] = "v" },
        { ["x-api-key"] = KEY, ["bad:name"] = "v" },
        { ["x-api-key"] = KEY, [""] = "v" },
        { ["x-api-key"] = KEY, ["x-number"] = 5 },
        { ["x-api-key"] = KEY, [1] = "x-positional: 1" },
        { ["x-api-key"] = KEY, ["content-length"] = "0" },
      }
      for i, headers in ipairs(bad) do
        local res, err = t:request({ method = "POST", url = url("/v1/auth/whoami"), headers = headers, body = "{}" })
        assert_error(res, err, "config", false)
        assert.is_nil(err.message:find("%c"), "case " .. i .. ": control byte echoed in message")
      end
      assert.same({}, logged())
      -- a TAB is legal inside a value
      assert(t:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY, ["x-tab"] = "a\tb" } }))
      assert.equal("a\tb", logged("/v1/auth/whoami")[1].headers["x-tab"])
    end)

    it("rejects malformed requests as config errors", function()
      local cases = {
        {},
        { url = 42 },
        { url = "ftp://127.0.0.1/" },
        { url = "file:///etc/passwd" },
        { url = "127.0.0.1/no-scheme" },
        { url = "https://" },
        { url = "http://127.0.0.1/a b" },
        { url = url("/"), method = "GET /x HTTP/1.1\r\n" },
        { url = url("/"), method = 1 },
        { url = url("/"), body = {} },
        { url = url("/"), headers = "x" },
        { url = url("/"), timeout_ms = 0 },
        { url = url("/"), timeout_ms = -5 },
        { url = url("/"), connect_timeout_ms = "fast" },
        { url = url("/"), method = "HEAD", body = "x" },
      }
      for i, req in ipairs(cases) do
        local res, err = t:request(req)
        assert.is_nil(res, "case " .. i)
        assert.equal("config", err.kind, "case " .. i .. ": " .. tostring(err.message))
      end
      assert.same({}, logged())
      assert.has_error(function() t:request("http://127.0.0.1/") end)
    end)

    it("caps a body announced by Content-Length (too_large, not retryable)", function()
      local small = curl.new({ max_response_bytes = 20 })
      local exact = curl.new({ max_response_bytes = 57 })
      -- busted keeps one finally per test: close both in it.
      finally(function() small:close() exact:close() end)
      local res, err = small:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } })
      assert_error(res, err, "too_large", false)
      assert.equal(63, err.curl_code)
      assert.matches("max_response_bytes = 20", err.message, 1, true)
      -- exactly at the limit is fine
      res = assert(exact:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } }))
      assert.equal(57, #res.body)
    end)

    it("is closed idempotently and refuses requests afterwards", function()
      t:close()
      t:close()
      local res, err = t:request({ url = url("/v1/auth/whoami") })
      assert_error(res, err, "config", false)
      assert.equal("transport is closed", err.message)
      assert.matches("closed", tostring(t))
      assert.same({}, logged())
    end)

    it("refuses a request whose table closes the transport while it is read", function()
      local req = setmetatable({}, { __index = function(_, k)
        if k == "url" then
          t:close()
          return url("/v1/auth/whoami")
        end
      end })
      local res, err = t:request(req)
      assert_error(res, err, "config", false)
      assert.equal("transport is closed", err.message)
      assert.same({}, logged())
    end)

    it("refuses t:request from a finalizer while returning a result, which stays whole", function()
      local req = { url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } }
      local want = assert(t:request(req))
      for _ = 1, 3 do
        local inner = {}
        local r = with_finalizer_inside(function() inner[#inner + 1] = { t:request(req) } end,
          function() return t:request(req) end)
        local res, err = r[1], r[2]
        assert.is_nil(err)
        assert.equal(200, res.status)
        assert.equal(want.body, res.body)
        assert.same(sorted_keys(want.headers), sorted_keys(res.headers))
        assert.is_true(#inner > 0, "no finalizer ran while the result was pushed")
        for _, ir in ipairs(inner) do
          assert_error(ir[1], ir[2], "config", false)
          assert.matches("^transport busy: ", ir[2].message)
        end
      end
      assert(t:request(req)) -- not left busy
      assert.equal(5, #logged("/v1/auth/whoami")) -- the refused requests sent nothing
    end)

    it("defers t:close from a finalizer until the result is returned", function()
      local req = { url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } }
      for _ = 1, 3 do
        local tt, closes = curl.new({}), 0
        local r = with_finalizer_inside(function() closes = closes + 1; tt:close() end,
          function() return tt:request(req) end)
        local res, err = r[1], r[2]
        assert.is_true(closes > 0, "no finalizer ran while the result was pushed")
        assert.is_nil(err)
        assert.equal(200, res.status)
        assert.equal("Sandbox Partner", cjson.decode(res.body).clientName)
        local r2, e2 = tt:request(req)
        assert_error(r2, e2, "config", false)
        assert.equal("transport is closed", e2.message)
        assert.matches("closed", tostring(tt))
        tt:close()
      end
    end)

    -- Only Lua 5.4 has to-be-closed variables; elsewhere the case shows as pending.
    local it54 = _VERSION >= "Lua 5.4" and it or pending
    it54("is closed by a to-be-closed variable (Lua 5.4)", function()
      -- load() keeps this file parseable by Lua 5.1 tools.
      local chunk = assert(load([[
        local curl, url = ...
        local escaped
        do
          local tc <close> = curl.new({})
          escaped = tc
          assert(tc:request({ url = url }))
        end
        return escaped
      ]]))
      local escaped = chunk(curl, url("/v1/auth/whoami"))
      local res, err = escaped:request({ url = url("/v1/auth/whoami") })
      assert_error(res, err, "config", false)
      assert.equal("transport is closed", err.message)
    end)

    it("frees transports that are only garbage collected", function()
      for _ = 1, 20 do
        local tmp = curl.new({})
        assert(tmp:request({ url = url("/v1/auth/whoami"), headers = { ["x-api-key"] = KEY } }))
      end
      collectgarbage()
      collectgarbage()
      local weak = setmetatable({}, { __mode = "k" })
      weak[curl.new({})] = true
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak))
    end)
  end)

  describe("against a raw HTTP/1.1 server", function()
    local raw, t

    before_each(function()
      raw = assert(testsrv.start_raw())
      t = curl.new({})
    end)
    after_each(function()
      t:close()
      raw.stop()
    end)

    it("caps a chunked body in the write callback and recovers", function()
      local small = curl.new({ max_response_bytes = 1000 })
      finally(function() small:close() end)
      local res, err = small:request({ url = raw.url .. "/chunked/5000" })
      assert_error(res, err, "too_large", false)
      assert.equal(23, err.curl_code)
      assert.matches("max_response_bytes = 1000", err.message, 1, true)
      res, err = small:request({ url = raw.url .. "/nolength" })
      assert_error(res, err, "too_large", false)
      -- the next request on the same transport gets its own, complete answer
      res = assert(small:request({ url = raw.url .. "/chunked/1000" }))
      assert.equal(string.rep("x", 1000), res.body)
      res = assert(small:request({ url = raw.url .. "/echo" }))
      assert.matches("^GET /echo HTTP/1.1", res.body)
    end)

    it("reads a large chunked body under the default cap", function()
      local res = assert(t:request({ url = raw.url .. "/chunked/300000" }))
      assert.equal(300000, #res.body)
      assert.equal("chunked", res.headers["transfer-encoding"])
    end)

    it("gives each answer only its own bytes and headers, whatever came before on the transport", function()
      -- The transport reuses its answer buffers (up to 64 KiB each) from one request to the next:
      -- small after large, large after small, each body whole and nothing of the one before.
      for _, n in ipairs({ 10, 300000, 7, 70000, 65536, 3, 1000 }) do
        local res = assert(t:request({ url = raw.url .. "/chunked/" .. n }))
        assert.equal(string.rep("x", n), res.body)
        assert.equal("chunked", res.headers["transfer-encoding"])
        local echo = assert(t:request({ url = raw.url .. "/echo" }))
        assert.matches("^GET /echo HTTP/1.1", echo.body)
        assert.is_nil(echo.headers["transfer-encoding"])
      end
    end)

    it("returns only the final response's headers, joined and trimmed", function()
      local res = assert(t:request({ url = raw.url .. "/interim" }))
      assert.equal(200, res.status)
      assert.is_nil(res.headers["x-interim"])
      assert.equal("a, b", res.headers["x-dup"])
      assert.equal("one two", res.headers["x-folded"])
      assert.equal("padded", res.headers["x-spaces"])
      assert.equal("ok", res.body)
    end)

    it("caps the response header section", function()
      local res, err = t:request({ url = raw.url .. "/bigheaders" })
      assert_error(res, err, "too_large", false)
      assert.matches("headers", err.message)
    end)

    it("does not follow redirects", function()
      local res = assert(t:request({ url = raw.url .. "/redirect" }))
      assert.equal(302, res.status)
      assert.equal("/echo", res.headers["location"])
      assert.equal("", res.body)
    end)

    it("never sends Expect: 100-continue, even for a large body", function()
      local body = string.rep("z", 1200000)
      local res = assert(t:request({ method = "POST", url = raw.url .. "/echo", body = body,
        headers = { ["content-type"] = "application/json" } }))
      local head = res.body:lower()
      assert.is_nil(head:find("\nexpect:", 1, true))
      assert.matches("body%-length: 1200000", head)
      assert.is_nil(head:find("\naccept:", 1, true))
      assert.is_true(res.elapsed_ms < 900, "waited for a 100 Continue: " .. res.elapsed_ms .. " ms")
    end)

    it("sends an empty header value and no libcurl default content type", function()
      local res = assert(t:request({ method = "POST", url = raw.url .. "/echo", body = "",
        headers = { ["x-empty"] = "" } }))
      assert.matches("\nx%-empty:", res.body:lower())
      assert.matches("\ncontent%-length: 0", res.body:lower())
      assert.is_nil(res.body:lower():find("content-type", 1, true))
    end)
  end)

  describe("over TLS (nginx, CA generated for the test)", function()
    local tls

    lazy_setup(function()
      local err
      tls, err = testsrv.start_tls()
      assert(tls, "TLS test server (needs the nginx and openssl Debian packages): " .. tostring(err))
    end)
    lazy_teardown(function()
      if tls then tls.stop() end
    end)

    it("verifies the server with ca_file and reuses the connection", function()
      local t = curl.new({ ca_file = tls.ca_file })
      finally(function() t:close() end)
      local res, err = t:request({ url = tls.url .. "/" })
      assert.is_nil(err)
      assert.equal(200, res.status)
      assert.same({ ok = true }, cjson.decode(res.body))
      assert.is_false(res.reused)
      res = assert(t:request({ url = tls.url .. "/again" }))
      assert.is_true(res.reused)
      res = assert(t:request({ url = "https://localhost:" .. tls.port .. "/" }))
      assert.equal(200, res.status)
    end)

    it("fails with a ca_file hint when the CA is unknown", function()
      local t = curl.new({})
      finally(function() t:close() end)
      local res, err = t:request({ url = tls.url .. "/" })
      assert_error(res, err, "tls", false)
      assert.equal(60, err.curl_code)
      assert.matches("certificate not trusted: pass ca_file = ", err.message, 1, true)
      assert.matches("local issuer", err.message) -- curl's own words are kept
    end)

    it("fails with a host-name hint when the name is not in the certificate", function()
      local t = curl.new({ ca_file = tls.ca_file })
      finally(function() t:close() end)
      local res, err = t:request({ url = "https://127.0.0.2:" .. tls.port .. "/" })
      assert_error(res, err, "tls", false)
      assert.equal(60, err.curl_code)
      assert.matches("certificate does not match host 127.0.0.2: use the host name", err.message, 1, true)
    end)

    it("fails when ca_file cannot be read", function()
      local t = curl.new({ ca_file = tls.dir .. "/missing.pem" })
      finally(function() t:close() end)
      local res, err = t:request({ url = tls.url .. "/" })
      assert_error(res, err, "tls", false)
      assert.equal(77, err.curl_code)
      assert.matches("missing.pem", err.message, 1, true)
    end)

    it("parses a CA bundle once, not on every new TLS connection", function()
      -- Debian's libcurl has a built-in CApath, which disables the CA store
      -- cache unless the transport clears it: every new connection would
      -- then re-read the whole system bundle (~30 ms instead of ~1.5 ms).
      local system = io.open("/etc/ssl/certs/ca-certificates.crt")
      assert(system, "needs the ca-certificates Debian package")
      local bundle = tls.dir .. "/bundle.pem"
      local f = assert(io.open(bundle, "wb"))
      f:write(system:read("a"), "\n", assert(io.open(tls.ca_file)):read("a"))
      f:close()
      system:close()
      local t = curl.new({ ca_file = bundle })
      finally(function() t:close() end)
      local times = {}
      for i = 1, 6 do
        -- retry_safe = false: a fresh connection each time, closed afterwards
        local res = assert(t:request({ url = tls.url .. "/", retry_safe = false }))
        assert.is_false(res.reused)
        times[i] = res.elapsed_ms
      end
      local later = { table.unpack(times, 2) }
      table.sort(later)
      assert.is_true(later[3] < times[1] / 3,
        string.format("first %.1f ms, median of the next %.1f ms", times[1], later[3]))
    end)

    it("speaks https to loopback even when plain http is allowed", function()
      local t = curl.new({ ca_file = tls.ca_file, allow_http_loopback = false })
      finally(function() t:close() end)
      assert.equal(200, assert(t:request({ url = tls.url .. "/" })).status)
    end)
  end)
end)
