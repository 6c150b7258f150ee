-- Steers the garbage collector so a finalizer runs at a chosen moment: the
-- specs use it to prove C methods survive finalizers that re-enter them
-- while they push results.
local M = {}

-- Calls call() so that a finalizer runs inside the first allocation of call()
-- that can step the collector (for the C methods: pushing their result), and
-- returns a table of call()'s results. fn is that finalizer's body.
--
-- 60 objects with __gc are made garbage together, the collector is driven in
-- the smallest steps until it has started finalizing them (Lua 5.4 runs 10
-- per step, LuaJIT and 5.1 one per step at stepmul 10), and then restarted
-- so that the very next allocation steps it again. Lua 5.1 and LuaJIT run
-- __gc only for userdata, hence newproxy there.
local newproxy = rawget(_G, "newproxy")
function M.with_finalizer_inside(fn, call)
  local started, armed = false, false
  local function gc() if armed then fn() else started = true end end
  local objs = {}
  for i = 1, 60 do
    if newproxy then
      objs[i] = newproxy(true)
      getmetatable(objs[i]).__gc = gc
    else
      objs[i] = setmetatable({}, { __gc = gc })
    end
  end
  objs = nil -- luacheck: ignore
  local restore
  if _VERSION == "Lua 5.4" then
    collectgarbage("incremental", 200, 1, 1)
    restore = function() collectgarbage("incremental", 200, 100, 13) end
  else
    local stepmul = collectgarbage("setstepmul", 10)
    restore = function() collectgarbage("setstepmul", stepmul) end
  end
  while not started do collectgarbage("step", 0) end
  collectgarbage("restart")
  armed = true
  -- nothing between here and call() allocates (a table constructor would)
  local ok, a, b, c = pcall(call)
  armed = false
  restore()
  assert(ok, a)
  return { a, b, c }
end

return M
