-- Request validation for the sandbox, written independently of the C core so
-- that each checks the other in the test suite. Messages follow NestJS's
-- class-validator wording ("<path> must be ..."), with nested paths written
-- the way ValidationPipe writes them ("grants.0.amountMicroDollars").
-- The schemas are data: docs/assumptions.md says which rules are guesses.
local json = require "endaoment.sandbox.json"
local schema = require "endaoment.partner.schema"

local M = {}

local null = json.null

---------------------------------------------------------------------------
-- Primitive checks
---------------------------------------------------------------------------

-- Number of UTF-8 characters in s, or nil if s is not valid UTF-8
-- (overlong forms, surrogates and code points above U+10FFFF are invalid).
function M.utf8_len(s)
  local i, n, len = 1, #s, 0
  while i <= n do
    local c = s:byte(i)
    local need, min
    if c < 0x80 then need, min = 0, 0
    elseif c >= 0xC2 and c <= 0xDF then need, min = 1, 0x80
    elseif c >= 0xE0 and c <= 0xEF then need, min = 2, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then need, min = 3, 0x10000
    else return nil end
    if i + need > n then return nil end
    local cp = need == 0 and c or (c % (2 ^ (6 - need)))
    for k = 1, need do
      local cc = s:byte(i + k)
      if cc < 0x80 or cc > 0xBF then return nil end
      cp = cp * 64 + (cc - 0x80)
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
      return nil
    end
    i = i + need + 1
    len = len + 1
  end
  return len
end

function M.is_uuid(s)
  return type(s) == "string" and #s == 36 and
    s:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
end

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end
M.trim = trim

function M.is_partner_identifier(s)
  return type(s) == "string" and #s >= 16 and #s <= 64 and not s:find("[^\32-\126]")
end

local INT64_MAX = "9223372036854775807"

-- Positive integer micro-dollars as a canonical digit string within int64.
function M.is_micro(s)
  if type(s) ~= "string" or not s:match("^[1-9]%d*$") then return false end
  if #s < #INT64_MAX then return true end
  return #s == #INT64_MAX and s <= INT64_MAX
end

local function is_leap(y)
  return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
end
local MDAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- ISO-8601 UTC with a real calendar date: 2026-05-04T14:32:01(.000)Z.
function M.is_timestamp(s)
  if type(s) ~= "string" then return false end
  local y, mo, d, h, mi, se, rest =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return false end
  if rest ~= "Z" and not rest:match("^%.%d%d?%d?%d?%d?%d?%d?%d?%d?Z$") then
    return false
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  h, mi, se = tonumber(h), tonumber(mi), tonumber(se)
  if mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or se > 59 then
    return false
  end
  local max = (mo == 2 and is_leap(y)) and 29 or MDAYS[mo]
  return d <= max
end

-- The C core's e-mail check (csrc/core_validate.c ep_check_email), rule for
-- rule, so the client and the sandbox accept exactly the same addresses.
function M.is_email(s)
  if type(s) ~= "string" or #s > 254 then return false end
  local at = s:find("@", 1, true)
  if not at or s:find("@", at + 1, true) then return false end
  local localpart, domain = s:sub(1, at - 1), s:sub(at + 1)
  if #localpart == 0 or #localpart > 64 or localpart:find("[^\33-\126]") then return false end
  if #domain == 0 then return false end
  local dots = 0
  for label in (domain .. "."):gmatch("([^.]*)%.") do
    if #label == 0 or #label > 63 or label:find("^%-") or label:find("%-$") or label:find("[^%w%-]") then
      return false
    end
    dots = dots + 1
  end
  return dots >= 2
end

-- EIN: 9 digits, optionally with a hyphen after the second ("53-0196605").
function M.normalize_ein(s)
  if type(s) ~= "string" then return nil end
  if s:match("^%d%d%d%d%d%d%d%d%d$") then return s end
  local a, b = s:match("^(%d%d)%-(%d%d%d%d%d%d%d)$")
  if a then return a .. b end
  return nil
end

---------------------------------------------------------------------------
-- Decimal strings (micro-dollars exceed 2^53; LuaJIT and 5.1 have no int64)
---------------------------------------------------------------------------

function M.dec_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

