-- The fuzzers' findings stay fixed: every input of fuzz/regressions/<harness>/
-- goes through that harness's property script (fuzz/props/<harness>.lua) on
-- this build of the core, exactly as the libFuzzer harness runs it. A broken
-- property raises. (scripts/fuzz.sh replay runs the same inputs through the
-- sanitized libFuzzer binaries in `make check`; the curl harness's properties
-- are C, so its inputs replay only there.) docs/fuzzing.md has the details.
--
-- The property scripts use Lua 5.4 (string.pack, bitwise operators): other
-- interpreters skip this file.
local HARNESSES = { "prepare", "encode", "money", "ids", "headers", "utf8", "derive", "decode" }

local function list(dir)
  local out = {}
  local p = io.popen("ls -1 " .. dir .. " 2>/dev/null")
  if not p then return out end
  for name in p:lines() do
    if not name:find("^%.") and not name:find("%.md$") then out[#out + 1] = name end
  end
  p:close()
  table.sort(out)
  return out
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local props = {}
local function prop(h)
  if not props[h] then
    if not package.path:find("./fuzz/?.lua", 1, true) then package.path = "./fuzz/?.lua;" .. package.path end
    props[h] = dofile("fuzz/props/" .. h .. ".lua")
  end
  return props[h]
end

describe("fuzz regressions", function()
  if _VERSION ~= "Lua 5.4" then
    pending("the property scripts need Lua 5.4")
    return
  end

  it("every property script loads and holds on the smallest inputs", function()
    for _, h in ipairs(HARNESSES) do
      local p = prop(h)
      for _, input in ipairs({ "", "\0", "\255", "\0\0\0\0", "\3\0\3", "\255\255\255\255\255\255\255\255" }) do
        p(input)
      end
    end
  end)

  for _, h in ipairs(HARNESSES) do
    for _, name in ipairs(list("fuzz/regressions/" .. h)) do
      it(h .. ": " .. name, function()
        prop(h)(read("fuzz/regressions/" .. h .. "/" .. name))
      end)
    end
  end
end)
