-- endaoment.partner.store.postgres: "postgres://..." (or "postgresql://"),
-- many journeys in one PostgreSQL database that workers on many machines
-- share (LuaSQL over libpq; the URL is handed to libpq as it is, plus
-- connect_timeout=10 when it names none).
--
-- Claims are session advisory locks on the store's one connection,
-- pg_try_advisory_lock(CLASS, hashtext(journey_id)): the server drops them
-- when the connection ends, so a killed worker's journeys are free at once.
-- Two ids with the same hashtext only run one at a time. Session locks are
-- re-entrant, so this store tracks its own claims and answers busy itself.
-- If the connection is lost, so are the claims: the store then refuses
-- every call until it is opened again.
--
-- Every session sets synchronous_commit = on (a save is durable when it
-- returns; one whose every document says info.durable == false commits
-- with synchronous_commit = off), client_encoding = UTF8 and
-- standard_conforming_strings = on.
-- Documents are stored as TEXT: valid UTF-8 without NUL bytes.
local stores = require "endaoment.partner.store"
local core = require "endaoment.partner.core"

local config_error, busy_error, quote = stores.config_error, stores.busy_error, stores.quote

local Postgres = stores.class()
-- _shutdown ends every claim at once (pg_advisory_unlock_all).
Postgres._shutdown_releases_all = true

local TABLE = "endaoment_journeys"
-- pg_advisory_lock class ids (int4), "EPJS" and the next: journey claims,
-- and the lock that serialises creating the table when workers start together.
local CLAIM_CLASS = 1162889811
local SETUP_CLASS = CLAIM_CLASS + 1
local CONNECT_TIMEOUT_S = 10
-- A statement waiting this long for a row lock fails instead of hanging.
local LOCK_TIMEOUT = "30s"

---------------------------------------------------------------------------
-- the URL: its printable name and its secrets
---------------------------------------------------------------------------

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function bad_pct(s)
  return s:gsub("%%%x%x", ""):find("%", 1, true) ~= nil
end

