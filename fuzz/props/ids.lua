-- Harness "ids": the identifier and format checkers core.partner_identifier,
-- core.is_uuid, core.is_timestamp, core.is_email and core.is_ein.
--
-- Input: byte 1 picks how the rest becomes the string (raw, wrapped in
-- whitespace, or built from format fragments); every checker sees it.
--
-- Properties:
--   * none raises, for strings and for other types;
--   * each accepts exactly what an independent model of the documented rule
--     accepts (partner ids: trimmed, then 16-64 printable ASCII bytes, and the
--     trimmed value is returned; UUIDs 8-4-4-4-12 hex; timestamps ISO-8601 UTC
--     with a real calendar date and 0-9 fractional digits; e-mail addresses
--     with one '@', a printable local part of 1-64 bytes and a dotted domain of
--     LDH labels of 1-63; EINs of 9 digits, optionally NN-NNNNNNN);
--   * a refusal is nil plus a printable one-line message.
local C = require "props.common"

local core = C.core
local check = C.check

local function is_leap(y) return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 end
local MDAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function model_timestamp(s)
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return false end
  if rest ~= "Z" then
    local frac = rest:match("^%.(%d+)Z$")
    if not frac or #frac > 9 then return false end
  end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if mo < 1 or mo > 12 then return false end
  local dim = MDAYS[mo] + ((mo == 2 and is_leap(y)) and 1 or 0)
  if d < 1 or d > dim then return false end
  return h <= 23 and mi <= 59 and sec <= 59
end

local function model_email(s)
  if #s > 254 then return false end
  local at = s:find("@", 1, true)
  if not at or s:find("@", at + 1, true) then return false end
  local lp, dom = s:sub(1, at - 1), s:sub(at + 1)
  if #lp < 1 or #lp > 64 or lp:find("[^\33-\126]") then return false end
  local labels = 0
  for label in (dom .. "."):gmatch("([^.]*)%.") do
    labels = labels + 1
    if #label < 1 or #label > 63 then return false end
    if label:find("[^%w%-]") or label:sub(1, 1) == "-" or label:sub(-1) == "-" then return false end
  end
  return labels >= 2
end

local function model_ein(s)
  return s:find("^%d%d%d%d%d%d%d%d%d$") ~= nil or s:find("^%d%d%-%d%d%d%d%d%d%d$") ~= nil
end

local function string_from(r)
  local mode = r:byte() % 6
  if mode == 0 or mode == 1 then return r:rest() end
  if mode == 2 then
    local ws = { " ", "\t", "\n", "\r", "\v", "\f", "  \t", "\0", "\194\160" }
    local a, b = ws[r:byte() % #ws + 1], ws[r:byte() % #ws + 1]
    return a .. r:rest() .. b
  end
  if mode == 5 and r:left() <= 1 then
    local odd = { true, 5, 1.5, {}, core.null }
    return odd[r:byte() % #odd + 1]
  end
  local parts = {}
  while r:left() > 0 do
    local b = r:byte()
    if b < 0xC0 then parts[#parts + 1] = C.FRAGMENTS[b % #C.FRAGMENTS + 1]
    else parts[#parts + 1] = string.char(r:byte()) end
  end
  return table.concat(parts)
end

local function expect(name, want, ok, res, msg, s)
  check(ok, name .. " raised", s, res)
  if want then
    check(res ~= nil, name .. " refused what the model accepts", s, msg)
  else
    check(res == nil, name .. " accepted what the model refuses", s, res)
    check(type(msg) == "string" and #msg > 0 and C.printable(msg), name .. ": refusal without a printable message",
      s, msg)
  end
end

return function(data)
  local s = string_from(C.reader(data))
  local is_str = type(s) == "string"

  local ok, pid, msg = pcall(core.partner_identifier, s)
  local want = C.partner_id(s)
  expect("partner_identifier", want, ok, pid, msg, s)
  if want then check(pid == want, "partner_identifier returned the wrong trimmed value", s, pid, want) end

  local ok2, u = pcall(core.is_uuid, s)
  check(ok2, "is_uuid raised", s, u)
  check(u == C.is_uuid(s), "is_uuid disagrees with the model", s, u)

  local ok3, ts, tmsg = pcall(core.is_timestamp, s)
  expect("is_timestamp", is_str and model_timestamp(s), ok3, ts, tmsg, s)
  if ts ~= nil then check(ts == true, "is_timestamp returned something other than true", ts) end

  local ok4, em, emsg = pcall(core.is_email, s)
  expect("is_email", is_str and model_email(s), ok4, em, emsg, s)
  -- e-mail addresses are personal data: a refusal does not echo the address
  if em == nil and is_str and #s >= 8 and not s:find("[^%w]") then
    check(not emsg:find(s, 1, true), "is_email echoed the address", s, emsg)
  end

  local ok5, ein, einmsg = pcall(core.is_ein, s)
  expect("is_ein", is_str and model_ein(s), ok5, ein, einmsg, s)
end
