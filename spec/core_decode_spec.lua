-- core.decode: the decoder of every API answer (csrc/core_decode.c). Held
-- to two independent references: lua-cjson, whose values it must give for
-- any JSON, and a strict RFC 8259 recognizer written from the grammar
-- (fuzz/props/json_model.lua), which says what it must accept.
package.path = "./fuzz/?.lua;" .. package.path
local core = require "endaoment.partner.core"
local cjson = require "cjson.safe"
local model = require "props.json_model"

-- Generated texts per run: valgrind runs this file ~30x slower, so fewer there, same checks.
local SLOW = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) ~= nil
local CASES = SLOW and 300 or 3000

local function decodes_like_cjson(s)
  local got, err = core.decode(s)
  assert(got ~= nil, "core.decode refused valid JSON: " .. tostring(err) .. "\n" .. s)
  local want, werr = cjson.decode(s)
  assert(want ~= nil, "cjson refused it: " .. tostring(werr))
  assert(model.same(got, want), "core.decode and cjson.decode differ on:\n" .. s)
  return got
end

-- A random JSON text written directly (not through an encoder), so it holds
-- what encoders never write: odd whitespace, every escape, surrogate pairs,
-- exponents, long digit runs, repeated keys, deep and wide containers.
local function generator(seed)
  local rnd = math.random
  math.randomseed(seed)
  local function ws()
    local n = rnd(0, 3) == 0 and rnd(1, 3) or 0
    local t = {}
    for i = 1, n do t[i] = ({ " ", "\t", "\n", "\r" })[rnd(4)] end
    return table.concat(t)
  end
  local KEYS = { "id", "status", "amountMicroDollars", "grants", "a", "", "é", "id" }
  local function str()
    local parts = { '"' }
    for _ = 1, rnd(0, 12) do
      local k = rnd(12)
      if k <= 5 then parts[#parts + 1] = string.char(rnd(0x20, 0x7e)):gsub('["\\]', "x")
      elseif k == 6 then parts[#parts + 1] = ({ '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t" })[rnd(8)]
      elseif k == 7 then parts[#parts + 1] = string.format("\\u%04x", rnd(0, 0xD7FF))
      elseif k == 8 then parts[#parts + 1] = string.format("\\u%04X", rnd(0xE000, 0xFFFF))
      elseif k == 9 then parts[#parts + 1] = string.format("\\u%04x\\u%04x", rnd(0xD800, 0xDBFF), rnd(0xDC00, 0xDFFF))
      elseif k == 10 then parts[#parts + 1] = "\195\169\226\130\172"
      elseif k == 11 then parts[#parts + 1] = string.rep("y", rnd(30, 90))
      else parts[#parts + 1] = "\\u0000" end
    end
    parts[#parts + 1] = '"'
    return table.concat(parts)
  end
  local function num()
    local k = rnd(7)
    if k == 1 then return tostring(rnd(0, 1000)) end
    if k == 2 then return "-" .. tostring(rnd(0, 99999)) end
    if k == 3 then return string.format("%d.%d", rnd(0, 999), rnd(0, 999999)) end
    if k == 4 then return string.format("%de%s%d", rnd(1, 9), ({ "", "+", "-" })[rnd(3)], rnd(0, 330)) end
    if k == 5 then
      return (rnd(2) == 1 and "-" or "") .. tostring(rnd(1, 9)) .. string.rep(tostring(rnd(0, 9)), rnd(10, 40))
    end
    if k == 6 then return string.format("%d.%dE%d", rnd(0, 9), rnd(0, 9), rnd(-20, 20)) end
    return ({ "0", "-0", "0.0", "-0.0e0", "9007199254740993", "123456789012345", "1234567890123456" })[rnd(7)]
  end
  local value
  local function container(depth, open)
    -- Wide only near the top and narrow below, so a text stays small.
    local n = (depth <= 1 and rnd(6) == 1) and rnd(30, 70) or rnd(0, depth < 3 and 6 or 2)
    local parts = { open, ws() }
    for i = 1, n do
      if i > 1 then parts[#parts + 1] = "," .. ws() end
      if open == "{" then
        local key = rnd(3) == 1 and KEYS[rnd(#KEYS)] or nil
        parts[#parts + 1] = (key and ('"' .. key .. '"') or str()) .. ws() .. ":" .. ws()
      end
      parts[#parts + 1] = value(depth + 1) .. ws()
    end
    parts[#parts + 1] = open == "{" and "}" or "]"
    return table.concat(parts)
  end
  value = function(depth)
    local k = rnd(depth > 14 and 6 or (depth < 3 and 9 or 7))
    if k <= 2 then return str() end
    if k <= 4 then return num() end
    if k == 5 then return ({ "true", "false", "null" })[rnd(3)] end
    if k == 6 then return rnd(2) == 1 and "[]" or "{}" end
    return container(depth, rnd(2) == 1 and "{" or "[")
  end
  return function() return ws() .. value(0) .. ws() end
end

describe("core.decode", function()
  it("decodes an API answer as lua-cjson does: floats, null, nested tables", function()
    local s = '{"id":"5eed0007-0000-4000-8000-000000000007","status":"Accepted","grants":[{"asyncGrant' ..
      'TransferId":"5eed0009-0000-4000-8000-000000000009","hideMyInfoFromOrg":false,"destinationSubprojectId"' ..
      ':null,"amountMicroDollars":"1000000"}],"count":3,"ratio":0.25}'
    local t = decodes_like_cjson(s)
    assert.are.equal("Accepted", t.status)
    assert.are.equal(core.null, t.grants[1].destinationSubprojectId)
    assert.are.equal(cjson.null, t.grants[1].destinationSubprojectId)
    assert.is_false(t.grants[1].hideMyInfoFromOrg)
    assert.are.equal(3, t.count)
    if math.type then assert.are.equal("float", math.type(t.count)) end
    assert.are.equal(0.25, t.ratio)
  end)

  it("decodes every top-level value, escapes and surrogate pairs to UTF-8", function()
    local escaped = '"a\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\u00e9\\u20AC\\ud83d\\ude00"'
    assert.are.equal("a\"\\/\b\f\n\r\t\0é€😀", core.decode(escaped))
    assert.are.equal(1.5, core.decode(" 1.5 "))
    assert.is_true(core.decode("true"))
    assert.are.equal(core.null, core.decode("null"))
    assert.are.same({}, core.decode("[]"))
    assert.are.same({}, core.decode(" { } "))
    assert.are.equal(-1 / 0, 1 / core.decode("-0"))
    assert.are.equal(1 / 0, core.decode("1e400"))
    assert.are.equal(123456789012345678901234567890, core.decode("123456789012345678901234567890"))
    local long = "1." .. string.rep("0", 80) .. "1e2"
    assert.are.equal(tonumber(long), core.decode(long))
  end)

  it("keeps the last of a repeated key, in small and large objects", function()
    assert.are.equal(2, core.decode('{"a":1,"b":0,"a":2}').a)
    local parts = {}
    for i = 1, 80 do parts[#parts + 1] = string.format('"k%d":%d', i % 40, i) end
    local t = decodes_like_cjson("{" .. table.concat(parts, ",") .. "}")
    assert.are.equal(80, t.k0)
    assert.are.equal(79, t.k39)
  end)

  it("gives every key its own string when keys share a slot of the key cache", function()
    -- 256 slots; thousands of keys of every length up to past the 40 bytes
    -- it keeps, many of them alike, so slots are shared and entries replaced.
    math.randomseed(11)
    local keys = {}
    for i = 1, 4000 do
      local n = math.random(1, 44)
      local t = {}
      for j = 1, n do t[j] = string.char(math.random(97, 100)) end
      if i % 3 == 0 then t[1] = "a"; t[n] = "a" end
      keys[i] = table.concat(t)
    end
    for round = 1, 2 do
      for i, k in ipairs(keys) do
        local t = assert(core.decode('{"' .. k .. '":' .. i .. ',"id":' .. round .. '}'))
        local got = {}
        for name in pairs(t) do got[#got + 1] = name end
        table.sort(got)
        local want = { k, "id" }
        table.sort(want)
        if k == "id" then want = { "id" } end
        assert.same(want, got)
        if k ~= "id" then assert.equal(i, t[k]) end
      end
    end
  end)

  it("decodes wide containers beyond the presized ones, at every depth", function()
    local items = {}
    for i = 1, 100 do items[i] = tostring(i) end
    local arr = "[" .. table.concat(items, ",") .. "]"
    local t = decodes_like_cjson(arr)
    assert.are.equal(100, #t)
    assert.are.equal(100, t[100])
    local deep = string.rep('{"x":[', 12) .. arr .. string.rep("]}", 12)
    local v = decodes_like_cjson(deep)
    for _ = 1, 12 do v = v.x[1] end
    assert.are.equal(100, #v)
  end)

  it("accepts 1000 nested containers and refuses 1001, as lua-cjson's default", function()
    assert.is_table(core.decode(string.rep("[", 1000) .. string.rep("]", 1000)))
    local v, err = core.decode(string.rep("[", 1001) .. string.rep("]", 1001))
    assert.is_nil(v)
    assert.matches("nested too deeply", err)
    assert.matches("at character 1001$", err)
  end)

  it("refuses what RFC 8259 refuses, naming the character", function()
    local cases = {
      { "", "found the end at character 1" },
      { "   ", "at character 4" },
      { "[1,]", "expected a value but found ']' at character 4" },
      { '{"a" 1}', "expected ':' but found '1' at character 6" },
      { '{"a":1 "b":2}', "expected ',' or '}'" },
      { "{1:2}", "expected a string key" },
      { "01", "expected the end but found '1' at character 2" },
      { "1.", "a digit after '.'" },
      { ".5", "expected a value" },
      { "1e", "a digit in the exponent" },
      { "+1", "expected a value" },
      { "-", "expected a digit" },
      { "0x10", "expected the end" },
      { "nan", "expected a value" },
      { "Infinity", "expected a value" },
      { "tru", "expected a value" },
      { "[1] [2]", "expected the end" },
      { '"abc', "unterminated string" },
      { '"a\tb"', "control character in a string at character 3" },
      { '"a\0b"', "control character" },
      { '"\\x"', "invalid escape" },
      { '"\\u12g4"', "invalid \\u escape" },
      { '"\\ud800"', "unpaired high surrogate" },
      { '"\\ud800\\u0041"', "unpaired high surrogate" },
      { '"\\udc00"', "unpaired low surrogate" },
      { "\239\187\191{}", "byte 0xef at character 1" },
      { "[1,2", "expected ',' or ']' but found the end at character 5" },
    }
    for _, c in ipairs(cases) do
      local v, err = core.decode(c[1])
      assert.is_nil(v, c[1])
      assert.is_string(err)
      assert.is_truthy(err:find(c[2], 1, true), ("%q: %s"):format(c[1], err))
      assert.is_false(model.valid(c[1]), c[1])
    end
  end)

  it("gives lua-cjson's values for " .. CASES .. " generated JSON texts", function()
    local gen = generator(20261202)
    for _ = 1, CASES do
      local s = gen()
      assert(model.valid(s), "the generator wrote invalid JSON: " .. s)
      decodes_like_cjson(s)
    end
  end)

  it("accepts exactly what the RFC grammar accepts, on " .. 2 * CASES .. " mutated texts", function()
    local gen = generator(7)
    local BYTES = '{}[]:,"\\-+.eE0123456789 tfnu\0\31\127\200'
    local accepted, refused = 0, 0
    for _ = 1, 2 * CASES do
      local s = gen()
      for _ = 1, math.random(1, 3) do
        local at, k = math.random(1, #s + 1), math.random(3)
        local b = math.random(1, #BYTES)
        b = BYTES:sub(b, b)
        if k == 1 then s = s:sub(1, at - 1) .. s:sub(at + 1)
        elseif k == 2 then s = s:sub(1, at - 1) .. b .. s:sub(at)
        else s = s:sub(1, at - 1) .. b .. s:sub(at + 1) end
      end
      local v, err = core.decode(s)
      local valid = model.valid(s)
      if valid then
        assert(v ~= nil, "refused valid JSON (" .. tostring(err) .. "): " .. s)
        local want = cjson.decode(s)
        assert(want ~= nil and model.same(v, want), "differs from cjson on: " .. s)
        accepted = accepted + 1
      else
        assert(v == nil, "accepted invalid JSON: " .. s)
        local at = tonumber(err:match("at character (%d+)$"))
        assert(at and at >= 1 and at <= #s + 1, "no position in: " .. err)
        refused = refused + 1
      end
    end
    -- Both sides are exercised, or the comparison proves nothing.
    assert.is_true(accepted > CASES / 10, "accepted " .. accepted)
    assert.is_true(refused > CASES, "refused " .. refused)
  end)

  it("refuses a non-string argument", function()
    assert.has_error(function() core.decode({}) end)
    assert.has_error(function() core.decode() end)
  end)
end)
