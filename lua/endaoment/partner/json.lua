-- endaoment.partner.json: a small canonical JSON encoder. Sorted object
-- keys (stable fingerprints, state files and diffs) and empty arrays, which
-- Debian's lua-cjson 2.1.0 cannot express; decoding is lua-cjson's. Pure Lua,
-- so it runs unchanged on 5.1-5.4, LuaJIT and inside nginx, without the C
-- core. The journey fingerprints plans and bodies with it; the sandbox
-- (endaoment.sandbox.json re-exports it) writes its answers and state.
local cjson = require "cjson.safe"

local M = {}

M.null = cjson.null

-- Tables carrying this metatable encode as arrays even when empty.
M.array_mt = { __name = "endaoment.json.array" }

function M.array(t)
  return setmetatable(t or {}, M.array_mt)
end

local escapes = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

local function escape_char(c)
  return escapes[c] or string.format("\\u%04x", c:byte())
end

local find = string.find

local function encode_string(s)
  -- Most strings need no escape: one scan instead of a gsub's new string.
  if not find(s, '[%c"\\]') then return '"' .. s .. '"' end
  return '"' .. s:gsub('[%c"\\]', escape_char) .. '"'
end

local function is_array(t)
  if getmetatable(t) == M.array_mt then return true end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local encode_value

local function encode_table(t, out, depth)
  if depth > 64 then error("json: nesting too deep", 0) end
  if is_array(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode_value(t[i], out, depth + 1)
    end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then
      error("json: object key of type " .. type(k), 0)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = encode_string(k)
    out[#out + 1] = ":"
    encode_value(t[k], out, depth + 1)
  end
  out[#out + 1] = "}"
end

encode_value = function(v, out, depth)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = encode_string(v)
  elseif tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      error("json: cannot encode " .. tostring(v), 0)
    end
    if math.floor(v) == v and v > -2^53 and v < 2^53 then
      out[#out + 1] = string.format("%d", v)
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == nil or v == M.null then
    out[#out + 1] = "null"
  elseif tv == "table" then
    encode_table(v, out, depth)
  else
    error("json: cannot encode a " .. tv, 0)
  end
end

function M.encode(v)
  local out = {}
  encode_value(v, out, 0)
  return table.concat(out)
end

-- Returns value, or nil and cjson's message.
function M.decode(s)
  return cjson.decode(s)
end

return M
