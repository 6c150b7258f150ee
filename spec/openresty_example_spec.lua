-- examples/openresty/nginx.conf as users copy it (only the listen port and the
-- checkout's path change, the latter exactly as the header's sed line does),
-- against the sandbox: the journey from a handler and from a timer. And the
-- README's OpenResty snippet, as printed (port, path, and the sandbox as target).
local cjson = require "cjson"
local socket = require "socket"
local server = require "spec.helpers.sandbox_server"
local openresty = require "spec.helpers.openresty"
local http = require "spec.helpers.rawhttp"

local ROOT = os.getenv("PWD")

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function plain(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- The conf with what its header tells the user to change, changed: the
-- placeholder its sed line names becomes the checkout, and the port a free one.
local function conf_as_the_header_says(conf)
  local placeholder = conf:match('\n#%s+sed "s|([^|]+)|%$PWD|g" examples/openresty/nginx%.conf')
  assert(placeholder, "the header has no sed line for the checkout's path")
  local n
  conf, n = conf:gsub(plain(placeholder), function() return ROOT end)
  assert.is_true(n >= 2, "lua_package_path and lua_package_cpath carry the path")
  conf, n = conf:gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:{port1};")
  assert.equal(1, n)
  return conf
end

describe("examples/openresty", function()
  it("says in its header how to run it, and needs nothing else", function()
    local conf = read("examples/openresty/nginx.conf")
    local header = conf:match("^(.-)\n[^#]")
    assert.matches("make build LUA=luajit BUILD=build/luajit", header, 1, true)
    assert.matches("\n#%s+bin/endaoment%-sandbox %-%-port 8787", header)
    assert.matches("\n#%s+ENDAOMENT_BASE_URL=http://127%.0%.0%.1:8787 nginx %-p (%S+)", header)
    assert.matches("\n#%s+nginx %-p %S+ %-c %S+ %-s quit", header)
    -- Its own pid file under the prefix (Debian's default, /run/nginx.pid, is the system
    -- nginx's), and the package paths as directives, not through the environment.
    assert.matches("\npid logs/nginx%.pid;", conf)
    assert.matches('\n%s*lua_package_path "[^"]+/lua/%?%.lua;[^"]*;;";', conf)
    assert.matches('\n%s*lua_package_cpath "[^"]+/build/luajit/%?%.so;;";', conf)
    assert.is_nil(conf:find("ENDAOMENT_PARTNER_ROOT", 1, true))
    assert.is_nil(conf:find("package.path", 1, true))
  end)

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
    local conf = conf_as_the_header_says(read("examples/openresty/nginx.conf"))
    -- The environment of the header's command line, with the sandbox's port.
    ng = assert(openresty.start_conf(conf, 1, { ENDAOMENT_BASE_URL = sb.url }))
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
    for i = 3, 5 do assert.equal("replayed", doc.steps[i].outcome) end
    assert.equal("existing", doc.steps[6].outcome)   -- the report: deduplicated by its EIN

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
    for i = 3, 5 do assert.equal("replayed", status.steps[i].outcome) end
    assert.equal("existing", status.steps[6].outcome)
    local _, st = sb.control("GET", "/__sandbox/state")
    local function count(t) local c = 0; for _ in pairs(t) do c = c + 1 end; return c end
    assert.equal(1, count(st.users))
    assert.equal(1, count(st.funds))
    assert.equal(2, count(st.pledges))
    assert.equal(1, count(st.submissions))
    assert.equal(1, count(st.reports))

    res = assert(http.request(ng.url(), "POST", "/journey", {}, "{not json"))
    assert.equal(400, res.status)
    -- A plan that breaks a rule: 400 (the caller's to fix), not 502, and nothing sent.
    local _, before = sb.control("GET", "/__sandbox/requests")
    local bad = cjson.decode(plan)
    bad.donations[1].pledgedAmountMicroDollars = "12.5"
    res = assert(http.request(ng.url(), "POST", "/journey", { ["content-type"] = "application/json" },
      cjson.encode(bad)))
    assert.equal(400, res.status, res.body)
    doc = cjson.decode(res.body)
    assert.is_false(doc.ok)
    assert.equal("donations[1].pledgedAmountMicroDollars", doc.field)
    assert.is_string(doc.advice)
    -- An empty list stays a list in the answer.
    assert.matches('"steps":%[%]', res.body)
    local _, after = sb.control("GET", "/__sandbox/requests")
    assert.equal(#before, #after)
  end)
end)

describe("README OpenResty snippet", function()
  local function readme_nginx()
    local text = read("README.md")
    local section = assert(text:match("\n## OpenResty[^\n]*\n(.-)\n## "), "no OpenResty section")
    return assert(section:match("```nginx\n(.-\n)```"), "no nginx block")
  end

  it("runs as printed: the acting user and a stable key from the caller's ledger id", function()
    local snippet = readme_nginx()
    -- It passes the acting user and derives its key from the caller's own id.
    assert.matches("partnerOperationId = ngx.var.arg_ledger_id", snippet, 1, true)
    assert.matches("user_id = ngx.var.arg_user", snippet, 1, true)
    assert.is_nil(snippet:find("partnerOperationId = ngx.var.request_id", 1, true))
    local sb = assert(server.start())
    local ng
    finally(function()
      local ok, problem = true, nil
      if ng then ok, problem = ng.stop() end
      sb.stop()
      assert(ok, problem)
    end)
    -- What the README tells the reader to change: the path of the checkout, the
    -- port; and here the target, the sandbox instead of "dev".
    local conf, n = snippet:gsub("/path/to/endaoment%-partner", function() return ROOT end)
    assert.is_true(n >= 2)
    conf, n = conf:gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:{port1};")
    assert.equal(1, n)
    conf, n = conf:gsub('environment = "dev"', function() return 'base_url = "' .. sb.url .. '"' end)
    assert.equal(1, n)
    ng = assert(openresty.start_conf(conf, 1, { ENDAOMENT_API_KEY = "sandbox-key" }))

    local partner = require "endaoment.partner"
    local client = partner.new { api_key = "sandbox-key", base_url = sb.url }
    local user = assert(client:provision_user { partnerUserIdentifier = "readme-nginx-user-01",
      firstName = "Ada", lastName = "Lovelace", email = "ada@example.com",
      address = { line1 = "1 Main St", city = "New York", state = "NY", zip = "10001", country = "USA" } })
    local fund = assert(client:create_fund({ name = "F", partnerAccountIdentifier = "readme-nginx-acct-01" },
      { user_id = user.id }))
    client:close()
    local path = "/donate?fund=" .. fund.id .. "&micro=125000000&ledger_id=ledger-42&user=" .. user.id
    local res = assert(http.request(ng.url(), "GET", path, {}))
    assert.equal(200, res.status, res.body)
    local id = res.body:match("^(%x+%-%x+%-%x+%-%x+%-%x+)\n$")
    assert(id, res.body)
    -- The caller retries (a lost answer): the same ledger id, the same key, one pledge.
    res = assert(http.request(ng.url(), "GET", path, {}))
    assert.equal(200, res.status, res.body)
    assert.equal(id .. "\n", res.body)
    local _, st = sb.control("GET", "/__sandbox/state")
    local pledges = 0
    for _ in pairs(st.pledges) do pledges = pledges + 1 end
    assert.equal(1, pledges)
    assert.equal("125000000", st.funds[fund.id].usdcBalance)
    -- Invalid input: 400, nothing sent.
    res = assert(http.request(ng.url(), "GET", "/donate?fund=" .. fund.id .. "&micro=12.5&ledger_id=l-1&user=" ..
      user.id, {}))
    assert.equal(400, res.status, res.body)
    assert.matches("invalid", res.body)
  end)
end)
