-- Harness "prepare": core.prepare and core.validate for every operation with a
-- body, strict on and off, with and without opts.idempotency_key.
--
-- Input: byte 1 picks the operation, byte 2 the options, the rest is the body
-- (fuzz/props/common.lua: a schema sample with edits, or any value).
--
-- Properties:
--   * neither function raises for a known operation and well-typed options;
--   * validate accepts exactly what prepare accepts, with the same warnings,
--     and refuses with the same field and message;
--   * a refusal is a core.Error of kind "invalid" naming a field (non-empty,
--     the message starts with it), all printable ASCII;
--   * accepted JSON is compact, valid UTF-8 and valid JSON, and decodes to the
--     body as the schema transforms it (partner ids trimmed, micro-dollars as
--     strings, the idempotency key added), unknown fields forwarded as given;
--   * prepared JSON, decoded and prepared again, is accepted and decodes the same;
--   * strict mode gives no warnings; what strict accepts, default mode accepts
--     identically; what default mode refuses, strict refuses;
--   * the caller's body is not modified;
--   * (in the C harness) with the core's k-th buffer allocation failing,
--     prepare returns the same result, or an "oom" error, and the next call
--     is as good as ever.
local C = require "props.common"

local core, schema, null = C.core, C.schema, C.null
local check, fail = C.check, C.fail

local FIELDS = {}
for name, obj in pairs(schema.objects) do
  local m = {}
  for _, f in ipairs(obj) do m[f[1]] = f end
  FIELDS[name] = m
end

local RULES = { required = true, nonempty = true, max = true, format = true, range = true, items = true,
  sum = true, one_of = true }

local expect_object

local function expect_field(f, v)
  if v == null then return null end
  local t = f[2]
  if t == "partner_id" then return C.partner_id(v) or v end
  if t == "micro" and math.type(v) == "integer" then return string.format("%d", v) end
  if t == "object" then return expect_object(f.object, v) end
  if t == "array" then
    local out = {}
    for i = 1, #v do out[i] = expect_field(f.item, v[i]) end
    return out
  end
  return v
end

expect_object = function(name, v)
  if schema.objects[name].any then return v end
  local fields = FIELDS[name]
  local out = {}
  for k, x in pairs(v) do
    local f = type(k) == "string" and fields[k]
    if f then out[k] = expect_field(f, x) else out[k] = x end
  end
  return out
end

-- Deep copy and comparison that survive cycles (the decoder makes some).
local function copy(v, memo)
  if type(v) ~= "table" then return v end
  memo = memo or {}
  if memo[v] then return memo[v] end
  local t = {}
  memo[v] = t
  for k, x in pairs(v) do t[k] = copy(x, memo) end
  return setmetatable(t, getmetatable(v))
end

local function equal(a, b, memo)
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= a and b ~= b then return true end -- NaN
    return a == b and math.type(a) == math.type(b)
  end
  memo = memo or {}
  if memo[a] then return memo[a] == b end
  memo[a] = b
  if getmetatable(a) ~= getmetatable(b) then return false end
  for k, x in pairs(a) do
    if not equal(x, rawget(b, k), memo) then return false end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then return false end
  end
  return true
end

