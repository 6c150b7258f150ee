-- Request validation for the sandbox, written independently of the C core so
-- that each checks the other in the test suite. Messages follow NestJS's
-- class-validator wording ("<path> must be ..."), with nested paths written
-- the way ValidationPipe writes them ("grants.0.amountMicroDollars").
-- The schemas are data: docs/assumptions.md says which rules are guesses.
local json = require "endaoment.sandbox.json"

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

function M.is_email(s)
  if type(s) ~= "string" or #s > 254 then return false end
  local localpart, domain = s:match("^([^@%s]+)@([^@%s]+)$")
  if not localpart or localpart:find("[^\33-\126]") then return false end
  if not domain:find("%.") or domain:find("%.%.") or domain:find("^[.-]") or
     domain:find("[.-]$") or domain:find("[^%w%.%-]") then
    return false
  end
  return true
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
-- Schemas
---------------------------------------------------------------------------
-- A schema is a list of fields: { name, kind, required = bool, ... }.
-- kinds: pid (partner identifier, trimmed), str, email, uuid, micro, enum,
-- bool, num, ts, obj (fields = schema), arr (item = field spec), ein,
-- country, ticker. nullable = true admits JSON null.

local S = {}
M.schemas = S

S.address = {
  { "line1", "str", required = true, max = 255 },
  { "line2", "str", max = 255 },
  { "city", "str", required = true, max = 255 },
  { "state", "str", max = 255 },
  { "zip", "str", max = 255 },
  { "country", "country", required = true },
}

S.provision_user = {
  { "partnerUserIdentifier", "pid", required = true },
  { "firstName", "str", required = true, max = 255 },
  { "lastName", "str", required = true, max = 255 },
  { "email", "email", required = true },
  { "address", "obj", required = true, fields = S.address },
}

S.create_fund = {
  { "name", "str", required = true, max = 255 },
  { "partnerAccountIdentifier", "pid", required = true },
  { "description", "str", allow_empty = true },
  { "type", "enum", values = { "Private", "Transparent" } },
  { "partnerUserIdentifier", "pid" },
}

S.cash_settled = {
  { "receivingFundId", "uuid", required = true },
  { "idempotencyKey", "uuid", required = true },
  { "pledgedAmountMicroDollars", "micro", required = true },
  { "partnerOperationId", "str", required = true, max = 36 },
  { "partnerUserIdentifier", "pid" },
}

S.stock_lot = {
  { "numberOfShares", "num", required = true, gt = 0 },
  { "purchasePrice", "num", required = true, min = 0 },
  { "purchaseDate", "ts", required = true },
  { "employeeStockPlan", "str", max = 255 },
  { "lotId", "str", max = 255 },
}

S.stock_data = {
  { "ticker", "ticker", required = true },
  { "shares", "num", required = true, gt = 0 },
  { "lots", "arr", item = { "", "obj", fields = S.stock_lot } },
}

S.stock_settled = {
  { "receivingFundId", "uuid", required = true },
  { "idempotencyKey", "uuid", required = true },
  { "donationValueMicroDollars", "micro", required = true },
  { "partnerOperationId", "str", required = true, max = 36 },
  { "partnerUserIdentifier", "pid" },
  { "stockPledgeData", "obj", required = true, fields = S.stock_data },
}

S.inbound = {
  { "amountMicroDollars", "micro", required = true },
  { "partnerFundingTransferId", "str", required = true, max = 255 },
  { "sourcePartnerAccountIdentifier", "pid", required = true },
  { "destinationPartnerAccountIdentifier", "pid", required = true },
  { "settledAtUtc", "ts", required = true },
}

S.settled_grant = {
  { "amountMicroDollars", "micro", required = true },
  { "destinationOrgId", "uuid", nullable = true },
  { "destinationSubprojectId", "uuid", nullable = true },
  { "specialInstructions", "str", nullable = true, allow_empty = true },
  { "hideMyInfoFromOrg", "bool" },
}

S.grant_submission = {
  { "idempotencyKey", "uuid", required = true },
  { "originFundId", "uuid", required = true },
  { "inboundCustodianTransfer", "obj", required = true, fields = S.inbound },
  { "grants", "arr", required = true, min_items = 1, max_items = 50,
    item = { "", "obj", fields = S.settled_grant } },
}

S.missing_org = {
  { "name", "str", required = true, max = 255 },
  { "ein", "ein" },
  { "website", "str", max = 255 },
  { "idempotencyKey", "uuid" },
}

S.async_grant = {
  { "idempotencyKey", "uuid", required = true },
  { "originFundId", "uuid", required = true },
  { "destinationOrgId", "uuid", required = true },
  { "destinationSubprojectId", "uuid" },
  { "requestedAmount", "micro", required = true },
  { "purpose", "str", required = true, max = 511 },
  { "recommender", "str", max = 255 },
  { "specialInstructions", "str", allow_empty = true },
  { "shareMyEmail", "bool" },
  { "recommendationIds", "arr", item = { "", "uuid" } },
}

