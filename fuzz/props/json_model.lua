-- A strict RFC 8259 JSON recognizer in plain Lua, written from the grammar
-- and independent of csrc/core_decode.c: the model the "decode" harness and
-- spec/core_decode_spec.lua hold core.decode to. Returns true when s is one
-- JSON text (insignificant whitespace around it allowed), false otherwise.
-- Strings may hold any bytes but '"', '\' and controls below 0x20, as the
-- RFC says (no UTF-8 check: neither decoder makes one); a \u escape of a
-- surrogate must be a high one followed at once by a low one.
local M = {}

local MAX_DEPTH = 1000

function M.valid(s)
  local pos, depth = 1, 0
  local function peek() return s:sub(pos, pos) end
  local function ws() pos = s:find("[^ \t\n\r]", pos) or #s + 1 end
  local value

  local function hex4(at)
    local h = s:sub(at, at + 3)
    if #h ~= 4 or not h:find("^%x%x%x%x$") then return nil end
    return tonumber(h, 16)
  end

  local function str()
    pos = pos + 1
    while true do
      local c = peek()
      if c == "" then return false end
      local b = c:byte()
      if c == '"' then pos = pos + 1; return true end
      if b < 0x20 then return false end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        if e == "u" then
          local cp = hex4(pos + 2)
          if not cp then return false end
          if cp >= 0xDC00 and cp <= 0xDFFF then return false end
          if cp >= 0xD800 and cp <= 0xDBFF then
            if s:sub(pos + 6, pos + 7) ~= "\\u" then return false end
            local lo = hex4(pos + 8)
            if not lo or lo < 0xDC00 or lo > 0xDFFF then return false end
            pos = pos + 6
          end
          pos = pos + 6
        elseif e ~= "" and ('"\\/bfnrt'):find(e, 1, true) then
          pos = pos + 2
        else
          return false
        end
      else
        pos = pos + 1
      end
    end
  end

  local function num()
    local m = s:match("^%-?0", pos) or s:match("^%-?[1-9]%d*", pos)
    if not m then return false end
    pos = pos + #m
    local f = s:match("^%.%d+", pos)
    if s:sub(pos, pos) == "." and not f then return false end
    if f then pos = pos + #f end
    local c = s:sub(pos, pos)
    if c == "e" or c == "E" then
      local e = s:match("^[eE][%+%-]?%d+", pos)
      if not e then return false end
      pos = pos + #e
    end
    return true
  end

  local function container(close)
    depth = depth + 1
    if depth > MAX_DEPTH then return false end
    pos = pos + 1
    ws()
    if peek() == close then pos = pos + 1; depth = depth - 1; return true end
    while true do
      if close == "}" then
        if peek() ~= '"' or not str() then return false end
        ws()
        if peek() ~= ":" then return false end
        pos = pos + 1
        ws()
      end
      if not value() then return false end
      ws()
      local c = peek()
      if c == close then pos = pos + 1; depth = depth - 1; return true end
      if c ~= "," then return false end
      pos = pos + 1
      ws()
    end
  end

  value = function()
    local c = peek()
    if c == "{" then return container("}") end
    if c == "[" then return container("]") end
    if c == '"' then return str() end
    for _, w in ipairs({ "true", "false", "null" }) do
      if s:sub(pos, pos + #w - 1) == w then pos = pos + #w; return true end
    end
    return num()
  end

  ws()
  if not value() then return false end
  ws()
  return pos == #s + 1
end

-- Whether a and b are the same decoded value: the same types (every number
-- a float, as lua-cjson gives them), equal scalars, tables with the same
-- keys and values, null the same lightuserdata.
function M.same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type and math.type(a) ~= math.type(b) then return false end
    return a == b or (a ~= a and b ~= b)
  end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not M.same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

return M