local function check_warnings(w, what)
  if w == nil then return end
  check(type(w) == "table" and #w >= 1 and #w <= 16, what .. ": bad warnings list", w)
  for _, x in ipairs(w) do
    check(type(x.field) == "string" and #x.field > 0 and C.printable(x.field), what .. ": warning without a field", x)
    check(RULES[x.rule], what .. ": warning with an unknown rule", x)
    check(type(x.message) == "string" and #x.message > 0 and C.printable(x.message),
      what .. ": warning without a printable message", x)
  end
end

local function same_warnings(a, b)
  if a == nil or b == nil then return a == b end
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i].field ~= b[i].field or a[i].rule ~= b[i].rule or a[i].message ~= b[i].message then return false end
  end
  return true
end

local function with_strict(opts, strict, key)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.strict = strict
  if key then o.idempotency_key = key end
  return o
end

return function(data)
  local r = C.reader(data)
  local op = C.OPS[r:byte() % #C.OPS + 1]
  local flags = r:byte()
  local body = C.body(r, op)
  local spec = schema.operations[op]
  local bodyname = spec.body

  local strict, opts = false, nil
  if flags & 1 == 0 then
    strict = flags & 2 ~= 0
    opts = { strict = strict }
    local km = (flags >> 2) & 3
    local bkey = type(body) == "table" and rawget(body, "idempotencyKey") or nil
    if km == 1 then opts.idempotency_key = bkey ~= nil and bkey or C.UUID
    elseif km == 2 then opts.idempotency_key = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    elseif km == 3 then opts.idempotency_key = C.value(r, 1, nil) end
    -- a key in the body and the same key in opts, differing only in case
    if flags & 16 ~= 0 and type(bkey) == "string" then opts.idempotency_key = bkey:upper() end
  end

  local before = copy(body)
  local okp, json, info = pcall(core.prepare, op, body, opts)
  check(okp, "prepare raised", json)

  if flags & 0x30 == 0x30 then
    local k = (flags >> 6) & 3
    local ran, j2, e2 = C.with_failing_alloc(k, function() return core.prepare(op, body, opts) end)
    if ran then
      if j2 == nil and e2.kind == "oom" then
        C.check_oom(e2, "prepare " .. op)
      elseif json == nil then
        check(j2 == nil and e2.field == info.field and e2.message == info.message,
          "an allocation failure changed a refusal", info, e2)
      else
        check(j2 ~= nil, "an allocation failure refused a good body", e2)
        C.decode_json(j2, "prepare under allocation failure")
      end
      local j3, i3 = core.prepare(op, body, opts)
      check((j3 == nil) == (json == nil), "prepare differs after an allocation failure", info, i3)
    end
  end
  local okv, vres, vinfo = pcall(core.validate, op, body, opts)
  check(okv, "validate raised", vres)
  check(equal(before, body), "prepare/validate modified the body", before, body)

  if json == nil then
    check(vres == nil, "validate accepts what prepare refuses", info)
    C.check_error(info, "prepare " .. op)
    C.check_error(vinfo, "validate " .. op)
    check(info.field == vinfo.field and info.message == vinfo.message,
      "prepare and validate refuse differently", info, vinfo)
    if not strict then
      local sj, serr = core.prepare(op, body, with_strict(opts, true))
      check(sj == nil, "strict mode accepts what default mode refuses", info, sj)
      C.check_error(serr, "prepare strict " .. op)
    end
    return
  end

  check(vres == true, "validate refuses what prepare accepts", vinfo)
  check(type(info) == "table", "prepare returned no info table", info)
  check_warnings(info.warnings, "prepare " .. op)
  if strict then check(info.warnings == nil, "strict mode produced warnings", info.warnings) end
  check(same_warnings(info.warnings, vinfo and vinfo.warnings),
    "validate and prepare warn differently", info.warnings, vinfo)
  check(vinfo == nil or vinfo.warnings ~= nil, "validate returned info without warnings", vinfo)

  check(type(body) == "table", "a non-table body was accepted", body)
  local dec = C.decode_json(json, "prepare " .. op)
  check(type(dec) == "table", "prepared JSON is not an object", json)
  local expected = expect_object(bodyname, body)

  local bkey = rawget(body, "idempotencyKey")
  local generated = false
  if spec.keyed then
    check(C.is_uuid(info.idempotency_key), "no idempotency key reported", info)
    if bkey == nil then
      local okey = opts and opts.idempotency_key
      if okey ~= nil then
        check(info.idempotency_key == okey, "opts.idempotency_key not used", okey, info.idempotency_key)
      else
        generated = true
        check(info.idempotency_key:find(C.V4_PATTERN), "generated key is not a lowercase v4 UUID",
          info.idempotency_key)
      end
      expected.idempotencyKey = info.idempotency_key
    else
      check(info.idempotency_key == bkey, "the body's key is not the reported key", bkey, info.idempotency_key)
      local okey = opts and opts.idempotency_key
      if okey ~= nil then check(okey == bkey, "accepted two different keys", bkey, okey) end
    end
  else
    check(info.idempotency_key == nil, "a key reported for an unkeyed operation", info.idempotency_key)
  end
  C.check_same(dec, expected, json, "prepare " .. op)

  local fields = FIELDS[bodyname]
  local pf = fields and fields.partnerUserIdentifier
  if pf and pf.report then
    local pu = rawget(body, "partnerUserIdentifier")
    if pu == nil then
      check(info.partner_user_identifier == nil, "reported a user id that is not there", info)
    else
      check(info.partner_user_identifier == C.partner_id(pu), "wrong partner_user_identifier", pu, info)
    end
  end

  -- The prepared JSON, decoded, is a valid body that prepares the same.
  local j2, i2 = core.prepare(op, dec, { strict = strict })
  if not j2 then fail("prepared JSON refused when prepared again", json, i2) end
  C.check_same(C.decode_json(j2, "re-prepare " .. op), dec, j2, "re-prepare " .. op)

  -- Strict acceptance implies the same output in default mode.
  if strict then
    local j3, i3 = core.prepare(op, body, with_strict(opts, false, generated and info.idempotency_key or nil))
    if not j3 then fail("default mode refuses what strict mode accepts", json, i3) end
    check(i3.warnings == nil, "default mode warns where strict mode accepted", i3.warnings)
    check(j3 == json, "default and strict mode wrote different JSON", json, j3)
  end
end
