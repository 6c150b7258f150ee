-- endaoment.partner.store.sqlite: "sqlite:PATH", many journeys in one
-- SQLite database that several processes on one machine share (LuaSQL).
--
-- The database runs in WAL mode with synchronous=FULL, so a commit is on
-- disk when save returns. Writers wait for each other (busy_timeout), and
-- a "database is locked" that SQLite still reports is retried with a
-- bounded backoff.
--
-- Claims are not rows: a killed process could never clear a row. Each
-- claim is a POSIX write lock on one byte of PATH .. ".claims" (fs.lockset),
-- byte fs.hash48(journey_id), which the kernel drops when the process dies.
-- Two journey ids that hash to the same byte only run one at a time.
-- Stores of the same PATH in one process share that file's lock set (POSIX
-- locks belong to the process, and a second descriptor closed would drop
-- them all); name the file the same way each time.
local stores = require "endaoment.partner.store"
local fs = require "endaoment.partner.fs"

local config_error, busy_error, quote = stores.config_error, stores.busy_error, stores.quote

local SQLite = stores.class()

local TABLE = "endaoment_journeys"
local BUSY_TIMEOUT_MS = 5000
-- Retries after SQLite gave up waiting itself: bounded in count and time.
local RETRY_SECONDS = 30
local RETRY_FIRST_MS, RETRY_CAP_MS = 2, 100

local sleep, now
do
  local ok, socket = pcall(require, "socket")
  if ok and type(socket) == "table" and socket.sleep and socket.gettime then
    sleep, now = socket.sleep, socket.gettime
  else
    sleep = function(s) os.execute("sleep " .. string.format("%.3f", s)) end
    now = os.time
  end
end

local function is_busy(msg)
  msg = tostring(msg)
  return msg:find("locked", 1, true) ~= nil or msg:find("busy", 1, true) ~= nil
end

local function clean(msg)
  return (tostring(msg):gsub("^LuaSQL: ", ""))
end

-- Runs fn() -> value | nil, msg until it succeeds, fails for another reason
-- than a lock, or RETRY_SECONDS have passed.
local function retrying(fn)
  local deadline = now() + RETRY_SECONDS
  local wait = RETRY_FIRST_MS
  while true do
    local res, msg = fn()
    if res ~= nil then return res end
    if not is_busy(msg) or now() >= deadline then return nil, msg end
    sleep(wait / 1000)
    wait = math.min(wait * 2, RETRY_CAP_MS)
  end
end

