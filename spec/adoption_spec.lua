-- Small adoption faults (issue 12): the version, on_retry's error, ca_file.
local partner = require "endaoment.partner"

describe("adoption details", function()
  it("exposes the version as VERSION and _VERSION", function()
    assert.equal("0.1.0", partner.VERSION)
    assert.equal(partner.VERSION, partner._VERSION)
    assert.equal(partner.VERSION, require("endaoment.partner.core").version)
  end)

  it("on_retry receives a real partner.Error for a transport failure", function()
    local seen = {}
    local c = partner.new({ api_key = "k", base_url = "http://127.0.0.1:9", max_retries = 1,
      retry_base_ms = 1, retry_cap_ms = 1, on_retry = function(info) seen[#seen + 1] = info end })
    local r, err = c:whoami()
    c:close()
    assert.is_nil(r)
    assert.equal("network", err.kind)
    assert.equal(1, #seen)
    assert.equal(partner.Error, getmetatable(seen[1].err))
    assert.equal("network", seen[1].err.kind)
    assert.is_true(seen[1].err.retryable)
    assert.matches("network", tostring(seen[1].err))
    assert.equal("number", type(seen[1].err.curl_code))
  end)

  it("a ca_file that cannot be read is refused by new(), not at the first call", function()
    assert.has_error(function()
      partner.new({ api_key = "k", environment = "dev", ca_file = "/nonexistent/ca.pem" })
    end, nil)
    local ok, msg = pcall(partner.new, { api_key = "k", environment = "dev", ca_file = "/nonexistent/ca.pem" })
    assert.is_false(ok)
    assert.matches("ca_file /nonexistent/ca.pem cannot be read", msg)
  end)
end)
