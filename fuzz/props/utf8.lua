-- Harness "utf8": core.utf8_len, and the same bytes through core.encode.
--
-- Properties:
--   * utf8_len never raises;
--   * it accepts exactly the valid UTF-8 of Unicode table 3-7 (no overlongs,
--     no surrogates, nothing above U+10FFFF, no truncated sequences), checked
--     against an independent decoder and against Lua 5.4's strict utf8.len,
--     and counts the same characters;
--   * a refusal names the 1-based position and value of the first bad byte,
--     the same position as both references;
--   * core.encode accepts the string exactly when it is valid, and the JSON
--     decodes back to the same bytes.
local C = require "props.common"

local core = C.core
local check = C.check

return function(data)
  local s = data
  local ok, n, msg = pcall(core.utf8_len, s)
  check(ok, "utf8_len raised", s, n)
  local want, bad = C.utf8_count(s)
  local lua_n, lua_bad = utf8.len(s)
  check(want == lua_n and (want ~= nil or bad == lua_bad), "the two reference decoders disagree", s, want, bad,
    lua_n, lua_bad)
  if want then
    check(n == want, "utf8_len counted wrong", s, n, want)
  else
    check(n == nil, "utf8_len accepted invalid UTF-8", s, n, bad)
    check(C.printable(msg), "utf8_len refusal is not printable", msg)
    local at = tonumber(msg:match("at byte (%d+)"))
    check(at == bad, "utf8_len reports the wrong position", s, msg, bad)
    local byte = tonumber(msg:match("invalid byte 0x(%x%x)"), 16)
    check(byte == s:byte(bad), "utf8_len reports the wrong byte", s, msg)
  end
  local json, err = core.encode(s)
  if want then
    check(json ~= nil, "encode refused valid UTF-8", s, err)
    local dec = C.decode_json(json, "encode")
    check(dec == s, "encode/decode changed the string", s, dec)
  else
    check(json == nil, "encode accepted invalid UTF-8", s, json)
    C.check_error(err, "encode")
  end
end