-- Runs one statement; returns its row count, or the first row's columns for
-- a query (a table, or false when there is none; with `all`, the list of
-- every row).
local function exec(conn, sql, all)
  local cur, msg = conn:execute(sql)
  if not cur then return nil, msg end
  if type(cur) ~= "userdata" then return cur end
  if all then
    local rows = {}
    local row, ferr = cur:fetch({}, "n")
    while row do
      rows[#rows + 1] = row
      row, ferr = cur:fetch({}, "n")
    end
    cur:close()
    if ferr then return nil, ferr end
    return rows
  end
  local row, ferr = cur:fetch({}, "n")
  cur:close()
  if row then return row end
  if ferr then return nil, ferr end
  return false
end

local function literal(conn, s)
  return "'" .. conn:escape(s) .. "'"
end

local function upsert(conn, claim, text, info)
  return "INSERT INTO " .. TABLE .. " (journey_id, base_url, status, state, updated_at) VALUES (" ..
    literal(conn, claim.journey_id) .. ", " .. (info.base_url and literal(conn, info.base_url) or "NULL") ..
    ", " .. literal(conn, info.status) .. ", " .. literal(conn, text) ..
    ", strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT (journey_id) DO UPDATE SET " ..
    "base_url = excluded.base_url, status = excluded.status, state = excluded.state, " ..
    "updated_at = excluded.updated_at"
end

---------------------------------------------------------------------------
-- claims: one lock set per claims file in this process
---------------------------------------------------------------------------

-- claims path -> lock set, while some store of this process uses it. Weak,
-- so that a set whose stores were all dropped unclosed is still collected
-- (its finalizer releases the locks).
local sets = setmetatable({}, { __mode = "v" })
local users = setmetatable({}, { __mode = "k" }) -- lock set -> open stores using it

local function open_set(cpath)
  local set = sets[cpath]
  if set then
    users[set] = (users[set] or 0) + 1
    return set
  end
  local msg
  set, msg = fs.lockset(cpath)
  if not set and tostring(msg):find("by this process", 1, true) then
    -- A set dropped unclosed is still open until its finalizer runs.
    collectgarbage()
    collectgarbage()
    set, msg = fs.lockset(cpath)
  end
  if not set then return nil, msg end
  sets[cpath] = set
  users[set] = 1
  return set
end

local function close_set(cpath, set)
  users[set] = (users[set] or 1) - 1
  if users[set] <= 0 then
    users[set] = nil
    if sets[cpath] == set then sets[cpath] = nil end
    set:close()
  end
end

function SQLite:_acquire(claim)
  local byte = fs.hash48(claim.journey_id)
  local ok, msg = self._set:try(byte)
  if ok then
    claim._byte = byte
    return true
  end
  if ok == false then
    if msg == "held by this process" then
      return nil, busy_error("journey " .. quote(claim.journey_id) .. " is claimed by another store of " ..
        self.name .. " in this process (or by a journey whose id hashes to the same claim byte); " ..
        "it is free once that claim is released")
    end
    return nil, busy_error("journey " .. quote(claim.journey_id) .. " in " .. self.name .. " is claimed by " ..
      tostring(msg):gsub("^locked by ", "") .. "; it is free when that process releases it or exits")
  end
  return nil, config_error("cannot claim journey " .. quote(claim.journey_id) .. " in " .. self.name .. ": " ..
    tostring(msg))
end

function SQLite:_unacquire(claim)
  if not claim._byte or not self._set then return true end
  local ok, msg = self._set:release(claim._byte)
  if ok == nil then
    return nil, config_error("cannot release journey " .. quote(claim.journey_id) .. " in " .. self.name ..
      ": " .. tostring(msg))
  end
  return true
end

function SQLite._check_text(_, text)
  if text:find("\0", 1, true) then return "the document contains a NUL byte (JSON text never does)" end
end

function SQLite:_read(claim)
  local conn = self._conn
  local row, msg = retrying(function()
    return exec(conn, "SELECT state FROM " .. TABLE .. " WHERE journey_id = " .. literal(conn, claim.journey_id))
  end)
  if row == nil then
    return nil, config_error("cannot load journey " .. quote(claim.journey_id) .. " from " .. self.name ..
      ": " .. clean(msg))
  end
  if row == false then return false end
  return row[1]
end

function SQLite:_read_done(ids)
  local conn = self._conn
  local lits = {}
  for i, id in ipairs(ids) do lits[i] = literal(conn, id) end
  local sql = "SELECT journey_id, state FROM " .. TABLE .. " WHERE status = 'done' AND journey_id IN (" ..
    table.concat(lits, ", ") .. ")"
  local rows, msg = retrying(function() return exec(conn, sql, true) end)
  if rows == nil then
    return nil, config_error("cannot read " .. #ids .. " journeys from " .. self.name .. ": " .. clean(msg))
  end
  local out = {}
  for _, row in ipairs(rows) do out[row[1]] = row[2] end
  return out
end

-- One transaction: every document or none. BEGIN IMMEDIATE takes the write
-- lock first (waiting through busy_timeout), so no statement inside fails
-- for a lock a reader upgraded too late. Every write goes this way, one
-- document or many: the COMMIT that succeeded is what makes save return
-- true, so a transaction left open by some failure can never swallow saves.
local function transaction(conn, sqls)
  return retrying(function()
    local r, e = exec(conn, "BEGIN IMMEDIATE")
    if r == nil then
      -- "cannot start a transaction within a transaction": end the stale one, then try again
      exec(conn, "ROLLBACK")
      if tostring(e):find("within a transaction", 1, true) then return nil, "locked: " .. tostring(e) end
      return nil, e
    end
    for _, sql in ipairs(sqls) do
      r, e = exec(conn, sql)
      if r == nil then
        exec(conn, "ROLLBACK")
        return nil, e
      end
    end
    r, e = exec(conn, "COMMIT")
    if r == nil then
      exec(conn, "ROLLBACK")
      return nil, e
    end
    return true
  end)
end

function SQLite:_write(claim, text, info)
  local ok, msg = transaction(self._conn, { upsert(self._conn, claim, text, info) })
  if not ok then
    return nil, config_error("cannot save journey " .. quote(claim.journey_id) .. " to " .. self.name ..
      ": " .. clean(msg))
  end
  return true
end

function SQLite:_write_many(items)
  local conn = self._conn
  local sqls = {}
  for i, item in ipairs(items) do sqls[i] = upsert(conn, item.claim, item.text, item.info) end
  local ok, msg = transaction(conn, sqls)
  if not ok then
    return nil, config_error("cannot save " .. #items .. " journeys to " .. self.name .. " (none was saved): " ..
      clean(msg))
  end
  return true
end

function SQLite:_shutdown()
  if self._conn then self._conn:close() end
  if self._env then self._env:close() end
  if self._set then close_set(self._cpath, self._set) end
  self._conn, self._env, self._set = nil, nil, nil
end

---------------------------------------------------------------------------
-- open
---------------------------------------------------------------------------

local M = {}

local function driver()
  local ok, mod = pcall(require, "luasql.sqlite3")
  if ok and type(mod) == "table" and mod.sqlite3 then return mod end
  return nil
end

function M.open(spec, path)
  if path == nil then path = tostring(spec):gsub("^sqlite:", "") end
  local name = "sqlite:" .. path
  if path == "" then
    return nil, config_error("store " .. quote(spec) .. " names no database file: use sqlite:PATH, " ..
      "e.g. sqlite:/var/lib/app/journeys.db")
  end
  if path:find("\0", 1, true) then
    return nil, config_error("store " .. name .. ": the path contains a NUL byte")
  end
  if path == ":memory:" or path:find("^file:") or path:find("mode=memory", 1, true) then
    return nil, config_error("store " .. name .. " is not a file that survives the process: name a database " ..
      "file, e.g. sqlite:/var/lib/app/journeys.db")
  end
  local mod = driver()
  if not mod then
    return nil, config_error("store " .. name .. " needs LuaSQL's SQLite driver (luasql.sqlite3): " ..
      "apt-get install lua-sql-sqlite3, or luarocks install luasql-sqlite3")
  end
  local self = stores.init(setmetatable({ path = path, _cpath = path .. ".claims" }, SQLite), name, true)
  local function fail(what, msg)
    self:_shutdown()
    return nil, config_error("cannot open store " .. name .. ": " .. what .. ": " .. clean(msg) ..
      "; check that the directory exists and is writable and that the file is an SQLite database")
  end

  local env, emsg = mod.sqlite3()
  if not env then return fail("cannot start the SQLite driver", emsg) end
  self._env = env
  local conn, cmsg = env:connect(path, BUSY_TIMEOUT_MS)
  if not conn then return fail("cannot open the database", cmsg) end
  self._conn = conn

  local mode, merr = retrying(function() return exec(conn, "PRAGMA journal_mode=WAL") end)
  if not mode then return fail("cannot switch to WAL", merr) end
  if tostring(mode[1]):lower() ~= "wal" then
    return fail("cannot switch to WAL", "journal_mode stays " .. tostring(mode[1]) ..
      " (WAL needs a local file system)")
  end
  for _, sql in ipairs({
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=" .. BUSY_TIMEOUT_MS,
    "CREATE TABLE IF NOT EXISTS " .. TABLE .. " (journey_id TEXT PRIMARY KEY, base_url TEXT, status TEXT, " ..
      "state TEXT NOT NULL, updated_at TEXT)",
  }) do
    local ok, err = retrying(function() return exec(conn, sql) end)
    if ok == nil then return fail("cannot prepare the database", err) end
  end
  local sync = exec(conn, "PRAGMA synchronous")
  if not sync or tonumber(sync[1]) ~= 2 then
    return fail("cannot make commits durable", "PRAGMA synchronous is " .. tostring(sync and sync[1]))
  end

  local set, smsg = open_set(self._cpath)
  if not set then return fail("cannot open the claims file " .. self._cpath, smsg) end
  self._set = set
  return self
end

M.class = SQLite

return M
