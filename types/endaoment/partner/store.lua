---@meta endaoment.partner.store
-- Type definitions for lua-language-server (LuaCATS) of endaoment.partner.store:
-- where journeys keep their state, and who may run which journey (docs/stores.md).
-- Definitions only; nothing here runs.

---@class endaoment.partner.store
---@field FORMS string the spec forms, for messages
---@field METHODS string[] the methods a store table must have: claim, load, save, release, close
---@field STATUSES table<string, true> running, done, failed, rejected
---@field MAX_ID_BYTES integer the longest journey id (512)
---@field Base table the shared implementation of the built-in stores
local stores = {}

---Opens a store: "file:PATH", "sqlite:PATH", "postgres://USER:PASSWORD@HOST:PORT/DB" (or
---postgresql://), or a table implementing the interface (returned as it is, save_many added).
---@param spec string|table
---@return endaoment.partner.store.Store|nil store
---@return endaoment.partner.Error|nil err kind "config", field "store"
function stores.open(spec) end

---The printable name a spec's store would have, password replaced by "***", without opening it.
---@param spec string|table
---@return string
function stores.name_of(spec) end

---A spec fit for a message: one that may carry a password shows only its scheme.
---@param spec any
---@return string
function stores.redact(spec) end

---A quoted string for messages.
---@param s any
---@return string
function stores.quote(s) end

---A store error of kind "config" (field "store").
---@param message string
---@return endaoment.partner.Error
function stores.config_error(message) end

---A store error of kind "busy" (field "store"): another worker holds the journey.
---@param message string
---@return endaoment.partner.Error
function stores.busy_error(message) end

---The save_many of a table store that has none: one save after another (not atomic).
---@param store endaoment.partner.store.Store
---@param list endaoment.partner.store.SaveItem[]
---@return true|nil ok
---@return endaoment.partner.Error|nil err
function stores.save_many_default(store, list) end

---For store implementations: a class inheriting the public methods from Base.
---@return table cls
function stores.class() end

---For store implementations: the fields every built-in store starts with.
---@param obj table
---@param name string
---@param multi boolean
---@return table obj
function stores.init(obj, name, multi) end

---A claim on one journey, handed out by store:claim and accepted only by that store until released.
---@class endaoment.partner.store.Claim
---@field journey_id string
---@field store string the store's name

---@class endaoment.partner.store.SaveInfo
---@field status "running"|"done"|"failed"|"rejected"
---@field base_url? string
---@field durable? boolean false: the store may return before the save is on disk (a database crash loses only the latest)

---{ claim, text, info } or { claim =, text =, info = }.
---@class endaoment.partner.store.SaveItem
---@field claim? endaoment.partner.store.Claim
---@field text? string
---@field info? endaoment.partner.store.SaveInfo
---@field [1]? endaoment.partner.store.Claim
---@field [2]? string
---@field [3]? endaoment.partner.store.SaveInfo

---The store interface (built-in or your own table with these methods).
---@class endaoment.partner.store.Store
---@field name string printable, password replaced by "***"
---@field multi? boolean true if one store holds many journeys (sqlite, postgres)
local Store = {}

---Claims a journey: exclusive across processes (and machines, for postgres); dropped when the
---holder dies.
---@param journey_id string non-empty, at most 512 bytes of UTF-8 without NUL
---@param opts? { quiet?: boolean } quiet: a busy answer need not say who holds the journey
---@return endaoment.partner.store.Claim|nil claim
---@return endaoment.partner.Error|nil err kind "busy" (someone else holds it) or "config"
function Store:claim(journey_id, opts) end

---The document last saved for the journey, byte for byte; false when nothing was saved.
---@param claim endaoment.partner.store.Claim
---@return string|false|nil text
---@return endaoment.partner.Error|nil err
function Store:load(claim) end

---The document last saved for a journey, read without a claim (trust it only when every step is done).
---@param journey_id string
---@return string|false|nil text
---@return endaoment.partner.Error|nil err
function Store:peek(journey_id) end

---peek for many journeys in one read: the documents of those whose last save said status "done"
---(a store may return others too: the caller checks each document).
---@param ids string[]
---@return table<string, string>|nil docs journey id -> text
---@return endaoment.partner.Error|nil err
function Store:peek_done(ids) end

---Saves the journey's document durably before it returns.
---@param claim endaoment.partner.store.Claim
---@param text string
---@param info endaoment.partner.store.SaveInfo
---@return true|nil ok
---@return endaoment.partner.Error|nil err
function Store:save(claim, text, info) end

---Saves many documents in one transaction (built-in stores; one fsync); none on failure.
---@param list endaoment.partner.store.SaveItem[]
---@return true|nil ok
---@return endaoment.partner.Error|nil err
function Store:save_many(list) end

---Releases a claim; idempotent.
---@param claim endaoment.partner.store.Claim
---@return true|nil ok
---@return endaoment.partner.Error|nil err
function Store:release(claim) end

---Closes the store and releases every claim it holds; idempotent.
---@return true
function Store:close() end

return stores