function M.dec_add(a, b)
  local out, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry + (i > 0 and a:byte(i) - 48 or 0) + (j > 0 and b:byte(j) - 48 or 0)
    out[#out + 1] = string.char(48 + s % 10)
    carry = s >= 10 and 1 or 0
    i, j = i - 1, j - 1
  end
  local r = table.concat(out):reverse():gsub("^0+", "")
  return r == "" and "0" or r
end

-- a - b for a >= b.
function M.dec_sub(a, b)
  local out, borrow = {}, 0
  local i, j = #a, #b
  while i > 0 do
    local s = (a:byte(i) - 48) - borrow - (j > 0 and b:byte(j) - 48 or 0)
    if s < 0 then s, borrow = s + 10, 1 else borrow = 0 end
    out[#out + 1] = string.char(48 + s)
    i, j = i - 1, j - 1
  end
  local r = table.concat(out):reverse():gsub("^0+", "")
  return r == "" and "0" or r
end

---------------------------------------------------------------------------
-- Validation from endaoment.partner.schema (the one contract)
---------------------------------------------------------------------------
-- opts.documented: enforce only documented and example rules (the sandbox's
-- --rules documented); otherwise guesses are enforced too.
-- opts.forbid_unknown: refuse fields the schema does not list, as
-- class-validator's forbidNonWhitelisted; otherwise they are dropped
-- (ValidationPipe's whitelist).

M.schema = schema

local function enforced(p, opts)
  if not p then return false end
  return not (opts.documented and p == "guess")
end

local function obj_like(v)
  return type(v) == "table" and getmetatable(v) ~= json.array_mt and (next(v) == nil or #v == 0)
end

local check_object

-- Checks one value; returns the cleaned value (nil when refused).
local function check_value(f, v, path, errs, opts)
  local kind = f[2]
  if v == null and f.nullable then return v end
  local fmt = enforced(f.format, opts)
  if kind == "string" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    local n = M.utf8_len(v)
    if not n then errs[#errs + 1] = path .. " must be valid UTF-8"; return end
    if n == 0 and enforced(f.nonempty, opts) then errs[#errs + 1] = path .. " should not be empty"; return end
    if f.max and n > f.max[1] and enforced(f.max[2], opts) then
      errs[#errs + 1] = string.format("%s must be shorter than or equal to %d characters", path, f.max[1])
      return
    end
    return v
  elseif kind == "partner_id" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    local t = trim(v)
    if fmt and not M.is_partner_identifier(t) then
      errs[#errs + 1] = path .. " must match /^[\\x20-\\x7E]{16,64}$/ regular expression"
      return
    end
    return M.is_partner_identifier(t) and t or v
  elseif kind == "email" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    if fmt and not M.is_email(v) then errs[#errs + 1] = path .. " must be an email"; return end
    return v
  elseif kind == "uuid" or kind == "idempotency_key" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    if not M.is_uuid(v) then errs[#errs + 1] = path .. " must be a UUID"; return end
    return v:lower()
  elseif kind == "micro" then
    if not M.is_micro(v) then
      errs[#errs + 1] = path .. " must be a positive integer number of micro-dollars in a string"
      return
    end
    return v
  elseif kind == "enum" then
    for _, allowed in ipairs(f.choices) do
      if v == allowed then return v end
    end
    errs[#errs + 1] = path .. " must be one of the following values: " .. table.concat(f.choices, ", ")
    return
  elseif kind == "bool" then
    if type(v) ~= "boolean" then errs[#errs + 1] = path .. " must be a boolean value"; return end
    return v
  elseif kind == "number" then
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      errs[#errs + 1] = path .. " must be a number conforming to the specified constraints"
      return
    end
    if f.positive and v <= 0 and enforced(f.positive, opts) then
      errs[#errs + 1] = path .. " must be greater than 0"; return
    end
    if f.nonnegative and v < 0 and enforced(f.nonnegative, opts) then
      errs[#errs + 1] = path .. " must not be less than 0"; return
    end
    return v
  elseif kind == "timestamp" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    if fmt and not M.is_timestamp(v) then
      errs[#errs + 1] = path .. " must be a valid ISO 8601 UTC date string"; return
    end
    return v
  elseif kind == "ein" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    local e = M.normalize_ein(v)
    if fmt and not e then errs[#errs + 1] = path .. " must be a 9-digit EIN"; return end
    return e or v
  elseif kind == "country" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    if fmt and not v:match("^%u%u%u$") then
      errs[#errs + 1] = path .. " must be an ISO 3166-1 alpha-3 country code"; return
    end
    return v
  elseif kind == "ticker" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    if fmt and (#v < 1 or #v > 10 or v:find("[^%u%d%.%-]")) then
      errs[#errs + 1] = path .. " must be a ticker symbol"; return
    end
    return v
  elseif kind == "object" then
    if not obj_like(v) then errs[#errs + 1] = path .. " must be an object"; return end
    return check_object(f.object, v, path .. ".", errs, opts)
  elseif kind == "array" then
    if type(v) ~= "table" or (next(v) ~= nil and #v == 0) then
      errs[#errs + 1] = path .. " must be an array"; return
    end
    local n = #v
    if f.items and enforced(f.items[3], opts) then
      if n < f.items[1] then
        errs[#errs + 1] = string.format("%s must contain at least %d elements", path, f.items[1])
        return
      end
      if n > f.items[2] then
        errs[#errs + 1] = string.format("%s must contain no more than %d elements", path, f.items[2])
        return
      end
    end
    local out = json.array()
    for i = 1, n do
      out[i] = check_value(f.item, v[i], path .. "." .. (i - 1), errs, opts)
    end
    return out
  end
  error("sandbox: unknown schema type " .. tostring(kind))
end

-- The cleaned object: trimmed identifiers, unknown keys dropped (or refused).
check_object = function(name, body, prefix, errs, opts)
  local obj = assert(schema.objects[name], "no schema object " .. tostring(name))
  local out = {}
  local known = {}
  for _, f in ipairs(obj) do
    local fname = f[1]
    known[fname] = true
    local v = body[fname]
    if v == nil or (v == null and not f.nullable) then
      if v == nil and f.required and enforced(f.required, opts) then
        errs[#errs + 1] = prefix .. fname .. " should not be empty"
      elseif v == null then
        errs[#errs + 1] = prefix .. fname .. " must not be null"
      end
    else
      out[fname] = check_value(f, v, prefix .. fname, errs, opts)
    end
  end
  local where = prefix:gsub("%.$", "")
  if obj.one_of and enforced(obj.one_of.provenance, opts) then
    local a, b = body[obj.one_of.fields[1]], body[obj.one_of.fields[2]]
    if (a == nil or a == null) and (b == nil or b == null) then
      errs[#errs + 1] = (where ~= "" and where .. " " or "") .. obj.one_of.message
    end
  end
  for _, r in ipairs(obj.when or {}) do
    if body[r.field] == r.equals and enforced(r.provenance, opts) then
      for _, need in ipairs(r.require) do
        if body[need] == nil then
          errs[#errs + 1] = prefix .. need .. " should not be empty when " .. r.field .. " is " .. r.equals
        end
      end
    end
  end
  if obj.sum and enforced(obj.sum.provenance, opts) then
    local items = body[obj.sum.items]
    local at = body
    for part in obj.sum.at_most:gmatch("[^.]+") do at = type(at) == "table" and at[part] or nil end
    if type(items) == "table" and M.is_micro(at) then
      local total, ok = "0", true
      for _, it in ipairs(items) do
        local amt = type(it) == "table" and it[obj.sum.item_field]
        if M.is_micro(amt) then total = M.dec_add(total, amt) else ok = false end
      end
      if ok and M.dec_cmp(total, at) > 0 then
        errs[#errs + 1] = prefix .. obj.sum.items .. " " .. obj.sum.message
      end
    end
  end
  for k in pairs(body) do
    if not known[k] and opts.forbid_unknown then
      errs[#errs + 1] = "property " .. prefix .. tostring(k) .. " should not exist"
    end
  end
  return out
end

-- validate_query(op, query) -> { name = value } | nil, { messages }: the
-- query string of a read, against the operation's schema (counts and
-- offsets become numbers).
function M.validate_query(op, query)
  local spec = schema.operations[op].query or {}
  local errs, out = {}, {}
  for k in pairs(query) do
    if not spec[k] then errs[#errs + 1] = "property " .. tostring(k) .. " should not exist" end
  end
  local names = {}
  for name in pairs(spec) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local r, v = spec[name], query[name]
    if v == nil or v == "" then
      if r.required then errs[#errs + 1] = name .. " should not be empty" end
    elseif r[1] == "string" then
      out[name] = v
    else
      local n = v:match("^%d+$") and tonumber(v)
      local lo = r[1] == "count" and 1 or 0
      if not n or n < lo or (r.max and n > r.max) then
        errs[#errs + 1] = string.format("%s must be a whole number from %d%s", name, lo,
          r.max and (" to " .. r.max) or " up")
      else
        out[name] = n
      end
    end
  end
  if #errs > 0 then return nil, errs end
  return out
end

-- Old names of the sandbox's handlers -> schema objects.
local ALIASES = { cash_settled = "cash_pledge", stock_settled = "stock_pledge", missing_org = "missing_org_report" }

-- validate(object_or_operation, body, opts) -> cleaned | nil, { messages }
function M.validate(name, body, opts)
  opts = opts or {}
  local op = schema.operations[name]
  name = op and op.body or ALIASES[name] or name
  local obj = assert(schema.objects[name], "no schema object " .. tostring(name))
  local errs = {}
  if not obj_like(body) then return nil, { "body must be an object" } end
  if obj.any then
    local size = #json.encode(body)
    if size > obj.max_bytes[1] and enforced(obj.max_bytes[2], opts) then
      return nil, { string.format("body must be at most %d bytes of JSON (got %d)", obj.max_bytes[1], size) }
    end
    return body
  end
  local cleaned = check_object(name, body, "", errs, opts)
  if #errs > 0 then return nil, errs end
  return cleaned
end

return M
