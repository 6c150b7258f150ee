-- Harness "encode": core.encode, the generic JSON encoder, on any value the
-- structured decoder builds (nested tables, array_mt, odd keys, cycles,
-- integers at the int64 limits, NaN and infinities, invalid UTF-8).
--
-- Properties:
--   * core.encode never raises;
--   * it accepts exactly what a model of its documented rules accepts:
--     strings (values and keys) valid UTF-8, finite numbers, booleans, nil and
--     null, tables that are either arrays with keys 1..n or objects with
--     string keys (array_mt: an array, no string keys), at most 64 tables deep;
--   * accepted output is compact, valid UTF-8, valid JSON, and decodes to the
--     same value (integers beyond 2^53 written with their exact digits);
--   * a refusal is a core.Error of kind "invalid" naming the value's path;
--   * the value is not modified;
--   * (in the C harness) with the core's k-th buffer allocation failing,
--     encode returns the same JSON or an "oom" error, and then works again.
local C = require "props.common"

local core = C.core
local check = C.check

local MAX_DEPTH = 64

-- Whether core.encode must accept v (the model; see the header).
local function encodable(v, depth)
  local t = type(v)
  if t == "string" then return C.utf8_count(v) ~= nil end
  if t == "number" then return math.type(v) == "integer" or (v == v and v ~= 1 / 0 and v ~= -1 / 0) end
  if t == "boolean" or t == "nil" then return true end
  if v == core.null then return true end
  if t ~= "table" then return false end
  if depth + 1 > MAX_DEPTH then return false end
  local arr_mt = getmetatable(v) == core.array_mt
  local nstr, nint, maxk = 0, 0, 0
  for k in pairs(v) do
    if type(k) == "string" then
      if C.utf8_count(k) == nil then return false end
      nstr = nstr + 1
    elseif math.type(k) == "integer" and k >= 1 then
      nint = nint + 1
      if k > maxk then maxk = k end
    else
      return false
    end
  end
  if nstr > 0 and (nint > 0 or arr_mt) then return false end
  if nint ~= maxk then return false end
  for _, x in pairs(v) do
    if not encodable(x, depth + 1) then return false end
  end
  return true
end

local function snapshot(v, memo)
  if type(v) ~= "table" then return v end
  memo = memo or {}
  if memo[v] then return memo[v] end
  local t = {}
  memo[v] = t
  for k, x in pairs(v) do t[k] = snapshot(x, memo) end
  return setmetatable(t, getmetatable(v))
end

local function equal(a, b, memo)
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= a and b ~= b then return true end
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

return function(data)
  local r = C.reader(data)
  local v = C.value(r, 0, nil)
  -- a second value under a key, so objects with odd top-level shapes occur too
  if r:left() > 0 and type(v) == "table" and getmetatable(v) ~= core.array_mt then
    v[r:byte() % 2 == 0 and "extra" or 1] = C.value(r, 1, v)
  end
  local before = snapshot(v)
  local ok, json, err = pcall(core.encode, v)
  check(ok, "encode raised", json)
  if #data % 5 == 2 then
    local ran, j2, e2 = C.with_failing_alloc(#data % 3, function() return core.encode(v) end)
    if ran then
      if j2 == nil and e2.kind == "oom" then
        C.check_oom(e2, "encode")
      else
        check(j2 == json, "an allocation failure changed the result", json, j2, e2)
      end
      check(core.encode(v) == json, "encode differs after an allocation failure")
    end
  end
  check(equal(before, v), "encode modified its argument", before, v)
  local want = encodable(v, 0)
  if json == nil then
    check(not want, "encode refused an encodable value", v, err)
    C.check_error(err, "encode")
    return
  end
  check(want, "encode accepted a value the model refuses", v, json)
  check(err == nil, "encode returned a second value on success", err)
  local dec = C.decode_json(json, "encode")
  C.check_same(dec, v, json, "encode")
  -- A second encode of the decoded value is accepted (JSON in, JSON out).
  local json2 = core.encode(dec)
  check(json2 ~= nil, "the decoded value does not encode", json)
  C.check_same(C.decode_json(json2, "re-encode"), dec, json2, "re-encode")
end
