-- Harness "headers": core.header_value_ok and core.header_name_ok, the checks
-- that keep caller strings from injecting or breaking HTTP header lines.
--
-- Properties:
--   * neither raises, for strings and for other types;
--   * header_value_ok accepts exactly the strings without control bytes other
--     than TAB (no CR, LF, NUL, DEL): no value can end a header line;
--   * header_name_ok accepts exactly the non-empty RFC 9110 tokens;
--   * a refusal is nil plus a printable one-line message.
local C = require "props.common"

local core = C.core
local check = C.check

local function model_value(s)
  return not s:find("[\0-\8\10-\31\127]")
end

local function model_name(s)
  return #s > 0 and not s:find("[^%w!#$%%&'*+%-.^_`|~]")
end

local function expect(name, want, ok, res, msg, s)
  check(ok, name .. " raised", s, res)
  if want then
    check(res == true, name .. " refused what the model accepts", s, msg)
  else
    check(res == nil, name .. " accepted what the model refuses", s, res)
    check(type(msg) == "string" and #msg > 0 and C.printable(msg), name .. ": refusal without a printable message",
      s, msg)
  end
end

return function(data)
  local r = C.reader(data)
  local mode = r:byte() % 4
  local s
  if mode == 3 and r:left() <= 1 then
    local odd = { false, 12, 0.5, {}, core.null }
    s = odd[r:byte() % #odd + 1]
  elseif mode == 2 then
    local parts = {}
    while r:left() > 0 do
      local b = r:byte()
      parts[#parts + 1] = b < 0x80 and C.FRAGMENTS[b % #C.FRAGMENTS + 1] or string.char(b - 0x80)
    end
    s = table.concat(parts)
  else
    s = r:rest()
  end
  local is_str = type(s) == "string"
  local ok, v, vmsg = pcall(core.header_value_ok, s)
  expect("header_value_ok", is_str and model_value(s), ok, v, vmsg, s)
  local ok2, n, nmsg = pcall(core.header_name_ok, s)
  expect("header_name_ok", is_str and model_name(s), ok2, n, nmsg, s)
end