-- Parses the URL the way libpq does (user info ends at the first "@", and
-- only if no "/" comes before it) and refuses what libpq would read
-- differently from the writer's intent, since libpq then echoes pieces of
-- the password as a host, port or database name. Returns name, secrets
-- (raw and decoded password strings to scrub from any message) or nil, why.
local function parse(url)
  local scheme, rest = url:match("^([%a]+)://(.*)$")
  if not scheme then return nil, nil, "not a postgres:// URL" end
  local secrets = {}
  local function secret(raw)
    if raw and raw ~= "" then
      secrets[#secrets + 1] = raw
      local dec = pct_decode(raw)
      if dec ~= raw then secrets[#secrets + 1] = dec end
      local plus = pct_decode((raw:gsub("%+", " ")))
      if plus ~= raw and plus ~= dec then secrets[#secrets + 1] = plus end
    end
  end
  local name = scheme .. "://"
  local userinfo, after = rest:match("^([^@/]*)@(.*)$")
  local user, password
  if userinfo then
    user, password = userinfo:match("^([^:]*):(.*)$")
    if not user then user = userinfo end
    secret(password)
    name = name .. user .. (password and password ~= "" and ":***" or (password and ":" or "")) .. "@"
  else
    after = rest
  end
  local where = "the user name, password and database"
  -- Any other "@" before the query is a password or name with a raw "@" or "/" in it.
  if (after:match("^[^?]*") or ""):find("@", 1, true) then
    -- Shown as "***" up to the last "@", without its query: where the password ends is anyone's guess.
    local shown = scheme .. "://***@" .. rest:match("^.*@(.-)$"):gsub("%?.*$", "")
    return shown, secrets, "the URL has an \"@\" outside user:password@; percent-encode \"@\" as %40 and " ..
      "\"/\" as %2F in " .. where
  end
  local path, query = after:match("^([^?]*)%?(.*)$")
  if not path then path = after end
  name = name .. path
  if query then
    local parts = {}
    for part in (query .. "&"):gmatch("([^&]*)&") do
      local k, v = part:match("^([^=]*)=(.*)$")
      if k and pct_decode(k) == "password" then
        secret(v)
        part = k .. "=***"
      end
      parts[#parts + 1] = part
    end
    name = name .. "?" .. table.concat(parts, "&")
  end
  -- Longest first, so a decoded form inside a raw one is never half-replaced.
  table.sort(secrets, function(a, b) return #a > #b end)
  if userinfo and bad_pct(userinfo) then
    return name, secrets, "the user name or password has a \"%\" that is not percent-encoding; write it as %25"
  end
  return name, secrets
end

-- Replaces every secret in s with "***", and folds libpq's lines into one.
local function scrub(s, secrets)
  s = tostring(s)
  for _, sec in ipairs(secrets or {}) do
    local out, i = {}, 1
    while true do
      local a, b = s:find(sec, i, true)
      if not a then break end
      out[#out + 1] = s:sub(i, a - 1)
      out[#out + 1] = "***"
      i = b + 1
    end
    out[#out + 1] = s:sub(i)
    s = table.concat(out)
  end
  s = s:gsub("^LuaSQL: ", ""):gsub("error connecting to database%. PostgreSQL: ", "")
    :gsub("error executing statement%. PostgreSQL: ", ""):gsub("%s+", " "):gsub("%s+$", "")
  return s
end

---------------------------------------------------------------------------
-- statements
---------------------------------------------------------------------------

-- Signs that the connection is gone, and with it every claim.
local LOST = { "server closed the connection", "no connection to the server", "terminating connection",
  "could not receive data", "could not send data", "connection to server was lost", "SSL SYSCALL",
  "connection not open", "connection is closed" }

local function is_lost(msg)
  msg = tostring(msg)
  for _, p in ipairs(LOST) do
    if msg:find(p, 1, true) then return true end
  end
  return false
end

-- Runs sql; for a query returns the first row (a table) or false (with
-- `all`, the list of every row), else true.
function Postgres:_exec(sql, all)
  local conn = self._conn
  if not conn then return nil, "the store is closed" end
  local cur, msg = conn:execute(sql)
  if not cur then
    if is_lost(msg) and not self._lost then
      self._lost = "the connection to " .. self.name .. " was lost (" .. scrub(msg, self._secrets) ..
        "), and its claims with it: close the store and open it again"
    end
    return nil, scrub(msg, self._secrets)
  end
  if type(cur) ~= "userdata" then return true end
  if all then
    local rows = {}
    local row = cur:fetch({}, "n")
    while row do
      rows[#rows + 1] = row
      row = cur:fetch({}, "n")
    end
    cur:close()
    return rows
  end
  local row = cur:fetch({}, "n")
  cur:close()
  return row or false
end

-- A string literal. libpq escapes; LuaSQL's escape for Lua 5.1/LuaJIT works
-- in chunks of LUAL_BUFFERSIZE/2 bytes and fails when one ends inside a
-- UTF-8 character, so long strings go in pieces cut at character starts.
local CHUNK = 512
local WHOLE = _VERSION ~= "Lua 5.1" -- 5.2+ escape in one buffer of the right size
function Postgres:_lit(s)
  local conn = self._conn
  if WHOLE or #s <= CHUNK then
    local e, msg = conn:escape(s)
    if not e then error(scrub(msg, self._secrets), 0) end
    return "'" .. e .. "'"
  end
  local out, i, n = {}, 1, #s
  while i <= n do
    local j = math.min(i + CHUNK - 1, n)
    -- move the cut back to just before a UTF-8 lead byte (at most 3 bytes)
    local k = j
    while k < n and k > j - 3 and s:byte(k + 1) >= 0x80 and s:byte(k + 1) < 0xC0 do k = k - 1 end
    if k < n and s:byte(k + 1) >= 0x80 and s:byte(k + 1) < 0xC0 then k = j end
    local e, msg = conn:escape(s:sub(i, k))
    if not e then error(scrub(msg, self._secrets), 0) end
    out[#out + 1] = e
    i = k + 1
  end
  return "'" .. table.concat(out) .. "'"
end

local function key_sql(self, claim)
  return tostring(CLAIM_CLASS) .. ", hashtext(" .. self:_lit(claim.journey_id) .. ")"
end

-- Who holds a journey's advisory lock, as far as this role may see.
function Postgres:_holder(claim)
  local row = self:_exec("SELECT l.pid, a.application_name, host(a.client_addr) FROM pg_locks l " ..
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted " ..
    "AND l.classid = " .. CLAIM_CLASS .. " AND l.objsubid = 2 AND l.objid = " ..
    "((hashtext(" .. self:_lit(claim.journey_id) .. ")::bigint + 4294967296) % 4294967296)::oid LIMIT 1")
  if not row then return " (it was released meanwhile: try again)" end
  if row[2] and row[2] == self._appname then
    return " (another store of this process: postgres backend pid " .. tostring(row[1]) .. ")"
  end
  local parts = { "postgres backend pid " .. tostring(row[1]) }
  if row[2] and row[2] ~= "" then parts[#parts + 1] = "application " .. quote(row[2]) end
  if row[3] and row[3] ~= "" then parts[#parts + 1] = "client " .. tostring(row[3]) end
  return " (" .. table.concat(parts, ", ") .. ")"
end

function Postgres:_acquire(claim, opts)
  if self._lost then return nil, config_error(self._lost) end
  local ok, row, msg = pcall(function()
    return self:_exec("SELECT pg_try_advisory_lock(" .. key_sql(self, claim) .. ")")
  end)
  if not ok then msg, row = row, nil end
  if row == nil then
    return nil, config_error("cannot claim journey " .. quote(claim.journey_id) .. " in " .. self.name .. ": " ..
      tostring(msg))
  end
  if row and (row[1] == "t" or row[1] == true) then return true end
  -- Who holds it costs a scan of pg_locks: a batch, which only defers the
  -- journey, asks quietly.
  local who = (opts and opts.quiet) and "" or self:_holder(claim)
  return nil, busy_error("journey " .. quote(claim.journey_id) .. " in " .. self.name ..
    " is claimed by another worker" .. who ..
    "; it is free when that worker releases it or its connection ends")
end

function Postgres:_unacquire(claim)
  if self._lost or not self._conn then return true end
  local ok, row, msg = pcall(function()
    return self:_exec("SELECT pg_advisory_unlock(" .. key_sql(self, claim) .. ")")
  end)
  if not ok then msg, row = row, nil end
  if row == nil then
    return nil, config_error("cannot release journey " .. quote(claim.journey_id) .. " in " .. self.name .. ": " ..
      tostring(msg))
  end
  return true
end

function Postgres._check_text(_, text)
  if text:find("\0", 1, true) then return "the document contains a NUL byte (JSON text never does)" end
  local ok, why = core.utf8_len(text)
  if not ok then return "the document " .. tostring(why) .. " (PostgreSQL text)" end
end

function Postgres:_read(claim)
  local ok, row, msg = pcall(function()
    return self:_exec("SELECT state FROM " .. TABLE .. " WHERE journey_id = " .. self:_lit(claim.journey_id))
  end)
  if not ok then msg, row = row, nil end
  if row == nil then
    return nil, config_error("cannot load journey " .. quote(claim.journey_id) .. " from " .. self.name .. ": " ..
      tostring(self._lost or msg))
  end
  if row == false then return false end
  return row[1]
end

function Postgres:_read_done(ids)
  local ok, res, msg = pcall(function()
    local lits = {}
    for i, id in ipairs(ids) do lits[i] = self:_lit(id) end
    local rows, emsg = self:_exec("SELECT journey_id, state FROM " .. TABLE .. " WHERE status = 'done' AND " ..
      "journey_id IN (" .. table.concat(lits, ", ") .. ")", true)
    if not rows then return nil, emsg end
    local out = {}
    for _, row in ipairs(rows) do out[row[1]] = row[2] end
    return out
  end)
  if not ok then msg, res = res, nil end
  if res == nil then
    return nil, config_error("cannot read " .. #ids .. " journeys from " .. self.name .. ": " ..
      tostring(self._lost or msg))
  end
  return res
end

function Postgres:_upsert(claim, text, info)
  return "INSERT INTO " .. TABLE .. " (journey_id, base_url, status, state, updated_at) VALUES (" ..
    self:_lit(claim.journey_id) .. ", " .. (info.base_url and self:_lit(info.base_url) or "NULL") .. ", " ..
    self:_lit(info.status) .. ", " .. self:_lit(text) ..
    ", to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) " ..
    "ON CONFLICT (journey_id) DO UPDATE SET base_url = EXCLUDED.base_url, status = EXCLUDED.status, " ..
    "state = EXCLUDED.state, updated_at = EXCLUDED.updated_at"
end

-- One round trip: BEGIN; the upserts; COMMIT, for one document or many.
-- A failure leaves the transaction aborted, so it is rolled back before
-- anything else runs. With synchronous_commit on, COMMIT returns once the
-- commit is flushed.
function Postgres:_write_many(items)
  local ok, res, msg = pcall(function()
    local sql = { "BEGIN" }
    -- Flushing the commit is most of a save's cost; it is skipped only when
    -- every document says it may be lost with the database (info.durable
    -- == false), and never reordered: a crash loses a suffix of commits.
    local lazy = true
    for _, item in ipairs(items) do
      if item.info.durable ~= false then lazy = false end
    end
    if os.getenv("EP_NOLAZY") then lazy = false end
    if lazy then sql[2] = "SET LOCAL synchronous_commit = off" end
    for _, item in ipairs(items) do sql[#sql + 1] = self:_upsert(item.claim, item.text, item.info) end
    sql[#sql + 1] = "COMMIT"
    return self:_exec(table.concat(sql, ";\n"))
  end)
  if not ok then msg, res = res, nil end
  if res == nil then
    if not self._lost then self:_exec("ROLLBACK") end
    local what = #items == 1 and ("journey " .. quote(items[1].claim.journey_id))
      or (#items .. " journeys")
    return nil, config_error("cannot save " .. what .. " to " .. self.name ..
      (#items > 1 and " (none was saved): " or ": ") .. tostring(self._lost or msg))
  end
  return true
end

function Postgres:_write(claim, text, info)
  return self:_write_many({ { claim = claim, text = text, info = info } })
end

function Postgres:_shutdown()
  -- Closing the connection ends the session and every advisory lock with it,
  -- but only once the server has noticed: unlock first, so that the claims
  -- are free for others when close returns.
  if self._conn and not self._lost then pcall(self._exec, self, "SELECT pg_advisory_unlock_all()") end
  if self._conn then self._conn:close() end
  if self._env then self._env:close() end
  self._conn, self._env = nil, nil
end

---------------------------------------------------------------------------
-- open
---------------------------------------------------------------------------

local function driver()
  local ok, mod = pcall(require, "luasql.postgres")
  if ok and type(mod) == "table" and mod.postgres then return mod end
  return nil
end

local function read_line(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*l")
  f:close()
  return s
end

-- "endaoment-partner host=H pid=P": who holds a claim, in pg_stat_activity.
local function application_name()
  local host = read_line("/proc/sys/kernel/hostname") or os.getenv("HOSTNAME") or "?"
  local pid = (read_line("/proc/self/stat") or ""):match("^(%d+)") or "?"
  return ("endaoment-partner host=" .. host .. " pid=" .. pid):sub(1, 63)
end

local function has_param(url, key)
  local query = url:match("%?(.*)$")
  if not query then return false end
  for part in (query .. "&"):gmatch("([^&]*)&") do
    if pct_decode(part:match("^([^=]*)") or "") == key then return true end
  end
  return false
end

local M = {}

function M.open(url)
  local name, secrets, why = parse(url)
  local shown = name or "postgres://(URL not shown)"
  local function fail(msg, advice)
    return nil, config_error("cannot open store " .. scrub(shown, secrets) .. ": " .. scrub(msg, secrets) ..
      (advice and ("; " .. advice) or ""))
  end
  if why then return fail(why) end
  if url:find("\0", 1, true) then return fail("the URL contains a NUL byte") end
  local mod = driver()
  if not mod then
    return fail("LuaSQL's PostgreSQL driver (luasql.postgres) is not installed",
      "apt-get install lua-sql-postgres, or luarocks install luasql-postgres")
  end

  local conninfo = url
  if not has_param(url, "connect_timeout") and not os.getenv("PGCONNECT_TIMEOUT") then
    conninfo = conninfo .. (conninfo:find("?", 1, true) and "&" or "?") .. "connect_timeout=" .. CONNECT_TIMEOUT_S
  end
  local env, emsg = mod.postgres()
  if not env then return fail("cannot start the PostgreSQL driver: " .. tostring(emsg)) end
  local conn, cmsg = env:connect(conninfo)
  if not conn then
    env:close()
    return fail(tostring(cmsg), "check that the server is running and reachable, and the user, password " ..
      "and database in the URL")
  end
  local self = stores.init(setmetatable({ _env = env, _conn = conn, _secrets = secrets }, Postgres), name, true)

  local function setup()
    local session = {
      "SET synchronous_commit = on", "SET client_encoding = 'UTF8'", "SET standard_conforming_strings = on",
      "SET lock_timeout = '" .. LOCK_TIMEOUT .. "'",
    }
    if not has_param(url, "application_name") then
      self._appname = application_name()
      session[#session + 1] = "SET application_name = " .. self:_lit(self._appname)
    end
    local ok, msg = self:_exec(table.concat(session, "; "))
    if not ok then return nil, msg end
    -- The table: created once, under a transaction lock, when workers start together.
    local row
    row, msg = self:_exec("SELECT to_regclass('" .. TABLE .. "') IS NOT NULL")
    if not row then return nil, msg end
    if row[1] ~= "t" and row[1] ~= true then
      ok, msg = self:_exec("BEGIN; SELECT pg_advisory_xact_lock(" .. SETUP_CLASS .. ", 0); " ..
        "CREATE TABLE IF NOT EXISTS " .. TABLE .. " (journey_id TEXT PRIMARY KEY, base_url TEXT, status TEXT, " ..
        "state TEXT NOT NULL, updated_at TEXT); COMMIT")
      if not ok then
        self:_exec("ROLLBACK")
        return nil, msg
      end
    end
    return true
  end
  local ok, res, msg = pcall(setup)
  if not ok then msg, res = res, nil end
  if not res then
    self:_shutdown()
    return fail("cannot prepare the database: " .. tostring(msg),
      "the user needs to create the table " .. TABLE .. " (or it must exist) and to read and write it")
  end
  return self
end

M.parse = parse
M.scrub = scrub
M.class = Postgres

return M
