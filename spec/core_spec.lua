-- Tests for the C core, endaoment.partner.core: validators, the JSON encoder,
-- core.prepare/core.validate for every operation, and the error objects.
-- Written to run on Lua 5.1 / LuaJIT (numbers are doubles) as well as 5.3+.
local core = require("endaoment.partner.core")
local cjson = require("cjson")

local HAS_INT = math.type ~= nil
local B = string.char -- byte strings without \x escapes, which Lua 5.1 lacks

local UUID = "2b8108d8-30fc-4c62-9b93-07ee1f8b8455"
local UUID2 = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
local UUID3 = "123e4567-e89b-12d3-a456-426614174000"
local PID = "550e8400-e29b-41d4-a716-446655440000" -- 36 chars: a valid partner identifier
local PID2 = "f4b9d2c8-1e6a-4a3f-b5d7-08c92e6f4a17"

local function deepcopy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deepcopy(x) end
  return setmetatable(t, getmetatable(v))
end

local function prep(op, body, opts)
  local json, info = core.prepare(op, body, opts)
  assert.is_string(json, tostring(info))
  return cjson.decode(json), info, json
end

local function expect_invalid(op, body, field, text, opts)
  local json, err = core.prepare(op, body, opts)
  assert.is_nil(json)
  assert.are.equal(core.Error, getmetatable(err))
  assert.are.equal("invalid", err.kind)
  assert.are.equal(field, err.field, err.message)
  assert.are.equal(field, err.message:sub(1, #field))
  if text then
    assert.truthy(err.message:find(text, 1, true), err.message)
  end
  local ok, verr = core.validate(op, body, opts)
  assert.is_nil(ok)
  assert.are.equal(field, verr.field)
  return err
end

-- A guessed rule (schema.lua provenance "guess") never blocks by default:
-- the body is prepared and sent, with a warning naming the field and rule;
-- strict = true refuses it exactly as a documented rule would.
local function expect_guess(op, body, field, text, rule)
  local json, info = core.prepare(op, body)
  assert.is_string(json, tostring(info))
  local found
  for _, w in ipairs(info.warnings or {}) do
    if w.field == field then found = w end
  end
  assert.truthy(found, "no warning for " .. field)
  if rule then assert.are.equal(rule, found.rule) end
  if text then assert.truthy(found.message:find(text, 1, true), found.message) end
  local ok, vinfo = core.validate(op, body)
  assert.is_true(ok)
  assert.truthy(vinfo and vinfo.warnings and #vinfo.warnings >= 1)
  return expect_invalid(op, body, field, text, { strict = true }), json
end

local function chars(c, n) return string.rep(c, n) end

-- Valid bodies, one per operation; each test copies and breaks one.
local function user_body()
  return {
    partnerUserIdentifier = "  user-0001-abcdefgh  ",
    firstName = "Ada",
    lastName = "Lovelace",
    email = "ada@example.org",
    address = { line1 = "1 Main St", line2 = "Apt 2", city = "London", state = "LDN", zip = "N1", country = "GBR" },
  }
end

local function fund_body()
  return {
    name = "Lovelace Family DAF",
    partnerAccountIdentifier = "\t" .. PID .. "\n",
    description = "A family DAF",
    type = "Private",
    partnerUserIdentifier = "user-0001-abcdefgh",
  }
end

local function cash_body()
  return {
    receivingFundId = UUID,
    pledgedAmountMicroDollars = "125500000",
    partnerOperationId = "op-123",
    partnerUserIdentifier = " user-0001-abcdefgh",
  }
end

local function stock_body()
  return {
    receivingFundId = UUID,
    donationValueMicroDollars = "15075000000",
    partnerOperationId = "op-456",
    stockPledgeData = {
      ticker = "AAPL",
      shares = 100,
      lots = {
        { numberOfShares = 50, purchasePrice = 150.75, purchaseDate = "2023-01-15T00:00:00.000Z",
          employeeStockPlan = "RSU", lotId = "LOT123" },
        { numberOfShares = 50.5, purchasePrice = 0, purchaseDate = "2022-06-30T12:00:00Z" },
      },
    },
  }
end

local function grant(amount)
  return { amountMicroDollars = amount or "1000000", destinationOrgId = UUID2, destinationSubprojectId = core.null,
           specialInstructions = core.null, hideMyInfoFromOrg = false }
end

local function grant_body(n)
  local grants = {}
  for i = 1, (n or 1) do grants[i] = grant() end
  return {
    originFundId = UUID,
    inboundCustodianTransfer = {
      amountMicroDollars = "125000000000",
      partnerFundingTransferId = "alt-journal-987654",
      sourcePartnerAccountIdentifier = " " .. PID .. " ",
      destinationPartnerAccountIdentifier = PID2,
      settledAtUtc = "2026-05-04T14:32:01.000Z",
    },
    grants = grants,
  }
end

local function org_body()
  return { name = "Helping Hands", ein = "12-3456789", website = "https://helping.example.org",
           contact = { email = "info@helping.example.org" } }
end

local function async_body()
  return {
    originFundId = UUID,
    destinationOrgId = UUID2,
    destinationSubprojectId = UUID3,
    requestedAmount = "1000000",
    purpose = "Supporting educational programs",
    recommender = "John Doe",
    specialInstructions = "Summer program only",
    shareMyEmail = false,
    recommendationIds = { UUID3 },
  }
end

describe("core module", function()
  it("has version 0.1.0", function()
    assert.are.equal("0.1.0", core.version)
  end)

  it("null is the same lightuserdata as cjson.null", function()
    assert.are.equal("userdata", type(core.null))
    assert.is_true(core.null == cjson.null)
  end)

  it("array_mt is a table", function()
    assert.are.equal("table", type(core.array_mt))
  end)
end)

describe("core.uuid4", function()
  local pattern = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

  it("returns a lowercase canonical version 4, RFC 4122 variant UUID", function()
    for _ = 1, 200 do
      local u = core.uuid4()
      assert.are.equal(36, #u)
      assert.truthy(u:match(pattern), u)
      assert.are.equal(u:lower(), u)
      assert.is_true(core.is_uuid(u))
    end
  end)

  it("does not repeat over 10000 draws", function()
    local seen, n = {}, 0
    for _ = 1, 10000 do
      local u = core.uuid4()
      if not seen[u] then n = n + 1 end
      seen[u] = true
    end
    assert.are.equal(10000, n)
  end)
end)

describe("core.is_uuid", function()
  for _, s in ipairs({ UUID, UUID:upper(), "2B8108d8-30FC-4c62-9b93-07ee1f8b8455",
                       "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "00000000-0000-0000-0000-000000000000" }) do
    it("accepts " .. s, function()
      assert.is_true(core.is_uuid(s))
    end)
  end
  for _, s in ipairs({ "", "2b8108d830fc4c629b9307ee1f8b8455", UUID:sub(1, 35), UUID .. "0",
                       "{" .. UUID:sub(2, 35) .. "}", "2b8108d8-30fc-4c62-9b93-07ee1f8b845g",
                       "2b8108d-830fc-4c62-9b93-07ee1f8b8455", " " .. UUID:sub(2),
                       "2b8108d8_30fc_4c62_9b93_07ee1f8b8455" }) do
    it("rejects '" .. s .. "'", function()
      assert.is_false(core.is_uuid(s))
    end)
  end
  it("rejects non-strings", function()
    assert.is_false(core.is_uuid(nil))
    assert.is_false(core.is_uuid(12345))
    assert.is_false(core.is_uuid({}))
  end)
end)

describe("core.partner_identifier", function()
  it("accepts 16 and 64 printable ASCII characters", function()
    assert.are.equal(chars("a", 16), core.partner_identifier(chars("a", 16)))
    assert.are.equal(chars("~", 64), core.partner_identifier(chars("~", 64)))
    assert.are.equal("a b !\"#$%&'()*+,", core.partner_identifier("a b !\"#$%&'()*+,"))
  end)

  it("rejects 15 and 65 characters, saying how many it got", function()
    local v, msg = core.partner_identifier(chars("a", 15))
    assert.is_nil(v)
    assert.are.equal("must be 16-64 printable ASCII characters (got 15)", msg)
    v, msg = core.partner_identifier(chars("a", 65))
    assert.is_nil(v)
    assert.are.equal("must be 16-64 printable ASCII characters (got 65)", msg)
  end)

  it("trims leading and trailing whitespace before counting", function()
    local ws = " \t\n\r" .. B(11, 12)
    assert.are.equal(chars("x", 16), core.partner_identifier(ws .. chars("x", 16) .. ws))
    assert.are.equal(chars("x", 64), core.partner_identifier("   " .. chars("x", 64) .. "   "))
    local v, msg = core.partner_identifier("  " .. chars("x", 15) .. "  ")
    assert.is_nil(v)
    assert.truthy(msg:find("(got 15)", 1, true))
    v = core.partner_identifier(chars(" ", 20))
    assert.is_nil(v)
  end)

  it("keeps interior spaces", function()
    assert.are.equal("abcdefgh ijklmnop", core.partner_identifier(" abcdefgh ijklmnop "))
  end)

  it("rejects non-printable and non-ASCII bytes", function()
    for _, bad in ipairs({ "abcdefgh\tijklmnop", "abcdefgh" .. B(0) .. "ijklmnop", "abcdefgh" .. B(127) .. "ijklmnop",
                           "abcdefghé" .. "ijklmnop" }) do
      local v, msg = core.partner_identifier(bad)
      assert.is_nil(v)
      assert.truthy(msg:find("printable ASCII", 1, true))
    end
  end)

  it("rejects non-strings", function()
    local v, msg = core.partner_identifier(1234567890123456)
    assert.is_nil(v)
    assert.are.equal("must be a string (got a number)", msg)
  end)
end)

describe("core.dollars_to_micro", function()
  local good = {
    { "125.50", "125500000" }, { "0.000001", "1" }, { "125", "125000000" }, { "007.5", "7500000" },
    { "0", "0" }, { "0.00", "0" }, { "000", "0" }, { "1.000000", "1000000" }, { "0.1", "100000" },
    { "9223372036854.775807", "9223372036854775807" }, { "0009223372036854", "9223372036854000000" },
  }
  for _, c in ipairs(good) do
    it(("converts %q to %q"):format(c[1], c[2]), function()
      assert.are.equal(c[2], core.dollars_to_micro(c[1]))
    end)
  end

  local bad = { "9223372036854.775808", "9223372036855", "10000000000000", "1.2345678", "-5", "+5", "1e6", " 5",
                "5 ", "", "1.", ".5", "1.2.3", "1,50", "abc", "0x10", "1_000" }
  for _, s in ipairs(bad) do
    it(("rejects %q"):format(s), function()
      local v, msg = core.dollars_to_micro(s)
      assert.is_nil(v)
      assert.is_string(msg)
      assert.truthy(msg:find("^must "), msg)
    end)
  end

  it("says why for too many decimals and too large", function()
    assert.are.equal('must have at most 6 decimal places (got "1.2345678")',
                     select(2, core.dollars_to_micro("1.2345678")))
    assert.truthy(select(2, core.dollars_to_micro("9223372036855"))
                  :find("at most 9223372036854.775807 dollars", 1, true))
  end)

  it("accepts whole-number Lua numbers", function()
    assert.are.equal("125000000", core.dollars_to_micro(125))
    assert.are.equal("0", core.dollars_to_micro(0))
  end)

  it("rejects fractional numbers, asking for a string", function()
    local v, msg = core.dollars_to_micro(125.5)
    assert.is_nil(v)
    assert.truthy(msg:find("string", 1, true))
    assert.is_nil(core.dollars_to_micro(-5))
    assert.is_nil(core.dollars_to_micro({}))
    assert.is_nil(core.dollars_to_micro(nil))
  end)

  if HAS_INT then
    it("rejects floats even when integral (5.3+)", function()
      local v, msg = core.dollars_to_micro(125.0)
      assert.is_nil(v)
      assert.truthy(msg:find("float", 1, true))
    end)
    it("rejects integers whose micro value overflows int64", function()
      assert.is_nil(core.dollars_to_micro(9223372036855))
      assert.are.equal("9223372036854000000", core.dollars_to_micro(9223372036854))
    end)
  end
end)

describe("core.micro_to_dollars", function()
  local good = {
    { "125500000", "125.50" }, { "1", "0.000001" }, { "125000000", "125.00" }, { "1234567", "1.234567" },
    { "1500000", "1.50" }, { "0", "0.00" }, { "10", "0.00001" }, { "100000", "0.10" }, { "1010000", "1.01" },
    { "9223372036854775807", "9223372036854.775807" },
  }
  for _, c in ipairs(good) do
    it(("converts %q to %q"):format(c[1], c[2]), function()
      assert.are.equal(c[2], core.micro_to_dollars(c[1]))
    end)
  end

  it("accepts Lua integers", function()
    assert.are.equal("1.50", core.micro_to_dollars(1500000))
    assert.are.equal("0.00", core.micro_to_dollars(0))
  end)

  for _, s in ipairs({ "05", "-1", "1.5", "9223372036854775808", "", " 1", "1e6" }) do
    it(("rejects %q"):format(s), function()
      local v, msg = core.micro_to_dollars(s)
      assert.is_nil(v)
      assert.truthy(msg:find("^must "), msg)
    end)
  end

  it("rejects fractional and negative numbers", function()
    assert.is_nil(core.micro_to_dollars(1.5))
    assert.is_nil(core.micro_to_dollars(-1))
  end)

  it("round-trips with dollars_to_micro", function()
    for _, d in ipairs({ "0.01", "1.50", "125.00", "0.000001", "9223372036854.775807", "42.123456" }) do
      assert.are.equal(d, core.micro_to_dollars(core.dollars_to_micro(d)))
    end
  end)
end)

describe("core.is_micro", function()
  for _, v in ipairs({ "1", "9223372036854775807", "5000000", "10" }) do
    it(("accepts %q"):format(v), function()
      assert.is_true(core.is_micro(v))
    end)
  end

  it("accepts positive integers", function()
    assert.is_true(core.is_micro(5000000))
    assert.is_true(core.is_micro(1))
  end)

  it("gives the documented message for a decimal string", function()
    local ok, msg = core.is_micro("1.5")
    assert.is_nil(ok)
    assert.are.equal('must be a positive integer number of micro-dollars as a string of digits (got "1.5")', msg)
  end)

  local bad = {
    { "9223372036854775808", "at most 9223372036854775807" }, { "99999999999999999999", "at most" },
    { "0", "greater than 0" }, { "-5", "string of digits" }, { "1.5", "string of digits" },
    { "1e6", "string of digits" }, { " 5", "string of digits" }, { "5 ", "string of digits" },
    { "+5", "string of digits" }, { "05", "leading zeros" }, { "00", "leading zeros" }, { "", "string of digits" },
    { "５", "string of digits" },
  }
  for _, c in ipairs(bad) do
    it(("rejects %q"):format(c[1]), function()
      local ok, msg = core.is_micro(c[1])
      assert.is_nil(ok)
      assert.truthy(msg:find(c[2], 1, true), msg)
    end)
  end

  it("rejects fractional, zero and negative numbers and other types", function()
    assert.is_nil(core.is_micro(1.5))
    assert.is_nil(core.is_micro(0))
    assert.is_nil(core.is_micro(-5))
    assert.is_nil(core.is_micro(0 / 0))
    assert.is_nil(core.is_micro(1 / 0))
    assert.is_nil(core.is_micro(nil))
    assert.is_nil(core.is_micro({}))
    assert.is_nil(core.is_micro(true))
  end)

  if HAS_INT then
    it("rejects floats even when integral (5.3+)", function()
      local ok, msg = core.is_micro(5000000.0)
      assert.is_nil(ok)
      assert.truthy(msg:find("float", 1, true), msg)
      assert.is_true(core.is_micro(math.maxinteger))
    end)
  else
    it("accepts integral numbers below 2^53 only (5.1/LuaJIT)", function()
      assert.is_true(core.is_micro(2 ^ 53 - 1))
      assert.is_nil(core.is_micro(2 ^ 53))
    end)
  end
end)

describe("core.utf8_len", function()
  local good = {
    { "", 0 }, { "abc", 3 }, { "é", 1 }, { "日本語", 3 }, { B(240, 159, 152, 128), 1 },
    { "aé日" .. B(240, 159, 152, 128), 4 },
    { B(0), 1 }, { B(0xEF, 0xBF, 0xBF), 1 }, { B(0xED, 0x9F, 0xBF), 1 }, { B(0xEE, 0x80, 0x80), 1 },
    { B(0xF4, 0x8F, 0xBF, 0xBF), 1 }, { B(0xC2, 0x80), 1 }, { B(0xE0, 0xA0, 0x80), 1 },
    { B(0xF0, 0x90, 0x80, 0x80), 1 },
  }
  for i, c in ipairs(good) do
    it("counts characters, case " .. i, function()
      assert.are.equal(c[2], core.utf8_len(c[1]))
    end)
  end

  local bad = {
    overlong_2 = B(0xC0, 0xAF), overlong_2b = B(0xC1, 0xBF), overlong_3 = B(0xE0, 0x80, 0xAF),
    overlong_4 = B(0xF0, 0x80, 0x80, 0xAF), surrogate_high = B(0xED, 0xA0, 0x80), surrogate_low = B(0xED, 0xBF, 0xBF),
    above_max = B(0xF4, 0x90, 0x80, 0x80), f5 = B(0xF5, 0x80, 0x80, 0x80), truncated_2 = "a" .. B(0xC3),
    truncated_3 = B(0xE6, 0x97), truncated_4 = B(0xF0, 0x9F, 0x98), stray_continuation = B(0x80),
    ff = B(0xFF), bad_continuation = B(0xC3, 0x28),
  }
  for name, s in pairs(bad) do
    it("rejects invalid UTF-8: " .. name, function()
      local n, msg = core.utf8_len(s)
      assert.is_nil(n)
      assert.truthy(msg:find("UTF-8", 1, true))
    end)
  end
end)

describe("core.is_timestamp", function()
  for _, s in ipairs({ "2026-05-04T14:32:01.000Z", "2026-05-04T14:32:01Z", "2024-02-29T00:00:00Z",
                       "2000-02-29T00:00:00Z", "2026-05-04T14:32:01.1Z", "2026-05-04T14:32:01.123456789Z",
                       "2026-12-31T23:59:59Z", "2026-01-31T00:00:00Z", "2026-04-30T00:00:00Z" }) do
    it("accepts " .. s, function()
      assert.is_true(core.is_timestamp(s))
    end)
  end

  local bad = {
    { "2023-02-29T00:00:00Z", "calendar" }, { "1900-02-29T00:00:00Z", "calendar" },
    { "2026-04-31T00:00:00Z", "calendar" }, { "2026-13-01T00:00:00Z", "calendar" },
    { "2026-00-10T00:00:00Z", "calendar" }, { "2026-01-00T00:00:00Z", "calendar" },
    { "2026-01-32T00:00:00Z", "calendar" },
    { "2026-05-04T24:00:00Z", "time of day" }, { "2026-05-04T23:60:00Z", "time of day" },
    { "2026-05-04T23:59:60Z", "time of day" },
    { "2026-05-04T14:32:01", "ISO-8601" }, { "2026-05-04T14:32:01.000", "ISO-8601" },
    { "2026-05-04T14:32:01+00:00", "UTC" }, { "2026-05-04T14:32:01.000-05:00", "UTC" },
    { "2026-05-04T14:32:01.Z", "fractional" }, { "2026-05-04T14:32:01.1234567890Z", "fractional" },
    { "2026-05-04t14:32:01Z", "ISO-8601" }, { "2026-05-04T14:32:01z", "ISO-8601" },
    { "2026-05-04 14:32:01Z", "ISO-8601" }, { "2026-5-04T14:32:01Z", "ISO-8601" },
    { "2026-05-04T14:32:01ZZ", "ISO-8601" }, { "2026-05-04", "ISO-8601" }, { "", "ISO-8601" },
  }
  for _, c in ipairs(bad) do
    it("rejects " .. c[1], function()
      local ok, msg = core.is_timestamp(c[1])
      assert.is_nil(ok)
      assert.truthy(msg:find(c[2], 1, true), msg)
    end)
  end

  it("rejects non-strings", function()
    assert.is_nil(core.is_timestamp(20260504))
  end)
end)

describe("core.is_email", function()
  local local64 = chars("a", 64)
  local domain = chars("b", 63) .. "." .. chars("c", 63) .. "." .. chars("d", 57) .. ".org" -- 189 chars
  for _, s in ipairs({ "ada@example.org", "a.b+tag@sub.example.co.uk", "x@a-b.io", "o'brien@example.ie",
                       local64 .. "@" .. domain }) do
    it("accepts " .. s:sub(1, 40), function()
      assert.is_true(core.is_email(s))
    end)
  end

  it("has the 254 character limit at the boundary", function()
    assert.are.equal(254, #(local64 .. "@" .. domain))
    assert.is_nil(core.is_email(local64 .. "@e" .. domain))
  end)

  for _, s in ipairs({ "", "ada", "ada@", "@example.org", "ada@@example.org", "a@b@example.org", "ada@example",
                       "ada@.example.org", "ada@example.org.", "ada@exa..mple.org", "ada @example.org",
                       "ada@exa_mple.org", "ada@-example.org", "ada@example-.org", chars("a", 65) .. "@example.org",
                       "ada@exämple.org", "ad" .. B(10) .. "a@example.org" }) do
    it(("rejects %q"):format(s:sub(1, 40)), function()
      local ok, msg = core.is_email(s)
      assert.is_nil(ok)
      assert.truthy(msg:find("must be an email address", 1, true), msg)
    end)
  end
end)

describe("core.is_ein", function()
  it("accepts 9 digits with or without the hyphen", function()
    assert.is_true(core.is_ein("123456789"))
    assert.is_true(core.is_ein("12-3456789"))
  end)
  for _, s in ipairs({ "12345678", "1234567890", "123-456789", "12-345678a", "", "12 3456789", "1-23456789" }) do
    it(("rejects %q"):format(s), function()
      assert.is_nil(core.is_ein(s))
    end)
  end
end)

describe("core.header_value_ok / header_name_ok", function()
  it("accepts ordinary values, tabs and non-ASCII bytes", function()
    assert.is_true(core.header_value_ok("Bearer abc.def"))
    assert.is_true(core.header_value_ok("a\tb"))
    assert.is_true(core.header_value_ok(""))
    assert.is_true(core.header_value_ok("café"))
  end)

  for name, s in pairs({ crlf = "a\r\nX-Injected: 1", lf = "a\nb", cr = "a\rb", nul = "a" .. B(0) .. "b",
                         del = "a" .. B(127), soh = B(1) }) do
    it("rejects a value with " .. name, function()
      local ok, msg = core.header_value_ok(s)
      assert.is_nil(ok)
      assert.truthy(msg:find("control characters", 1, true))
    end)
  end

  it("checks header names are tokens", function()
    assert.is_true(core.header_name_ok("x-api-key"))
    assert.is_true(core.header_name_ok("X-Endaoment-User-Id"))
    assert.is_nil(core.header_name_ok("x api"))
    assert.is_nil(core.header_name_ok(""))
    assert.is_nil(core.header_name_ok("x:y"))
    assert.is_nil(core.header_name_ok("x\r\ny"))
  end)
end)

describe("core.Error and core.error", function()
  it("builds an error object with kind, message and copied extras", function()
    local extra = { status = 404, field = "originFundId", request_id = "r1" }
    local err = core.error("http", "fund not found", extra)
    assert.are.equal(core.Error, getmetatable(err))
    assert.are.equal("http", err.kind)
    assert.are.equal("fund not found", err.message)
    assert.are.equal(404, err.status)
    assert.are.equal("r1", err.request_id)
    assert.are_not.equal(extra, err)
    err.request_id = "changed"
    assert.are.equal("r1", extra.request_id)
  end)

  it("lets the explicit kind and message win over extras", function()
    local err = core.error("api", "real", { kind = "other", message = "fake" })
    assert.are.equal("api", err.kind)
    assert.are.equal("real", err.message)
  end)

  it("renders one readable line", function()
    assert.are.equal("endaoment.partner: transport: connection refused",
                     tostring(core.error("transport", "connection refused")))
    assert.are.equal("endaoment.partner: http: not found (field originFundId) [HTTP 404]",
                     tostring(core.error("http", "not found", { status = 404, field = "originFundId" })))
    local s = tostring(core.error("api", "line one\nline two\r\n", { field = "a\nb" }))
    assert.is_nil(s:find("[\r\n]"))
  end)

  it("uses Error itself as __index, so methods added from Lua are visible", function()
    assert.are.equal(core.Error, core.Error.__index)
    core.Error.describe_for_test = function(self) return "kind=" .. self.kind end
    assert.are.equal("kind=x", core.error("x", "y"):describe_for_test())
    core.Error.describe_for_test = nil
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() core.error() end)
    assert.has_error(function() core.error("k", "m", "not a table") end)
  end)
end)

describe("core.encode", function()
  local function roundtrip(v)
    local json, err = core.encode(v)
    assert.is_string(json, tostring(err))
    return cjson.decode(json), json
  end

  it("escapes quotes, backslashes and control characters", function()
    local s = "q\"b\\s/n\nr\rt\tb\bf\f" .. B(0, 1, 31, 127) .. "end"
    local out, json = roundtrip({ s = s })
    assert.are.equal(s, out.s)
    assert.truthy(json:find('\\"', 1, true))
    assert.truthy(json:find("\\\\", 1, true))
    assert.truthy(json:find("\\nr\\rt\\tb\\bf\\f\\u0000\\u0001\\u001f" .. B(127), 1, true))
    assert.truthy(json:find("s/n", 1, true)) -- '/' is not escaped
  end)

  it("round-trips every control character", function()
    for c = 0, 31 do
      assert.are.equal("x" .. B(c) .. "y", roundtrip({ "x" .. B(c) .. "y" })[1])
    end
  end)

  it("passes non-ASCII UTF-8 through unescaped", function()
    local s = "é日本語" .. B(240, 159, 152, 128)
    local out, json = roundtrip({ s })
    assert.are.equal(s, out[1])
    assert.are.equal('["' .. s .. '"]', json)
  end)

  it("rejects invalid UTF-8 in values and in keys", function()
    local json, err = core.encode({ a = { "ok", "bad" .. B(0xC0, 0xAF) } })
    assert.is_nil(json)
    assert.are.equal("a[2]", err.field)
    assert.truthy(err.message:find("UTF-8", 1, true))
    json, err = core.encode({ ["k" .. B(0xFF)] = 1 })
    assert.is_nil(json)
    assert.truthy(err.message:find("UTF-8", 1, true))
  end)

  it("encodes nested objects and arrays", function()
    local v = { a = { b = { c = { 1, 2, { d = "e" } } } }, list = { "x", "y" } }
    assert.are.same(v, roundtrip(v))
  end)

  it("encodes empty tables as {} and array_mt tables as []", function()
    assert.are.equal("{}", core.encode({}))
    assert.are.equal("[]", core.encode(setmetatable({}, core.array_mt)))
    local json = core.encode({ a = setmetatable({}, core.array_mt), b = {} })
    assert.truthy(json:find('"a":[]', 1, true))
    assert.truthy(json:find('"b":{}', 1, true))
    assert.are.equal("[1,2]", core.encode(setmetatable({ 1, 2 }, core.array_mt)))
  end)

  it("encodes scalars, booleans and null", function()
    assert.are.equal("null", core.encode(nil))
    assert.are.equal("null", core.encode(core.null))
    assert.are.equal("null", core.encode(cjson.null))
    assert.are.equal("true", core.encode(true))
    assert.are.equal("false", core.encode(false))
    assert.are.equal('"x"', core.encode("x"))
    assert.are.equal('[null,true]', core.encode({ core.null, true }))
    assert.are.equal(cjson.null, roundtrip({ a = core.null }).a)
  end)

  it("prints integers as integers and floats so they read back exactly", function()
    assert.are.equal("5", core.encode(5))
    assert.are.equal("-7", core.encode(-7))
    assert.are.equal("0", core.encode(0))
    assert.are.equal("9007199254740991", core.encode(2 ^ 53 - 1))
    assert.are.equal("1.5", core.encode(1.5))
    assert.are.equal("0.1", core.encode(0.1))
    assert.are.equal("-0.25", core.encode(-0.25))
    for _, x in ipairs({ 1 / 3, 1e300, 1e-300, 123456.789, 2 ^ 60, 5e-324, 1.7976931348623157e308 }) do
      assert.are.equal(x, tonumber(core.encode(x)))
      assert.are.equal(x, cjson.decode(core.encode({ x }))[1])
    end
  end)

  if HAS_INT then
    it("prints 64-bit integers exactly (5.3+)", function()
      assert.are.equal("9223372036854775807", core.encode(math.maxinteger))
      assert.are.equal("-9223372036854775808", core.encode(math.mininteger))
      assert.are.equal("5", core.encode(5.0))
    end)
  end

  it("rejects NaN and infinities with the field path", function()
    for _, x in ipairs({ 0 / 0, 1 / 0, -1 / 0 }) do
      local json, err = core.encode({ a = { b = { 1, x } } })
      assert.is_nil(json)
      assert.are.equal(core.Error, getmetatable(err))
      assert.are.equal("invalid", err.kind)
      assert.are.equal("a.b[2]", err.field)
      assert.truthy(err.message:find("^a%.b%[2%] must be a finite number"), err.message)
    end
  end)

  it("rejects tables JSON cannot represent", function()
    local cases = {
      { { 1, 2, x = 3 }, "mixes" }, { { 1, nil, 3 }, "sparse" }, { { [2] = "a" }, "sparse" },
      { { [true] = 1 }, "keys must be strings" }, { { [1.5] = 1 }, "keys must be strings" },
      { { [0] = 1 }, "keys must be strings" }, { { [-1] = 1 }, "keys must be strings" },
      { setmetatable({ a = 1 }, core.array_mt), "array_mt" },
    }
    for _, c in ipairs(cases) do
      local json, err = core.encode(c[1])
      assert.is_nil(json)
      assert.truthy(err.message:find(c[2], 1, true), err.message)
    end
  end)

  it("rejects functions, coroutines and other userdata", function()
    for _, v in ipairs({ print, coroutine.create(function() end), io.stdout }) do
      local json, err = core.encode({ k = v })
      assert.is_nil(json)
      assert.are.equal("k", err.field)
      assert.truthy(err.message:find("cannot be encoded", 1, true))
    end
  end)

  it("quotes odd keys in field paths", function()
    local _, err = core.encode({ ["a b"] = { 0 / 0 } })
    assert.are.equal('["a b"][1]', err.field)
  end)

  it("allows 64 levels of nesting and rejects 65, and cycles", function()
    local function nest(n)
      local t = {}
      for _ = 2, n do t = { t } end
      return t
    end
    assert.is_string(core.encode(nest(64)))
    local json, err = core.encode(nest(65))
    assert.is_nil(json)
    assert.truthy(err.message:find("nested more than 64", 1, true))
    local cyc = {}
    cyc.self = cyc
    json, err = core.encode(cyc)
    assert.is_nil(json)
    assert.truthy(err.message:find("cycle", 1, true))
  end)

  it("treats numeric-looking string keys as object keys", function()
    assert.are.equal('{"1":"a"}', core.encode({ ["1"] = "a" }))
  end)

  it("handles large arrays and strings needing many escapes", function()
    local arr = {}
    for i = 1, 5000 do arr[i] = i end
    assert.are.same(arr, roundtrip(arr))
    local s = chars('"', 20000) .. chars("\n", 20000) .. chars("é", 1000)
    assert.are.equal(s, roundtrip({ s })[1])
  end)

  it("still works after encoding a payload larger than the kept buffer", function()
    local big = chars("x", 600 * 1024)
    assert.are.equal(#big + 4, #core.encode({ big }))
    assert.are.equal('["small"]', core.encode({ "small" }))
  end)

  it("does not call metamethods of the value", function()
    local t = setmetatable({ a = 1 }, { __index = function() error("no __index") end,
                                         __pairs = function() error("no __pairs") end })
    assert.are.equal('{"a":1}', core.encode(t))
  end)
end)

describe("core.prepare", function()
  describe("arguments", function()
    it("returns an invalid error for a body that is not a table", function()
      for _, b in ipairs({ "x", 1, true }) do
        local json, err = core.prepare("create_fund", b)
        assert.is_nil(json)
        assert.are.equal("body", err.field)
        assert.are.equal("invalid", err.kind)
      end
      local json, err = core.prepare("create_fund", nil)
      assert.is_nil(json)
      assert.are.equal("body", err.field)
    end)

    it("raises for an unknown operation or bad options", function()
      assert.has_error(function() core.prepare("no_such_op", {}) end)
      assert.has_error(function() core.prepare("create_fund", fund_body(), "strict") end)
      assert.has_error(function() core.prepare("create_fund", fund_body(), { strict = "yes" }) end)
    end)

    it("rejects a body with non-string keys or marked as an array", function()
      expect_invalid("create_fund", { "x" }, "body", "string keys")
      expect_invalid("create_fund", setmetatable(fund_body(), core.array_mt), "body", "must be an object")
    end)

    it("does not call metamethods of the body", function()
      local body = setmetatable({}, { __index = function() error("no __index") end })
      expect_invalid("create_fund", body, "name", "is required")
    end)
  end)

  describe("provision_user", function()
    it("validates and encodes a full body, trimming the identifier", function()
      local body = user_body()
      local before = deepcopy(body)
      local out, info, json = prep("provision_user", body)
      local expected = user_body()
      expected.partnerUserIdentifier = "user-0001-abcdefgh"
      assert.are.same(expected, out)
      assert.are.equal("user-0001-abcdefgh", info.partner_user_identifier)
      assert.is_nil(info.idempotency_key)
      assert.is_nil(json:find("idempotencyKey", 1, true))
      assert.are.same(before, body)
    end)

    it("writes known fields in schema order", function()
      local _, _, json = prep("provision_user", user_body())
      local p1, p2 = json:find('"partnerUserIdentifier"', 1, true), json:find('"firstName"', 1, true)
      local p3, p4 = json:find('"email"', 1, true), json:find('"address"', 1, true)
      assert.is_true(p1 < p2 and p2 < p3 and p3 < p4)
      assert.is_true(json:find('"line1"', 1, true) < json:find('"country"', 1, true))
    end)

    for _, f in ipairs({ "partnerUserIdentifier", "firstName", "lastName", "email", "address" }) do
      it("requires " .. f, function()
        local body = user_body()
        body[f] = nil
        local err = expect_invalid("provision_user", body, f, "is required")
        assert.are.equal(f .. " is required", err.message)
      end)
    end

    for _, f in ipairs({ "line1", "city", "country" }) do
      it("requires address." .. f, function()
        local body = user_body()
        body.address[f] = nil
        expect_guess("provision_user", body, "address." .. f, "is required", "required")
      end)
    end

    it("allows address line2, state and zip to be absent", function()
      local body = user_body()
      body.address.line2, body.address.state, body.address.zip = nil, nil, nil
      assert.is_nil(prep("provision_user", body).address.line2)
    end)

    it("checks the partner identifier length after trimming", function()
      local body = user_body()
      body.partnerUserIdentifier = "   " .. chars("u", 15) .. "   "
      local err = expect_invalid("provision_user", body, "partnerUserIdentifier", "(got 15)")
      assert.are.equal("partnerUserIdentifier must be 16-64 printable ASCII characters (got 15)", err.message)
      body.partnerUserIdentifier = chars("u", 65)
      expect_invalid("provision_user", body, "partnerUserIdentifier", "(got 65)")
      body.partnerUserIdentifier = chars("u", 64)
      assert.are.equal(chars("u", 64), prep("provision_user", body).partnerUserIdentifier)
      body.partnerUserIdentifier = 1234567890123456
      expect_invalid("provision_user", body, "partnerUserIdentifier", "must be a string")
    end)

    it("counts name lengths in UTF-8 characters", function()
      local body = user_body()
      body.firstName = chars("é", 255)
      assert.are.equal(chars("é", 255), prep("provision_user", body).firstName)
      body.firstName = chars("é", 256)
      local err = expect_invalid("provision_user", body, "firstName", "at most 255 characters")
      assert.truthy(err.message:find("(got 256)", 1, true))
    end)

    it("rejects empty, non-string and invalid UTF-8 names", function()
      local body = user_body()
      body.lastName = ""
      expect_invalid("provision_user", body, "lastName", "must not be empty")
      body.lastName = 42
      expect_invalid("provision_user", body, "lastName", "must be a string (got a number)")
      body.lastName = "Love" .. B(0xED, 0xA0, 0x80)
      expect_invalid("provision_user", body, "lastName", "UTF-8")
    end)

    it("rejects a bad email without echoing it", function()
      local body = user_body()
      body.email = "ada.example.org"
      local err = expect_invalid("provision_user", body, "email", "must be an email address")
      assert.is_nil(err.message:find("ada.example.org", 1, true))
    end)

    it("requires an ISO alpha-3 uppercase country", function()
      for _, c in ipairs({ "US", "usa", "USAA", "U5A", "" }) do
        local body = user_body()
        body.address.country = c
        expect_invalid("provision_user", body, "address.country", "alpha-3")
      end
    end)

    it("rejects an address that is not an object", function()
      local body = user_body()
      body.address = "1 Main St"
      expect_invalid("provision_user", body, "address", "must be an object")
      body.address = { "1 Main St" }
      expect_invalid("provision_user", body, "address", "string keys")
    end)

    it("rejects null for optional non-nullable fields", function()
      local body = user_body()
      body.address.line2 = core.null
      expect_invalid("provision_user", body, "address.line2", "must be a string (got null)")
    end)

    it("forwards unknown fields after the known ones, and rejects them in strict mode", function()
      local body = user_body()
      body.phone = "+1 555"
      body.address.nickname = "home"
      local out, _, json = prep("provision_user", body)
      assert.are.equal("+1 555", out.phone)
      assert.are.equal("home", out.address.nickname)
      assert.is_true(json:find('"phone"', 1, true) > json:find('"address"', 1, true))
      local err = expect_invalid("provision_user", body, "address.nickname", "unknown field", { strict = true })
      assert.truthy(tostring(err):find("(field address.nickname)", 1, true))
      body.address.nickname = nil
      expect_invalid("provision_user", body, "phone", "unknown field", { strict = true })
      body.phone = nil
      assert.is_string((core.prepare("provision_user", body, { strict = true })))
    end)
  end)

  describe("create_fund", function()
    it("validates and encodes a full body", function()
      local out, info = prep("create_fund", fund_body())
      local expected = fund_body()
      expected.partnerAccountIdentifier = PID
      assert.are.same(expected, out)
      assert.are.equal("user-0001-abcdefgh", info.partner_user_identifier)
      assert.is_nil(info.idempotency_key)
    end)

    it("needs only name and partnerAccountIdentifier, and ignores opts.idempotency_key", function()
      local out, info, json = prep("create_fund", { name = "F", partnerAccountIdentifier = PID },
                                   { idempotency_key = UUID })
      assert.are.same({ name = "F", partnerAccountIdentifier = PID }, out)
      assert.is_nil(info.idempotency_key)
      assert.is_nil(info.partner_user_identifier)
      assert.is_nil(json:find("idempotencyKey", 1, true))
    end)

    for _, f in ipairs({ "name", "partnerAccountIdentifier" }) do
      it("requires " .. f, function()
        local body = fund_body()
        body[f] = nil
        expect_invalid("create_fund", body, f, "is required")
      end)
    end

    it("checks the fund type enum", function()
      local body = fund_body()
      body.type = "Transparent"
      assert.are.equal("Transparent", prep("create_fund", body).type)
      body.type = "Public"
      local err = expect_invalid("create_fund", body, "type", 'one of "Private", "Transparent"')
      assert.truthy(err.message:find('(got "Public")', 1, true))
    end)

    it("checks name length and allows a long description", function()
      local body = fund_body()
      body.name = chars("n", 256)
      expect_invalid("create_fund", body, "name", "at most 255")
      body.name = chars("n", 255)
      body.description = chars("d", 5000)
      assert.are.equal(5000, #prep("create_fund", body).description)
    end)

    it("validates the optional partnerUserIdentifier", function()
      local body = fund_body()
      body.partnerUserIdentifier = "short"
      expect_invalid("create_fund", body, "partnerUserIdentifier", "(got 5)")
    end)
  end)

  describe("record_cash_donation", function()
    it("generates an idempotency key without touching the caller's body", function()
      local body = cash_body()
      local before = deepcopy(body)
      local out, info, json = prep("record_cash_donation", body)
      assert.is_true(core.is_uuid(info.idempotency_key))
      assert.are.equal(info.idempotency_key, out.idempotencyKey)
      assert.are.equal(2, json:find('"idempotencyKey"', 1, true))
      assert.is_nil(body.idempotencyKey)
      assert.are.same(before, body)
      assert.are.equal("user-0001-abcdefgh", out.partnerUserIdentifier)
      assert.are.equal("user-0001-abcdefgh", info.partner_user_identifier)
      assert.are.equal("125500000", out.pledgedAmountMicroDollars)
      local _, info2 = prep("record_cash_donation", body)
      assert.are_not.equal(info.idempotency_key, info2.idempotency_key)
    end)

    it("uses the body's idempotency key, upper or lower case", function()
      local body = cash_body()
      body.idempotencyKey = UUID2:upper()
      local out, info = prep("record_cash_donation", body)
      assert.are.equal(UUID2:upper(), out.idempotencyKey)
      assert.are.equal(UUID2:upper(), info.idempotency_key)
    end)

    it("accepts the same key in the body and in opts.idempotency_key", function()
      local body = cash_body()
      body.idempotencyKey = UUID2
      local out, info = prep("record_cash_donation", body, { idempotency_key = UUID2 })
      assert.are.equal(UUID2, out.idempotencyKey)
      assert.are.equal(UUID2, info.idempotency_key)
      assert.is_true(core.validate("record_cash_donation", body, { idempotency_key = UUID2 }))
    end)

    it("refuses different keys in the body and in opts.idempotency_key", function()
      -- sending either one silently could send a retry under a key its caller never meant
      local body = cash_body()
      body.idempotencyKey = UUID2
      local err = expect_invalid("record_cash_donation", body, "idempotencyKey", "differs from opts.idempotency_key",
                                 { idempotency_key = UUID3 })
      assert.are.equal("invalid", err.kind)
      -- byte for byte: the server may tell the cases apart
      expect_invalid("record_cash_donation", body, "idempotencyKey", "differs", { idempotency_key = UUID2:upper() })
      expect_invalid("submit_grant", { idempotencyKey = UUID2 }, "idempotencyKey", "differs",
                     { idempotency_key = UUID3 })
      -- a bad option is reported as such, even with a key in the body
      expect_invalid("record_cash_donation", body, "idempotency_key", "must be a UUID", { idempotency_key = "nope" })
    end)

    it("uses opts.idempotency_key when the body has none", function()
      local out, info = prep("record_cash_donation", cash_body(), { idempotency_key = UUID3 })
      assert.are.equal(UUID3, out.idempotencyKey)
      assert.are.equal(UUID3, info.idempotency_key)
    end)

    it("rejects a bad idempotency key from the body or from opts", function()
      local body = cash_body()
      body.idempotencyKey = "retry-1"
      expect_invalid("record_cash_donation", body, "idempotencyKey", "must be a UUID")
      body.idempotencyKey = core.null
      expect_invalid("record_cash_donation", body, "idempotencyKey", "must be a UUID")
      expect_invalid("record_cash_donation", cash_body(), "idempotency_key", "must be a UUID",
                     { idempotency_key = "nope" })
      expect_invalid("record_cash_donation", cash_body(), "idempotency_key", "must be a UUID",
                     { idempotency_key = 12 })
    end)

    it("validate() accepts a body without a key and does not add one", function()
      local body = cash_body()
      assert.is_true(core.validate("record_cash_donation", body))
      assert.is_nil(body.idempotencyKey)
    end)

    for _, f in ipairs({ "receivingFundId", "pledgedAmountMicroDollars", "partnerOperationId" }) do
      it("requires " .. f, function()
        local body = cash_body()
        body[f] = nil
        expect_invalid("record_cash_donation", body, f, "is required")
      end)
    end

    it("encodes an integer amount as a JSON string", function()
      local body = cash_body()
      body.pledgedAmountMicroDollars = 5000000
      local out, _, json = prep("record_cash_donation", body)
      assert.are.equal("5000000", out.pledgedAmountMicroDollars)
      assert.truthy(json:find('"pledgedAmountMicroDollars":"5000000"', 1, true))
      assert.are.equal(5000000, body.pledgedAmountMicroDollars)
    end)

    it("checks amounts at the boundaries", function()
      local body = cash_body()
      body.pledgedAmountMicroDollars = "9223372036854775807"
      assert.are.equal("9223372036854775807", prep("record_cash_donation", body).pledgedAmountMicroDollars)
      body.pledgedAmountMicroDollars = "1"
      assert.are.equal("1", prep("record_cash_donation", body).pledgedAmountMicroDollars)
      for _, bad in ipairs({ "9223372036854775808", "0", "-5", "1.5", "1e6", " 5", "+5", "05", "", 1.5, 0, -5 }) do
        body.pledgedAmountMicroDollars = bad
        expect_invalid("record_cash_donation", body, "pledgedAmountMicroDollars", "must be")
      end
    end)

    it("limits partnerOperationId to 36 characters", function()
      local body = cash_body()
      body.partnerOperationId = chars("o", 36)
      assert.are.equal(chars("o", 36), prep("record_cash_donation", body).partnerOperationId)
      body.partnerOperationId = chars("o", 37)
      expect_invalid("record_cash_donation", body, "partnerOperationId", "at most 36 characters")
      body.partnerOperationId = ""
      expect_invalid("record_cash_donation", body, "partnerOperationId", "must not be empty")
    end)

    it("requires a UUID receivingFundId", function()
      local body = cash_body()
      body.receivingFundId = "fund-1"
      local err = expect_invalid("record_cash_donation", body, "receivingFundId", "must be a UUID")
      assert.truthy(err.message:find('(got "fund-1")', 1, true))
    end)
  end)

  describe("record_stock_donation", function()
    it("validates and encodes lots, fractional shares and prices", function()
      local body = stock_body()
      local before = deepcopy(body)
      local out, info, json = prep("record_stock_donation", body)
      assert.is_true(core.is_uuid(info.idempotency_key))
      local expected = stock_body()
      expected.idempotencyKey = info.idempotency_key
      assert.are.same(expected, out)
      assert.truthy(json:find('"shares":100,', 1, true))
      assert.truthy(json:find('"purchasePrice":150.75', 1, true))
      assert.truthy(json:find('"numberOfShares":50.5', 1, true))
      assert.are.same(before, body)
    end)

    it("encodes an empty lots table as [] and allows lots to be absent", function()
      local body = stock_body()
      body.stockPledgeData.lots = {}
      local _, _, json = prep("record_stock_donation", body)
      assert.truthy(json:find('"lots":[]', 1, true))
      body.stockPledgeData.lots = nil
      assert.is_nil(prep("record_stock_donation", body).stockPledgeData.lots)
    end)

    for _, f in ipairs({ "receivingFundId", "donationValueMicroDollars", "partnerOperationId", "stockPledgeData" }) do
      it("requires " .. f, function()
        local body = stock_body()
        body[f] = nil
        expect_invalid("record_stock_donation", body, f, "is required")
      end)
    end

    for _, f in ipairs({ "ticker", "shares" }) do
      it("requires stockPledgeData." .. f, function()
        local body = stock_body()
        body.stockPledgeData[f] = nil
        expect_invalid("record_stock_donation", body, "stockPledgeData." .. f, "is required")
      end)
    end

    for _, f in ipairs({ "numberOfShares", "purchasePrice", "purchaseDate" }) do
      it("requires lots[i]." .. f, function()
        local body = stock_body()
        body.stockPledgeData.lots[2][f] = nil
        expect_guess("record_stock_donation", body, "stockPledgeData.lots[2]." .. f, "is required", "required")
      end)
    end

    it("checks tickers", function()
      local body = stock_body()
      for _, t in ipairs({ "BRK.B", "BF-B", "A", "ABCDEFGHIJ", "X1" }) do
        body.stockPledgeData.ticker = t
        assert.are.equal(t, prep("record_stock_donation", body).stockPledgeData.ticker)
      end
      for _, t in ipairs({ "aapl", "ABCDEFGHIJK", "", "AA PL", "AAPL$" }) do
        body.stockPledgeData.ticker = t
        local _, json = expect_guess("record_stock_donation", body, "stockPledgeData.ticker", "1-10 characters",
          "format")
        -- Sent as given, escaped as any string.
        assert.are.equal(t, cjson.decode(json).stockPledgeData.ticker)
      end
    end)

    it("requires positive finite share counts and non-negative prices", function()
      local body = stock_body()
      for _, v in ipairs({ 0, -1 }) do
        body.stockPledgeData.shares = v
        expect_guess("record_stock_donation", body, "stockPledgeData.shares", "greater than 0", "range")
      end
      for _, v in ipairs({ 0 / 0, 1 / 0 }) do
        body.stockPledgeData.shares = v
        expect_invalid("record_stock_donation", body, "stockPledgeData.shares", "finite")
      end
      body.stockPledgeData.shares = "100"
      expect_invalid("record_stock_donation", body, "stockPledgeData.shares", "must be a number (got a string)")
      body = stock_body()
      body.stockPledgeData.lots[1].purchasePrice = -0.01
      expect_guess("record_stock_donation", body, "stockPledgeData.lots[1].purchasePrice", "at least 0", "range")
      body.stockPledgeData.lots[1].purchasePrice = 0
      assert.are.equal(0, prep("record_stock_donation", body).stockPledgeData.lots[1].purchasePrice)
    end)

    it("reports the path of a bad purchase date", function()
      local body = stock_body()
      body.stockPledgeData.lots[2].purchaseDate = "2023-02-29T00:00:00Z"
      local err = expect_invalid("record_stock_donation", body, "stockPledgeData.lots[2].purchaseDate", "calendar")
      assert.truthy(err.message:find("^stockPledgeData%.lots%[2%]%.purchaseDate must"))
    end)

    it("rejects lots that are not an array", function()
      local body = stock_body()
      body.stockPledgeData.lots = { first = {} }
      expect_invalid("record_stock_donation", body, "stockPledgeData.lots", "must be an array")
      local lots = stock_body().stockPledgeData.lots
      body.stockPledgeData.lots = { [1] = lots[1], [3] = lots[2] }
      expect_invalid("record_stock_donation", body, "stockPledgeData.lots", "without holes")
      body.stockPledgeData.lots = "none"
      expect_invalid("record_stock_donation", body, "stockPledgeData.lots", "must be an array")
      body.stockPledgeData.lots = { "x" }
      expect_invalid("record_stock_donation", body, "stockPledgeData.lots[1]", "must be an object")
    end)

    it("limits optional lot strings to 255 characters", function()
      local body = stock_body()
      body.stockPledgeData.lots[1].lotId = chars("l", 256)
      expect_guess("record_stock_donation", body, "stockPledgeData.lots[1].lotId", "at most 255", "max")
    end)
  end)

  describe("submit_grant", function()
    it("validates and encodes a submission, trimming account identifiers", function()
      local body = grant_body(1)
      body.grants[1].amountMicroDollars = 75000000000
      local before = deepcopy(body)
      local out, info, json = prep("submit_grant", body)
      assert.are.equal(2, json:find('"idempotencyKey"', 1, true))
      assert.are.same({
        idempotencyKey = info.idempotency_key,
        originFundId = UUID,
        inboundCustodianTransfer = {
          amountMicroDollars = "125000000000",
          partnerFundingTransferId = "alt-journal-987654",
          sourcePartnerAccountIdentifier = PID,
          destinationPartnerAccountIdentifier = PID2,
          settledAtUtc = "2026-05-04T14:32:01.000Z",
        },
        grants = { { amountMicroDollars = "75000000000", destinationOrgId = UUID2,
                     destinationSubprojectId = cjson.null, specialInstructions = cjson.null,
                     hideMyInfoFromOrg = false } },
      }, out)
      assert.are.same(before, body)
      assert.are.equal(75000000000, body.grants[1].amountMicroDollars)
    end)

    it("accepts 1 and 50 grants, rejects 0 and 51", function()
      assert.are.equal(1, #prep("submit_grant", grant_body(1)).grants)
      assert.are.equal(50, #prep("submit_grant", grant_body(50)).grants)
      local err = expect_invalid("submit_grant", grant_body(0), "grants", "must contain at least 1 grant")
      assert.are.equal("grants must contain at least 1 grant", err.message)
      err = expect_invalid("submit_grant", grant_body(51), "grants", "must contain at most 50 grants")
      assert.are.equal("grants must contain at most 50 grants", err.message)
    end)

    it("accepts a grants table marked with array_mt", function()
      local body = grant_body(1)
      setmetatable(body.grants, core.array_mt)
      assert.are.equal(1, #prep("submit_grant", body).grants)
    end)

    for _, f in ipairs({ "originFundId", "inboundCustodianTransfer", "grants" }) do
      it("requires " .. f, function()
        local body = grant_body(1)
        body[f] = nil
        expect_invalid("submit_grant", body, f, "is required")
      end)
    end

    for _, f in ipairs({ "amountMicroDollars", "partnerFundingTransferId", "sourcePartnerAccountIdentifier",
                         "destinationPartnerAccountIdentifier", "settledAtUtc" }) do
      it("requires inboundCustodianTransfer." .. f, function()
        local body = grant_body(1)
        body.inboundCustodianTransfer[f] = nil
        expect_invalid("submit_grant", body, "inboundCustodianTransfer." .. f, "is required")
      end)
    end

    it("requires each grant's amount", function()
      local body = grant_body(3)
      body.grants[3].amountMicroDollars = nil
      expect_invalid("submit_grant", body, "grants[3].amountMicroDollars", "is required")
    end)

    it("reports the documented message with the 1-based grant path", function()
      local body = grant_body(4)
      body.grants[3].amountMicroDollars = "1.5"
      local err = expect_invalid("submit_grant", body, "grants[3].amountMicroDollars")
      assert.are.equal('grants[3].amountMicroDollars must be a positive integer number of micro-dollars as a string '
                       .. 'of digits (got "1.5")', err.message)
      local s = tostring(err)
      assert.is_nil(s:find("\n"))
      assert.truthy(s:find("^endaoment%.partner: invalid: grants%[3%]"))
      assert.truthy(s:find("(field grants[3].amountMicroDollars)", 1, true))
    end)

    it("reports the first error in schema order", function()
      local body = grant_body(0)
      body.originFundId = nil
      expect_invalid("submit_grant", body, "originFundId", "is required")
      body = grant_body(6)
      body.grants[5].amountMicroDollars = "0"
      body.grants[2].destinationOrgId = "nope"
      expect_invalid("submit_grant", body, "grants[2].destinationOrgId", "must be a UUID")
      body = grant_body(2)
      body.grants[1].destinationOrgId = nil
      body.grants[1].amountMicroDollars = "x"
      expect_invalid("submit_grant", body, "grants[1].amountMicroDollars", "string of digits")
    end)

    it("requires a destination org or subproject on each grant", function()
      local body = grant_body(2)
      body.grants[2].destinationOrgId = core.null
      local err = expect_guess("submit_grant", body, "grants[2]",
                               "must have a destinationOrgId or destinationSubprojectId", "one_of")
      assert.are.equal("grants[2] must have a destinationOrgId or destinationSubprojectId", err.message)
      body.grants[2].destinationOrgId = nil
      expect_guess("submit_grant", body, "grants[2]", "must have a destinationOrgId", "one_of")
      body.grants[2].destinationSubprojectId = UUID3
      local out = prep("submit_grant", body)
      assert.are.equal(UUID3, out.grants[2].destinationSubprojectId)
      assert.is_nil(out.grants[2].destinationOrgId)
    end)

    it("checks grant field types", function()
      local body = grant_body(1)
      body.grants[1].hideMyInfoFromOrg = "yes"
      expect_invalid("submit_grant", body, "grants[1].hideMyInfoFromOrg", "must be a boolean")
      body = grant_body(1)
      body.grants[1].specialInstructions = 5
      expect_invalid("submit_grant", body, "grants[1].specialInstructions", "must be a string or null")
      body.grants[1].specialInstructions = "Use for books"
      assert.are.equal("Use for books", prep("submit_grant", body).grants[1].specialInstructions)
      body.grants[1].destinationSubprojectId = 7
      expect_invalid("submit_grant", body, "grants[1].destinationSubprojectId", "must be a UUID or null")
      body = grant_body(1)
      body.grants = "all"
      expect_invalid("submit_grant", body, "grants", "must be an array")
      body.grants = { grant(), n = 1 }
      expect_invalid("submit_grant", body, "grants", "must be an array")
    end)

    it("rejects grants adding up to more than the inbound transfer", function()
      local body = grant_body(2)
      body.inboundCustodianTransfer.amountMicroDollars = "100"
      body.grants[1].amountMicroDollars = "60"
      body.grants[2].amountMicroDollars = 50
      local err = expect_guess("submit_grant", body, "grants", nil, "sum")
      assert.are.equal("grants total 110 micro-dollars, more than the inbound transfer's 100", err.message)
      body.grants[2].amountMicroDollars = "40"
      assert.is_string((core.prepare("submit_grant", body)))
    end)

    it("does not overflow when summing huge grants", function()
      local body = grant_body(3)
      local max = "9223372036854775807"
      body.inboundCustodianTransfer.amountMicroDollars = max
      for i = 1, 3 do body.grants[i].amountMicroDollars = max end
      local err = expect_guess("submit_grant", body, "grants", "more than the inbound transfer's " .. max, "sum")
      assert.truthy(err.message:find("more than 18446744073709551615", 1, true))
      body.grants[3] = nil
      err = expect_guess("submit_grant", body, "grants", nil, "sum")
      assert.truthy(err.message:find("total 18446744073709551614 micro-dollars", 1, true))
      body.grants[2] = nil
      assert.is_string((core.prepare("submit_grant", body)))
    end)

    it("checks the inbound transfer fields", function()
      local body = grant_body(1)
      body.inboundCustodianTransfer.settledAtUtc = "2026-05-04T14:32:01+00:00"
      expect_invalid("submit_grant", body, "inboundCustodianTransfer.settledAtUtc", "UTC")
      body = grant_body(1)
      body.inboundCustodianTransfer.destinationPartnerAccountIdentifier = "  short  "
      local _, json = expect_guess("submit_grant", body, "inboundCustodianTransfer.destinationPartnerAccountIdentifier",
        "(got 5)", "format")
      -- A guessed format is not enforced: the value goes out as given.
      assert.are.equal("  short  ", cjson.decode(json).inboundCustodianTransfer.destinationPartnerAccountIdentifier)
      body.inboundCustodianTransfer.destinationPartnerAccountIdentifier = 12345
      expect_invalid("submit_grant", body, "inboundCustodianTransfer.destinationPartnerAccountIdentifier",
        "must be a string")
      body = grant_body(1)
      body.inboundCustodianTransfer.partnerFundingTransferId = chars("j", 256)
      expect_guess("submit_grant", body, "inboundCustodianTransfer.partnerFundingTransferId", "at most 255", "max")
    end)

    it("forwards unknown grant fields unless strict", function()
      local body = grant_body(1)
      body.grants[1].note = { "a", 1 }
      assert.are.same({ "a", 1 }, prep("submit_grant", body).grants[1].note)
      expect_invalid("submit_grant", body, "grants[1].note", "unknown field", { strict = true })
    end)

    it("rejects unencodable unknown fields with their path", function()
      local body = grant_body(1)
      body.grants[1].note = { bad = 0 / 0 }
      expect_invalid("submit_grant", body, "grants[1].note.bad", "finite")
    end)

    it("rejects unknown fields nested deeper than the limit", function()
      local body = grant_body(1)
      local t = {}
      for _ = 1, 70 do t = { t } end
      body.extra = t
      -- body is level 1, extra level 2: the 65th level is extra followed by 63 [1]s
      expect_invalid("submit_grant", body, "extra" .. chars("[1]", 63), "nested more than 64")
    end)
  end)

  describe("report_missing_org", function()
    -- The body's schema is not public: forwarded as sent, no invented field or key.
    it("forwards the body as sent, with no idempotency key of its own", function()
      local body = org_body()
      local out, info = prep("report_missing_org", body)
      assert.are.equal("Helping Hands", out.name)
      assert.are.equal("12-3456789", out.ein)
      assert.are.same({ email = "info@helping.example.org" }, out.contact)
      assert.is_nil(info.idempotency_key)
      assert.is_nil(out.idempotencyKey)
      body.name, body.ein = nil, "not an ein"
      out = prep("report_missing_org", body)
      assert.is_nil(out.name)
      assert.are.equal("not an ein", out.ein)
      body.idempotencyKey = UUID
      assert.are.equal(UUID, prep("report_missing_org", body).idempotencyKey)
    end)

    it("needs an encodable object, and caps its size (a guess)", function()
      expect_invalid("report_missing_org", "x", "body", "must be a table")
      expect_invalid("report_missing_org", { bad = 0 / 0 }, "bad", "finite")
      expect_invalid("report_missing_org", setmetatable({}, core.array_mt), "body", "must be an object")
      local big = org_body()
      big.notes = chars("n", 20000)
      expect_guess("report_missing_org", big, "body", "bytes of JSON", "max")
    end)
  end)

  describe("create_async_grant", function()
    it("validates and encodes a full body", function()
      local body = async_body()
      body.requestedAmount = 1000000
      local out, info = prep("create_async_grant", body)
      local expected = async_body()
      expected.idempotencyKey = info.idempotency_key
      assert.are.same(expected, out)
    end)

    for _, f in ipairs({ "originFundId", "destinationOrgId", "requestedAmount", "purpose" }) do
      it("requires " .. f, function()
        local body = async_body()
        body[f] = nil
        expect_invalid("create_async_grant", body, f, "is required")
      end)
    end

    it("needs only the required fields", function()
      local out = prep("create_async_grant", { originFundId = UUID, destinationOrgId = UUID2,
                                               requestedAmount = "1", purpose = "p" })
      assert.are.equal("1", out.requestedAmount)
    end)

    it("encodes empty recommendationIds as [] and checks each id", function()
      local body = async_body()
      body.recommendationIds = {}
      local _, _, json = prep("create_async_grant", body)
      assert.truthy(json:find('"recommendationIds":[]', 1, true))
      body.recommendationIds = { UUID, "nope" }
      expect_invalid("create_async_grant", body, "recommendationIds[2]", "must be a UUID")
    end)

    it("limits purpose to 511 and recommender to 255 characters", function()
      local body = async_body()
      body.purpose = chars("é", 511)
      assert.are.equal(chars("é", 511), prep("create_async_grant", body).purpose)
      body.purpose = chars("é", 512)
      expect_invalid("create_async_grant", body, "purpose", "at most 511")
      body = async_body()
      body.recommender = chars("r", 256)
      expect_invalid("create_async_grant", body, "recommender", "at most 255")
    end)

    it("checks the optional fields' types", function()
      local body = async_body()
      body.shareMyEmail = 1
      expect_invalid("create_async_grant", body, "shareMyEmail", "must be a boolean")
      body = async_body()
      body.destinationSubprojectId = "sub"
      expect_invalid("create_async_grant", body, "destinationSubprojectId", "must be a UUID")
      body = async_body()
      body.destinationSubprojectId = core.null
      expect_invalid("create_async_grant", body, "destinationSubprojectId", "must be a UUID (got null)")
    end)
  end)
end)
