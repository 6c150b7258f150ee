-- endaoment.partner.store: where journeys keep their state, and who may
-- run which journey (docs/stores.md).
--
--   local stores = require "endaoment.partner.store"
--   local store, err = stores.open("sqlite:/var/lib/app/journeys.db")
--   local claim, err = store:claim("user:acme-user-42")  -- err.kind "busy": someone else runs it
--   local text = store:load(claim)                       -- false: nothing saved yet
--   assert(store:save(claim, text, { status = "running", base_url = client.base_url }))
--   store:release(claim); store:close()
--
-- A store keeps one JSON document per journey id and hands out claims: a
-- claim is exclusive across processes (and, for postgres, machines), and
-- the operating system or the database drops it when its holder dies, so a
-- killed worker never blocks the resume of its journeys.
--
-- The built-in stores (file:, sqlite:, postgres://) share the bookkeeping
-- below (M.Base): argument checks, which claims this store holds, refusing
-- a released or foreign claim, close releasing everything. Each implements
-- _acquire, _unacquire, _read, _write, optionally _write_many, and _shutdown.
local core = require "endaoment.partner.core"

local M = {}

M.FORMS = "file:PATH, sqlite:PATH, postgres://USER:PASSWORD@HOST:PORT/DATABASE (or postgresql://...), " ..
  "or a table implementing the store interface (docs/stores.md)"

-- The methods a store table must have; save_many is filled in when missing.
M.METHODS = { "claim", "load", "save", "release", "close" }

M.STATUSES = { running = true, done = true, failed = true, rejected = true }

-- Journey ids are primary keys: bounded, no NUL (C strings would cut it),
-- valid UTF-8 (PostgreSQL's text refuses anything else).
M.MAX_ID_BYTES = 512

function M.config_error(message)
  return core.error("config", message, { field = "store" })
end

function M.busy_error(message)
  return core.error("busy", message, { field = "store" })
end

local config_error, busy_error = M.config_error, M.busy_error

-- A spec of an unknown form, fit for a message: one with an "@" or a
-- password= may carry a password, so only its scheme is shown.
function M.redact(spec)
  spec = tostring(spec)
  if spec:find("@", 1, true) or spec:lower():find("password", 1, true) then
    return (spec:match("^[%a][%w+.-]*:") or "") .. "... (not shown: it may hold a password)"
  end
  return spec
end

local function quote(s)
  return '"' .. tostring(s) .. '"'
end
M.quote = quote

-- The default save_many of a store that has none: one save after another.
-- Not atomic: each document is durable on its own, a failure stops the loop.
function M.save_many_default(store, list)
  if type(list) ~= "table" then
    return nil, config_error("save_many takes a list of { claim, text, info }")
  end
  for _, item in ipairs(list) do
    if type(item) ~= "table" then
      return nil, config_error("save_many takes a list of { claim, text, info }")
    end
    local ok, err = store:save(item[1] or item.claim, item[2] or item.text, item[3] or item.info)
    if not ok then return nil, err end
  end
  return true
end

---------------------------------------------------------------------------
-- shared bookkeeping of the built-in stores
---------------------------------------------------------------------------

local Claim = { __name = "endaoment.partner.store.claim" }
Claim.__index = Claim
function Claim.__tostring(c)
  return "endaoment.partner.store claim (journey " .. quote(c.journey_id) .. " on " .. tostring(c.store) .. ")"
end

local Base = {}
Base.__index = Base
M.Base = Base

-- Fields every built-in store starts with; the implementation adds its own.
function M.init(obj, name, multi)
  obj.name = name
  obj.multi = multi
  obj._claims = {}
  obj._closed = false
  return obj
end

local function check_id(journey_id)
  if type(journey_id) ~= "string" or journey_id == "" then
    return nil, "journey id must be a non-empty string (got " .. type(journey_id) .. ")"
  end
  if #journey_id > M.MAX_ID_BYTES then
    return nil, "journey id is longer than " .. M.MAX_ID_BYTES .. " bytes"
  end
  if journey_id:find("\0", 1, true) then
    return nil, "journey id contains a NUL byte"
  end
  local ok, why = core.utf8_len(journey_id)
  if not ok then
    return nil, "journey id " .. why
  end
  return true
end

-- opts.quiet: the caller only needs to know "busy" (a batch defers the
-- journey), so the store may skip finding out who holds it.
function Base:claim(journey_id, opts)
  local ok, why = check_id(journey_id)
  if not ok then return nil, config_error(why) end
  if self._closed then
    return nil, config_error(self.name .. " is closed; open the store again to claim " .. quote(journey_id))
  end
  if self._claims[journey_id] then
    return nil, busy_error("journey " .. quote(journey_id) .. " is already claimed through this store (" ..
      self.name .. "); release that claim first")
  end
  local claim = setmetatable({ journey_id = journey_id, store = self.name }, Claim)
  local got, err = self:_acquire(claim, opts)
  if not got then return nil, err end
  self._claims[journey_id] = claim
  return claim
end

-- The document last saved for a journey, read WITHOUT a claim: text |
-- false | nil, err. Only a finished journey's document can be trusted this
-- way (it is never written again); the batch runner uses it to skip those
-- without taking and releasing a claim.
function Base:peek(journey_id)
  local ok, why = check_id(journey_id)
  if not ok then return nil, config_error(why) end
  if self._closed then return nil, config_error(self.name .. " is closed") end
  return self:_read({ journey_id = journey_id, store = self.name })
end

-- peek for many journeys at once: { [journey_id] = text } for those whose
-- last save said status "done" (a store may return others too: the caller
-- checks the document), or nil, err. The SQL stores ask in one query.
function Base:peek_done(ids)
  if type(ids) ~= "table" then return nil, config_error("peek_done takes a list of journey ids") end
  for _, id in ipairs(ids) do
    local ok, why = check_id(id)
    if not ok then return nil, config_error(why) end
  end
  if self._closed then return nil, config_error(self.name .. " is closed") end
  if #ids == 0 then return {} end
  if self._read_done then return self:_read_done(ids) end
  local out = {}
  for _, id in ipairs(ids) do
    local text, err = self:_read({ journey_id = id, store = self.name })
    if text == nil then return nil, err end
    if text then out[id] = text end
  end
  return out
end

-- true, or nil, err when claim is not a live claim of this store.
function Base:_check(claim)
  if type(claim) ~= "table" or getmetatable(claim) ~= Claim or self._claims[claim.journey_id] ~= claim then
    return nil, config_error("this claim is not held through " .. self.name ..
      " (it was released, or belongs to another store): claim the journey again")
  end
  if self._lost then
    return nil, config_error(self._lost)
  end
  return true
end

local function check_doc(self, claim, text, info)
  local ok, err = self:_check(claim)
  if not ok then return nil, err end
  if type(text) ~= "string" then
    return nil, config_error("save needs the document as a string (got " .. type(text) .. ")")
  end
  if type(info) ~= "table" or not M.STATUSES[info.status] then
    return nil, config_error("save needs info = { status = \"running\"|\"done\"|\"failed\"|\"rejected\", " ..
      "base_url = ... } (got status " .. (type(info) == "table" and tostring(info.status) or type(info)) .. ")")
  end
  if info.durable ~= nil and type(info.durable) ~= "boolean" then
    return nil, config_error("info.durable must be a boolean (got " .. type(info.durable) .. ")")
  end
  if info.base_url ~= nil and (type(info.base_url) ~= "string" or info.base_url:find("\0", 1, true)) then
    return nil, config_error("info.base_url must be a string without NUL bytes")
  end
  if self._check_text then
    local why = self:_check_text(text)
    if why then return nil, config_error("cannot save journey " .. quote(claim.journey_id) .. " in " ..
      self.name .. ": " .. why) end
  end
  return true
end

function Base:load(claim)
  local ok, err = self:_check(claim)
  if not ok then return nil, err end
  return self:_read(claim)
end

function Base:save(claim, text, info)
  local ok, err = check_doc(self, claim, text, info)
  if not ok then return nil, err end
  return self:_write(claim, text, info)
end

-- Every item is checked before anything is written.
function Base:save_many(list)
  if type(list) ~= "table" then
    return nil, config_error("save_many takes a list of { claim, text, info }")
  end
  local items = {}
  for i, item in ipairs(list) do
    if type(item) ~= "table" then
      return nil, config_error("save_many: item " .. i .. " is not a { claim, text, info } table")
    end
    local claim, text, info = item[1] or item.claim, item[2] or item.text, item[3] or item.info
    local ok, err = check_doc(self, claim, text, info)
    if not ok then return nil, err end
    items[i] = { claim = claim, text = text, info = info }
  end
  if #items == 0 then return true end
  if self._write_many then return self:_write_many(items) end
  for _, item in ipairs(items) do
    local ok, err = self:_write(item.claim, item.text, item.info)
    if not ok then return nil, err end
  end
  return true
end

-- Idempotent; a claim this store does not hold is left alone.
function Base:release(claim)
  if type(claim) ~= "table" or self._claims[claim.journey_id] ~= claim then return true end
  self._claims[claim.journey_id] = nil
  return self:_unacquire(claim)
end

function Base:close()
  if self._closed then return true end
  self._closed = true
  local claims = self._claims
  self._claims = {}
  -- A store whose shutdown ends every claim (postgres: the session) skips
  -- releasing them one by one.
  if not self._shutdown_releases_all then
    for _, claim in pairs(claims) do
      pcall(self._unacquire, self, claim)
    end
  end
  self:_shutdown()
  return true
end

function Base:__tostring()
  return "endaoment.partner.store " .. tostring(self.name) .. (self._closed and " (closed)" or "")
end

-- Implementation classes inherit the public methods from Base.
function M.class()
  local cls = setmetatable({}, { __index = Base })
  cls.__index = cls
  cls.__tostring = Base.__tostring
  return cls
end

---------------------------------------------------------------------------
-- open
---------------------------------------------------------------------------

local function open_table(store)
  local missing = {}
  for _, m in ipairs(M.METHODS) do
    if type(store[m]) ~= "function" then missing[#missing + 1] = m end
  end
  if #missing > 0 then
    return nil, config_error("the store table lacks " .. table.concat(missing, ", ") ..
      ": a store has the methods claim, load, save, release and close (docs/stores.md)")
  end
  if store.save_many == nil then store.save_many = M.save_many_default end
  if store.name == nil then store.name = "custom store" end
  return store
end

local DRIVERS = {
  file = "endaoment.partner.store.file",
  sqlite = "endaoment.partner.store.sqlite",
  postgres = "endaoment.partner.store.postgres",
  postgresql = "endaoment.partner.store.postgres",
}

-- The printable name a spec's store would have, password replaced by "***",
-- without opening it (for "store: ..." lines printed before open).
function M.name_of(spec)
  if type(spec) == "table" then return tostring(spec.name or "custom store") end
  if type(spec) ~= "string" then return "(" .. type(spec) .. ")" end
  local scheme, rest = spec:match("^([%a][%w+.-]*):(.*)$")
  scheme = scheme and scheme:lower()
  if (scheme == "postgres" or scheme == "postgresql") and rest:sub(1, 2) == "//" then
    local name = require("endaoment.partner.store.postgres").parse(spec)
    return name or M.redact(spec)
  end
  if scheme == "file" or scheme == "sqlite" then return spec end
  return M.redact(spec)
end

-- open(spec) -> store | nil, err (kind "config")
function M.open(spec)
  if type(spec) == "table" then return open_table(spec) end
  if type(spec) ~= "string" then
    return nil, config_error("store must be a string or a table (got " .. type(spec) .. "): " .. M.FORMS)
  end
  local scheme, rest = spec:match("^([%a][%w+.-]*):(.*)$")
  local modname = scheme and DRIVERS[scheme:lower()]
  if not modname or ((scheme:lower() == "postgres" or scheme:lower() == "postgresql") and rest:sub(1, 2) ~= "//") then
    return nil, config_error("unknown store " .. quote(M.redact(spec)) .. ": use " .. M.FORMS)
  end
  local mod = require(modname)
  return mod.open(spec, rest)
end

return M
