-- types/: lua-language-server definition files. Every public function of the
-- SDK, found at run time (so a new call cannot slip by), has an annotated
-- definition there with a ---@param per parameter and its ---@return; every
-- request body of the schema has a class with each of its fields; every type
-- the annotations name is defined.
local partner = require "endaoment.partner"
local journey = require "endaoment.partner.journey"
local stores = require "endaoment.partner.store"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local FILES = {
  ["endaoment.partner"] = "types/endaoment/partner.lua",
  ["endaoment.partner.core"] = "types/endaoment/partner/core.lua",
  ["endaoment.partner.curl"] = "types/endaoment/partner/curl.lua",
  ["endaoment.partner.fs"] = "types/endaoment/partner/fs.lua",
  ["endaoment.partner.journey"] = "types/endaoment/partner/journey.lua",
  ["endaoment.partner.store"] = "types/endaoment/partner/store.lua",
}

local text = {}
for mod, path in pairs(FILES) do text[mod] = read(path) end

local function plain(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- The definition `function <name>(args) end` in a file, with the ---
-- comment block right above it: args (a list), the block's text.
local function definition(mod, name)
  local src = text[mod]
  local s, e, args = src:find("\nfunction " .. plain(name) .. "%(([^)]*)%) end\n")
  if not s then return nil end
  local block = {}
  local before = src:sub(1, s)
  for line in before:gmatch("[^\n]*\n") do
    if line:match("^%-%-%-") then block[#block + 1] = line else block = {} end
  end
  local list = {}
  for a in args:gmatch("[^,%s]+") do list[#list + 1] = a end
  return list, table.concat(block), e
end

-- A function's annotation: a description, a ---@param per parameter (and no
-- other), at least one ---@return unless it returns nothing.
local function check(mod, name, returns_nothing)
  local args, block = definition(mod, name)
  assert(args, FILES[mod] .. " has no `function " .. name .. "(...) end`")
  assert(block:match("^%-%-%-[^@]"), name .. ": no description line above it")
  local documented = {}
  for p in block:gmatch("%-%-%-@param ([%w_%.]+)%??%s") do documented[p] = true end
  for _, a in ipairs(args) do
    assert(documented[a], name .. ": no ---@param for " .. a)
    documented[a] = nil
  end
  assert(next(documented) == nil, name .. ": ---@param " .. tostring(next(documented)) .. " is not a parameter")
  if not returns_nothing then
    assert(block:find("---@return ", 1, true), name .. ": no ---@return")
  end
end

local function public_functions(t)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_") then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

describe("types/", function()
  it("has a ---@meta file per module", function()
    for mod, src in pairs(text) do
      assert.equal("---@meta " .. mod, src:match("^([^\n]*)"), FILES[mod])
    end
  end)

  it("annotates every Client method, the _async twins and the async loop included", function()
    local client = partner.new { api_key = "k", base_url = "http://127.0.0.1:9" }
    local Client = getmetatable(client)
    local names = public_functions(Client)
    assert.is_true(#names >= 40, "the client has its calls and their twins")
    local nothing = { close = true }
    for _, name in ipairs(names) do
      if not name:match("^__") then check("endaoment.partner", "Client:" .. name, nothing[name]) end
    end
    -- The twin of every call.
    for op in pairs(partner._PLANNERS) do
      assert(definition("endaoment.partner", "Client:" .. op .. "_async"), op .. "_async")
    end
    -- A handle of an async call.
    local h = assert(client:whoami_async(function() end))
    for name in pairs(getmetatable(h).__index) do
      if not name:match("^_") then check("endaoment.partner", "Handle:" .. name) end
    end
    client:close()
  end)

  it("annotates every partner.* function", function()
    for _, name in ipairs(public_functions(partner)) do check("endaoment.partner", "partner." .. name) end
  end)

  it("annotates journey.* and the store module and interface", function()
    for _, name in ipairs(public_functions(journey)) do check("endaoment.partner.journey", "journey." .. name) end
    for _, name in ipairs(public_functions(stores)) do check("endaoment.partner.store", "stores." .. name) end
    local methods = { save_many = true }
    for _, m in ipairs(stores.METHODS) do methods[m] = true end
    for m in pairs(stores.Base) do
      if type(stores.Base[m]) == "function" and not m:match("^_") then methods[m] = true end
    end
    for m in pairs(methods) do check("endaoment.partner.store", "Store:" .. m, m == "close" and false) end
  end)

  it("annotates the C modules' functions and fields", function()
    for _, m in ipairs({ "core", "curl", "fs" }) do
      local mod = "endaoment.partner." .. m
      local t = require(mod)
      for _, name in ipairs(public_functions(t)) do check(mod, m .. "." .. name) end
      for k, v in pairs(t) do
        if type(v) ~= "function" then
          assert(text[mod]:find("---@field " .. k .. " ", 1, true), mod .. "." .. k .. " has no ---@field")
        end
      end
    end
    local fs = require "endaoment.partner.fs"
    assert.is_function(fs.isatty)
  end)

  it("has a class per request body with every field of the schema", function()
    local ok, schema = pcall(require, "endaoment.partner.schema")
    if not ok then pending("no endaoment.partner.schema") return end
    local src = text["endaoment.partner"]
    local seen = 0
    for name, fields in pairs(schema.objects) do
      if not fields.any then
        local class = "---@class endaoment.partner.body." .. name .. "\n"
        local at = src:find(class, 1, true)
        assert(at, "no " .. class)
        local block = src:match("^(.-)\n\n", at)
        for _, f in ipairs(fields) do
          assert(block:find("\n---@field " .. f[1] .. "%??%s"), "endaoment.partner.body." .. name .. " lacks " .. f[1])
        end
        seen = seen + 1
      end
    end
    assert.is_true(seen >= 8)
  end)

  it("documents every option of partner.new and of a call", function()
    local src = read("lua/endaoment/partner.lua")
    local options = src:match("\nlocal OPTION_TYPES = (%b{})")
    local call = src:match("\nlocal CALL_OPTS = (%b{})")
    assert(options and call, "OPTION_TYPES and CALL_OPTS in lua/endaoment/partner.lua")
    local types = text["endaoment.partner"]
    local function class_block(name)
      local at = assert(types:find("---@class " .. name .. "\n", 1, true), name)
      return types:match("^(.-)\n\n", at)
    end
    local opts, copts = class_block("endaoment.partner.Options"), class_block("endaoment.partner.CallOptions")
    for k in options:gmatch("([%w_]+) = \"") do
      assert(opts:find("\n---@field " .. k .. "?", 1, true), "Options lacks " .. k)
    end
    for k in call:gmatch("([%w_]+) = \"") do
      assert(copts:find("\n---@field " .. k .. "?", 1, true), "CallOptions lacks " .. k)
    end
  end)

  it("defines every type it names", function()
    local all = {}
    for _, src in pairs(text) do all[#all + 1] = src end
    all = table.concat(all, "\n")
    local defined = {}
    for name in all:gmatch("%-%-%-@class ([%w_%.]+)") do defined[name] = true end
    for name in all:gmatch("%-%-%-@alias ([%w_%.]+)") do defined[name] = true end
    local used = 0
    for line in all:gmatch("[^\n]+") do
      if line:match("^%-%-%-@") then
        for name in line:gmatch("(endaoment%.[%w_%.]*[%w_])") do
          if not FILES[name] and not pcall(require, name) then   -- a module named in a description
            assert(defined[name], "undefined type " .. name .. " in: " .. line)
            used = used + 1
          end
        end
      end
    end
    assert.is_true(used > 100)
  end)
end)
