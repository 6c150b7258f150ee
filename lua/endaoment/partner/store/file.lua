-- endaoment.partner.store.file: "file:PATH", one journey in one JSON file
-- (the journey runner's original state_file).
--
-- A claim is fs.lock(PATH .. ".lock"), a POSIX record lock the kernel drops
-- when the holder dies; the lock file is never deleted. load reads PATH;
-- save replaces it with fs.write_atomic (fsync of the file and of its
-- directory). One file holds one journey at a time (multi = false): any
-- journey id may claim it, the journey checks the identity inside the
-- document, and a second claim while one is held is busy.
local stores = require "endaoment.partner.store"
local fs = require "endaoment.partner.fs"

local config_error, busy_error, quote = stores.config_error, stores.busy_error, stores.quote

local File = stores.class()

local ENOENT = 2

function File:_acquire(claim)
  local lock, msg = fs.lock(self.path .. ".lock")
  if lock then
    claim._lock = lock
    return true
  end
  msg = tostring(msg)
  if msg:find("^locked by another process") then
    return nil, busy_error("journey " .. quote(claim.journey_id) .. ": " .. self.name .. " is in use, " .. msg ..
      "; wait for that run to finish (running both would send keyed steps twice)")
  end
  if msg:find("^locked by this process") then
    return nil, busy_error("journey " .. quote(claim.journey_id) .. ": " .. self.name ..
      " is already claimed in this process (one journey per file at a time); release that claim first")
  end
  return nil, config_error("cannot claim journey " .. quote(claim.journey_id) .. " in " .. self.name .. ": " ..
    msg .. "; check that the directory exists and is writable")
end

function File._unacquire(_, claim)
  if claim._lock then claim._lock:unlock() end
  return true
end

-- false only when the file does not exist: any other failure (permissions,
-- a directory) is an error, never an empty state, or every keyed step
-- would be re-sent under new keys.
function File:_read(claim)
  local f, msg, code = io.open(self.path, "rb")
  if not f then
    if code == ENOENT then return false end
    return nil, config_error("cannot read " .. self.name .. " for journey " .. quote(claim.journey_id) ..
      " (" .. tostring(msg) .. "); it was left untouched: fix its permissions or move it away")
  end
  local text, rerr = f:read("*a")
  f:close()
  if not text then
    return nil, config_error("cannot read " .. self.name .. " for journey " .. quote(claim.journey_id) ..
      " (" .. tostring(rerr) .. "); it was left untouched: fix it or move it away")
  end
  return text
end

function File:_write(claim, text)
  local ok, msg = fs.write_atomic(self.path, text)
  if not ok then
    return nil, config_error("cannot save journey " .. quote(claim.journey_id) .. " to " .. self.name .. ": " ..
      tostring(msg))
  end
  return true
end

function File._shutdown() end

local M = {}

function M.open(spec, path)
  if path == nil then path = tostring(spec):gsub("^file:", "") end
  if path == "" then
    return nil, config_error("store " .. quote(spec) .. " names no file: use file:PATH, e.g. file:journey.json")
  end
  if path:find("\0", 1, true) then
    return nil, config_error("store file path contains a NUL byte")
  end
  local store = stores.init(setmetatable({ path = path }, File), "file:" .. path, false)
  return store
end

M.class = File

return M