---------------------------------------------------------------------------
-- Walker: collects every violation (class-validator reports them all)
---------------------------------------------------------------------------

local check_fields

local function check_value(spec, v, path, errs)
  local kind = spec[2]
  if v == null and spec.nullable then return v end
  if kind == "str" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    local n = M.utf8_len(v)
    if not n then errs[#errs + 1] = path .. " must be valid UTF-8"; return end
    if n == 0 and not spec.allow_empty then
      errs[#errs + 1] = path .. " should not be empty"; return
    end
    if spec.max and n > spec.max then
      errs[#errs + 1] = string.format("%s must be shorter than or equal to %d characters", path, spec.max)
      return
    end
    return v
  elseif kind == "pid" then
    if type(v) ~= "string" then errs[#errs + 1] = path .. " must be a string"; return end
    local t = trim(v)
    if not M.is_partner_identifier(t) then
      errs[#errs + 1] = path .. " must match /^[\\x20-\\x7E]{16,64}$/ regular expression"
      return
    end
    return t
  elseif kind == "email" then
    if not M.is_email(v) then errs[#errs + 1] = path .. " must be an email"; return end
    return v
  elseif kind == "uuid" then
    if not M.is_uuid(v) then errs[#errs + 1] = path .. " must be a UUID"; return end
    return v:lower()
  elseif kind == "micro" then
    if not M.is_micro(v) then
      errs[#errs + 1] = path .. " must be a positive integer number of micro-dollars in a string"
      return
    end
    return v
  elseif kind == "enum" then
    for _, allowed in ipairs(spec.values) do
      if v == allowed then return v end
    end
    errs[#errs + 1] = path .. " must be one of the following values: " .. table.concat(spec.values, ", ")
    return
  elseif kind == "bool" then
    if type(v) ~= "boolean" then errs[#errs + 1] = path .. " must be a boolean value"; return end
    return v
  elseif kind == "num" then
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      errs[#errs + 1] = path .. " must be a number conforming to the specified constraints"
      return
    end
    if spec.gt and v <= spec.gt then
      errs[#errs + 1] = string.format("%s must be greater than %s", path, spec.gt); return
    end
    if spec.min and v < spec.min then
      errs[#errs + 1] = string.format("%s must not be less than %s", path, spec.min); return
    end
    return v
  elseif kind == "ts" then
    if not M.is_timestamp(v) then
      errs[#errs + 1] = path .. " must be a valid ISO 8601 UTC date string"; return
    end
    return v
  elseif kind == "ein" then
    local e = M.normalize_ein(v)
    if not e then errs[#errs + 1] = path .. " must be a 9-digit EIN"; return end
    return e
  elseif kind == "country" then
    if type(v) ~= "string" or not v:match("^%u%u%u$") then
      errs[#errs + 1] = path .. " must be an ISO 3166-1 alpha-3 country code"; return
    end
    return v
  elseif kind == "ticker" then
    if type(v) ~= "string" or #v < 1 or #v > 10 or v:find("[^%u%d%.%-]") then
      errs[#errs + 1] = path .. " must be a ticker symbol"; return
    end
    return v
  elseif kind == "obj" then
    if type(v) ~= "table" or (next(v) ~= nil and #v > 0) then
      errs[#errs + 1] = path .. " must be an object"; return
    end
    return check_fields(spec.fields, v, path .. ".", errs)
  elseif kind == "arr" then
    if type(v) ~= "table" or (next(v) ~= nil and #v == 0) then
      errs[#errs + 1] = path .. " must be an array"; return
    end
    local n = #v
    if spec.min_items and n < spec.min_items then
      errs[#errs + 1] = string.format("%s must contain at least %d elements", path, spec.min_items)
      return
    end
    if spec.max_items and n > spec.max_items then
      errs[#errs + 1] = string.format("%s must contain no more than %d elements", path, spec.max_items)
      return
    end
    local out = json.array()
    for i = 1, n do
      out[i] = check_value(spec.item, v[i], path .. "." .. (i - 1), errs)
    end
    return out
  end
  error("sandbox: unknown rule kind " .. tostring(kind))
end

-- Returns the cleaned object (trimmed identifiers, unknown keys dropped as
-- ValidationPipe's whitelist does).
check_fields = function(fields, body, prefix, errs)
  local out = {}
  for _, spec in ipairs(fields) do
    local name = spec[1]
    local v = body[name]
    if v == nil or (v == null and not spec.nullable) then
      if spec.required then
        errs[#errs + 1] = prefix .. name .. " should not be empty"
      elseif v == null then
        errs[#errs + 1] = prefix .. name .. " must not be null"
      end
    else
      out[name] = check_value(spec, v, prefix .. name, errs)
    end
  end
  return out
end

-- validate(schema_name, body) -> cleaned | nil, { messages }
function M.validate(schema_name, body)
  local errs = {}
  local cleaned = check_fields(S[schema_name], body, "", errs)
  if #errs > 0 then return nil, errs end
  return cleaned
end

return M
