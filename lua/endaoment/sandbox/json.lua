-- The sandbox's JSON: the canonical encoder of endaoment.partner.json (one
-- implementation, pure Lua, so the emulator still runs on 5.1 and LuaJIT
-- without the C core).
return require "endaoment.partner.json"
