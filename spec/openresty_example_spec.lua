-- examples/openresty/nginx.conf as users copy it (only the port changes),
-- against the sandbox: the journey from a handler and from a timer.
local cjson = require "cjson"
local socket = require "socket"
local server = require "spec.helpers.sandbox_server"
local openresty = require "spec.helpers.openresty"
local http = require "spec.helpers.rawhttp"

describe("examples/openresty", function()
  it("runs the journey from a request handler and from a timer", function()
    local sb = assert(server.start())
    local ng
    -- busted keeps one finally per test: stop both servers in it.
    finally(function()
      local ok, problem = true, nil
      if ng then ok, problem = ng.stop() end
      sb.stop()
      assert(ok, problem)
    end)
    local f = assert(io.open("examples/openresty/nginx.conf"))
    local conf = f:read("*a")
    f:close()
    local n
    conf, n = conf:gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:{port1};")
    assert.equal(1, n)
    ng = assert(openresty.start_conf(conf, 1, {
      ENDAOMENT_PARTNER_ROOT = os.getenv("PWD"), ENDAOMENT_BASE_URL = sb.url, ENDAOMENT_API_KEY = "sandbox-key",
    }))
    local pf = assert(io.open("examples/plan.json"))
    local p = cjson.decode(pf:read("*a"))
    pf:close()
    -- No keys in the plan and no state file: the journey derives every key
    -- from the plan's own ids, so running it again replays instead of creating.
    local plan = cjson.encode(p)

    local res = assert(http.request(ng.url(), "POST", "/journey", { ["content-type"] = "application/json" }, plan))
    assert.equal(200, res.status, res.body)
    local doc = cjson.decode(res.body)
    assert.is_true(doc.ok)
    assert.equal(6, #doc.steps)
    assert.equal("created", doc.steps[1].outcome)
    -- The same request again (a client retrying after a lost answer).
    res = assert(http.request(ng.url(), "POST", "/journey", { ["content-type"] = "application/json" }, plan))
    assert.equal(200, res.status, res.body)
    doc = cjson.decode(res.body)
    assert.is_true(doc.ok)
    assert.equal("existing", doc.steps[1].outcome)
    for i = 3, 6 do assert.equal("replayed", doc.steps[i].outcome) end

    res = assert(http.request(ng.url(), "POST", "/journey/background", {}, plan))
    assert.equal(202, res.status)
    local job = cjson.decode(res.body).job
    local deadline, status = socket.gettime() + 5
    repeat
      socket.sleep(0.05)
      status = cjson.decode(assert(http.request(ng.url(), "GET", "/journey/status?job=" .. job, {})).body)
    until status.state == "done" or socket.gettime() > deadline
    assert.equal("done", status.state)
    assert.is_true(status.ok)
    -- Same plan again: idempotent replays, nothing new created.
    assert.equal("existing", status.steps[1].outcome)
    for i = 3, 6 do assert.equal("replayed", status.steps[i].outcome) end
    local _, st = sb.control("GET", "/__sandbox/state")
    local function count(t) local c = 0; for _ in pairs(t) do c = c + 1 end; return c end
    assert.equal(1, count(st.users))
    assert.equal(1, count(st.funds))
    assert.equal(2, count(st.pledges))
    assert.equal(1, count(st.submissions))
    assert.equal(1, count(st.reports))

    res = assert(http.request(ng.url(), "POST", "/journey", {}, "{not json"))
    assert.equal(400, res.status)
  end)
end)
