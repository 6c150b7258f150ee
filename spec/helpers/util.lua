-- Small helpers the specs share.
local M = {}

-- Number of keys in a table (the sandbox's state maps are keyed by id).
function M.count(t)
  local n = 0
  for _ in pairs(t or {}) do n = n + 1 end
  return n
end

-- A fresh path in the temp directory, not created.
function M.tmpfile()
  local p = os.tmpname()
  os.remove(p)
  return p
end

-- A file's bytes, or nil when it cannot be read.
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Removes a store's files: the file or database and what it keeps beside it.
function M.rm_store(path)
  for _, s in ipairs({ "", "-wal", "-shm", "-journal", ".claims", ".lock" }) do os.remove(path .. s) end
end

-- A file's bytes, or "" when it cannot be read (logs and pid files that
-- may not exist yet).
function M.read_or_empty(path)
  return M.read_file(path) or ""
end

-- ok, output (stdout and stderr), exit code of a shell command; portable to
-- Lua 5.1, whose pipe close gives no status.
function M.sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__exit=$?\""))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.*)__exit=(%d+)%s*$")
  return tonumber(code) == 0, body or out, tonumber(code)
end

-- A string quoted for /bin/sh.
function M.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- A free TCP port on 127.0.0.1 (free when asked: a server that binds it
-- later may still lose it to another process, so callers retry).
function M.free_port()
  local s = assert(require("socket").bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

return M
