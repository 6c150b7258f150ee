-- bin/endaoment-journey as a command: its help, version, exit codes, the
-- embedded sandbox (started with the running interpreter, its errors shown),
-- and production only when confirmed. (The journeys themselves:
-- journey_spec, journey_store_spec, journey_fleet_spec.)
local cjson = require "cjson"
local server = require "spec.helpers.sandbox_server"

local q = server.shell_quote
local NO_TARGET = "env -u ENDAOMENT_ENV -u ENDAOMENT_BASE_URL -u ENDAOMENT_API_KEY -u ENDAOMENT_LUA "

-- Runs a shell command line: its exit code and everything it printed.
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"EXIT=$?\""))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("EXIT=(%d+)%s*$"))
  return code, out:gsub("EXIT=%d+%s*$", "")
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

describe("endaoment-journey --help", function()
  local code, out = run("lua5.4 bin/endaoment-journey --help")

  it("exits 0 and is built on argparse", function()
    assert.equal(0, code)
    assert.matches("require \"argparse\"", read("bin/endaoment-journey"), 1, true)
    assert.matches("^Usage: endaoment%-journey", out)
  end)

  it("lists every flag", function()
    for _, flag in ipairs({ "PLAN", "--batch FILE", "--store SPEC", "--state FILE", "--no-state", "--concurrency N",
      "--report FILE", "--rebind URL", "--json", "--quiet", "--yes", "--version", "-h, --help" }) do
      assert.matches(flag, out, 1, true)
    end
  end)

  it("lists the environment, the exit codes, how to resume and an example", function()
    for _, var in ipairs({ "ENDAOMENT_API_KEY", "ENDAOMENT_ENV", "ENDAOMENT_BASE_URL", "ENDAOMENT_BEARER_TOKEN",
      "ENDAOMENT_LUA" }) do
      assert.matches("\n  " .. var .. " ", out, 1, true)
    end
    assert.matches("Exit codes:", out, 1, true)
    assert.matches("\n  0  every journey succeeded", out, 1, true)
    assert.matches("\n  1  a journey failed", out, 1, true)
    assert.matches("\n  2  bad usage or input", out, 1, true)
    assert.matches("Re%-running the same command is always safe", out)
    assert.matches("Examples:\n  endaoment-journey examples/plan.json", out, 1, true)
    assert.matches("--yes", out:match("Environment:(.*)$"), 1, true)
  end)
end)

