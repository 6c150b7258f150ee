-- The quickstart, from anywhere: every runnable Lua snippet of the README and
-- every example (examples/*.lua), each run by the command its header gives, as
-- copied, from a directory outside the checkout, with no environment but the
-- one `make -s env` prints, against a sandbox.
local server = require "spec.helpers.sandbox_server"

local q = server.shell_quote

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"EXIT=$?\""))
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("EXIT=(%d+)%s*$")), out:gsub("EXIT=%d+%s*$", "")
end

-- README ```lua blocks that are fragments, not programs, and why.
local FRAGMENTS = {
  ["Game and app hosts"] = "a piece of a game's frame loop: KEY, log, body, show_receipt and love are the game's",
}

local function readme_lua_blocks()
  local text = read("README.md")
  local blocks = {}
  local heading = ""
  local in_lua, buf = false, nil
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if in_lua then
      if line == "```" then
        blocks[#blocks + 1] = { heading = heading, code = table.concat(buf, "\n") }
        in_lua = false
      else
        buf[#buf + 1] = line
      end
    elseif line:match("^```lua%s*$") then
      in_lua, buf = true, {}
    else
      heading = line:match("^##+ (.*)$") or heading
    end
  end
  return blocks
end

describe("quickstart", function()
  local env_lines, dir, sb

  setup(function()
    local code, out = sh("make -s env")
    assert(code == 0, out)
    env_lines = out
    dir = select(2, sh("mktemp -d /tmp/epartner-quickstart.XXXXXX")):gsub("%s+$", "")
    assert(dir:match("^/tmp/epartner%-quickstart%.%w+$"), dir)
    os.execute("mkdir -p " .. q(dir .. "/examples"))
    sb = assert(server.start())
  end)

  teardown(function()
    if sb then sb.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  -- A command line run in the temporary directory with only make env's variables (and a PATH).
  local function run_outside(cmd)
    local lua_path = env_lines:match("export LUA_PATH='([^']*)'")
    local lua_cpath = env_lines:match("export LUA_CPATH='([^']*)'")
    return sh("cd " .. q(dir) .. " && env -i PATH=/usr/local/bin:/usr/bin:/bin LUA_PATH=" .. q(lua_path) ..
      " LUA_CPATH=" .. q(lua_cpath) .. " sh -c " .. q(cmd))
  end

  local function sandbox(cmd)
    return (cmd:gsub("http://127%.0%.0%.1:8787", function() return sb.url end))
  end

  it("make -s env prints LUA_PATH and LUA_CPATH with this checkout's absolute paths", function()
    local root = os.getenv("PWD")
    local lp = env_lines:match("^export LUA_PATH='([^']*)'\n")
    local lcp = env_lines:match("\nexport LUA_CPATH='([^']*)'\n$")
    assert(lp and lcp, env_lines)
    assert.equal(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;", lp)
    assert.equal(root .. "/build/lua5.4/?.so;;", lcp)
    -- Usable as eval "$(make -s env)", from anywhere.
    local code, out = sh("cd /tmp && eval \"$(make -s -C " .. q(root) .. " env)\" && cd " .. q(dir) ..
      " && lua5.4 -e 'print(require(\"endaoment.partner\").VERSION)'")
    assert.equal(0, code, out)
    assert.equal("0.1.0\n", out)
  end)

  it("the README says to start the sandbox and set the paths first", function()
    local text = read("README.md")
    local section = assert(text:match("\n## Plain Lua[^\n]*\n(.-)\n## "))
    local first_lua = assert(section:find("```lua", 1, true))
    local before = section:sub(1, first_lua)
    assert.matches("bin/endaoment-sandbox --port 8787", before, 1, true)
    assert.matches('eval "$(make -s env)"', before, 1, true)
  end)

  it("runs every runnable Lua snippet of the README", function()
    local ran = 0
    for i, block in ipairs(readme_lua_blocks()) do
      local fragment
      for heading, why in pairs(FRAGMENTS) do
        if block.heading:find(heading, 1, true) then fragment = why end
      end
      if not fragment then
        local file = "readme_" .. i .. ".lua"
        write(dir .. "/" .. file, sandbox(block.code))
        -- Twice, as a user re-running a script would: the same answer.
        local code, out = run_outside("lua5.4 " .. file)
        assert(code == 0, block.heading .. ":\n" .. out)
        local code2, out2 = run_outside("lua5.4 " .. file)
        assert(code2 == 0, block.heading .. " (again):\n" .. out2)
        local id1, id2 = out:match("^(%x+%-%x+%-%x+%-%x+%-%x+)"), out2:match("^(%x+%-%x+%-%x+%-%x+%-%x+)")
        if id1 then assert.equal(id1, id2) end
        ran = ran + 1
      end
    end
    assert.is_true(ran >= 1, "no runnable snippet found")
  end)

  for _, name in ipairs({ "journey", "stock_donation", "error_handling", "game_loop", "luv_loop" }) do
    it("runs examples/" .. name .. ".lua as its header says", function()
      local src = read("examples/" .. name .. ".lua")
      local header = src:match("^(.-)\n[^%-]")
      local cmds = {}
      for line in header:gmatch("[^\n]+") do
        local cmd = line:match("^%-%-%s+(lua5%.4 examples/" .. name .. "%.lua[^(]*)")
        if cmd then cmds[#cmds + 1] = cmd:gsub("%s+$", "") end
      end
      assert.is_true(#cmds >= 1, "the header of examples/" .. name .. ".lua gives no command")
      write(dir .. "/examples/" .. name .. ".lua", src)
      for _, cmd in ipairs(cmds) do
        local code, out = run_outside(sandbox(cmd))
        if name == "game_loop" and code == 1 and out:find("over the frame budget", 1, true) then
          -- A loaded machine may miss the 16 ms budget; the grants must still all land.
          code = 0
        end
        assert(code == 0, cmd .. "\n" .. out)
        if name == "game_loop" then assert.matches("100 grants submitted: 100 accepted, 0 failed", out, 1, true) end
        if name == "luv_loop" then assert.matches("200 donations: 200 recorded, 0 failed", out, 1, true) end
      end
    end)
  end

  it("every example is covered", function()
    local p = io.popen("ls examples/*.lua")
    local names = {}
    for f in p:lines() do names[#names + 1] = f:match("examples/(.-)%.lua$") end
    p:close()
    table.sort(names)
    assert.same({ "error_handling", "game_loop", "journey", "luv_loop", "stock_donation" }, names)
  end)

  it("game_loop fails loudly when it cannot start its sandbox", function()
    -- The SDK from a copy of lua/ with no bin/ beside it, and no endaoment-sandbox on PATH.
    os.execute("cp -R lua " .. q(dir .. "/sdk"))
    write(dir .. "/examples/game_loop.lua", read("examples/game_loop.lua"))
    local lua_cpath = env_lines:match("export LUA_CPATH='([^']*)'")
    local code, out = sh("cd " .. q(dir) .. " && env -i PATH=/usr/bin:/bin LUA_PATH=" ..
      q(dir .. "/sdk/?.lua;" .. dir .. "/sdk/?/init.lua;;") .. " LUA_CPATH=" .. q(lua_cpath) ..
      " lua5.4 examples/game_loop.lua")
    assert.equal(2, code, out)
    assert.matches("game_loop: the sandbox did not start", out, 1, true)
    assert.matches("endaoment-sandbox: not found", out, 1, true)
    assert.matches("bin/endaoment-sandbox --port 8787", out, 1, true)
  end)
end)
