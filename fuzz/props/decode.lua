-- Harness "decode": core.decode, the decoder of every API answer, on raw
-- bytes (the input is the JSON text itself).
--
-- Properties:
--   * core.decode never raises on a string;
--   * it accepts exactly what a strict RFC 8259 recognizer written from the
--     grammar accepts (fuzz/props/json_model.lua), up to 1000 nested levels;
--   * what it accepts decodes to lua-cjson's value (every number a float,
--     null the shared lightuserdata), and the same on a second call;
--   * a refusal is nil and a printable message ending "at character N",
--     N within 1 .. #input + 1.
local C = require "props.common"
local model = require "props.json_model"

local core = C.core
local check = C.check

return function(data)
  local ok, v, err = pcall(core.decode, data)
  check(ok, "core.decode raised", v)
  local valid = model.valid(data)
  if valid then
    check(v ~= nil, "core.decode refused valid JSON", err)
    local want = C.cjson.decode(data)
    check(model.same(v, want), "core.decode differs from lua-cjson", data)
    check(model.same(core.decode(data), v), "a second decode differs", data)
  else
    check(v == nil, "core.decode accepted invalid JSON", data)
    check(C.printable(err), "refusal message not printable", err)
    local at = tonumber(err:match("at character (%d+)$"))
    check(at and at >= 1 and at <= #data + 1, "refusal without a position in the input", err)
  end
end
