-- endaoment.partner.fs (csrc/fs.c): atomic, durable file replacement for the
-- journey's state file, and the POSIX record lock that allows one run per
-- state file. Locks are per process, so every "someone else holds it" case
-- is checked against a real second process (the same interpreter and build
-- as this run), never a second lock in this process.
local fs = require "endaoment.partner.fs"

-- The interpreter running this spec, for the helper processes.
local INTERP = (rawget(_G, "jit") and "luajit")
  or ({ ["Lua 5.1"] = "lua5.1", ["Lua 5.3"] = "lua5.3", ["Lua 5.4"] = "lua5.4" })[_VERSION]

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

local function mkdtemp()
  local dir = sh("mktemp -d /tmp/epartner-fs.XXXXXX"):gsub("%s+$", "")
  assert(dir:match("^/tmp/epartner%-fs%."), dir)
  return dir
end

local function my_pid()
  return tonumber(read_file("/proc/self/stat"):match("^(%d+)"))
end

-- A second process that runs fs.lock(path) with this run's module path and
-- prints "locked" or "failed <message>"; with hold = true it then keeps the
-- lock until it is killed (30 s at most).
local function locker(path, hold)
  local code = string.format([[
    package.cpath = %q
    local fs = require "endaoment.partner.fs"
    local l, e = fs.lock(%q)
    io.stdout:write(l and "locked\n" or ("failed " .. tostring(e) .. "\n"))
    io.stdout:flush()
    if l and %s then require("socket").sleep(30) end
  ]], package.cpath, path, tostring(hold == true))
  -- io.popen's shell execs the interpreter, so $$ is the locker's own pid.
  local pipe = assert(io.popen("echo $$; exec " .. INTERP .. " -e " .. q(code), "r"))
  local p = { pid = tonumber(pipe:read("*l")), pipe = pipe }
  p.line = pipe:read("*l")
  function p.kill(sig)
    if p.closed then return end
    p.closed = true
    os.execute("kill -" .. (sig or "KILL") .. " " .. p.pid .. " 2>/dev/null")
    pipe:close() -- waits for the process to be gone
  end
  return p
end

-- Can another process take the lock right now?
local function lockable_by_another(path)
  local p = locker(path, false)
  p.kill()
  return p.line == "locked", p.line
end

describe("fs.write_atomic", function()
  local dir
  before_each(function() dir = mkdtemp() end)
  after_each(function() os.execute("rm -rf " .. q(dir)) end)

  it("writes, then replaces the whole file, and leaves no temp file behind", function()
    local path = dir .. "/state.json"
    assert.is_true(fs.write_atomic(path, '{"steps":[1,2,3]}'))
    assert.equal('{"steps":[1,2,3]}', read_file(path))
    assert.is_true(fs.write_atomic(path, "{}"))
    assert.equal("{}", read_file(path))
    assert.is_true(fs.write_atomic(path, "a\0b"))
    assert.equal("a\0b", read_file(path))
    assert.equal("state.json", sh("ls -A " .. q(dir)):gsub("%s+$", ""))
    assert.equal("600", sh("stat -c %a " .. q(path)):gsub("%s+$", ""))
  end)

  it("refuses a path with a NUL byte and writes nothing", function()
    local ok, err = fs.write_atomic(dir .. "/a\0b", "x")
    assert.is_nil(ok)
    assert.equal("path contains a NUL byte", err)
    assert.equal("", sh("ls -A " .. q(dir)))
  end)

  it("does not follow a symlink planted at its temp file name", function()
    local path = dir .. "/state.json"
    local victim = dir .. "/victim"
    write_file(victim, "precious")
    os.execute("ln -s " .. q(victim) .. " " .. q(path .. ".tmp." .. my_pid()))
    assert.is_true(fs.write_atomic(path, "new state"))
    assert.equal("precious", read_file(victim))
    assert.equal("new state", read_file(path))
    -- path is a regular file, not the planted link renamed into place
    assert.equal("regular file", sh("stat -c %F " .. q(path)):gsub("%s+$", ""))
    assert.equal("state.json\nvictim", sh("ls -A " .. q(dir)):gsub("%s+$", ""))
  end)

  it("reports a missing directory as nil, message", function()
    local ok, err = fs.write_atomic(dir .. "/missing/state.json", "x")
    assert.is_nil(ok)
    assert.matches("cannot create", err)
    assert.matches("No such file or directory", err)
  end)

  it("raises only on argument types", function()
    assert.has_error(function() fs.write_atomic(nil, "x") end)
    assert.has_error(function() fs.write_atomic(dir .. "/x", {}) end)
  end)
end)

