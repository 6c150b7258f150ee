-- Shared by the property scripts of the fuzz harnesses (fuzz/props/*.lua).
--
-- Each harness script returns function(bytes): it turns the fuzzer's bytes
-- into arguments for endaoment.partner.core, calls it, and checks properties.
-- A broken property raises a Lua error; the C harness (fuzz/harness/
-- lua_harness.c) then aborts, which libFuzzer records as a crash. The same
-- scripts run under busted (spec/fuzz_replay_spec.lua) against the normal build.
--
-- Lua 5.4 only (string.pack, integer division, utf8): the harness embeds 5.4.
local core = require "endaoment.partner.core"
local cjson_mod = require "cjson"
local schema = require "endaoment.partner.schema"

local M = {}

M.core = core
M.schema = schema
M.null = core.null

-- A strict decoder of its own: no "nan", "inf" or hex numbers.
local cjson = cjson_mod.new()
cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(1000)
M.cjson = cjson

local INT53 = 9007199254740992 -- 2^53

---------------------------------------------------------------------------
-- failures
---------------------------------------------------------------------------

local function show(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "string" then return string.format("%q", #v > 80 and v:sub(1, 80) .. "..." or v) end
  if v == core.null then return "null" end
  if t ~= "table" then return tostring(v) .. (math.type(v) == "float" and "(f)" or "") end
  if depth > 3 then return "{...}" end
  local parts, n = {}, 0
  for k, x in pairs(v) do
    n = n + 1
    if n > 12 then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = "[" .. show(k, depth + 1) .. "]=" .. show(x, depth + 1)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end
M.show = show

-- A broken property: error() with a message that names it.
function M.fail(what, ...)
  local parts = { "PROPERTY: " .. what }
  for i = 1, select("#", ...) do parts[#parts + 1] = show((select(i, ...))) end
  error(table.concat(parts, " | "), 2)
end

function M.check(cond, what, ...)
  if not cond then M.fail(what, ...) end
end

-- Messages and field paths end up in logs: one line of printable ASCII.
function M.printable(s)
  return type(s) == "string" and not s:find("[^\32-\126]")
end

---------------------------------------------------------------------------
-- oracles used by several harnesses
---------------------------------------------------------------------------

-- Unicode table 3-7, written out independently of the C core and of Lua's utf8
-- library. Returns the number of characters, or nil and the 1-based byte
-- position where the first invalid sequence starts.
function M.utf8_count(s)
  local i, n, len = 1, 0, #s
  while i <= len do
    local c = s:byte(i)
    local need, lo, hi
    if c < 0x80 then need = 0
    elseif c >= 0xC2 and c <= 0xDF then need, lo, hi = 1, 0x80, 0xBF
    elseif c == 0xE0 then need, lo, hi = 2, 0xA0, 0xBF
    elseif (c >= 0xE1 and c <= 0xEC) or c == 0xEE or c == 0xEF then need, lo, hi = 2, 0x80, 0xBF
    elseif c == 0xED then need, lo, hi = 2, 0x80, 0x9F
    elseif c == 0xF0 then need, lo, hi = 3, 0x90, 0xBF
    elseif c >= 0xF1 and c <= 0xF3 then need, lo, hi = 3, 0x80, 0xBF
    elseif c == 0xF4 then need, lo, hi = 3, 0x80, 0x8F
    else return nil, i end
    if need > 0 then
      if i + need > len then return nil, i end
      local b = s:byte(i + 1)
      if b < lo or b > hi then return nil, i end
      for k = 2, need do
        local x = s:byte(i + k)
        if x < 0x80 or x > 0xBF then return nil, i end
      end
    end
    i = i + need + 1
    n = n + 1
  end
  return n
end

M.UUID_PATTERN = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
M.V4_PATTERN = "^[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]%-" ..
  "[0-9a-f][0-9a-f][0-9a-f][0-9a-f]%-4[0-9a-f][0-9a-f][0-9a-f]%-[89ab][0-9a-f][0-9a-f][0-9a-f]%-" ..
  "[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]$"

function M.is_uuid(s)
  return type(s) == "string" and #s == 36 and s:find(M.UUID_PATTERN) ~= nil
end

function M.trim(s)
  return (s:gsub("^[ \t\n\r\v\f]+", ""):gsub("[ \t\n\r\v\f]+$", ""))
end

-- Trimmed, then 16-64 bytes of printable ASCII: the trimmed value, or nil.
function M.partner_id(s)
  if type(s) ~= "string" then return nil end
  local t = M.trim(s)
  if #t < 16 or #t > 64 or t:find("[^\32-\126]") then return nil end
  return t
end

---------------------------------------------------------------------------
-- JSON: decode what the core wrote, compare with what was meant
---------------------------------------------------------------------------

-- The core writes compact JSON: every control byte escaped, valid UTF-8.
function M.decode_json(json, what)
  M.check(type(json) == "string", what .. ": not a string", json)
  M.check(not json:find("[\0-\31]"), what .. ": raw control byte in the JSON", json)
  M.check(M.utf8_count(json) ~= nil, what .. ": JSON is not valid UTF-8", json)
  local ok, v = pcall(cjson.decode, json)
  M.check(ok, what .. ": not valid JSON (" .. tostring(v) .. ")", json)
  return v
end

-- Integers beyond 2^53 reach cjson as doubles: those are compared as the
-- nearest double, and their exact digits must be in the text (bigs).
local function same_number(d, e, bigs)
  if type(d) ~= "number" then return false end
  if math.type(e) == "integer" and (e >= INT53 or e <= -INT53) then
    if bigs then bigs[#bigs + 1] = e end
    return d == e + 0.0
  end
  return d == e
end

-- decoded (cjson) against expected (Lua): arrays and objects are both tables;
-- an empty one may be either.
function M.same(d, e, bigs, path)
  path = path or "$"
  if e == core.null or e == nil then
    if d ~= cjson_mod.null then return false, path end
    return true
  end
  local te = type(e)
  if te == "number" then
    if not same_number(d, e, bigs) then return false, path end
    return true
  end
  if te ~= "table" then
    if d ~= e then return false, path end
    return true
  end
  if type(d) ~= "table" then return false, path end
  local n = 0
  for k, x in pairs(e) do
    n = n + 1
    local ok, where = M.same(d[k], x, bigs, path .. "." .. tostring(k))
    if not ok then return false, where end
  end
  for _ in pairs(d) do n = n - 1 end
  if n ~= 0 then return false, path .. " (key count)" end
  return true
end

function M.check_same(decoded, expected, json, what)
  local bigs = {}
  local ok, where = M.same(decoded, expected, bigs)
  if not ok then M.fail(what .. ": decoded JSON differs at " .. where, json, expected) end
  for _, b in ipairs(bigs) do
    M.check(json:find(string.format("%d", b), 1, true), what .. ": integer not written exactly", b, json)
  end
end

-- A refusal from prepare/validate/encode: an Error naming a field.
function M.check_error(err, what)
  M.check(type(err) == "table" and getmetatable(err) == core.Error, what .. ": error is not a core.Error", err)
  M.check(err.kind == "invalid", what .. ": error kind is not 'invalid'", err)
  M.check(type(err.field) == "string" and #err.field > 0, what .. ": refusal names no field", err)
  M.check(type(err.message) == "string" and #err.message > 0, what .. ": refusal has no message", err)
  M.check(err.message:sub(1, #err.field) == err.field, what .. ": message does not start with the field", err)
  M.check(M.printable(err.field) and M.printable(err.message), what .. ": field or message not printable ASCII",
    err)
  local ok, s = pcall(tostring, err)
  M.check(ok and type(s) == "string" and M.printable(s), what .. ": tostring(err) failed", err)
end

---------------------------------------------------------------------------
-- allocation failures (only inside the C harness, see lua_harness.c)
---------------------------------------------------------------------------

-- fn() with the k-th allocation of the core's buffer failing (k = 0: the
-- first). The kept encode buffer is released first (an encode larger than
-- its 256 KiB keep limit), so the call really allocates. Returns fn's
-- results, or nothing when the harness cannot fail allocations (busted).
local BIG = string.rep("x", 300 * 1024)
function M.with_failing_alloc(k, fn)
  local fail = rawget(_G, "fuzz_fail_alloc")
  if not fail then return false end
  core.encode(BIG)
  fail(k)
  local res = table.pack(pcall(fn))
  fail(nil)
  M.check(res[1], "raised under an allocation failure", res[2])
  return true, table.unpack(res, 2, res.n)
end

-- An out-of-memory refusal: kind "oom", a message, no field.
function M.check_oom(err, what)
  M.check(type(err) == "table" and getmetatable(err) == core.Error, what .. ": oom error is not a core.Error", err)
  M.check(err.kind == "oom", what .. ": allocation failure reported as " .. tostring(err.kind), err)
  M.check(M.printable(err.message) and #err.message > 0, what .. ": oom error without a message", err)
end

---------------------------------------------------------------------------
-- the structured decoder: bytes -> Lua values shaped like API bodies
---------------------------------------------------------------------------

local Reader = {}
Reader.__index = Reader

function M.reader(s)
  return setmetatable({ s = s, i = 1, n = #s }, Reader)
end

function Reader:left() return self.n - self.i + 1 end

-- The next byte, or 0 once the input is used up.
function Reader:byte()
  if self.i > self.n then return 0 end
  local b = self.s:byte(self.i)
  self.i = self.i + 1
  return b
end

function Reader:bytes(k)
  local s = self.s:sub(self.i, self.i + k - 1)
  self.i = self.i + k
  return s
end

function Reader:rest()
  local s = self.s:sub(self.i)
  self.i = self.n + 1
  return s
end

function Reader:int64()
  local raw = self:bytes(8)
  raw = raw .. string.rep("\0", 8 - #raw)
  return (string.unpack("<i8", raw))
end

function Reader:double()
  local raw = self:bytes(8)
  raw = raw .. string.rep("\0", 8 - #raw)
  return (string.unpack("<d", raw))
end

-- Format fragments: valid and nearly valid pieces of every field format,
-- so a few bytes reach deep into the validators.
local UUID = "2b8108d8-30fc-4c62-9b93-07ee1f8b8455"
M.UUID = UUID
M.FRAGMENTS = {
  "", " ", "\t", "\n", "\r\n", "\0", "\"", "\\", "/", "\127", "x", "0", "1", "9", "-", ".", "@", ":", "T", "Z",
  UUID, UUID:upper(), "3c90c3cc-0d44-4b50-8888-8dd25736052a", "00000000-0000-0000-0000-000000000000",
  "2b8108d8-30fc-4c62-9b93-07ee1f8b845", "2b8108d8x30fc-4c62-9b93-07ee1f8b8455", "2b8108d8-30fc-4c62-9b93-07ee1f8b845g",
  "2026-05-04T14:32:01.000Z", "2026-05-04T14:32:01Z", "2024-02-29T00:00:00Z", "2026-02-29T00:00:00Z",
  "2026-05-04T23:59:59.123456789Z", "2026-05-04T14:32:01+00:00", "2026-13-01T00:00:00Z", "2026-05-04T24:00:00Z",
  "2000-02-29T12:00:00.5Z", "1900-02-29T00:00:00Z", "2026-05-04T14:32:01.1234567890Z", "2026-04-31T00:00:00Z",
  "ada@example.org", "a@b.co", "ada@-example.org", "ada@example..org", "ada@example", "@example.org",
  "a@b@c.org", string.rep("a", 64) .. "@example.org", string.rep("a", 65) .. "@example.org",
  "ada@" .. string.rep("d", 63) .. ".org", "ada@" .. string.rep("d", 64) .. ".org",
  "user-0001-abcdefgh", "  user-0001-abcdefgh  ", string.rep("p", 15), string.rep("p", 16), string.rep("p", 64),
  string.rep("p", 65), "\t550e8400-e29b-41d4-a716-446655440000\n", "partner-identifier-\1-01",
  "1000000", "125500000", "9223372036854775807", "9223372036854775808", "18446744073709551616", "05", "-5", "1.5",
  "1e6", " 5", "00", "125.50", "0.000001", "9223372036854.775807", "9223372036854.775808", "1.1234567", "12.",
  ".5", "0000000000000000000001.5",
  "USA", "GBR", "usa", "US", "USAA", "AAPL", "BRK.B", "ABCDEFGHIJK", "aapl", "12-3456789", "123456789",
  "123-456789", "12345678", "Private", "Transparent", "Community",
  "\195\169", "\244\143\191\191", "\226\130\172", "\240\159\146\176", "\192\128", "\237\160\128",
  "\244\144\128\128", "\226\130", "\255", "\128", "\239\187\191",
  "record_cash_donation", "submit_grant", "partner", "Bad-Op", "x-endaoment-user-id", "Content-Type",
}

-- Field names: every name the schema knows, then odd keys.
local names, seen = {}, {}
local function add_name(n)
  if not seen[n] then seen[n] = true; names[#names + 1] = n end
end
do
  local objs = {}
  for k in pairs(schema.objects) do objs[#objs + 1] = k end
  table.sort(objs)
  for _, o in ipairs(objs) do
    for _, f in ipairs(schema.objects[o]) do add_name(f[1]) end
  end
  for _, n in ipairs({ "unknownField", "name", "ein", "notes", "contact", "email", "a b", "x.y", "",
    "\0", "\195\169", "\192\128", "1", "idempotencyKey" }) do add_name(n) end
end
M.NAMES = names

-- Sample bodies built from the schema: every field present and valid.
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
  return SAMPLE[t] or "x"
end
sample_object = function(name)
  local obj = schema.objects[name]
  if obj.any then return { name = "Tiny Food Bank", ein = "12-3456789" } end
  local o = {}
  for _, f in ipairs(obj) do o[f[1]] = sample_value(f) end
  return o
end
M.sample_object = sample_object

-- The operations with a body, in schema order.
M.OPS = {}
for _, op in ipairs(schema.OPERATION_ORDER) do
  local spec = schema.operations[op]
  if spec.body then M.OPS[#M.OPS + 1] = op end
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return ks
end
M.sorted_keys = sorted_keys

local value -- forward

local function fragment(r)
  return M.FRAGMENTS[r:byte() % #M.FRAGMENTS + 1]
end

local function composed(r)
  local n = r:byte() % 8 + 1
  local parts = {}
  for i = 1, n do
    local b = r:byte()
    if b < 128 then parts[i] = fragment(r) else parts[i] = string.char(r:byte()) end
  end
  return table.concat(parts)
end

local function key(r)
  local b = r:byte()
  if b < 0xF0 then return names[b % #names + 1] end
  if b < 0xF8 then return composed(r) end
  if b == 0xF8 then return r:byte() % 6 end            -- a small integer key
  if b == 0xF9 then return (r:byte() % 8) + 0.5 end   -- a float key
  if b == 0xFA then return r:byte() % 2 == 0 end       -- a boolean key
  return fragment(r)
end

local MAX_DEPTH = 80

value = function(r, depth, parent)
  if r:left() <= 0 then return core.null end
  local b = r:byte()
  local tag = b % 16
  if tag == 0 then return core.null
  elseif tag == 1 then return false
  elseif tag == 2 then return true
  elseif tag == 3 then return r:byte() - 128                    -- a small integer
  elseif tag == 4 then return r:int64()
  elseif tag == 5 then return r:double()
  elseif tag == 6 then return r:bytes(r:byte())                -- raw bytes
  elseif tag == 7 then return fragment(r)
  elseif tag == 8 then return composed(r)
  elseif tag == 9 or tag == 10 then                            -- an object / an array
    if depth >= MAX_DEPTH then return core.null end
    local t, n = {}, r:byte() % 12
    if tag == 9 then
      for _ = 1, n do
        local k = key(r)
        t[k] = value(r, depth + 1, t)
      end
    else
      for i = 1, n do t[i] = value(r, depth + 1, t) end
      if b >= 128 then setmetatable(t, core.array_mt) end
    end
    return t
  elseif tag == 11 then                                        -- a sample body, then edits
    return M.sample_object(M.OBJECT_NAMES[r:byte() % #M.OBJECT_NAMES + 1])
  elseif tag == 12 then                                        -- long strings: max lengths
    local piece = fragment(r)
    local n = r:byte() * 4 + r:byte() % 4
    if piece == "" then piece = "a" end
    return string.rep(piece, math.min(n, 17000 // #piece))
  elseif tag == 13 then                                        -- a number near a boundary
    local c = { 0, -1, 1, math.maxinteger, math.mininteger, 0.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 2 ^ 53, 2 ^ 53 + 1.0,
      9007199254740993, 1e300, 5e-324, 150.75, 50.5, -1e-9 }
    return c[r:byte() % #c + 1]
  elseif tag == 14 then                                        -- the enclosing table: a cycle
    return parent or core.null
  else                                                         -- a string of digits
    local n = r:byte() % 24
    local d = {}
    for i = 1, n do d[i] = string.char(48 + r:byte() % 10) end
    return table.concat(d)
  end
end
M.value = value

M.OBJECT_NAMES = sorted_keys(schema.objects)

-- Edits to a body: walk a path of existing keys, then change what is there.
function M.edit(r, body)
  local parent, k = nil, nil
  local cur = body
  local steps = r:byte() % 4 + 1
  for _ = 1, steps do
    if type(cur) ~= "table" then break end
    local ks = sorted_keys(cur)
    if #ks == 0 then break end
    parent, k = cur, ks[r:byte() % #ks + 1]
    cur = parent[k]
  end
  if not parent then parent, k = body, names[r:byte() % #names + 1] end
  local action = r:byte() % 8
  if action == 0 then parent[k] = nil
  elseif action == 1 then parent[k] = core.null
  elseif action == 2 then parent[k] = value(r, 1, parent)
  elseif action == 3 then parent[k] = fragment(r)
  elseif action == 4 then parent[k] = composed(r)
  elseif action == 5 then
    local target = type(cur) == "table" and cur or parent
    target[key(r)] = value(r, 1, target)
  elseif action == 6 then
    if type(cur) == "table" then
      local n = #cur
      local copies = r:byte() % 60
      for i = 1, copies do cur[n + i] = cur[n] or value(r, 1, cur) end
    else
      parent[k] = { cur }
    end
  else
    parent[k] = value(r, 1, parent)
  end
end

-- A body: a sample of the operation's body with edits, or any value.
function M.body(r, op)
  local b = r:byte()
  if b % 4 == 3 then return value(r, 0, nil) end
  local body = sample_object(schema.operations[op].body)
  -- as many edits as the input has bytes for
  for _ = 1, 32 do
    if r:left() <= 0 then break end
    M.edit(r, body)
  end
  return body
end

return M
