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
