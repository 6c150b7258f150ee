-- Harness "derive": core.sha256_hex and core.derive_key (docs/derived-keys.md).
--
-- Input: byte 1 picks the namespace (valid in lower, upper or mixed case, or
-- raw bytes), byte 2 the operation name (real ones, bad ones, raw bytes), the
-- rest is the natural id.
--
-- Properties:
--   * sha256_hex equals an independent SHA-256 (fuzz/props/sha256.lua) for
--     every input, including lengths around the 55/56/64-byte padding edges;
--   * derive_key accepts exactly: a UUID namespace (any case), an operation of
--     a-z, 0-9 and _ (non-empty), a natural id of 1-1024 bytes without NUL;
--     anything else raises an argument error naming the argument;
--   * a derived key is a strict lowercase RFC 4122 version-4 UUID, equal to
--     SHA-256(lower(namespace) ":" op ":" natural_id) stamped as v4, the same
--     whatever the namespace's case, and the same on every call.
local C = require "props.common"
local sha256 = require "props.sha256"

local core = C.core
local check = C.check

local OPS = { "record_cash_donation", "record_stock_donation", "submit_grant", "create_async_grant", "a", "_",
  "0", "", "Submit", "submit-grant", "op\0", "op name", "\195\169" }

local function stamp(hex)
  local b7 = tonumber(hex:sub(13, 14), 16)
  local b9 = tonumber(hex:sub(17, 18), 16)
  local h = hex:sub(1, 12) .. string.format("%02x", (b7 & 0x0f) | 0x40) .. hex:sub(15, 16) ..
    string.format("%02x", (b9 & 0x3f) | 0x80) .. hex:sub(19, 32)
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" .. h:sub(17, 20) .. "-" .. h:sub(21, 32)
end

local function mixed_case(s)
  local i = 0
  return (s:gsub("%a", function(c) i = i + 1; return i % 2 == 0 and c:upper() or c end))
end

return function(data)
  local r = C.reader(data)
  local nb, ob = r:byte(), r:byte()
  local ns
  if nb % 5 == 0 then ns = C.UUID
  elseif nb % 5 == 1 then ns = C.UUID:upper()
  elseif nb % 5 == 2 then ns = mixed_case(core.DEFAULT_KEY_NAMESPACE)
  elseif nb % 5 == 3 then ns = r:bytes(36)
  else ns = C.FRAGMENTS[r:byte() % #C.FRAGMENTS + 1] end
  local op
  if ob < 0xF0 then op = OPS[ob % #OPS + 1] else op = r:bytes(r:byte() % 40) end
  local nat = r:rest()
  if nb >= 0xF0 then nat = string.rep(nat ~= "" and nat or "n", 1024 // math.max(#nat, 1) + (nb & 3) - 1) end

  -- sha256_hex against the reference, on the natural id and on the key's preimage
  local hex = core.sha256_hex(nat)
  check(hex == sha256(nat), "sha256_hex differs from the reference", nat, hex)

  local want = C.is_uuid(ns) and #op > 0 and not op:find("[^a-z0-9_]") and #nat >= 1 and #nat <= 1024 and
    not nat:find("\0", 1, true)
  local ok, key = pcall(core.derive_key, ns, op, nat)
  if not want then
    check(not ok, "derive_key accepted bad arguments", ns, op, nat, key)
    check(type(key) == "string" and key:find("bad argument #%d"), "derive_key error does not name the argument", key)
    return
  end
  check(ok, "derive_key refused good arguments", ns, op, nat, key)
  check(type(key) == "string" and key:find(C.V4_PATTERN), "derived key is not a strict lowercase v4 UUID", key)
  local pre = ns:lower() .. ":" .. op .. ":" .. nat
  local phex = core.sha256_hex(pre)
  check(phex == sha256(pre), "sha256_hex differs from the reference", pre, phex)
  check(key == stamp(phex), "derived key is not SHA-256(ns:op:id) stamped as v4", key, stamp(phex))
  check(core.derive_key(ns:upper(), op, nat) == key and core.derive_key(ns:lower(), op, nat) == key,
    "the namespace's case changed the key", ns)
  check(core.derive_key(ns, op, nat) == key, "derive_key is not deterministic", ns, op, nat)
end