describe("fs.lock", function()
  local dir, path, holder
  before_each(function()
    dir = mkdtemp()
    path = dir .. "/state.json.lock"
  end)
  after_each(function()
    if holder then holder.kill() end
    holder = nil
    os.execute("rm -rf " .. q(dir))
  end)

  it("fails while another process holds the lock, naming its pid", function()
    holder = locker(path, true)
    assert.equal("locked", holder.line)
    local l, err = fs.lock(path)
    assert.is_nil(l)
    assert.equal("locked by another process (pid " .. holder.pid .. ")", err)
  end)

  it("is released by the kernel when the holder is killed with SIGKILL", function()
    holder = locker(path, true)
    assert.equal("locked", holder.line)
    assert.is_nil((fs.lock(path)))
    holder.kill("KILL")
    local l = assert(fs.lock(path))
    assert.matches("held", tostring(l))
    l:unlock()
  end)

  it("blocks other processes until unlock; unlock is idempotent and keeps the file", function()
    local l = assert(fs.lock(path))
    local ok, line = lockable_by_another(path)
    assert.is_false(ok)
    assert.equal("failed locked by another process (pid " .. my_pid() .. ")", line)
    assert.matches("^endaoment.partner.fs lock %(held%)", tostring(l))
    l:unlock()
    l:unlock()
    assert.matches("^endaoment.partner.fs lock %(unlocked%)", tostring(l))
    assert.is_true((lockable_by_another(path)))
    assert.is_not_nil(read_file(path)) -- deleting it would race with another locker
    assert.equal("600", sh("stat -c %a " .. q(path)):gsub("%s+$", ""))
  end)

  it("refuses a second lock of the same file in this process, and keeps the first", function()
    local l = assert(fs.lock(path))
    local again, err = fs.lock(path)
    assert.is_nil(again)
    assert.matches("locked by this process", err)
    -- the refused attempt did not open and close the file, which would drop the lock
    assert.is_false((lockable_by_another(path)))
    l:unlock()
    local l2 = assert(fs.lock(path))
    l2:unlock()
  end)

  it("is released when the lock is garbage collected", function()
    do
      local l = assert(fs.lock(path))
      assert.is_false((lockable_by_another(path)))
      assert.matches("held", tostring(l))
      l = nil -- luacheck: ignore (dropped, never unlocked)
    end
    collectgarbage()
    collectgarbage()
    assert.is_true((lockable_by_another(path)))
  end)

  -- Only Lua 5.4 has to-be-closed variables; elsewhere the case shows as pending.
  local it54 = _VERSION >= "Lua 5.4" and it or pending
  it54("is released by a to-be-closed variable (Lua 5.4)", function()
    -- load() keeps this file parseable by Lua 5.1 tools.
    local chunk = assert(load([[
      local fs, path, probe = ...
      do
        local l <close> = assert(fs.lock(path))
        assert(not probe(path))
      end
      return probe(path)
    ]]))
    assert.is_true((chunk(fs, path, lockable_by_another)))
  end)

  it("returns nil, message for a path it cannot open, or with a NUL byte", function()
    local l, err = fs.lock(dir .. "/missing/x.lock")
    assert.is_nil(l)
    assert.matches("cannot open lock file", err)
    assert.matches("No such file or directory", err)
    l, err = fs.lock(dir) -- a directory cannot be opened for writing
    assert.is_nil(l)
    assert.matches("cannot open lock file", err)
    l, err = fs.lock(path .. "\0x")
    assert.is_nil(l)
    assert.equal("path contains a NUL byte", err)
    assert.has_error(function() fs.lock() end)
  end)
end)

