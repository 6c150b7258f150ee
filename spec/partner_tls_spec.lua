-- The client's ca_file option against a local HTTPS endpoint (nginx, with a CA
-- generated for the test): verification on, and errors that say how to fix.
local partner = require "endaoment.partner"
local testsrv = require "spec.helpers.tls_server"

describe("client over TLS", function()
  local tls
  lazy_setup(function()
    local err
    tls, err = testsrv.start_tls()
    assert(tls, "TLS test server (needs the nginx and openssl Debian packages): " .. tostring(err))
  end)
  lazy_teardown(function()
    if tls then tls.stop() end
  end)

  local function client(extra)
    local o = { api_key = "tls-key-0000", base_url = tls.url, max_retries = 1, retry_base_ms = 10 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return partner.new(o)
  end

  it("verifies the server with ca_file", function()
    local c = client({ ca_file = tls.ca_file })
    local res, err, meta = c:whoami()
    c:close()
    assert.is_nil(err)
    assert.equal(200, meta.status)
    assert.is_true(res.ok)
  end)

  it("refuses an unknown CA with kind tls, says to pass ca_file, and does not retry", function()
    local c = client()
    local res, err, meta = c:whoami()
    c:close()
    assert.is_nil(res)
    assert.equal("tls", err.kind)
    assert.is_false(err.retryable)
    assert.matches("ca_file", err.message)
    assert.equal(1, meta.attempts)
  end)

  it("refuses a certificate for another host name and says so", function()
    -- The certificate names localhost and 127.0.0.1, not 127.0.0.2.
    local c = partner.new({ api_key = "tls-key-0000", base_url = "https://127.0.0.2:" .. tls.port,
      ca_file = tls.ca_file })
    local _, err = c:whoami()
    c:close()
    assert.equal("tls", err.kind)
    assert.matches("127.0.0.2", err.message, 1, true)
    assert.matches("host", err.message)
  end)
end)