describe("endaoment-journey", function()
  local plan_file
  before_each(function()
    plan_file = os.tmpname() .. ".json"
    write(plan_file, read("examples/plan.json"))
  end)
  after_each(function()
    os.remove(plan_file)
  end)

  it("--version prints the SDK's version", function()
    local code, out = run("lua5.4 bin/endaoment-journey --version")
    assert.equal(0, code)
    assert.equal("endaoment-journey " .. require("endaoment.partner").VERSION .. "\n", out)
    assert.equal("endaoment-journey 0.1.0\n", out)
  end)

  it("answers bad usage with exit code 2 and the usage", function()
    for _, args in ipairs({ "", "a.json b.json", "--bogus x.json", "--concurrency 0 --batch x.jsonl",
      "--batch x.jsonl y.json", "--no-state --state s.json x.json" }) do
      local code, out = run(NO_TARGET .. "lua5.4 bin/endaoment-journey " .. args)
      assert.equal(2, code, args .. ": " .. out)
      assert.matches("endaoment%-journey", out)
    end
  end)

  it("validates the plan before anything starts (exit 2, no sandbox started)", function()
    local bad = cjson.decode(read("examples/plan.json"))
    bad.donations[1].pledgedAmountMicroDollars = "12.5"
    write(plan_file, cjson.encode(bad))
    -- An ENDAOMENT_LUA that would fail loudly if the sandbox were started.
    local code, out = run(NO_TARGET .. "ENDAOMENT_LUA=false lua5.4 bin/endaoment-journey " .. q(plan_file))
    assert.equal(2, code, out)
    assert.matches("donations%[1%]%.pledgedAmountMicroDollars", out)
    assert.matches("nothing was sent", out, 1, true)
    assert.is_nil(out:find("sandbox", 1, true))
  end)

  it("starts the embedded sandbox with the interpreter it runs on, not one named lua5.4 on PATH", function()
    -- No PATH at all: only the running interpreter (arg's lowest index) can start the sandbox.
    local code, out = run(NO_TARGET .. "PATH=/nonexistent /usr/bin/lua5.4 bin/endaoment-journey " .. q(plan_file))
    assert.equal(0, code, out)
    assert.matches("using the embedded sandbox at http://127%.0%.0%.1:%d+", out)
    assert.matches("step 6/6 missing_orgs%[1%]", out)
    assert.matches("journey complete: 6 steps", out)
  end)

  it("runs on LuaJIT with the LuaJIT build and its sandbox on LuaJIT", function()
    if not io.open("build/luajit/endaoment/partner/core.so") then
      pending("no build/luajit (make build LUA=luajit BUILD=build/luajit)")
      return
    end
    local code, out = run(NO_TARGET .. "env -u LUA_CPATH luajit bin/endaoment-journey " .. q(plan_file))
    assert.equal(0, code, out)
    assert.matches("journey complete: 6 steps", out)
  end)

  it("shows the sandbox's own errors when it cannot start", function()
    local script = os.tmpname()
    write(script, "#!/bin/sh\necho \"sandbox exploded: $*\" >&2\nexit 3\n")
    os.execute("chmod +x " .. q(script))
    local code, out = run(NO_TARGET .. "ENDAOMENT_LUA=" .. q(script) .. " lua5.4 bin/endaoment-journey " ..
      q(plan_file))
    os.remove(script)
    assert.equal(1, code, out)
    assert.matches("could not start the embedded sandbox", out, 1, true)
    assert.matches("sandbox exploded: .*endaoment%-sandbox %-%-port 0", out)
  end)

  it("keeps empty lists as lists in --report lines", function()
    local p = cjson.decode(read("examples/plan.json"))
    p.donations, p.grant, p.missing_orgs = nil, nil, nil
    local batch, report = os.tmpname(), os.tmpname()
    write(batch, cjson.encode(p) .. "\n")
    local code, out = run(NO_TARGET .. "lua5.4 bin/endaoment-journey --batch " .. q(batch) .. " --report " ..
      q(report))
    local line = read(report) or ""
    os.remove(batch); os.remove(report)
    assert.equal(0, code, out)
    assert.matches("batch complete: 1 journeys", out, 1, true)
    assert.matches('"donation_ids":%[%]', line)
    assert.equal("done", cjson.decode(line).outcome)
  end)

  describe("production", function()
    -- The API key is a dummy and nothing may be sent: every case stops before.
    it("refuses without --yes when there is no terminal (exit 2, says to add --yes)", function()
      for _, env in ipairs({ "ENDAOMENT_ENV=production", "ENDAOMENT_BASE_URL=https://api.endaoment.org",
        "ENDAOMENT_BASE_URL=https://API.endaoment.org/" }) do
        local code, out = run("env -u ENDAOMENT_ENV -u ENDAOMENT_BASE_URL " .. env ..
          " ENDAOMENT_API_KEY=not-a-key lua5.4 bin/endaoment-journey " .. q(plan_file) .. " </dev/null")
        assert.equal(2, code, env .. ": " .. out)
        assert.matches("production", out, 1, true)
        assert.matches("add --yes", out, 1, true)
        assert.matches("Nothing was sent", out, 1, true)
        assert.is_nil(out:find("step 1/", 1, true))
      end
    end)

    it("asks on a terminal and stops unless production is typed", function()
      if not os.execute("command -v script >/dev/null 2>&1") then
        pending("no script(1) to give the command a terminal")
        return
      end
      local cmd = "env -u ENDAOMENT_BASE_URL ENDAOMENT_ENV=production ENDAOMENT_API_KEY=not-a-key " ..
        "lua5.4 bin/endaoment-journey " .. plan_file
      local code, out = run("printf 'prod\\n' | script -qec " .. q(cmd) .. " /dev/null")
      assert.equal(2, code, out)
      assert.matches("Type production to go on", out, 1, true)
      assert.matches("not confirmed; nothing was sent", out, 1, true)
    end)

    it("does not ask for the sandbox or another environment", function()
      local sb = assert(server.start())
      finally(sb.stop)
      local code, out = run("env -u ENDAOMENT_ENV ENDAOMENT_BASE_URL=" .. sb.url ..
        " ENDAOMENT_API_KEY=sandbox-key lua5.4 bin/endaoment-journey --no-state " .. q(plan_file) .. " </dev/null")
      assert.equal(0, code, out)
      assert.is_nil(out:find("PRODUCTION", 1, true))
    end)
  end)
end)