-- A second process that opens fs.lockset(path), tries each offset (given as
-- Lua numerals) and prints one line: "taken" or "busy:<message>" per offset,
-- joined by ";"; with hold = true it keeps them until it is killed (30 s at most).
local function set_locker(path, offsets, hold)
  local code = string.format([[
    package.cpath = %q
    local fs = require "endaoment.partner.fs"
    local s, e = fs.lockset(%q)
    if not s then io.stdout:write("failed " .. tostring(e) .. "\n") io.stdout:flush() return end
    local out = {}
    for _, n in ipairs({ %s }) do
      local ok, msg = s:try(n)
      out[#out + 1] = ok and "taken" or ("busy:" .. tostring(msg))
    end
    io.stdout:write(table.concat(out, ";") .. "\n")
    io.stdout:flush()
    if %s then require("socket").sleep(30) end
  ]], package.cpath, path, table.concat(offsets, ", "), tostring(hold == true))
  local pipe = assert(io.popen("echo $$; exec " .. INTERP .. " -e " .. q(code), "r"))
  local p = { pid = tonumber(pipe:read("*l")), pipe = pipe }
  p.line = pipe:read("*l")
  function p.kill(sig)
    if p.closed then return end
    p.closed = true
    os.execute("kill -" .. (sig or "KILL") .. " " .. p.pid .. " 2>/dev/null")
    pipe:close()
  end
  return p
end

-- What another process gets for these offsets right now.
local function others_get(path, offsets)
  local p = set_locker(path, offsets, false)
  p.kill()
  return p.line
end

describe("fs.lockset", function()
  local dir, path, holder
  before_each(function()
    dir = mkdtemp()
    path = dir .. "/journeys.db.claims"
  end)
  after_each(function()
    if holder then holder.kill() end
    holder = nil
    collectgarbage()
    collectgarbage()
    os.execute("rm -rf " .. q(dir))
  end)

  it("takes single bytes, and refuses those another process holds, naming its pid", function()
    holder = set_locker(path, { "5", "281474976710655" }, true)
    assert.equal("taken;taken", holder.line)
    local s = assert(fs.lockset(path))
    local ok, msg = s:try(5)
    assert.is_false(ok)
    assert.equal("locked by another process (pid " .. holder.pid .. ")", msg)
    assert.is_true(s:try(4))
    assert.is_true(s:try(6)) -- the neighbours are other locks
    ok, msg = s:try(281474976710655)
    assert.is_false(ok)
    assert.matches("pid " .. holder.pid, msg)
    assert.matches("^endaoment.partner.fs lockset %(open, 2 held%): ", tostring(s))
    s:close()
  end)

  it("answers 'held by this process' for its own bytes; release frees one byte; release is idempotent", function()
    local s = assert(fs.lockset(path))
    for _, n in ipairs({ 7, 8, 9 }) do assert.is_true(s:try(n)) end
    local ok, msg = s:try(8)
    assert.is_false(ok)
    assert.equal("held by this process", msg)
    local me = "busy:locked by another process (pid " .. my_pid() .. ")"
    assert.equal(me .. ";" .. me .. ";" .. me, others_get(path, { "7", "8", "9" }))
    -- 7..9 are one range to the kernel: releasing 8 splits it and keeps 7 and 9
    assert.is_true(s:release(8))
    assert.is_false(s:release(8))
    assert.is_false(s:release(1000)) -- never held
    assert.equal(me .. ";taken;" .. me, others_get(path, { "7", "8", "9" }))
    assert.is_true(s:try(8))
    s:close()
  end)

  it("is released by the kernel when the holder is killed with SIGKILL", function()
    holder = set_locker(path, { "42" }, true)
    assert.equal("taken", holder.line)
    local s = assert(fs.lockset(path))
    assert.is_false((s:try(42)))
    holder.kill("KILL")
    assert.is_true(s:try(42))
    s:close()
  end)

  it("releases every byte on close; close is idempotent; a closed set takes nothing", function()
    local s = assert(fs.lockset(path))
    assert.is_true(s:try(1))
    assert.is_true(s:try(2))
    s:close()
    assert.equal("taken;taken", others_get(path, { "1", "2" }))
    s:close()
    local ok, msg = s:try(1)
    assert.is_nil(ok)
    assert.equal("lock set is closed", msg)
    assert.is_false(s:release(1))
    assert.matches("^endaoment.partner.fs lockset %(closed%): ", tostring(s))
    assert.is_not_nil(read_file(path)) -- the file stays, empty
    assert.equal("", read_file(path))
    assert.equal("600", sh("stat -c %a " .. q(path)):gsub("%s+$", ""))
  end)

  it("refuses a second set or a lock of the same file in this process, and keeps the first's locks", function()
    local s = assert(fs.lockset(path))
    assert.is_true(s:try(3))
    local again, err = fs.lockset(path)
    assert.is_nil(again)
    assert.matches("by this process", err)
    os.execute("ln " .. q(path) .. " " .. q(dir .. "/alias"))
    again, err = fs.lockset(dir .. "/alias") -- the same file by another name
    assert.is_nil(again)
    assert.matches("by this process", err)
    local l, lerr = fs.lock(path)
    assert.is_nil(l)
    assert.matches("by this process", lerr)
    -- none of the refused attempts opened and closed the file, which would drop byte 3
    assert.matches("^busy:locked by another process", others_get(path, { "3" }))
    s:close()
    local s2 = assert(fs.lockset(path))
    s2:close()
    -- and a file held by fs.lock cannot become a set
    l = assert(fs.lock(path))
    again, err = fs.lockset(path)
    assert.is_nil(again)
    assert.matches("by this process", err)
    l:unlock()
    assert(fs.lockset(path)):close()
  end)

  it("is released when the set is garbage collected", function()
    do
      local s = assert(fs.lockset(path))
      assert.is_true(s:try(9))
      s = nil -- luacheck: ignore (dropped, never closed)
    end
    collectgarbage()
    collectgarbage()
    assert.equal("taken", others_get(path, { "9" }))
    assert(fs.lockset(path)):close()
  end)

  local it54 = _VERSION >= "Lua 5.4" and it or pending
  it54("is released by a to-be-closed variable (Lua 5.4)", function()
    local chunk = assert(load([[
      local fs, path, others_get = ...
      do
        local s <close> = assert(fs.lockset(path))
        assert(s:try(11))
        assert(others_get(path, { "11" }):match("^busy:"))
      end
      return others_get(path, { "11" })
    ]]))
    assert.equal("taken", chunk(fs, path, others_get))
  end)

  it("takes offsets from 0 to 2^53 and raises for anything else", function()
    local s = assert(fs.lockset(path))
    assert.is_true(s:try(0))
    assert.is_true(s:try(2 ^ 53))
    assert.is_true(s:try(9007199254740991))
    assert.is_true(s:release(2 ^ 53))
    for _, bad in ipairs({ -1, 2 ^ 53 + 2, 1.5, 0 / 0, 1 / 0, "x" }) do
      assert.has_error(function() s:try(bad) end)
      assert.has_error(function() s:release(bad) end)
    end
    if math.maxinteger then
      assert.has_error(function() s:try(math.maxinteger) end)
    end
    s:close()
  end)

  it("returns nil, message for a path it cannot open, or with a NUL byte", function()
    local s, err = fs.lockset(dir .. "/missing/x.claims")
    assert.is_nil(s)
    assert.matches("cannot open lock file", err)
    assert.matches("No such file or directory", err)
    s, err = fs.lockset(dir)
    assert.is_nil(s)
    assert.matches("cannot open lock file", err)
    s, err = fs.lockset(path .. "\0x")
    assert.is_nil(s)
    assert.equal("path contains a NUL byte", err)
    assert.has_error(function() fs.lockset() end)
  end)
end)

describe("fs.hash48", function()
  it("is FNV-1a 64 folded to 48 bits, the same in every interpreter", function()
    -- reference values computed independently (Python)
    assert.equal(172505283356887, fs.hash48(""))
    assert.equal(242221223855087, fs.hash48("a"))
    assert.equal(28466810241181, fs.hash48("user:acme-user-42"))
    assert.equal(25321904018627, fs.hash48("é"))
    for i = 1, 200 do
      local h = fs.hash48("user:" .. i)
      assert.is_true(h >= 0 and h < 2 ^ 48 and h % 1 == 0)
    end
    assert.has_error(function() fs.hash48() end)
  end)
end)

describe("fs.isatty", function()
  it("is false for a pipe, a bad descriptor and a non-integer", function()
    assert.is_false(fs.isatty(-1))
    assert.is_false(fs.isatty(987654))
    assert.is_false(fs.isatty(1.5))
    assert.is_false(fs.isatty(2 ^ 40))
    local code = string.format("package.cpath = %q; io.write(tostring(require('endaoment.partner.fs').isatty(1)))",
      package.cpath)
    assert.equal("false", sh(INTERP .. " -e " .. q(code) .. " | cat"))
    assert.has_error(function() fs.isatty("x") end)
  end)

  it("is true for a terminal", function()
    local code = string.format("package.cpath = %q; io.write(tostring(require('endaoment.partner.fs').isatty(1)))",
      package.cpath)
    -- script(1) runs the command on a pseudo-terminal
    local out = sh("script -qec " .. q(INTERP .. " -e " .. q(code)) .. " /dev/null")
    assert.equal("true", (out:gsub("%s+$", "")))
  end)
end)
