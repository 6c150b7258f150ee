-- The one contract, checked from both sides: for every operation and field
-- of endaoment.partner.schema, boundary cases generated from the schema go
-- through the C validator (core.validate) and the sandbox's pure-Lua
-- validator (endaoment.sandbox.rules), which must agree. What the client
-- accepts, the sandbox accepts; what the client refuses, the sandbox refuses.
local core = require "endaoment.partner.core"
local cjson = require "cjson"
local schema = require "endaoment.partner.schema"
local rules = require "endaoment.sandbox.rules"

local null = cjson.null

local UUID = "2b8108d8-30fc-4c62-9b93-07ee1f8b8455"

local function copy(t)
  if type(t) ~= "table" then return t end
  local out = {}
  for k, v in pairs(t) do out[k] = copy(v) end
  return setmetatable(out, getmetatable(t))
end

-- A valid value of each type.
local SAMPLE = {
  string = "Some text", partner_id = "partner-identifier-0001", uuid = UUID, idempotency_key = UUID,
  micro = "1000000", timestamp = "2026-05-04T14:32:01.000Z", email = "ada@example.org", country = "USA",
  ticker = "AAPL", ein = "12-3456789", bool = true, number = 1,
}

local sample_object

local function sample_value(f)
  local t = f[2]
  if t == "object" then return sample_object(f.object) end
  if t == "array" then return setmetatable({ sample_value(f.item) }, core.array_mt) end
  if t == "enum" then return f.choices[1] end
  return (assert(SAMPLE[t], "no sample for " .. t))
end

