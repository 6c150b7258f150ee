-- The README's plain-Lua example must run as printed, against the sandbox.
local server = require "spec.helpers.sandbox_server"

local function readme_block(heading)
  local f = assert(io.open("README.md", "rb"))
  local text = f:read("*a")
  f:close()
  local section = assert(text:match("\n## " .. heading .. "[^\n]*\n(.-)\n## "), "no section " .. heading)
  return assert(section:match("```lua\n(.-)\n```"), "no lua block in " .. heading)
end

describe("README", function()
  it("plain Lua example runs against the sandbox", function()
    local srv = assert(server.start())
    finally(srv.stop)
    local code = readme_block("Plain Lua")
    assert.is_true(#code:gsub("[^\n]", "") + 1 <= 22, "the example should stay about 20 lines")
    code = code:gsub("http://127%.0%.0%.1:8787", srv.url)
    local printed = {}
    local env = setmetatable({ print = function(...) printed[#printed + 1] = { ... } end },
      { __index = _G })
    local chunk = assert((loadstring or load)(code, "README", "t", env))
    if setfenv then setfenv(chunk, env) end
    chunk()
    assert.equal(1, #printed)
    local pledge_id, status, attempts = printed[1][1], printed[1][2], printed[1][3]
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", pledge_id)
    assert.equal(201, status)
    assert.equal(1, attempts)
    -- Run twice, as a user re-running a script would: the key is derived from
    -- partnerOperationId, so the API replays the first pledge.
    local again = assert((loadstring or load)(code, "README", "t", env))
    if setfenv then setfenv(again, env) end
    again()
    assert.equal(2, #printed)
    assert.equal(pledge_id, printed[2][1])
    local _, st = srv.control("GET", "/__sandbox/state")
    local n, fund = 0, nil
    for _, p in pairs(st.pledges) do n = n + 1; fund = p.fundId end
    assert.equal(1, n)
    assert.equal("125000000", st.funds[fund].usdcBalance)
  end)
end)
