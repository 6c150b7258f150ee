-- The release: the licence, one version everywhere, the two rockspecs in step
-- (the versioned one is made from scm-1 by `make rockspec`), every module in
-- them, and the make targets around them. (make release-check builds, installs
-- and loads the rock itself; it runs in make check.)
local core = require "endaoment.partner.core"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"EXIT=$?\""))
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("EXIT=(%d+)%s*$")), out:gsub("EXIT=%d+%s*$", "")
end

-- A rockspec's variables, as LuaRocks reads them (a Lua chunk setting globals).
local function rockspec(path)
  local text = assert(read(path), path)
  local env = {}
  local chunk = assert((loadstring or load)(text, "=" .. path, "t", env))
  if setfenv then setfenv(chunk, env) end
  chunk()
  return env, text
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local VERSION = core.version
local SCM = "rockspecs/endaoment-partner-scm-1.rockspec"
local REL = "rockspecs/endaoment-partner-" .. VERSION .. "-1.rockspec"

describe("release", function()
  it("is 0.1.0 everywhere: core, partner, rockspec, changelog, CLI, sandbox", function()
    assert.equal("0.1.0", VERSION)
    assert.equal(VERSION, require("endaoment.partner").VERSION)
    assert.equal(VERSION .. "-1", rockspec(REL).version)
    assert.equal(VERSION, (read("CHANGELOG.md") or ""):match("\n## (%d+%.%d+%.%d+)"))
    local code, out = sh("lua5.4 bin/endaoment-journey --version")
    assert.equal(0, code)
    assert.equal("endaoment-journey " .. VERSION .. "\n", out)
    assert.equal(VERSION, require("endaoment.sandbox").VERSION)
  end)

  it("is MIT licensed, as the rockspec says, and the README says so", function()
    local license = assert(read("LICENSE"), "no LICENSE")
    assert.matches("^MIT License\n", license)
    assert.matches("Copyright (c) 2026 endaoment-partner contributors", license, 1, true)
    assert.matches("Permission is hereby granted, free of charge", license, 1, true)
    assert.equal("MIT", rockspec(SCM).description.license)
    local readme = read("README.md")
    local section = assert(readme:match("\n## License\n(.-)$"), "no License section in the README")
    assert.matches("MIT", section, 1, true)
    assert.matches("(LICENSE)", section, 1, true)
  end)

  it("keeps the rockspecs in rockspecs/, and nothing points at rockspec/ any more", function()
    assert.is_nil(read("rockspec/endaoment-partner-scm-1.rockspec"))
    assert.is_string(read(SCM))
    for _, f in ipairs({ "README.md", "Makefile", "scripts/check.sh", "scripts/release-check.sh", "CHANGELOG.md",
      "docs/api.md", "docs/journeys.md", "docs/stores.md", "docs/derived-keys.md", "docs/assumptions.md" }) do
      local text = read(f)
      if text then assert.is_nil(text:find("rockspec/", 1, true), f .. " still names rockspec/") end
    end
  end)

  it("makes the versioned rockspec from scm-1: same text, version and source aside", function()
    local code, generated = sh("lua5.4 scripts/rockspec.lua " .. VERSION)
    assert.equal(0, code, generated)
    assert(generated == read(REL), REL .. " is not what `make rockspec` makes from " .. SCM ..
      " (a module added to scm-1?): run make rockspec")
    local scm, rel = rockspec(SCM), rockspec(REL)
    assert.equal("scm-1", scm.version)
    assert.equal("v" .. VERSION, rel.source.tag)
    assert.equal(scm.source.url, rel.source.url)
    assert.same(sorted_keys(scm.build.modules), sorted_keys(rel.build.modules))
    assert.same(scm.build, rel.build)
    assert.same(scm.dependencies, rel.dependencies)
    assert.same(scm.external_dependencies, rel.external_dependencies)
  end)

  it("lists every Lua module of lua/ and every C source it builds", function()
    local modules = rockspec(SCM).build.modules
    local p = io.popen("cd lua && find . -name '*.lua' | sort")
    local n = 0
    for file in p:lines() do
      local path = file:gsub("^%./", "")
      local name = path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      assert.equal("lua/" .. path, modules[name], name .. " (lua/" .. path .. ") is not in " .. SCM)
      n = n + 1
    end
    p:close()
    assert.is_true(n >= 10)
    for name, m in pairs(modules) do
      if type(m) == "table" then
        for _, src in ipairs(m.sources) do assert(read(src), name .. ": no " .. src) end
      else
        assert(read(m), name .. ": no " .. m)
      end
    end
    -- Every C file the Makefile builds into a module (csrc/core*.c, csrc/curl*.c: wildcards
    -- there) is a source of that module here, or the rock does not link.
    for prefix, name in pairs({ core = "endaoment.partner.core", curl = "endaoment.partner.curl" }) do
      local listed = {}
      for _, src in ipairs(modules[name].sources) do listed[src] = true end
      local f = io.popen("ls csrc/" .. prefix .. "*.c")
      local count = 0
      for src in f:lines() do
        assert(listed[src], src .. " is built by the Makefile but is not a source of " .. name .. " in " .. SCM)
        count = count + 1
      end
      f:close()
      assert.is_true(count >= 3)
    end
    -- The CLI's own dependency.
    local deps = table.concat(rockspec(SCM).dependencies, " ")
    assert.matches("argparse", deps, 1, true)
  end)

  it("installs with LuaRocks on Debian as the README says (what make release-check runs)", function()
    local install = assert(read("README.md"):match("\n## Install\n(.-)\n## "), "no Install section")
    local rock = "build/rocks/endaoment-partner-" .. VERSION .. "-1.src.rock"
    assert.matches("\nmake rock ", install, 1, true)
    assert.matches("luarocks --lua-version 5.4 install --deps-mode none " .. rock, install, 1, true)
    assert.matches("CURL_INCDIR=/usr/include/x86_64-linux-gnu", install, 1, true)
    assert.matches('eval "$(luarocks --lua-version 5.4 path)"', install, 1, true)
    assert.matches("LUA_INCDIR=/usr/include/luajit-2.1", install, 1, true)
    local script = read("scripts/release-check.sh")
    assert.matches("install --deps-mode none", script, 1, true)
    assert.matches('CURL_INCDIR="$incdir"', script, 1, true)
    assert.matches('"$rock"', script, 1, true)
    assert.matches("pack build/rocks", read("Makefile"), 1, true)
  end)

  it("has make targets for the release, the quick tests and the paths", function()
    for _, target in ipairs({ "release-check", "rock", "rockspec", "test", "env", "check" }) do
      local code, out = sh("make -n " .. target)
      assert(code == 0, "make -n " .. target .. ": " .. out)
    end
    -- make test: the 5.4 suites only, no apt-get and no valgrind.
    local _, out = sh("make -n test")
    assert.is_nil(out:find("deps.sh", 1, true))
    assert.is_nil(out:find("valgrind", 1, true))
    assert.matches("spec", out, 1, true)
    -- make check runs the release check instead of its own rock install.
    local check = read("scripts/check.sh")
    assert.matches("scripts/release-check.sh", check, 1, true)
    assert.is_nil(check:find("luarocks --lua-version 5.4 --tree", 1, true))
  end)

  it("has a .busted that runs a bare busted on Lua 5.4 with this checkout's paths", function()
    -- Debian's busted runs `#!/usr/bin/env lua`: make that `lua` a 5.1, as on a machine
    -- where lua-interpreter points there, and check the suite ends up on 5.4 anyway.
    local dir = select(2, sh("mktemp -d /tmp/epartner-busted.XXXXXX")):gsub("%s+$", "")
    finally(function() os.execute("rm -rf '" .. dir .. "'") end)
    local plain_lua = io.open("/usr/bin/lua5.1") and "/usr/bin/lua5.1" or "/usr/bin/lua5.3"
    os.execute("mkdir -p '" .. dir .. "/bin' && ln -s " .. plain_lua .. " '" .. dir .. "/bin/lua'")
    local f = assert(io.open(dir .. "/probe_spec.lua", "wb"))
    f:write([[
describe("bare busted", function()
  it("is on Lua 5.4 with the modules of this checkout", function()
    assert.equal("Lua 5.4", _VERSION)
    assert.equal("0.1.0", require("endaoment.partner.core").version)
  end)
end)
]])
    f:close()
    local code, out = sh("env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 PATH='" .. dir ..
      "/bin':\"$PATH\" busted '" .. dir .. "/probe_spec.lua'")
    assert(code == 0, out)
    assert.matches("1 success / 0 failures / 0 errors", out, 1, true)
  end)
end)