-- Every field present (so conditional rules such as USA's state and zip hold).
sample_object = function(name)
  local obj = schema.objects[name]
  if obj.any then return { name = "Tiny Food Bank", ein = "12-3456789" } end
  local o = {}
  for _, f in ipairs(obj) do o[f[1]] = sample_value(f) end
  return o
end

-- Invalid values of each format, and a value of the wrong JSON type.
local BAD = {
  partner_id = { "short", string.rep("p", 65), "partner-identifier-\1-01" },
  uuid = { "not-a-uuid", "2b8108d8-30fc-4c62-9b93-07ee1f8b845", "2b8108d8x30fc-4c62-9b93-07ee1f8b8455" },
  micro = { "0", "-5", "1.5", "05", " 5", "1e6", "9223372036854775808" },
  timestamp = { "2026-02-30T00:00:00Z", "2026-05-04T14:32:01+00:00", "2026-05-04", "2026-05-04T24:00:00Z" },
  email = { "ada", "ada@", "@example.org", "ada@example", "a b@example.org", "ada@-example.org",
    "ada@example..org", "ada@exa_mple.org", string.rep("a", 65) .. "@example.org" },
  country = { "US", "usa", "USAA", "U1A" },
  ticker = { "aapl", "", "ABCDEFGHIJK", "AA PL" },
  ein = { "12345678", "123-456789", "12-3456789x" },
  enum = { "Nope", "" },
}

-- Cases for one field at `path` (a list of keys) in a body.
local function field_cases(f, path, out)
  local t = f[2]
  local function add(label, value, absent)
    out[#out + 1] = { label = table.concat(path, ".") .. ": " .. label, path = path, value = value, absent = absent }
  end
  add("absent", nil, true)
  add("null", null)
  add("wrong type", t == "string" and { 1 } or (t == "bool" and "yes" or (t == "number" and "1" or true)))
  if t == "string" then
    add("empty", "")
    if f.max then
      add("max", string.rep("é", f.max[1]))
      add("max+1", string.rep("é", f.max[1] + 1))
    end
  end
  if t == "number" then
    add("zero", 0)
    add("negative", -1)
  end
  for _, b in ipairs(BAD[t] or {}) do add("bad " .. t .. " " .. string.format("%q", b), b) end
  if t == "array" then
    if f.items then
      local few, many = {}, {}
      for i = 1, f.items[1] - 1 do few[i] = sample_value(f.item) end
      for i = 1, f.items[2] + 1 do many[i] = sample_value(f.item) end
      add("too few items", setmetatable(few, core.array_mt))
      add("too many items", setmetatable(many, core.array_mt))
    end
    add("empty list", setmetatable({}, core.array_mt))
  end
end

local function walk(name, path, out)
  local obj = schema.objects[name]
  if obj.any then
    -- A body nobody documents: only its size is a rule; any field is fine.
    out[#out + 1] = { label = "body: too large", path = { "notes" }, value = string.rep("n", obj.max_bytes[1]) }
    out[#out + 1] = { label = "body: at the size cap", path = { "notes" },
      value = string.rep("n", obj.max_bytes[1] - 60) }
    out[#out + 1] = { label = "body: nested unknown field", path = { "contact" }, value = { email = "a@b.org" } }
    out[#out + 1] = { label = "body: name absent", path = { "name" }, absent = true }
    return
  end
  for _, f in ipairs(obj) do
    local p = {}
    for i, k in ipairs(path) do p[i] = k end
    p[#p + 1] = f[1]
    field_cases(f, p, out)
    if f.object then walk(f.object, p, out) end
    if f.item and f.item.object then
      local ip = {}
      for i, k in ipairs(p) do ip[i] = k end
      ip[#ip + 1] = 1
      walk(f.item.object, ip, out)
    end
  end
  if obj.one_of then
    out[#out + 1] = { label = table.concat(path, ".") .. ": one-of missing", path = path, one_of = obj.one_of }
  end
  for _, r in ipairs(obj.when or {}) do
    for _, need in ipairs(r.require) do
      local p = {}
      for i, k in ipairs(path) do p[i] = k end
      p[#p + 1] = need
      out[#out + 1] = { label = table.concat(p, ".") .. ": absent when " .. r.field .. " = " .. r.equals,
        path = p, absent = true }
    end
  end
  local p = {}
  for i, k in ipairs(path) do p[i] = k end
  p[#p + 1] = "unknownField"
  out[#out + 1] = { label = table.concat(p, ".") .. ": unknown field", path = p, value = "x" }
end

local function apply(body, case)
  local t = body
  for i = 1, #case.path - 1 do t = t[case.path[i]] end
  local last = case.path[#case.path]
  if case.one_of then
    local target = #case.path > 0 and t[last] or body
    for _, k in ipairs(case.one_of.fields) do target[k] = null end
  elseif case.absent then
    t[last] = nil
  else
    t[last] = copy(case.value)
  end
  return body
end

-- client accepts -> the sandbox accepts the bytes it would send; client
-- refuses -> the sandbox refuses the same body. Returns nil or a complaint.
local function compare(op, body, strict)
  local c_ok, c_err = core.validate(op, body, { strict = strict })
  local sopts = { documented = not strict, forbid_unknown = strict }
  if c_ok then
    local json = assert(core.prepare(op, body, { strict = strict }))
    local ok, errs = rules.validate(op, cjson.decode(json), sopts)
    if not ok then return "client accepts, sandbox refuses: " .. table.concat(errs, "; ") end
    return nil
  end
  local raw = core.encode(body)
  if not raw then return nil end   -- not JSON at all: nothing could be sent either way
  local ok = rules.validate(op, cjson.decode(raw), sopts)
  if ok then return "client refuses (" .. tostring(c_err) .. "), sandbox accepts" end
  return nil
end

describe("schema parity: the C validator and the sandbox agree", function()
  local total = 0
  for _, op in ipairs(schema.OPERATION_ORDER) do
    local spec = schema.operations[op]
    if spec.body then
      it(op .. ": every generated boundary case, in both rule modes", function()
        local cases = {}
        walk(spec.body, {}, cases)
        local base = sample_object(spec.body)
        local disagreements = {}
        local function check(label, body)
          for _, strict in ipairs({ false, true }) do
            local why = compare(op, body, strict)
            total = total + 1
            if why then
              disagreements[#disagreements + 1] = (strict and "[strict/all] " or "[default/documented] ") ..
                label .. ": " .. why
            end
          end
        end
        check("valid sample", copy(base))
        for _, case in ipairs(cases) do check(case.label, apply(copy(base), case)) end
        assert.is_true(#cases >= 1)
        assert.equal(0, #disagreements, table.concat(disagreements, "\n"))
      end)
    end
  end

  it("the valid samples are accepted by both, and enough cases were compared", function()
    for _, op in ipairs(schema.OPERATION_ORDER) do
      local spec = schema.operations[op]
      if spec.body then
        local body = sample_object(spec.body)
        local vok, verr = core.validate(op, body, { strict = true })
        assert.is_true(vok, op .. ": " .. tostring(verr))
        local json = core.prepare(op, body, { strict = true })
        assert.truthy((rules.validate(op, cjson.decode(json), {})), op)
      end
    end
    assert.is_true(total > 500, "only " .. total .. " comparisons")
  end)

  it("would notice a drift: a rule changed on one side only is a disagreement", function()
    -- Relax the sandbox's copy of one documented rule in place, then put it back.
    local f = schema.objects.cash_pledge[4]
    assert.equal("partnerOperationId", f[1])
    local saved = f.max
    f.max = { 99, "doc" }
    local why = compare("record_cash_donation", (function()
      local b = sample_object("cash_pledge")
      b.partnerOperationId = string.rep("x", 37)
      return b
    end)(), false)
    f.max = saved
    assert.truthy(why)
    assert.matches("client refuses", why)
  end)
end)

describe("primitive formats: one corpus through the C and the Lua checkers", function()
  local CORPUS = {
    uuid = {
      yes = { UUID, UUID:upper(), "00000000-0000-0000-0000-000000000000" },
      no = { "", "x", UUID .. "0", UUID:sub(2), UUID:gsub("-", "_"), (UUID:gsub("b", "g")) },
      c = function(s) return core.is_uuid(s) end, lua = rules.is_uuid,
    },
    partner_id = {
      yes = { string.rep("a", 16), string.rep("a", 64), "  " .. string.rep("a", 16) .. "  ", "with spaces inside ok" },
      no = { string.rep("a", 15), string.rep("a", 65), string.rep("a", 15) .. "\1", "  short  ",
        string.rep("é", 10) },
      c = function(s) return core.partner_identifier(s) ~= nil end,
      lua = function(s) return rules.is_partner_identifier(rules.trim(s)) end,
    },
    timestamp = {
      yes = { "2026-05-04T14:32:01Z", "2026-05-04T14:32:01.000Z", "2024-02-29T00:00:00Z",
        "2026-05-04T14:32:01.123456789Z" },
      no = { "2026-02-29T00:00:00Z", "2026-05-04T14:32:01", "2026-05-04T14:32:01.Z", "2026-05-04 14:32:01Z",
        "2026-13-01T00:00:00Z", "2026-05-04T14:32:60Z", "2026-05-04T14:32:01.1234567890Z" },
      c = function(s) return core.is_timestamp(s) end, lua = rules.is_timestamp,
    },
    email = {
      yes = { "ada@example.org", "a.b+c@sub.example.co", "x@a-b.io", string.rep("a", 64) .. "@example.org" },
      no = { "ada", "ada@example", "ada@@example.org", "ada @example.org", "ada@example.org.", "ada@.example.org",
        "ada@-x.org", "ada@x-.org", "ada@ex_ample.org", string.rep("a", 65) .. "@example.org",
        "ada@" .. string.rep("d", 64) .. ".org" },
      c = function(s) return core.is_email(s) end, lua = rules.is_email,
    },
    ein = {
      yes = { "123456789", "12-3456789" },
      no = { "12345678", "1234567890", "123-456789", "12-345678", "12 3456789", "" },
      c = function(s) return core.is_ein(s) end, lua = function(s) return rules.normalize_ein(s) ~= nil end,
    },
    micro = {
      yes = { "1", "125000000", "9223372036854775807" },
      no = { "0", "", "-1", "+1", "01", "1.0", "1e3", " 1", "9223372036854775808", "99999999999999999999" },
      c = function(s) return core.is_micro(s) end, lua = rules.is_micro,
    },
  }
  for name, set in pairs(CORPUS) do
    it(name, function()
      for _, s in ipairs(set.yes) do
        assert.is_true(set.c(s) == true or set.c(s) ~= nil and set.c(s) ~= false, name .. " C refuses " .. s)
        assert.truthy(set.lua(s), name .. " Lua refuses " .. s)
      end
      for _, s in ipairs(set.no) do
        assert.falsy(set.c(s), name .. " C accepts " .. s)
        assert.falsy(set.lua(s), name .. " Lua accepts " .. s)
      end
    end)
  end
end)
