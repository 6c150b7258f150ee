-- Writes the seed corpora and dictionaries of the fuzz harnesses from
-- lua/endaoment/partner/schema.lua (the cases follow spec/schema_parity_spec.lua:
-- a valid sample of every body, then every field absent, null, of the wrong
-- type, empty, at and past its maximum, with each bad format, arrays with too
-- few and too many items, the one-of and conditional rules, unknown fields).
--
--   lua5.4 fuzz/gen_seeds.lua [OUT]      (OUT defaults to build/fuzz)
--
-- Writes OUT/seeds/<harness>/<name> and OUT/dict/<harness>.dict (the static
-- fragments of fuzz/dict/<harness>.dict plus the schema's field names).
-- Deterministic: the same schema gives the same files. Every prepare/encode
-- seed is decoded back with the harness's own decoder and must give the body
-- it was made from. Needs the normal build (LUA_CPATH with core.so) for
-- core.array_mt, which the decoder uses.
local OUT = arg[1] or "build/fuzz"
local HERE = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = HERE .. "/?.lua;" .. HERE .. "/../lua/?.lua;" .. HERE .. "/../lua/?/init.lua;" .. package.path
if not os.getenv("LUA_CPATH") then
  package.cpath = HERE .. "/../build/lua5.4/?.so;" .. package.cpath
end

local C = require "props.common"
local core, schema, null = C.core, C.schema, C.null

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function mkdir(p) assert(os.execute("mkdir -p " .. sh_quote(p))) end

---------------------------------------------------------------------------
-- value -> bytes, in the grammar of C.value (fuzz/props/common.lua)
---------------------------------------------------------------------------

local FRAG_INDEX, NAME_INDEX = {}, {}
for i, f in ipairs(C.FRAGMENTS) do if not FRAG_INDEX[f] then FRAG_INDEX[f] = i - 1 end end
for i, n in ipairs(C.NAMES) do if not NAME_INDEX[n] then NAME_INDEX[n] = i - 1 end end

local function u8(n) return string.char(n & 0xFF) end

local encode_value

-- A string as bytes: raw (tag 6) up to 255 bytes, a fragment (tag 7), or a
-- repeated fragment (tag 12); nil when it cannot be written.
local function encode_string(s)
  if FRAG_INDEX[s] and #s > 0 then return u8(7) .. u8(FRAG_INDEX[s]) end
  if #s <= 255 then return u8(6) .. u8(#s) .. s end
  for i, piece in ipairs(C.FRAGMENTS) do
    if #piece > 0 and #s % #piece == 0 and string.rep(piece, #s // #piece) == s then
      local n = #s // #piece
      if n <= 1023 then return u8(12) .. u8(i - 1) .. u8(n // 4) .. u8(n % 4) end
    end
  end
  -- a repeated single byte: a one-byte fragment? not every byte has one
  return nil
end

local function encode_key(k)
  if type(k) == "string" then
    if NAME_INDEX[k] then return u8(NAME_INDEX[k]) end
    -- composed: 0xF0, n-1, then per part 0x80+ and the raw byte
    if #k >= 1 and #k <= 8 then
      local parts = { u8(0xF0), u8(#k - 1) }
      for i = 1, #k do parts[#parts + 1] = u8(0x80) .. k:sub(i, i) end
      return table.concat(parts)
    end
    return nil
  end
  if math.type(k) == "integer" and k >= 0 and k < 6 then return u8(0xF8) .. u8(k) end
  if type(k) == "boolean" then return u8(0xFA) .. u8(k and 0 or 1) end
  if math.type(k) == "float" and k % 1 == 0.5 and k > 0 and k < 8 then return u8(0xF9) .. u8(math.floor(k)) end
  return nil
end

encode_value = function(v)
  local t = type(v)
  if v == null then return u8(0) end
  if v == false then return u8(1) end
  if v == true then return u8(2) end
  if math.type(v) == "integer" then
    if v >= -128 and v <= 127 then return u8(3) .. u8(v + 128) end
    return u8(4) .. string.pack("<i8", v)
  end
  if math.type(v) == "float" then return u8(5) .. string.pack("<d", v) end
  if t == "string" then return encode_string(v) end
  if t ~= "table" then return nil end
  local n, seq = 0, true
  for _ in pairs(v) do n = n + 1 end
  for i = 1, n do if rawget(v, i) == nil then seq = false end end
  local arr_mt = getmetatable(v) == core.array_mt
  if n > 11 then return nil end
  local parts = {}
  if arr_mt or (seq and n > 0) then
    if not seq then return nil end
    parts[1] = u8(10 + (arr_mt and 128 or 0)) .. u8(n)
    for i = 1, n do
      local e = encode_value(v[i])
      if not e then return nil end
      parts[#parts + 1] = e
    end
  else
    parts[1] = u8(9) .. u8(n)
    for _, k in ipairs(C.sorted_keys(v)) do
      local ek, ev = encode_key(k), encode_value(v[k])
      if not ek or not ev then return nil end
      parts[#parts + 1] = ek .. ev
    end
  end
  return table.concat(parts)
end

---------------------------------------------------------------------------
-- writing
---------------------------------------------------------------------------

local counts, written = {}, {}

local function put(h, name, bytes)
  local dir = OUT .. "/seeds/" .. h
  if not written[h] then mkdir(dir); written[h] = true end
  counts[h] = (counts[h] or 0) + 1
  local fname = string.format("%s/%04d-%s", dir, counts[h], (name:gsub("[^%w%-_.]", "_")):sub(1, 60))
  local f = assert(io.open(fname, "wb"))
  f:write(bytes)
  f:close()
end

local function copy(t)
  if type(t) ~= "table" then return t end
  local out = {}
  for k, v in pairs(t) do out[k] = copy(v) end
  return setmetatable(out, getmetatable(t))
end

local function equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= a and b ~= b then return true end -- NaN
    return a == b and math.type(a) == math.type(b)
  end
  if getmetatable(a) ~= getmetatable(b) then return false end
  for k, x in pairs(a) do if not equal(x, rawget(b, k)) then return false end end
  for k in pairs(b) do if rawget(a, k) == nil then return false end end
  return true
end

---------------------------------------------------------------------------
-- prepare: boundary cases of every body, from the schema
---------------------------------------------------------------------------

local SAMPLE_BAD = {
  partner_id = { "short", string.rep("p", 65), "partner-identifier-\1-01", string.rep("p", 15),
    "  " .. string.rep("p", 16) .. "  " },
  uuid = { "not-a-uuid", "2b8108d8-30fc-4c62-9b93-07ee1f8b845", "2b8108d8x30fc-4c62-9b93-07ee1f8b8455" },
  idempotency_key = { "not-a-uuid", C.UUID:upper() },
  micro = { "0", "-5", "1.5", "05", " 5", "1e6", "9223372036854775808", "9223372036854775807", 0, -1,
    math.maxinteger, 1.5 },
  timestamp = { "2026-02-30T00:00:00Z", "2026-05-04T14:32:01+00:00", "2026-05-04", "2026-05-04T24:00:00Z",
    "2024-02-29T00:00:00Z", "2026-05-04T14:32:01.123456789Z", "2026-05-04T14:32:01.1234567890Z" },
  email = { "ada", "ada@", "@example.org", "ada@example", "a b@example.org", "ada@-example.org",
    "ada@example..org", "ada@exa_mple.org", string.rep("a", 65) .. "@example.org" },
  country = { "US", "usa", "USAA", "U1A" },
  ticker = { "aapl", "", "ABCDEFGHIJK", "AA PL", "BRK.B" },
  ein = { "12345678", "123-456789", "12-3456789x" },
  enum = { "Nope", "", "Community" },
  number = { 0, -1, 0.5, 0 / 0, 1 / 0, -0.0, math.maxinteger },
  string = { "", "\192\128", "\0", "line\nbreak" },
}

local function field_cases(f, path, out)
  local t = f[2]
  local function add(label, value, absent)
    out[#out + 1] = { label = table.concat(path, ".") .. "-" .. label, path = path, value = value, absent = absent }
  end
  add("absent", nil, true)
  add("null", null)
  add("wrongtype", t == "string" and { 1 } or (t == "bool" and "yes" or (t == "number" and "1" or true)))
  if t == "string" and f.max then
    add("max", string.rep("\195\169", f.max[1]))
    add("max+1", string.rep("\195\169", f.max[1] + 1))
  end
  for i, b in ipairs(SAMPLE_BAD[t] or {}) do add("bad" .. i, b) end
  if t == "array" then
    add("empty", setmetatable({}, core.array_mt))
  end
end

local function walk(name, path, out)
  local obj = schema.objects[name]
  if obj.any then
    -- 255 and 256 repetitions of a 64-byte fragment: just under and just over the size cap
    local piece = string.rep("p", 64)
    local under = string.rep(piece, (obj.max_bytes[1] - 64) // 64)
    out[#out + 1] = { label = "notes-at-cap", path = { "notes" }, value = under }
    out[#out + 1] = { label = "notes-over-cap", path = { "notes" }, value = string.rep(piece, obj.max_bytes[1] // 64) }
    out[#out + 1] = { label = "contact", path = { "contact" }, value = { email = "a@b.org" } }
    out[#out + 1] = { label = "name-absent", path = { "name" }, absent = true }
    return
  end
  for _, f in ipairs(obj) do
    local p = { table.unpack(path) }
    p[#p + 1] = f[1]
    field_cases(f, p, out)
    if f.object then walk(f.object, p, out) end
    if f.item and f.item.object then
      local ip = { table.unpack(p) }
      ip[#ip + 1] = 1
      walk(f.item.object, ip, out)
    end
    if f.items then
      out[#out + 1] = { label = table.concat(p, ".") .. "-too-many", path = p, repeat_to = f.items[2] + 1 }
      out[#out + 1] = { label = table.concat(p, ".") .. "-at-max", path = p, repeat_to = f.items[2] }
    end
  end
  if obj.one_of then
    out[#out + 1] = { label = table.concat(path, ".") .. "-one-of", path = path, one_of = obj.one_of }
  end
  for _, r in ipairs(obj.when or {}) do
    for _, need in ipairs(r.require) do
      local p = { table.unpack(path) }
      p[#p + 1] = need
      out[#out + 1] = { label = table.concat(p, ".") .. "-absent-when", path = p, absent = true }
    end
  end
  local p = { table.unpack(path) }
  p[#p + 1] = "unknownField"
  out[#out + 1] = { label = table.concat(p, ".") .. "-unknown", path = p, value = "x" }
end

local function apply(body, case)
  local t = body
  for i = 1, #case.path - 1 do t = t[case.path[i]] end
  local last = case.path[#case.path]
  if case.one_of then
    local target = #case.path > 0 and t[last] or body
    for _, k in ipairs(case.one_of.fields) do target[k] = null end
  elseif case.repeat_to then
    local arr = t[last]
    for i = #arr + 1, case.repeat_to do arr[i] = copy(arr[1]) end
  elseif case.absent then
    t[last] = nil
  else
    t[last] = copy(case.value)
  end
  return body
end

-- The edit grammar (C.edit): steps, one key index per step, then an action.
local function edit_bytes(body, path, action_bytes)
  local parts = { u8(#path - 1) }
  local cur = body
  for _, k in ipairs(path) do
    local ks = C.sorted_keys(cur)
    local idx
    for i, x in ipairs(ks) do if x == k then idx = i end end
    if not idx then return nil end
    parts[#parts + 1] = u8(idx - 1)
    cur = cur[k]
  end
  parts[#parts + 1] = action_bytes
  return table.concat(parts)
end

local function decode_body(bytes, op)
  local r = C.reader(bytes)
  return C.body(r, op)
end

local mismatches = 0

-- flags: 0 default mode, 2 strict (bit 0 clear: an opts table is passed)
local function prepare_seed(opi, op, label, body, base)
  local enc = encode_value(body)
  local body_bytes
  if enc then
    body_bytes = u8(3) .. enc
  elseif base then
    body_bytes = base -- the template-mode encoding the caller built
  end
  if not body_bytes then
    io.stderr:write("gen_seeds: prepare seed ", op, " ", label, " cannot be written in the decoder's grammar\n")
    return
  end
  if not equal(decode_body(body_bytes, op), body) then
    mismatches = mismatches + 1
    io.stderr:write("gen_seeds: prepare seed ", op, " ", label, " does not decode to its body\n")
    return
  end
  for _, flags in ipairs({ 0, 2 }) do
    put("prepare", op .. "-" .. label .. (flags == 2 and "-strict" or ""), u8(opi - 1) .. u8(flags) .. body_bytes)
  end
end

for opi, op in ipairs(C.OPS) do
  local bodyname = schema.operations[op].body
  local base = C.sample_object(bodyname)
  prepare_seed(opi, op, "sample", copy(base), u8(0))
  -- keys in opts: a valid one, another one, the body's in upper case
  for _, flags in ipairs({ 4, 8, 12, 16 + 4, 1 }) do
    put("prepare", op .. "-opts" .. flags, u8(opi - 1) .. u8(flags) .. u8(0))
  end
  local cases = {}
  walk(bodyname, {}, cases)
  for _, case in ipairs(cases) do
    local body = apply(copy(base), case)
    local template
    if case.repeat_to then
      -- action 6 of C.edit: append copies of the last item
      template = edit_bytes(base, case.path, u8(6) .. u8(case.repeat_to - 1))
      template = template and (u8(0) .. template)
    elseif case.absent and #case.path > 0 then
      template = edit_bytes(base, case.path, u8(0))
      template = template and (u8(0) .. template)
    end
    prepare_seed(opi, op, case.label, body, template)
  end
end

-- More broken guesses than info.warnings holds (16): 20 grants without a destination.
do
  local op = "submit_grant"
  local opi
  for i, o in ipairs(C.OPS) do if o == op then opi = i end end
  local base = C.sample_object(schema.operations[op].body)
  local body = copy(base)
  local g = body.grants[1]
  g.destinationOrgId, g.destinationSubprojectId = null, null
  for i = 2, 20 do body.grants[i] = g end
  local steps = {}
  local cur = copy(base)
  steps[#steps + 1] = edit_bytes(cur, { "grants", 1, "destinationOrgId" }, u8(1))
  cur.grants[1].destinationOrgId = null
  steps[#steps + 1] = edit_bytes(cur, { "grants", 1, "destinationSubprojectId" }, u8(1))
  cur.grants[1].destinationSubprojectId = null
  steps[#steps + 1] = edit_bytes(cur, { "grants" }, u8(6) .. u8(19))
  local bytes = u8(0) .. table.concat(steps)
  prepare_seed(opi, op, "twenty-warnings", body, bytes)
end

---------------------------------------------------------------------------
-- encode
---------------------------------------------------------------------------

local function nest(depth, leaf, arr)
  local v = leaf
  for _ = 1, depth - 1 do v = arr and setmetatable({ v }, core.array_mt) or { a = v } end
  return v
end

local encode_values = {
  { "null", null }, { "true", true }, { "int-max", math.maxinteger }, { "int-min", math.mininteger },
  { "2p53plus1", 9007199254740993 }, { "float", 150.75 }, { "neg-zero", -0.0 }, { "nan", 0 / 0 },
  { "inf", 1 / 0 }, { "tiny", 5e-324 }, { "huge", 1e300 },
  { "string-escapes", "\"\\\n\r\t\b\f\0\31\127/" }, { "utf8", "\195\169\226\130\172\240\159\146\176" },
  { "bad-utf8", "\192\128" }, { "surrogate", "\237\160\128" }, { "above-max", "\244\144\128\128" },
  { "truncated", "\226\130" }, { "empty-object", {} }, { "empty-array", setmetatable({}, core.array_mt) },
  { "array", { 1, 2, 3 } }, { "sparse", { [1] = 1, [3] = 3 } }, { "mixed", { 1, a = 2 } },
  { "array-mt-string-key", setmetatable({ a = 1 }, core.array_mt) }, { "float-key", { [1.5] = 1 } },
  { "bool-key", { [true] = 1 } }, { "zero-key", { [0] = 1 } }, { "bad-key", { ["\192\128"] = 1 } },
  { "depth-64", nest(64, 1, true) }, { "depth-65", nest(65, 1, true) }, { "depth-64-obj", nest(64, "x") },
}
for _, name in ipairs(C.OBJECT_NAMES) do
  encode_values[#encode_values + 1] = { "sample-" .. name, C.sample_object(name) }
end
for _, ev in ipairs(encode_values) do
  local name, v = ev[1], ev[2]
  local enc = encode_value(v)
  if name:find("^depth") then
    -- deeper than encode_value writes in one go: nested arrays/objects of one item
    local parts = {}
    local d = tonumber(name:match("%d+"))
    for _ = 1, d - 1 do parts[#parts + 1] = name:find("obj") and (u8(9) .. u8(1) .. u8(NAME_INDEX.name or 0))
      or (u8(10 + 128) .. u8(1)) end
    parts[#parts + 1] = u8(3) .. u8(129)
    enc = table.concat(parts)
  end
  if enc then put("encode", name, enc) end
end
-- a cycle: an object whose value is the object itself (tag 14)
put("encode", "cycle", u8(9) .. u8(1) .. u8(NAME_INDEX.name or 0) .. u8(14))

---------------------------------------------------------------------------
-- money, ids, headers, utf8, derive
---------------------------------------------------------------------------

local money_strings = { "0", "1", "05", "00", "1000000", "125500000", "9223372036854775807", "9223372036854775808",
  "18446744073709551616", "-5", "1.5", "1e6", " 5", "", "125.50", "125.5", "125", "0.000001", "0.0000001",
  "9223372036854.775807", "9223372036854.775808", "9223372036854", "9223372036855", "0000000000000009223372036854.1",
  "12.", ".5", "1.1234567", "1,5", "\0" }
for i, s in ipairs(money_strings) do put("money", "str" .. i, u8(0) .. s) end
for i, n in ipairs({ 0, 1, -1, 9223372036854, 9223372036855, math.maxinteger, math.mininteger, 1000000 }) do
  put("money", "int" .. i, u8(2) .. string.pack("<i8", n))
end
for i, d in ipairs({ 0.0, 1.5, -0.0, 1e300, 0 / 0, 2 ^ 53 }) do
  put("money", "float" .. i, u8(4) .. string.pack("<d", d))
end
for i = 0, 8 do put("money", "odd" .. i, u8(6) .. u8(i)) end

local id_strings = { C.UUID, C.UUID:upper(), "00000000-0000-0000-0000-000000000000", C.UUID .. "0", C.UUID:sub(2),
  "user-0001-abcdefgh", "  user-0001-abcdefgh  ", string.rep("p", 15), string.rep("p", 16), string.rep("p", 64),
  string.rep("p", 65), "\t550e8400-e29b-41d4-a716-446655440000\n",
  "2026-05-04T14:32:01Z", "2026-05-04T14:32:01.000Z", "2024-02-29T00:00:00Z", "2026-02-29T00:00:00Z",
  "2000-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-05-04T14:32:01.123456789Z", "2026-05-04T14:32:01.Z",
  "2026-05-04T24:00:00Z", "2026-05-04T23:60:00Z", "2026-05-04T23:59:60Z", "2026-00-10T00:00:00Z",
  "2026-05-04T14:32:01+00:00", "2026-05-04T14:32:01-05:00",
  "ada@example.org", "a@b.co", "ada@example", "ada@-example.org", "ada@example-.org", "ada@example..org",
  "ada@.example.org", "ada@example.org.", "a b@example.org", "a@b@example.org", "@example.org", "ada@",
  string.rep("a", 64) .. "@example.org", string.rep("a", 65) .. "@example.org",
  "ada@" .. string.rep("d", 63) .. ".org", "ada@" .. string.rep("d", 64) .. ".org",
  "a@" .. string.rep("d.", 126) .. "org",
  "12-3456789", "123456789", "12345678", "1234567890", "123-456789", "12-345678x" }
for i, s in ipairs(id_strings) do put("ids", "s" .. i, u8(0) .. s) end
put("ids", "ws", u8(2) .. u8(0) .. u8(1) .. string.rep("p", 16))
for i = 0, 4 do put("ids", "odd" .. i, u8(5) .. u8(i)) end

local header_strings = { "", "Content-Type", "x-endaoment-user-id", "a b", "a:b", "application/json",
  "value\twith tab", "bad\r\nInjected: 1", "nul\0byte", "del\127", "!#$%&'*+-.^_`|~", "\195\169", "Bearer abc" }
for i, s in ipairs(header_strings) do put("headers", "s" .. i, u8(0) .. s) end
for i = 0, 4 do put("headers", "odd" .. i, u8(3) .. u8(i)) end

local utf8_strings = { "", "a", "\194\128", "\223\191", "\224\160\128", "\224\159\191", "\237\159\191",
  "\237\160\128", "\239\191\191", "\240\144\128\128", "\240\143\191\191", "\244\143\191\191", "\244\144\128\128",
  "\192\128", "\193\191", "\245\128\128\128", "\255", "\128", "\226\130", "a\226\130\172b", "\239\187\191x" }
for i, s in ipairs(utf8_strings) do put("utf8", "s" .. i, s) end

local natural = { "ledger-42", "x", string.rep("n", 1024), string.rep("n", 1025), "nul\0id", "", "\195\169" }
for i, nat in ipairs(natural) do
  for _, nb in ipairs({ 0, 1, 2 }) do put("derive", "nat" .. i .. "-ns" .. nb, u8(nb) .. u8(0) .. nat) end
end
for ob = 0, 12 do put("derive", "op" .. ob, u8(0) .. u8(ob) .. "ledger-42") end
put("derive", "ns-raw", u8(3) .. u8(0) .. C.UUID .. "ledger-42")
put("derive", "ns-bad", u8(4) .. u8(0) .. u8(0) .. "ledger-42")
for _, len in ipairs({ 55, 56, 63, 64, 65, 119, 120 }) do
  put("derive", "pad" .. len, u8(0) .. u8(0) .. string.rep("p", len))
end
put("derive", "near-1024", u8(0xF1) .. u8(0) .. "abcd")

---------------------------------------------------------------------------
-- decode: answers as the API writes them, and each grammar edge
---------------------------------------------------------------------------

local json_texts = {
  answer = '{"id":"5eed0007-0000-4000-8000-000000000007","status":"Accepted","grants":[{"asyncGrantTransferId":' ..
    '"5eed0009-0000-4000-8000-000000000009","hideMyInfoFromOrg":false,"destinationSubprojectId":null,' ..
    '"amountMicroDollars":"1000000"}],"inboundCustodianTransfer":{"status":"ReportedSettled"}}',
  error = '{"statusCode":422,"message":["grants.0.amountMicroDollars must be a numeric string"],' ..
    '"error":"Unprocessable Entity"}',
  page = '[{"id":"a","name":"Food Bank \\u00e9\\ud83d\\ude00","ein":"12-3456789"},{"id":"b"}]',
  numbers = "[0,-0,1.5,-2.5e-3,1E+2,123456789012345,1234567890123456,9007199254740993,1e400]",
  escapes = '"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\u20AC"',
  spaced = ' \t\r\n{ "a" : [ true , false , null ] }\n',
  wide = "[" .. string.rep("1,", 40) .. "1]",
  deep = string.rep("[", 20) .. string.rep("]", 20),
  bad_surrogate = '"\\ud800"', bad_number = "01", bad_comma = "[1,]", bad_control = '"a\tb"',
}
for _, name in ipairs(C.sorted_keys(json_texts)) do put("decode", name, json_texts[name]) end

---------------------------------------------------------------------------
-- curl
---------------------------------------------------------------------------

local function raw_response(name, text, cfg)
  put("curl", "raw-" .. name, u8(0) .. u8(cfg or 3) .. u8(0) .. text)
end
raw_response("ok", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
raw_response("chunked", "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Request-Id: r1\r\n\r\n" ..
  "2\r\n{}\r\n0\r\n\r\n")
raw_response("close", "HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nbody until close")
raw_response("continue", "HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\nHTTP/1.1 200 OK\r\nX-Final: 2\r\n" ..
  "Content-Length: 0\r\n\r\n")
raw_response("obs-fold", "HTTP/1.1 200 OK\r\nX-Long: first\r\n  second\r\n\tthird\r\nContent-Length: 0\r\n\r\n")
raw_response("odd-fields", "HTTP/1.1 200 OK\r\nNoColon\r\n: empty-name\r\nSpace :before\r\nX-Empty:\r\n" ..
  "X-Ws:   \t padded \t \r\nUPPER-Case: V\r\nContent-Length: 0\r\n\r\n")
raw_response("http10", "HTTP/1.0 404 Not Found\r\nContent-Length: 3\r\n\r\nnot")
raw_response("too-big-cl", "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\nx", 0)
raw_response("bad-status", "HTTP/1.1 abc OK\r\n\r\n")
raw_response("http09", "just a body")
raw_response("lf-only", "HTTP/1.1 200 OK\nX-A: b\nContent-Length: 1\n\nx")
raw_response("crlf-mode", "HTTP/1.1 200 OK\nX-A: b\nContent-Length: 1\n\nx")
for sel = 0, 5 do
  -- structured: mode 3, config sel, status, framing, interim, pad, body selector, fields...
  for _, framing in ipairs({ 0, 1, 2 }) do
    put("curl", ("struct-cfg%d-fr%d"):format(sel, framing), u8(3) .. u8(sel) .. u8(0) .. u8(framing) .. u8(0) ..
      u8(0) .. u8(2) .. u8(1) .. u8(0) .. u8(1) .. u8(5) .. "abcde" .. u8(1) .. u8(1) .. u8(2) .. u8(3) .. u8(0))
  end
end
put("curl", "struct-pad", u8(3) .. u8(3) .. u8(0) .. u8(0) .. u8(3) .. u8(0xC4) .. u8(2) .. u8(0))
put("curl", "struct-pad-over", u8(3) .. u8(3) .. u8(0) .. u8(1) .. u8(1) .. u8(0xC8) .. u8(3) .. u8(0))
for i, u in ipairs({ "http://127.0.0.1:9/x", "https://api.endaoment.org/v1", "http://localhost/", "http://LOCALHOST:1/",
  "http://[::1]:8080/", "http://127.1/", "http://0x7f.1/", "http://2130706433/", "http://127.0.0.1.evil.com/",
  "http://128.0.0.1/", "ftp://127.0.0.1/", "http://user@127.0.0.1/", "https://[::1", "HTTP://127.0.0.1/",
  "http://0177.0.0.1/", "http://127.000.0.1/" }) do
  put("curl", "url" .. i, u8(2) .. u8(i % 2) .. u)
end

---------------------------------------------------------------------------
-- dictionaries: fuzz/dict/<h>.dict plus the schema's field names
---------------------------------------------------------------------------

mkdir(OUT .. "/dict")
local function dict_escape(s)
  return (s:gsub("[^%w %-_.:/@]", function(c) return string.format("\\x%02X", c:byte()) end))
end
for _, h in ipairs({ "prepare", "encode", "money", "ids", "headers", "utf8", "derive", "decode", "curl" }) do
  local lines = {}
  local f = io.open(HERE .. "/dict/" .. h .. ".dict", "rb")
  if f then
    lines[1] = f:read("a")
    f:close()
  end
  if h == "prepare" or h == "encode" then
    lines[#lines + 1] = "# field names of lua/endaoment/partner/schema.lua (generated)"
    for _, n in ipairs(C.NAMES) do
      if #n > 0 then lines[#lines + 1] = '"' .. dict_escape(n) .. '"' end
    end
  end
  local out = assert(io.open(OUT .. "/dict/" .. h .. ".dict", "wb"))
  out:write(table.concat(lines, "\n"), "\n")
  out:close()
end

local summary = {}
for _, h in ipairs({ "prepare", "encode", "money", "ids", "headers", "utf8", "derive", "decode", "curl" }) do
  summary[#summary + 1] = h .. "=" .. (counts[h] or 0)
end
print("gen_seeds: " .. table.concat(summary, " ") .. " -> " .. OUT .. "/seeds")
if mismatches > 0 then
  io.stderr:write("gen_seeds: ", mismatches, " seeds did not decode to their bodies\n")
  os.exit(1)
end
