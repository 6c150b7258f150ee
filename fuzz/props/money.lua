-- Harness "money": core.dollars_to_micro, core.micro_to_dollars, core.is_micro.
--
-- Input: byte 1 picks how the rest becomes the argument (a string, an
-- integer, a float, format fragments, or another Lua type).
--
-- Properties:
--   * none of the three raises, whatever the argument;
--   * each accepts exactly what an independent model of the documented
--     formats accepts (digit strings without leading zeros up to
--     9223372036854775807 micro-dollars; dollars as digits with an optional
--     '.' and 1-6 decimals up to 9223372036854.775807; integers; never floats),
--     and returns the model's value (micro_to_dollars: cents always shown,
--     sub-cent digits only when they are not zero);
--   * money round-trips exactly: dollars_to_micro(micro_to_dollars(m)) == m and
--     micro_to_dollars(dollars_to_micro(d)) reads back as the same amount;
--   * a refusal is nil plus a printable one-line message.
local C = require "props.common"

local core = C.core
local check = C.check

local MAX = "9223372036854775807"

-- A canonical micro-dollar string from a value, or nil.
local function model_micro(v, allow_zero)
  local s
  if type(v) == "string" then
    if not v:find("^%d+$") then return nil end
    if #v > 1 and v:sub(1, 1) == "0" then return nil end
    if #v > #MAX or (#v == #MAX and v > MAX) then return nil end
    s = v
  elseif math.type(v) == "integer" then
    if v < 0 then return nil end
    s = string.format("%d", v)
  else
    return nil
  end
  if s == "0" and not allow_zero then return nil end
  return s
end

local function model_dollars(v)
  local ip, fp
  if type(v) == "string" then
    ip, fp = v:match("^(%d+)%.(%d+)$")
    if not ip then
      ip = v:match("^(%d+)$")
      fp = ""
      if not ip then return nil end
    end
    if #fp > 6 then return nil end
    ip = ip:gsub("^0+", "")
    if ip == "" then ip = "0" end
  elseif math.type(v) == "integer" then
    if v < 0 then return nil end
    ip, fp = string.format("%d", v), ""
  else
    return nil
  end
  if #ip > 13 then return nil end
  local whole = tonumber(ip)
  local frac = tonumber((fp .. "000000"):sub(1, 6))
  if whole > 9223372036854 or (whole == 9223372036854 and frac > 775807) then return nil end
  return string.format("%d", whole * 1000000 + frac)
end

local function dollars_text(micro)
  local v = math.tointeger(tonumber(micro))
  local s = string.format("%d.%06d", v // 1000000, v % 1000000)
  while #s > 0 and s:sub(-1) == "0" and not s:find("%.%d%d$") do s = s:sub(1, -2) end
  return s
end

local function refused(res, msg, what, v)
  check(res == nil, what .. " accepted what the model refuses", v, res)
  check(C.printable(msg) and #msg > 0, what .. " refused without a printable message", v, msg)
end

local function arg_from(r)
  local mode = r:byte() % 8
  if mode == 0 or mode == 1 then return r:rest() end
  if mode == 2 then return r:int64() end
  if mode == 3 then
    local n = r:byte() % 3
    if n == 0 then return r:byte() - 8 end
    return r:int64() >> (r:byte() % 64)
  end
  if mode == 4 then return r:double() end
  if mode == 5 then
    local parts = {}
    while r:left() > 0 do
      local b = r:byte()
      if b < 0x80 then parts[#parts + 1] = C.FRAGMENTS[b % #C.FRAGMENTS + 1]
      else parts[#parts + 1] = string.char(48 + b % 10) end
    end
    return table.concat(parts)
  end
  if mode == 6 then
    local odd = { true, false, {}, core.null, print, 0.0, -0.0, 1.5, 1e300 }
    return odd[r:byte() % #odd + 1]
  end
  local digits = {}
  while r:left() > 0 do
    local b = r:byte()
    digits[#digits + 1] = b == 0xFF and "." or string.char(48 + b % 10)
  end
  return table.concat(digits)
end

return function(data)
  local v = arg_from(C.reader(data))

  local ok, d2m, msg = pcall(core.dollars_to_micro, v)
  check(ok, "dollars_to_micro raised", v, d2m)
  local want = model_dollars(v)
  if want then
    check(d2m == want, "dollars_to_micro gives the wrong amount", v, d2m, want)
    local back = core.micro_to_dollars(d2m)
    check(back == dollars_text(d2m), "micro_to_dollars of a converted amount", d2m, back)
    check(core.dollars_to_micro(back) == d2m, "dollars -> micro -> dollars -> micro changed the amount", v, back)
  else
    refused(d2m, msg, "dollars_to_micro", v)
  end

  local ok2, m2d, msg2 = pcall(core.micro_to_dollars, v)
  check(ok2, "micro_to_dollars raised", v, m2d)
  local canon = model_micro(v, true)
  if canon then
    check(m2d == dollars_text(canon), "micro_to_dollars gives the wrong text", v, m2d)
    check(core.dollars_to_micro(m2d) == canon, "micro -> dollars -> micro changed the amount", v, m2d)
  else
    refused(m2d, msg2, "micro_to_dollars", v)
  end

  local ok3, im, msg3 = pcall(core.is_micro, v)
  check(ok3, "is_micro raised", v, im)
  if model_micro(v, false) then
    check(im == true, "is_micro refused a positive amount", v, msg3)
  else
    refused(im, msg3, "is_micro", v)
  end
end
